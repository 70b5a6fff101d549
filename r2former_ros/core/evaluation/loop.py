"""
The evaluation loop: every query through the node's step, scored by the one engine.

Each query image is encoded and localized by
:meth:`~r2former_ros.core.localize.localizer.Localizer.localize_image` (the node's code: rank,
confidence, filter, decision), then :func:`~r2former_ros.core.evaluation.engine.summarize`
scores the results (see there for what each JSON key means). Latency is measured per stage
for batch-1 queries: extract (preprocess + network), retrieve (faiss), rerank, filter.

A map without a single-frame calibration for the running settings is calibrated in memory on
its own images (:mod:`r2former_ros.core.calibration.self_calibration`) unless
``EvalSettings.calibrate`` is off; the uncalibrated confidence (the clipped top score) is
reported next to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
import os
from pathlib import Path
import tempfile
from typing import Any

import numpy as np

from r2former_ros.core.calibration.self_calibration import (
    fit_map_calibration,
    map_calibration_block,
)
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.evaluation.datasets import (
    EvalQuery,
    Progress,
    bag_queries,
    load_dataset,
    write_dataset_map,
)
from r2former_ros.core.evaluation.engine import (
    MOSAIC_MAX_ROWS,
    MOSAIC_TOP,
    EvalResult,
    LocalizedFrame,
    frame_truth,
    summarize,
)
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.localize.odometry import OdometryTrack
from r2former_ros.core.localize.settings import LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.mapdb.thumbnails import DEFAULT_THUMBNAIL_WIDTH, resize_to_width
from r2former_ros.core.places.base import PlaceModel


@dataclass
class EvalSettings:
    """What to measure: the localizer's own settings, plus what only evaluation decides."""

    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)
    calibrate: bool = True  # calibrate maps that have no single-frame calibration, in memory
    max_queries: int | None = None


def evaluation_localizer(model: PlaceModel, database: MapDatabase, settings: EvalSettings,
                         progress: bool = False, odometry: OdometryTrack | None = None
                         ) -> tuple[Localizer, str, dict[str, Any]]:
    """
    Open the localizer an evaluation runs, calibrating an uncalibrated map in memory.

    Returns:
        The localizer, where its confidence calibration came from, and the calibration's
        report.
    """
    config = settings.localizer
    # The evaluation fits a missing calibration in memory or reports the score as raw in its
    # summary, so the localizer's 'confidence is a raw score' warning would only repeat that.
    localizer = Localizer(model, database, config, ranking_only=True, odometry=odometry)
    source = 'map manifest' if localizer.calibration.single_calibrated else 'none'
    info = dict(localizer.calibration.info)
    if not localizer.calibration.single_calibrated and settings.calibrate:
        fitted = fit_map_calibration(database, model, config.threshold_m,
                                     localizer_config=config, progress=progress)
        info = dict(fitted.info)
        if fitted.calibrated:
            localizer = Localizer(model, database, config, ranking_only=True,
                                  calibration=map_calibration_block(fitted), odometry=odometry)
            source = 'fitted in memory on the map images'
    return localizer, source, info


def evaluate_map(model: PlaceModel, database: MapDatabase, queries: Iterable[EvalQuery],
                 settings: EvalSettings | None = None, progress: Progress | None = None,
                 extra: dict[str, Any] | None = None,
                 odometry: OdometryTrack | None = None) -> EvalResult:
    """
    Evaluate queries (in travel order when filtering) against an open map.

    Args:
        model: the place model the map was built with.
        database: the map.
        queries: queries with ground truth (positions in the map's ENU frame or positive ids).
        settings: the localizer's settings, in-memory calibration, a query limit.
        progress: called with a short line every few queries.
        extra: merged into the summary (dataset name, layout, notes).
        odometry: the drive's odometry (the filter's motion step reads it, as the node does).
    """
    settings = settings or EvalSettings()
    localizer, source, info = evaluation_localizer(model, database, settings, odometry=odometry)
    places = database.places
    east = np.asarray(places['east'], dtype=np.float64)
    north = np.asarray(places['north'], dtype=np.float64)
    frames: list[LocalizedFrame] = []
    failures: list[dict[str, Any]] = []
    for count, query in enumerate(queries):
        if settings.max_queries is not None and count >= settings.max_queries:
            break
        rgb = query.load()
        result, _ = localizer.localize_image(rgb, token_pairs=False, stamp_s=query.stamp_s)
        frame = LocalizedFrame(query.name, result, query.east, query.north, query.positives)
        frames.append(frame)
        ranking = result.ranking
        assert ranking is not None
        truth = frame_truth(frame, east, north, settings.localizer.threshold_m)
        top = ranking.ids[:MOSAIC_TOP]
        if not (top.size and truth.true[top[0]]) and len(failures) < MOSAIC_MAX_ROWS:
            # The query at the width of the map thumbnails it is shown beside.
            failures.append({'name': query.name,
                             'thumb': resize_to_width(rgb, DEFAULT_THUMBNAIL_WIDTH),
                             'ids': [int(v) for v in top],
                             'correct': [bool(v) for v in truth.true[top]],
                             'confidence': result.confidence})
        if progress and (count + 1) % 10 == 0:
            progress(f'{count + 1} queries')
    for failure in failures:
        failure['thumbs'] = [database.thumbnail(i) for i in failure['ids']]
    return summarize(localizer, frames, calibration_source=source, calibration_info=info,
                     failures=failures, extra=extra)


def evaluate_dataset(model: PlaceModel, root: str | Path, layout: str,
                     settings: EvalSettings | None = None, work_dir: str | Path | None = None,
                     progress: Progress | None = None) -> EvalResult:
    """
    Evaluate an image dataset ('vg' or 'vprbench' layout) with a temporary map of its database.

    Args:
        model: the place model.
        root: the dataset directory.
        layout: 'vg' or 'vprbench'.
        settings: thresholds, rerank depth, calibration.
        work_dir: where the temporary map goes (default: a fresh temp dir, removed after).
        progress: called with a short line now and then.
    """
    settings = settings or EvalSettings()
    spec = load_dataset(root, layout, settings.localizer.threshold_m)
    with tempfile.TemporaryDirectory(prefix='r2former-eval-', dir=work_dir) as tmp:
        map_dir = write_dataset_map(spec, model, Path(tmp) / 'map', progress)
        database = MapDatabase.open(map_dir)
        extra = {'dataset': str(Path(root)), 'layout': layout, 'name': spec.name,
                 'notes': spec.notes}
        return evaluate_map(model, database, spec.queries, settings, progress, extra)


def evaluate_bag(model: PlaceModel, map_dir: str | Path,
                 bag_paths: str | Path | Sequence[str | Path], image_topic: str,
                 gps_topic: str | None, settings: EvalSettings | None = None, every: int = 1,
                 max_gap_s: float = 1.0, progress: Progress | None = None,
                 odom_topic: str | None = None, pose_topic: str | None = None) -> EvalResult:
    """
    Evaluate a query bag against a map; ground truth is the query bag's GPS or its poses.

    ``gps_topic`` for a GPS map, or ``pose_topic`` (poses in the map's frame) for a map built
    from poses; distances, ``threshold_m`` and every metric are metres in the map's frame.
    With ``odom_topic`` the sequence filter's motion step reads the bag's odometry, as a node
    subscribed to ``odom`` does.
    """
    from r2former_ros.core.io.bag_truth import TruthSource  # noqa: PLC0415 - rosbags

    settings = settings or EvalSettings()
    source = TruthSource.from_topics(gps_topic, pose_topic)
    database = MapDatabase.open(map_dir)
    truth = source.read_for(bag_paths, database)
    odometry = OdometryTrack.from_bag(bag_paths, odom_topic) if odom_topic else None
    queries, stats = bag_queries(bag_paths, image_topic, truth, max_gap_s, every)
    paths = [bag_paths] if isinstance(bag_paths, (str, os.PathLike)) else list(bag_paths)
    result = evaluate_map(model, database, queries, settings, progress,
                          {'map': str(map_dir), 'bags': [str(p) for p in paths],
                           'image_topic': image_topic, 'gps_topic': gps_topic,
                           'pose_topic': pose_topic, 'position_frame': database.position_frame,
                           'odom_topic': odom_topic}, odometry)
    result.summary['bag_images'] = dict(stats)
    if result.summary['num_queries'] == 0:
        raise ConfigError(f'no query image of {image_topic} has a true position from '
                          f'{source.describe()} ({stats})')
    return result
