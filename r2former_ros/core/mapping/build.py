"""
Map building: recorded bags (or geotagged image folders) -> a map directory.

Pipeline, one module per step:
    1. Plan (:mod:`.plan`, no pixels decoded): geotag every image stamp and pick keyframes.
    2. Extract (:mod:`.extract`): decode only the kept images, in a bounded background thread
       (:mod:`.prefetch`), while the model encodes the previous batch.
    3. Write: :class:`~r2former_ros.core.mapdb.MapWriter` builds the map in a temporary sibling
       directory and swaps it into place, so every failure (bad input, model error, Ctrl-C)
       leaves the old map or no map. ``append`` goes through :meth:`MapWriter.append`, which
       refuses another model.
    4. Calibrate the confidence model on the map's own images
       (:mod:`r2former_ros.core.calibration.self_calibration`); a failure there leaves the map
       usable and uncalibrated.

Default keyframe spacing, ``DEFAULT_MIN_DISTANCE_M`` = 2 m: R2Former and VPR benchmarks count a
match as correct within 25 m, and localization wants 10-25 m; a place every 2 m keeps several
map images inside any 10 m radius (robust to occlusions and viewpoint changes) while a 10 km
route stays at 5000 places (about 0.34 GB at 67 KB per place in the int8 storage). Without the
rule a 15 Hz camera at walking speed (1.4 m/s) gives 10 images per metre, 20 times the data for
nearly the same recall.
"""

from __future__ import annotations

import logging
from pathlib import Path
import time
from typing import Any

from r2former_ros.core.calibration.self_calibration import (
    SELF_CALIBRATION_MAX_QUERIES,
    calibrate_map,
)
from r2former_ros.core.errors import CheckpointError, MapError, R2FormerError
from r2former_ros.core.geo.coords import WGS84_FRAME
from r2former_ros.core.mapdb import MapWriter, write_calibration
from r2former_ros.core.mapdb.schema import origin_lla, position_frame_of, read_manifest
from r2former_ros.core.mapping.extract import extract_places
from r2former_ros.core.mapping.options import (
    CALIBRATION_THRESHOLD_M,
    BuildOptions,
    BuildReport,
    check_options,
    tune_settings,
)
from r2former_ros.core.mapping.plan import Plan, plan_bags, plan_folder
from r2former_ros.core.places import factory
from r2former_ros.core.places.base import PlaceModel

LOG = logging.getLogger(__name__)

CALIBRATION_BUDGET_SHARE = 0.5  # a default self-calibration takes at most half the build's time
CALIBRATION_MIN_BUDGET_S = 60.0  # ... or a minute, for small maps


def _mark_drive_calibration_stale(path: Path, added: int) -> bool:
    """
    After an append, mark the map's drive calibration stale (True) instead of replacing it.

    The new places were never seen by the calibration drive, so the confidence is no longer
    calibrated (``map info`` says why) until ``r2former calibrate`` runs again; a silent
    self-calibration would throw the drive's better fit away. False: no drive calibration.
    """
    block = read_manifest(path).get('calibration') or {}
    source = block.get('source') or {}
    if source.get('kind') != 'drive' or not block.get('weights'):
        return False
    block['stale'] = {'reason': f'{added} places were appended after the calibration on drive '
                                f'{source.get("drive")}; run `r2former calibrate` again',
                      'places_added': int(added)}
    write_calibration(path, block)
    LOG.warning('map %s: its drive calibration (%s) is stale after the append: the confidence '
                'is raw until `r2former calibrate` runs again on a drive', path,
                source.get('drive'))
    return True


def _calibrate(path: Path, model: PlaceModel, max_queries: int | None, progress: bool,
               build_s: float) -> bool:
    """
    Fit the confidence calibration on the map's own images; never fails the build.

    Without an asked-for number of queries, the calibration gets half the time the build
    itself took (at least a minute), as many queries as fit, up to
    SELF_CALIBRATION_MAX_QUERIES: on a CPU with the full R2Former shape 2000 queries of a
    5000-place map would take hours after a build of tens of minutes.
    """
    budget = None if max_queries is not None else \
        max(CALIBRATION_MIN_BUDGET_S, CALIBRATION_BUDGET_SHARE * build_s)
    try:
        info = calibrate_map(path, model, threshold_m=CALIBRATION_THRESHOLD_M,
                             max_queries=max_queries or SELF_CALIBRATION_MAX_QUERIES,
                             progress=progress, time_budget_s=budget)
    except R2FormerError as err:
        # The map is already committed and usable; calibration can be rerun on its own.
        LOG.warning('map %s written, but not calibrated: %s', path, err)
        return False
    if budget is not None and info.get('seconds_per_query') is not None:
        LOG.info('self-calibration: %d of the map images as queries, %.2f s each, to stay '
                 'within %.0f s (half the build); --calibration-queries N for more, or better '
                 '`r2former calibrate` on a second drive', info['num_queries'],
                 info['seconds_per_query'], budget)
    # A fit can also be skipped (too few or one-sided samples): then the map is uncalibrated.
    return bool(info.get('calibrated'))


def _load_model(opts: BuildOptions) -> PlaceModel:
    # Through the module, so a test's patch of factory.load_place_model applies here too.
    return factory.load_place_model(opts.backbone, opts.checkpoint, opts.device, opts.input_hw,
                                    opts.num_local, precision=opts.precision)


def build_map(opts: BuildOptions, model: PlaceModel | None = None) -> BuildReport:
    """
    Build (or append to) a map from bags or an image folder; see the module docstring.

    Args:
        opts: What to read and how to write it.
        model: An already loaded place model; None loads one from the options.

    Returns:
        A report of the build.

    Raises:
        ConfigError: Inconsistent options.
        BagError: Unreadable or truncated bags, missing topics, no usable GPS, nothing
            geotagged.
        ImageError: No selected image could be decoded; a folder image list is bad.
        MapError: The output exists (without overwrite/append) or the map to append to is
            corrupt or was built with another model.
        CheckpointError: The checkpoint cannot be loaded.

    """
    started = time.perf_counter()
    timing = dict.fromkeys(('plan_s', 'read_decode_s', 'preprocess_s', 'wait_s', 'model_s',
                            'write_s', 'commit_s', 'calibrate_s'), 0.0)
    out, plan = plan_build(opts, timing)
    model = model or _load_model(opts)
    writer = open_map_writer(opts, out, model.identity(), plan)
    source_ids = [writer.add_source(source) for source in plan.sources]
    with writer:
        kept = extract_places(opts, plan, model, writer, source_ids, timing)
        record_kept(writer, plan, source_ids, kept)
        num_places = writer.num_places
        start = time.perf_counter()
    timing['commit_s'] = time.perf_counter() - start
    return finish_build(opts, out, model, plan, kept, num_places, timing, started)


def plan_build(opts: BuildOptions, timing: dict[str, float]) -> tuple[Path, Plan]:
    """
    Check the options and plan the places (no pixels decoded); shared with the Ray build.

    Bags are planned before the model loads, so bad input fails in seconds, not after loading.
    Returns the map directory and the plan; ``timing['plan_s']`` gets the planning time.
    """
    check_options(opts)
    out = Path(opts.out)
    if opts.checkpoint is not None and not Path(opts.checkpoint).is_file():
        raise CheckpointError(f'checkpoint {opts.checkpoint} does not exist')
    origin = frame = None
    if opts.append:
        # Places of an appended bag live in the existing map's frame: its ENU frame (GPS), or
        # the frame of its poses.
        manifest = read_manifest(out)
        frame = position_frame_of(manifest)
        _check_append_source(opts, out, frame)
        if frame == WGS84_FRAME:
            origin = origin_lla(manifest['origin'])
    start = time.perf_counter()
    plan = plan_bags(opts, origin, frame) if opts.bags else plan_folder(opts, origin)
    timing['plan_s'] = time.perf_counter() - start
    return out, plan


def _check_append_source(opts: BuildOptions, out: Path, frame: str) -> None:
    """
    Refuse places whose positions are of another kind than the map's (GPS vs a pose frame).

    Raises:
        MapError: GPS places (bags with --gps-topic, image folders) for a map in a pose frame,
            or places from poses alone for a GPS map.
    """
    from_gps = opts.images_dir is not None or bool(opts.gps_topic)
    if frame != WGS84_FRAME and from_gps:
        raise MapError(f"{out}: the map holds positions in frame '{frame}' (built from poses, "
                       'no GPS); places with GPS positions cannot join it: append with '
                       f"--pose-topic alone (poses in '{frame}')")
    if frame == WGS84_FRAME and not from_gps:
        raise MapError(f'{out}: the map holds GPS positions (WGS84); places from poses alone '
                       'cannot join it: append with --gps-topic')


def open_map_writer(opts: BuildOptions, out: Path, identity: dict[str, Any],
                    plan: Plan) -> MapWriter:
    """Open the writer of a new map, or of the map to append to (warning on re-added bags)."""
    if not opts.append:
        writer = MapWriter(out, identity, local_format=opts.local_format,
                           index_type=opts.index_type or 'auto', overwrite=opts.overwrite,
                           tune=tune_settings(opts), position_frame=plan.position_frame)
        if plan.origin is not None:
            writer.set_origin(*plan.origin)
        return writer
    writer = MapWriter.append(out, identity, index_type=opts.index_type,
                              tune=tune_settings(opts))
    seen = {(s.get('bag'), s.get('image_topic')) for s in writer.sources}
    for source in plan.sources:
        if source.get('bag') and (source['bag'], source['image_topic']) in seen:
            # Not fatal (maybe intended), but usually a mistake that duplicates places.
            LOG.warning('%s %s is already in map %s; its places are added again',
                        source['bag'], source['image_topic'], out)
    return writer


def record_kept(writer: MapWriter, plan: Plan, source_ids: list[int], kept: list[int]) -> None:
    """Store in each source's manifest entry how many of its selected images were kept."""
    for slot, source_id in enumerate(source_ids):
        plan.sources[slot]['kept'] = kept[slot]
        plan.sources[slot]['undecodable_skipped'] = plan.sources[slot]['selected'] - kept[slot]
        writer.update_source(source_id, plan.sources[slot])


def finish_build(opts: BuildOptions, out: Path, model: PlaceModel, plan: Plan, kept: list[int],
                 num_places: int, timing: dict[str, float], started: float,
                 how: str = '') -> BuildReport:
    """Log the committed map, calibrate it if asked and return the report."""
    LOG.info('map %s: added %d places (%d in total)%s', out, sum(kept), num_places, how)
    calibrated = False
    if opts.append and _mark_drive_calibration_stale(out, sum(kept)):
        pass  # a drive calibration is worth more than a self-calibration: keep it, marked stale
    elif opts.calibrate:
        start = time.perf_counter()
        calibrated = _calibrate(out, model, opts.calibration_queries, opts.progress,
                                time.perf_counter() - started)
        timing['calibrate_s'] = time.perf_counter() - start
    timing['total_s'] = time.perf_counter() - started
    return BuildReport(out, num_places, sum(kept), plan.sources, calibrated, timing)
