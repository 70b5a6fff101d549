"""
The evaluation loop: every query through the node's Localizer, scored against its ground truth.

Global-only (cosine of the global descriptors) and reranked recall come from the same
retrieval, side by side. Every query goes through
:class:`~r2former_ros.core.localize.localizer.Localizer`, the code the node runs, so the numbers
are those of the node. Latency is measured per stage for batch-1 queries: extract
(preprocess + network), retrieve (faiss), rerank.

Confidence: the probability that the top-1 place is a true match. Its quality is reported as
the expected calibration error (ECE, 10 bins), the precision-recall curve of "accept the top-1
when confidence >= t" with its average precision, and the ROC AUC. Maps without a stored
calibration are calibrated in memory on their own images
(:mod:`r2former_ros.core.localize.calibration`), and the uncalibrated confidence (the clipped
top score) is reported next to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import tempfile
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.evaluation.datasets import (
    EvalQuery,
    Progress,
    bag_queries,
    load_dataset,
    write_dataset_map,
)
from r2former_ros.core.evaluation.metrics import (
    average_precision,
    latency_stats,
    recall_at_n,
    roc_auc,
)
from r2former_ros.core.evaluation.tables import model_banner, weights_kind
from r2former_ros.core.evaluation.trust import (
    filtered_ranking,
    query_truth,
    trust_summary,
)
from r2former_ros.core.localize.calibration import (
    expected_calibration_error,
    fit_map_calibration,
    reliability_table,
)
from r2former_ros.core.localize.confidence import ConfidenceModel, confidence_features
from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig
from r2former_ros.core.localize.sequence_filter import DEFAULT_MAX_SPEED_MPS, ObservationModel
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.mapdb.thumbnails import DEFAULT_THUMBNAIL_WIDTH, resize_to_width
from r2former_ros.core.places.base import PlaceModel

CURVE_MAX_N = 20
MOSAIC_TOP = 5
MOSAIC_MAX_ROWS = 12


@dataclass
class EvalSettings:
    """What to measure and how."""

    threshold_m: float = 25.0
    rerank_top_n: int = 100
    retrieval_top_k: int = 100
    confidence_threshold: float = 0.5
    calibrate: bool = True  # calibrate maps that have none, in memory
    max_queries: int | None = None
    filter: str = 'none'  # 'hmm': the queries are a drive, in time order (sequence filter)
    max_speed_mps: float = DEFAULT_MAX_SPEED_MPS

    def localizer_config(self, has_reranker: bool) -> LocalizerConfig:
        top_k = max(self.retrieval_top_k, CURVE_MAX_N, self.rerank_top_n)
        return LocalizerConfig(retrieval_top_k=top_k,
                               rerank_top_n=self.rerank_top_n if has_reranker else 0,
                               result_top_k=min(top_k, CURVE_MAX_N),
                               confidence_threshold=self.confidence_threshold,
                               threshold_m=self.threshold_m, filter=self.filter,
                               max_speed_mps=self.max_speed_mps).validate()


@dataclass
class EvalResult:
    """Per-query outcomes and the summary written as JSON."""

    summary: dict[str, Any]
    global_correct: NDArray[np.bool_]  # (Q, CURVE_MAX_N) correct at rank i (not cumulative)
    reranked_correct: NDArray[np.bool_]
    confidence: NDArray[np.float64]  # (Q,) confidence the localizer publishes
    confidence_uncalibrated: NDArray[np.float64]
    top1_correct: NDArray[np.bool_]
    failures: list[dict[str, Any]] = field(default_factory=list)  # wrong top-1s, for the mosaic
    # Per query, for the track plot: 'true' (closest map place, -1 unknown), 'single' (top-1),
    # 'published' (the filter's place, or the top-1 without a filter), 'outside_prob'.
    track: dict[str, NDArray[Any]] = field(default_factory=dict)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary, indent=2) + '\n', encoding='utf-8')
        return path


def _is_true(query: EvalQuery, ids: NDArray[np.int64], east: NDArray[np.float64],
             north: NDArray[np.float64], threshold_m: float) -> NDArray[np.bool_]:
    if query.positives is not None:
        return np.isin(ids, query.positives)
    if query.east is None or query.north is None:
        raise ConfigError(f'query {query.name} has neither a position nor positive ids')
    dist = np.hypot(east[ids] - query.east, north[ids] - query.north)
    return dist <= threshold_m


def _pad(row: NDArray[np.bool_], width: int) -> NDArray[np.bool_]:
    out = np.zeros(width, dtype=bool)
    out[:min(width, row.size)] = row[:width]
    return out


def evaluate_map(model: PlaceModel, database: MapDatabase, queries: Iterable[EvalQuery],
                 settings: EvalSettings | None = None, progress: Progress | None = None,
                 extra: dict[str, Any] | None = None) -> EvalResult:
    """
    Evaluate queries against an open map; see the module docstring for the metrics.

    Args:
        model: the place model the map was built with.
        database: the map.
        queries: queries with ground truth (positions in the map's ENU frame or positive ids).
        settings: thresholds, rerank depth, in-memory calibration.
        progress: called with a short line every few queries.
        extra: merged into the summary (dataset name, layout, notes).
    """
    settings = settings or EvalSettings()
    config = settings.localizer_config(model.has_reranker)
    # The evaluation fits a missing calibration in memory or reports the score as raw in its
    # summary, so the localizer's 'confidence is a raw score' warning would only repeat that.
    localizer = Localizer(model, database, config, ranking_only=True)
    stored = localizer.confidence
    calibrated = localizer.calibrated
    calibration_source = 'map manifest' if calibrated else 'none'
    calibration_info: dict[str, Any] = dict(stored.info)
    if not stored.calibrated and settings.calibrate:
        fitted = fit_map_calibration(database, model, settings.threshold_m,
                                     localizer_config=config)
        calibration_info = dict(fitted.info)
        if fitted.calibrated:
            localizer.confidence = fitted
            calibration_source = 'fitted in memory on the map images'
            # Self-calibration covers single frames only: the filtered confidence stays raw.
            calibrated = localizer.filter is None
            if localizer.filter is not None and not localizer.filter.observation.fitted:
                localizer.filter.observation = ObservationModel.from_dict(
                    fitted.info.get('observation'))
    uncalibrated = ConfidenceModel(threshold_m=settings.threshold_m)
    east = np.asarray(database.places['east'], dtype=np.float64)
    north = np.asarray(database.places['north'], dtype=np.float64)
    timings: dict[str, list[float]] = {'extract': [], 'retrieve': [], 'rerank': [], 'total': []}
    g_rows, r_rows, conf, conf_raw, names = [], [], [], [], []
    f_rows, published_right, covered = [], [], []
    track: dict[str, list[Any]] = {'true': [], 'single': [], 'published': [],
                                   'outside_prob': []}
    failures: list[dict[str, Any]] = []
    reranked = bool(config.rerank_top_n)
    for count, query in enumerate(queries):
        if settings.max_queries is not None and count >= settings.max_queries:
            break
        rgb = query.load()
        start = time.perf_counter()
        features = model.encode_rgb([rgb])
        extract_ms = (time.perf_counter() - start) * 1e3
        ids, global_scores, rerank_scores, stage_ms = localizer.rank(features.global_desc[0],
                                                                     features.local_feats[0])
        global_ids = ids[np.argsort(-global_scores, kind='stable')]
        ranking = rerank_scores if rerank_scores is not None else global_scores
        feats = confidence_features(ranking, east[ids[:len(ranking)]], north[ids[:len(ranking)]],
                                    settings.threshold_m) if ids.size else None
        # With the filter on, its own confidence replaces the single-frame one below.
        if feats is None or localizer.filter is not None:
            conf.append(0.0)
        else:
            conf.append(localizer.confidence.predict(feats))
        conf_raw.append(uncalibrated.predict(feats) if feats is not None else 0.0)
        g_true = _is_true(query, global_ids[:CURVE_MAX_N], east, north, settings.threshold_m)
        r_true = _is_true(query, ids[:CURVE_MAX_N], east, north, settings.threshold_m)
        g_rows.append(_pad(g_true, CURVE_MAX_N))
        r_rows.append(_pad(r_true, CURVE_MAX_N))
        closest, inside = query_truth(query, east, north, settings.threshold_m)
        covered.append(inside)
        published = int(ids[0]) if ids.size else -1
        right = bool(r_true[:1].any())
        outside_prob = float('nan')
        if localizer.filter is not None:
            # The published place and confidence are the filter's (the node's output).
            estimate, conf[-1] = localizer.filter_step(ids, ranking, query.stamp_s)
            published, outside_prob = estimate.place_id, estimate.outside_prob
            f_true = _is_true(query, filtered_ranking(published, ids)[:CURVE_MAX_N], east,
                              north, settings.threshold_m)
            f_rows.append(_pad(f_true, CURVE_MAX_N))
            right = bool(f_true[0])
        published_right.append(right)
        track['true'].append(closest)
        track['single'].append(int(ids[0]) if ids.size else -1)
        track['published'].append(published)
        track['outside_prob'].append(outside_prob)
        names.append(query.name)
        timings['extract'].append(extract_ms)
        timings['retrieve'].append(stage_ms.get('retrieve', 0.0))
        if 'rerank' in stage_ms:
            timings['rerank'].append(stage_ms['rerank'])
        timings['total'].append(extract_ms + sum(stage_ms.values()))
        if not r_true[:1].any() and len(failures) < MOSAIC_MAX_ROWS:
            # The query at the width of the map thumbnails it is shown beside.
            thumb = resize_to_width(rgb, DEFAULT_THUMBNAIL_WIDTH)
            failures.append({'name': query.name, 'thumb': thumb,
                             'ids': [int(v) for v in ids[:MOSAIC_TOP]],
                             'correct': [bool(v) for v in r_true[:MOSAIC_TOP]],
                             'confidence': conf[-1]})
        if progress and (count + 1) % 10 == 0:
            progress(f'{count + 1} queries')
    g_correct = np.asarray(g_rows, dtype=bool).reshape(-1, CURVE_MAX_N)
    r_correct = np.asarray(r_rows, dtype=bool).reshape(-1, CURVE_MAX_N)
    conf_arr, raw_arr = np.asarray(conf, dtype=np.float64), np.asarray(conf_raw)
    top1 = np.asarray(published_right, dtype=bool)
    in_map = np.asarray(covered, dtype=bool)
    # The published confidence, whether the published place is right and whether the map
    # covers the query, per frame too: a drive can then be scored from any frame on.
    track.update({'confidence': conf, 'right': published_right, 'in_map': covered})
    f_correct = (np.asarray(f_rows, dtype=bool).reshape(-1, CURVE_MAX_N)
                 if localizer.filter is not None else None)
    # Recall@N counts the queries the map covers (the usual convention); the rest are reported
    # under outside_map.
    summary = _summary(model, database, settings, config, reranked, g_correct[in_map],
                       r_correct[in_map], conf_arr, raw_arr, top1, timings, calibration_source,
                       calibration_info)
    summary.update(trust_summary(conf_arr, top1, in_map, settings.confidence_threshold,
                                 f_correct))
    summary.update({'filter': config.filter, 'max_speed_mps': float(config.max_speed_mps),
                    'calibrated': bool(calibrated),
                    # Per query (drive order): closest true place, single-frame top-1, published
                    # place, P(not in map) (None without a filter), published confidence,
                    # whether the published place is right, whether the map covers the query.
                    'track': {key: [None if value != value else value for value in values]
                              for key, values in track.items()}})
    summary.update(extra or {})
    for failure in failures:
        failure['thumbs'] = [database.thumbnail(i) for i in failure['ids']]
    return EvalResult(summary, g_correct, r_correct, conf_arr, raw_arr, top1, failures,
                      {key: np.asarray(values) for key, values in track.items()})


def _summary(model: PlaceModel, database: MapDatabase, settings: EvalSettings,
             config: LocalizerConfig, reranked: bool, g_correct: NDArray[np.bool_],
             r_correct: NDArray[np.bool_], conf: NDArray[np.float64],
             raw: NDArray[np.float64], top1: NDArray[np.bool_],
             timings: dict[str, list[float]], calibration_source: str,
             calibration_info: dict[str, Any]) -> dict[str, Any]:
    accepted = conf >= settings.confidence_threshold
    curve_ns = list(range(1, CURVE_MAX_N + 1))
    return {
        'backbone': model.name,
        'weights': weights_kind(model),
        'banner': model_banner(model),
        'model': model.identity(),
        'num_queries': int(top1.size),
        'num_map_places': database.num_places,
        'threshold_m': settings.threshold_m,
        'reranked': reranked,
        'rerank_top_n': int(config.rerank_top_n),
        'retrieval_top_k': int(config.retrieval_top_k),
        'recall_global': recall_at_n(g_correct),
        'recall_reranked': recall_at_n(r_correct),
        'recall_curve': {'n': curve_ns,
                         'global': list(recall_at_n(g_correct, curve_ns).values()),
                         'reranked': list(recall_at_n(r_correct, curve_ns).values())},
        'latency_ms': latency_stats(timings),
        'ece_uncalibrated': expected_calibration_error(raw, top1),
        'confidence': {
            'calibration': calibration_source,
            'calibration_info': {k: v for k, v in calibration_info.items()
                                 if not isinstance(v, np.ndarray)},
            'threshold': settings.confidence_threshold,
            'average_precision': average_precision(conf, top1),
            'roc_auc': roc_auc(conf, top1),
            'average_precision_uncalibrated': average_precision(raw, top1),
            'roc_auc_uncalibrated': roc_auc(raw, top1),
            'accepted_fraction': float(accepted.mean()) if accepted.size else 0.0,
            'precision_when_accepted': float(top1[accepted].mean()) if accepted.any() else None,
            'recall_when_accepted': (float((top1 & accepted).sum() / top1.sum())
                                     if top1.any() else None),
            'reliability': reliability_table(conf, top1),
            'reliability_uncalibrated': reliability_table(raw, top1),
        },
    }


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
    spec = load_dataset(root, layout, settings.threshold_m)
    with tempfile.TemporaryDirectory(prefix='r2former-eval-', dir=work_dir) as tmp:
        map_dir = write_dataset_map(spec, model, Path(tmp) / 'map', progress)
        database = MapDatabase.open(map_dir)
        extra = {'dataset': str(Path(root)), 'layout': layout, 'name': spec.name,
                 'notes': spec.notes}
        return evaluate_map(model, database, spec.queries, settings, progress, extra)


def evaluate_bag(model: PlaceModel, map_dir: str | Path,
                 bag_paths: str | Path | Sequence[str | Path], image_topic: str,
                 gps_topic: str, settings: EvalSettings | None = None, every: int = 1,
                 max_gap_s: float = 1.0, progress: Progress | None = None) -> EvalResult:
    """Evaluate a query bag against a map; ground truth is the query bag's GPS."""
    settings = settings or EvalSettings()
    database = MapDatabase.open(map_dir)
    queries, stats = bag_queries(bag_paths, image_topic, gps_topic, database.origin, max_gap_s,
                                 every)
    paths = [bag_paths] if isinstance(bag_paths, (str, os.PathLike)) else list(bag_paths)
    result = evaluate_map(model, database, queries, settings, progress,
                          {'map': str(map_dir), 'bags': [str(p) for p in paths],
                           'image_topic': image_topic, 'gps_topic': gps_topic})
    result.summary['bag_images'] = dict(stats)
    if result.summary['num_queries'] == 0:
        raise ConfigError(f'no query image of {image_topic} has a GPS position from {gps_topic} '
                          f'({stats})')
    return result
