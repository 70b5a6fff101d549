"""
Recall, confidence quality and latency from results the localizer already produced.

`r2former eval` ranks every query itself. A caller that has just localized a traverse through
the node's code (``r2former localize-bag``'s replay, which also writes the result bag) measures
on those results instead of localizing every image a second time. The results must carry every
retrieved candidate (``result_top_k == retrieval_top_k``): the global-only ranking is their order
by global score, the reranked ranking their order as published.

The sequence filter is measured on the same frames: their rankings are fed, in order, to a
filtering localizer's :meth:`~r2former_ros.core.localize.localizer.Localizer.filter_step`
(no image is encoded again), which is what the node does with ``filter: hmm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.evaluation import (
    CURVE_MAX_N,
    EvalResult,
    average_precision,
    latency_stats,
    model_banner,
    recall_at_n,
    roc_auc,
    weights_kind,
)
from r2former_ros.core.localize.calibration import expected_calibration_error, reliability_table
from r2former_ros.core.localize.confidence import ConfidenceModel, confidence_features
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.types import LocalizationResult

STAGES = ('decode', 'extract', 'retrieve', 'rerank', 'filter', 'total')


@dataclass
class LocalizedQuery:
    """One localized query image and where it really was."""

    name: str
    stamp_ns: int
    result: LocalizationResult
    east: float  # true position in the map's ENU frame (metres)
    north: float
    decode_ms: float = 0.0


@dataclass
class FilteredTrack:
    """The sequence filter's answer per query (same order as the queries)."""

    place_ids: NDArray[np.int64]
    confidence: NDArray[np.float64]
    filter_ms: list[float]
    calibrated: bool  # the filtered confidence is calibrated (else the raw posterior mass)


def _ranking(result: LocalizationResult) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Place ids and the scores the confidence is computed from (rerank when reranked)."""
    ids = np.array([c.place_id for c in result.candidates], dtype=np.int64)
    rerank = [c.rerank_score for c in result.candidates if c.rerank_score is not None]
    if rerank:
        return ids, np.asarray(rerank, dtype=np.float64)
    return ids, np.array([c.global_score for c in result.candidates], dtype=np.float64)


def run_filter(filtering: Localizer, queries: Sequence[LocalizedQuery]) -> FilteredTrack:
    """Feed the queries' rankings, in order, to a localizer whose sequence filter is on."""
    filtering.reset_filter()
    place_ids, confidence, spent = [], [], []
    for query in queries:
        ids, scores = _ranking(query.result)
        start = time.perf_counter()
        estimate, conf = filtering.filter_step(ids, scores, stamp_s=query.stamp_ns * 1e-9)
        spent.append((time.perf_counter() - start) * 1e3)
        place_ids.append(estimate.place_id)
        confidence.append(conf)
    return FilteredTrack(np.asarray(place_ids, dtype=np.int64),
                         np.asarray(confidence, dtype=np.float64), spent, filtering.calibrated)


def _confidence_block(conf: NDArray[np.float64], right: NDArray[np.bool_],
                      threshold: float) -> dict[str, Any]:
    published = conf >= threshold
    return {
        'ece': expected_calibration_error(conf, right),
        'published_fraction': float(published.mean()) if published.size else 0.0,
        'precision_when_published': float(right[published].mean()) if published.any() else None,
        'average_precision': average_precision(conf, right),
        'roc_auc': roc_auc(conf, right),
        'reliability': reliability_table(conf, right),
    }


def evaluate_localized(localizer: Localizer, queries: Sequence[LocalizedQuery],
                       filtered: FilteredTrack | None = None,
                       extra: dict[str, Any] | None = None) -> EvalResult:
    """
    Measure recall@N, confidence quality and latency of already localized queries.

    Args:
        localizer: the localizer that produced the results (its map, model and settings).
        queries: the results with their true positions, in travel order.
        filtered: the sequence filter's answers for the same queries, if measured.
        extra: merged into the summary.

    Returns:
        An :class:`~r2former_ros.core.evaluation.EvalResult` whose summary has the keys of
        ``r2former eval`` (so its plots and table work), plus ``filtered`` when given and
        ``per_query`` (best place, distance to the truth, confidence) for trajectory plots.
    """
    if not queries:
        raise ConfigError('no localized queries to evaluate')
    config = localizer.config
    if config.result_top_k < min(config.retrieval_top_k, localizer.database.num_places):
        raise ConfigError('results must carry every retrieved candidate: set result_top_k to '
                          f'retrieval_top_k ({config.retrieval_top_k})')
    threshold_m = config.threshold_m
    places = localizer.database.places
    east = np.asarray(places['east'], dtype=np.float64)
    north = np.asarray(places['north'], dtype=np.float64)
    raw_model = ConfidenceModel(threshold_m=threshold_m)
    g_rows, r_rows, conf, conf_raw, best_ids, dist = [], [], [], [], [], []
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for query in queries:
        result = query.result
        ids = np.array([c.place_id for c in result.candidates], dtype=np.int64)
        global_scores = np.array([c.global_score for c in result.candidates])
        global_ids = ids[np.argsort(-global_scores, kind='stable')]
        g_rows.append(_correct(global_ids, east, north, query, threshold_m))
        r_rows.append(_correct(ids, east, north, query, threshold_m))
        ranked_ids, scores = _ranking(result)
        scored = ranked_ids[:len(scores)]
        feats = confidence_features(scores, east[scored], north[scored], threshold_m) \
            if scored.size else None
        # The single-frame confidence the node publishes without the filter.
        conf.append(localizer.confidence.predict(feats) if feats is not None else 0.0)
        conf_raw.append(raw_model.predict(feats) if feats is not None else 0.0)
        best = int(ids[0]) if ids.size else -1
        best_ids.append(best)
        dist.append(_distance(best, east, north, query))
        for stage in STAGES[1:-1]:
            if stage in result.timings_ms:
                timings[stage].append(result.timings_ms[stage])
        timings['decode'].append(query.decode_ms)
        timings['total'].append(query.decode_ms + result.timings_ms.get('total', 0.0))
    g_correct = np.asarray(g_rows, dtype=bool)
    r_correct = np.asarray(r_rows, dtype=bool)
    conf_arr, raw_arr = np.asarray(conf), np.asarray(conf_raw)
    top1 = r_correct[:, 0]
    reranked = bool(config.rerank_top_n)
    curve_ns = list(range(1, CURVE_MAX_N + 1))
    single = _confidence_block(conf_arr, top1, config.confidence_threshold)
    model = localizer.model
    summary: dict[str, Any] = {
        'backbone': model.name, 'weights': weights_kind(model), 'banner': model_banner(model),
        'model': model.identity(), 'num_queries': len(queries),
        'num_map_places': localizer.database.num_places, 'threshold_m': threshold_m,
        'reranked': reranked, 'rerank_top_n': int(config.rerank_top_n),
        'retrieval_top_k': int(config.retrieval_top_k),
        'recall_global': recall_at_n(g_correct), 'recall_reranked': recall_at_n(r_correct),
        'recall_curve': {'n': curve_ns,
                         'global': list(recall_at_n(g_correct, curve_ns).values()),
                         'reranked': list(recall_at_n(r_correct, curve_ns).values())},
        'latency_ms': latency_stats(timings),
        'ece': single['ece'],
        'ece_uncalibrated': expected_calibration_error(raw_arr, top1),
        'confidence': {
            'calibration': 'calibrated on the map' if localizer.calibrated else 'raw score',
            'threshold': config.confidence_threshold,
            'average_precision': single['average_precision'], 'roc_auc': single['roc_auc'],
            'accepted_fraction': single['published_fraction'],
            'precision_when_accepted': single['precision_when_published'],
            'reliability': single['reliability'],
            'reliability_uncalibrated': reliability_table(raw_arr, top1),
        },
        'per_query': {'name': [q.name for q in queries], 'best_place': best_ids,
                      'distance_m': dist, 'confidence': [float(v) for v in conf_arr],
                      'true_east': [q.east for q in queries],
                      'true_north': [q.north for q in queries]},
    }
    if filtered is not None:
        summary['filtered'] = _filtered_summary(filtered, queries, east, north, threshold_m,
                                                config.confidence_threshold)
        summary['latency_ms'].update(latency_stats({'filter': filtered.filter_ms}))
    summary.update(extra or {})
    return EvalResult(summary, g_correct, r_correct, conf_arr, raw_arr, top1)


def _filtered_summary(filtered: FilteredTrack, queries: Sequence[LocalizedQuery],
                      east: NDArray[np.float64], north: NDArray[np.float64], threshold_m: float,
                      confidence_threshold: float) -> dict[str, Any]:
    dist = [_distance(int(pid), east, north, q)
            for pid, q in zip(filtered.place_ids, queries, strict=True)]
    right = np.asarray([d <= threshold_m for d in dist], dtype=bool)
    block = _confidence_block(filtered.confidence, right, confidence_threshold)
    return {'recall_at_1': float(right.mean()), **block,
            'calibration': 'calibrated on the map' if filtered.calibrated else 'raw posterior',
            'best_place': [int(v) for v in filtered.place_ids], 'distance_m': dist}


def _correct(ids: NDArray[np.int64], east: NDArray[np.float64], north: NDArray[np.float64],
             query: LocalizedQuery, threshold_m: float) -> NDArray[np.bool_]:
    row = np.zeros(CURVE_MAX_N, dtype=bool)
    top = ids[:CURVE_MAX_N]
    row[:top.size] = np.hypot(east[top] - query.east, north[top] - query.north) <= threshold_m
    return row


def _distance(place_id: int, east: NDArray[np.float64], north: NDArray[np.float64],
              query: LocalizedQuery) -> float:
    if place_id < 0:
        return math.inf
    return float(math.hypot(east[place_id] - query.east, north[place_id] - query.north))
