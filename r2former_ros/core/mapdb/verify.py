"""Whole-map checks and summaries for `r2former map verify` / `r2former map info`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r2former_ros.core.errors import MapError
from r2former_ros.core.mapdb.handle import MapDirectory
from r2former_ros.core.mapdb.reader import load_arrays, open_index
from r2former_ros.core.mapdb.schema import (
    GLOBAL_FILE,
    INDEX_FILE,
    check_files,
    map_identity,
    parse_manifest,
    position_frame_of,
)
from r2former_ros.core.mapdb.thumbnails import check_thumbnails


def verify_map(path: str | Path) -> list[str]:
    """
    Check a map completely (checksums, sizes, shapes, index, thumbnails).

    Returns:
        Problems found, one message per problem naming the file; empty when the map is sound.
    """
    root = Path(path)
    try:
        directory = MapDirectory(root)
    except MapError as exc:
        return [str(exc)]
    # One handle for every check: a map swapped at the path meanwhile is not mixed in.
    with directory:
        try:
            manifest, _ = parse_manifest(directory)
        except MapError as exc:
            return [str(exc)]
        problems = check_files(directory, manifest, checksums=True)
        # A file already reported (missing, truncated, corrupt) is not loaded again.
        bad = {name for name in manifest['files']
               if any(str(directory.shown(name)) in p for p in problems)}
        arrays, more = load_arrays(directory, manifest, skip=bad)
        problems += more + check_thumbnails(directory, manifest)
        if GLOBAL_FILE in arrays and INDEX_FILE not in bad:
            try:
                open_index(directory, manifest, arrays[GLOBAL_FILE])
            except MapError as exc:
                problems.append(str(exc))
    return problems


def size_problems(path: str | Path) -> list[str]:
    """
    Check what can be checked without reading the data: the manifest, every file there, sizes.

    The cheap part of :func:`verify_map` (no checksums, no arrays loaded): a map truncated by a
    full disk or an interrupted copy shows here.

    Returns:
        Problems found, one message per problem naming the file; empty when none.
    """
    try:
        with MapDirectory(Path(path)) as directory:
            manifest, _ = parse_manifest(directory)
            return check_files(directory, manifest, checksums=False)
    except MapError as exc:
        return [str(exc)]


def map_info(path: str | Path) -> dict[str, Any]:
    """
    Summarise a map from its manifest (no data files are read).

    Returns:
        map_id, map_uuid, manifest_sha256 (see :class:`~r2former_ros.core.mapdb.schema.
        MapIdentity`), num_places, bytes_per_place, checkpoint_sha256, format_version,
        backbone, input_hw, num_local, global_dim, local_dim, local_format, index_type,
        index_tuning, origin, position_frame ('wgs84' for GPS maps, else the frame id of the
        poses the places come from), sources, created, tool_version, has_thumbnails,
        calibrated, calibration (see :func:`calibration_summary`).
    """
    root = Path(path)
    with MapDirectory(root) as directory:
        manifest, manifest_sha256 = parse_manifest(directory)
    identity = map_identity(manifest, manifest_sha256)
    model = manifest['model']
    num = int(manifest['counts']['num_places'])
    total = sum(int(entry['bytes']) for entry in manifest['files'].values())
    return {
        'path': str(root),
        'map_id': identity.map_id,
        'map_uuid': identity.uuid,
        'manifest_sha256': identity.manifest_sha256,
        'num_places': num,
        'bytes_per_place': total / num,
        'checkpoint': model.get('checkpoint'),
        'checkpoint_sha256': model['checkpoint_sha256'],
        'format_version': manifest['format_version'],
        'tool_version': manifest.get('tool_version'),
        'created': manifest.get('created'),
        'backbone': model['backbone'],
        'input_hw': model['input_hw'],
        'num_local': model['num_local'],
        'global_dim': model['global_dim'],
        'local_dim': model['local_dim'],
        'local_format': manifest['storage']['local_format'],
        'index_type': manifest['index_type'],
        # How nprobe/efSearch were tuned (value, recall@k vs exact, ms/query), or None.
        'index_tuning': (manifest.get('index') or {}).get('tuning'),
        'origin': manifest['origin'],
        'position_frame': position_frame_of(manifest),
        'sources': manifest['sources'],
        'has_thumbnails': bool(manifest.get('thumbnails')),
        # A calibration block without weights records why fitting was skipped, and a stale one
        # (places appended after a drive calibration) no longer holds: not calibrated.
        'calibrated': bool((manifest.get('calibration') or {}).get('weights'))
        and not (manifest.get('calibration') or {}).get('stale'),
        'calibration': calibration_summary(manifest.get('calibration')),
    }


def calibration_summary(block: dict[str, Any] | None) -> dict[str, Any]:
    """
    Say whether a manifest's calibration block holds, why not, and how good it is.

    Returns:
        reason (None when calibrated, else why not), ece (cross-validated single-frame ECE when
        recorded, else the in-sample one), ece_kind (which of the two), ece_filtered (the
        sequence filter's, or None), source ('map self-queries', 'drive', ...), settings
        (what it was fitted under, the motion model included) and operating_points (the
        confidence threshold chosen per filter for a stated precision, or None).
    """
    block = block or {}
    info = block.get('info') or {}
    ece_cv = block.get('ece_cv') or {}
    reason = None
    if not block.get('weights'):
        reason = info.get('reason') or 'never calibrated (run `r2former calibrate`)'
    elif block.get('stale'):
        reason = f'stale: {block["stale"].get("reason")}'
    source = block.get('source') or {}
    cross_validated = ece_cv.get('single', info.get('ece_calibrated_cv'))
    ece = cross_validated if cross_validated is not None else info.get('ece_calibrated')
    return {'reason': reason, 'ece': ece,
            'ece_kind': 'cross-validated' if cross_validated is not None else 'in-sample',
            'ece_filtered': ece_cv.get('filtered'),
            'source': (' '.join(str(v) for v in (source.get('kind'), source.get('drive')) if v)
                       or info.get('method')),
            'settings': block.get('settings'),
            'operating_points': block.get('operating_points')}
