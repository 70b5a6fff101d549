"""
In-place edits of a finished map's manifest: the confidence calibration block.

The calibration is fitted elsewhere (which also owns the block's layout); the map store only
swaps the manifest file atomically, leaving the data files and their checksums alone. The edit
takes the map's change lock and can check the version it was fitted on
(:mod:`r2former_ros.core.mapdb.locking`), so it never overwrites a concurrent change silently.
"""

from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path
from typing import Any

from r2former_ros.core.hashing import file_sha256
from r2former_ros.core.mapdb.atomic import fsync_path, unique_sibling, write_json_synced
from r2former_ros.core.mapdb.handle import MapDirectory
from r2former_ros.core.mapdb.locking import check_version, map_lock
from r2former_ros.core.mapdb.schema import MANIFEST_NAME, parse_manifest, utc_now


def write_calibration(path: str | Path, calibration: Mapping[str, Any] | None, *,
                      expected_manifest_sha256: str | None = None) -> str:
    """
    Store a confidence calibration in a map's manifest, atomically and under the map's lock.

    Only ``manifest.json`` is replaced (write, fsync, rename); the data files and their
    checksums are unaffected.

    Args:
        path: the map directory.
        calibration: the calibration block (None removes it).
        expected_manifest_sha256: the manifest version the calibration was fitted on
            (``MapDatabase.identity.manifest_sha256``); when given and the map has changed
            since (appended, rebuilt, calibrated by another tool), nothing is written.

    Returns:
        The sha256 of the manifest written (the map's new version).

    Raises:
        MapError: the map is missing or unreadable, changed since ``expected_manifest_sha256``,
            or its lock stayed held by another process.
    """
    root = Path(path)
    with map_lock(root):
        with MapDirectory(root) as directory:
            manifest, current = parse_manifest(directory)
        if expected_manifest_sha256 is not None:
            check_version(root, expected_manifest_sha256, current, 'the calibration')
        manifest['calibration'] = None if calibration is None else dict(calibration)
        manifest['modified'] = utc_now()
        tmp = unique_sibling(root / MANIFEST_NAME, 'tmp')
        try:
            write_json_synced(tmp, manifest)
            written = file_sha256(tmp)
            os.replace(tmp, root / MANIFEST_NAME)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_path(root)
    return written
