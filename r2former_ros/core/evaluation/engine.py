"""
The evaluation engine: frames that went through the node's step, scored against their truth.

``r2former eval`` (datasets and bags), ``r2former localize-bag --json`` and the demo all build
a list of :class:`LocalizedFrame` (each the result of
:meth:`~r2former_ros.core.localize.localizer.Localizer.step` plus where the frame really was)
and call :func:`summarize`, so a key of the JSON means the same thing whichever tool wrote it:

Recall (single-frame ranking and the published place; over the queries the map covers, the
field's convention; the others are counted under ``outside_map``):
    ``recall_global``, ``recall_reranked``, ``recall_curve``: recall@N of the global and the
    reranked ranking; ``recall_filtered``: recall@N of the published ranking (the filter's place
    first) with the sequence filter on, else null.
What is published (every query, outside-map ones included: there nothing is right):
    ``ece``: calibration error of the published confidence against "the published place is
    right"; ``matched_fraction``, ``matched_precision``, ``matched_recall``: share of queries
    published as matched, share of those that are right, share of right published places that
    were matched; ``outside_map``: queries with no true place in the map and the share of
    them matched anyway; ``confidence``: how the published confidence was calibrated, the
    threshold, AP, ROC AUC and the reliability table.
Single frame (the top-1 of the ranking and its own confidence, every query):
    ``single_frame``: the same trust figures for the single-frame confidence, plus those of the
    uncalibrated score (the clipped top score); ``ece_uncalibrated`` repeats its ECE.
Covariance (``pose_consistency``, published matches with a true position): how many lie inside
their own 95% ellipse, and the median and 90th-percentile position error.
Per frame (``track``, drive order): true closest place, single-frame top-1, published place
(-1: none), confidence, single-frame confidence, P(not in the map), matched, right, in map,
distance of the published place to the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.calibration.fitting import expected_calibration_error, reliability_table
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.evaluation.metrics import (
    average_precision,
    latency_stats,
    recall_at_n,
    roc_auc,
)
from r2former_ros.core.evaluation.tables import model_banner, weights_kind
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.types import NO_PLACE, LocalizationResult

CURVE_MAX_N = 20
MOSAIC_TOP = 5
MOSAIC_MAX_ROWS = 12
STAGES = ('decode', 'extract', 'retrieve', 'rerank', 'filter', 'total')


@dataclass(frozen=True)
class FrameTruth:
    """Which map places are true matches of one frame, and how far the published one lies."""

    true: NDArray[np.bool_]  # (N,) per map place
    closest: int  # the closest (or a listed) true place, for plots; -1 when unknown
    distance: NDArray[np.float64] | None  # (N,) metres to each place; None without a position

    @property
    def in_map(self) -> bool:
        return bool(self.true.any())


@dataclass
class LocalizedFrame:
    """One frame through the localizer's step, with where it really was."""

    name: str
    result: LocalizationResult
    east: float | None = None  # true position in the map's ENU frame (metres)
    north: float | None = None
    positives: NDArray[np.int64] | None = None  # or the ids of its true places (VPR-Bench)
    decode_ms: float = 0.0  # image message -> RGB (bag replay), counted in the total
    truth: FrameTruth | None = None  # filled by frame_truth (once per frame)


@dataclass
class EvalResult:
    """The summary written as JSON, and the per-frame arrays the plots draw."""

    summary: dict[str, Any]
    global_correct: NDArray[np.bool_]  # (Q, CURVE_MAX_N) true at rank i (not cumulative)
    reranked_correct: NDArray[np.bool_]
    confidence: NDArray[np.float64]  # (Q,) the published confidence
    published_right: NDArray[np.bool_]  # (Q,) the published place is a true match
    single_confidence: NDArray[np.float64]  # (Q,) the single-frame confidence of the top-1
    raw_confidence: NDArray[np.float64]  # (Q,) the uncalibrated single-frame score
    single_right: NDArray[np.bool_]  # (Q,) the single-frame top-1 is a true match
    failures: list[dict[str, Any]] = field(default_factory=list)  # wrong top-1s, for the mosaic
    # Per frame, as in the summary's 'track', as arrays (NaN/-1 where unknown), plus where the
    # single-frame and the published places lie (single_east/north, published_east/north).
    track: dict[str, NDArray[Any]] = field(default_factory=dict)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary, indent=2) + '\n', encoding='utf-8')
        return path


def frame_truth(frame: LocalizedFrame, east: NDArray[np.float64], north: NDArray[np.float64],
                threshold_m: float) -> FrameTruth:
    """Mark the true places of one frame (one distance pass over the map, kept on the frame)."""
    if frame.truth is None:
        frame.truth = _truth(frame, east, north, threshold_m)
    return frame.truth


def _truth(frame: LocalizedFrame, east: NDArray[np.float64], north: NDArray[np.float64],
           threshold_m: float) -> FrameTruth:
    true = np.zeros(east.size, dtype=bool)
    if frame.positives is not None:
        positives = np.asarray(frame.positives, dtype=np.int64)
        true[positives] = True
        closest = int(round(float(positives.mean()))) if positives.size else -1
        return FrameTruth(true, closest, None)
    if frame.east is None or frame.north is None:
        raise ConfigError(f'frame {frame.name} has neither a position nor positive ids')
    distance = np.hypot(east - frame.east, north - frame.north)
    true = distance <= threshold_m
    return FrameTruth(true, int(np.argmin(distance)) if distance.size else -1, distance)


def _ranked_truth(true: NDArray[np.bool_], ids: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Per rank up to CURVE_MAX_N: is the place true (padded with False)."""
    row = np.zeros(CURVE_MAX_N, dtype=bool)
    top = ids[:CURVE_MAX_N]
    row[:top.size] = true[top]
    return row


def _published_ranking(place: int, ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Rank the published place first, then the single-frame candidates without it."""
    if place == NO_PLACE:
        return ids
    return np.r_[np.int64(place), ids[ids != place]].astype(np.int64)


def _trust(confidence: NDArray[np.float64], right: NDArray[np.bool_],
           matched: NDArray[np.bool_]) -> dict[str, Any]:
    """ECE, AP, ROC AUC and the matched figures of one confidence."""
    return {
        'ece': expected_calibration_error(confidence, right),
        'average_precision': average_precision(confidence, right),
        'roc_auc': roc_auc(confidence, right),
        'matched_fraction': float(matched.mean()) if matched.size else 0.0,
        'matched_precision': float(right[matched].mean()) if matched.any() else None,
        'matched_recall': float((right & matched).sum() / right.sum()) if right.any() else None,
        'reliability': reliability_table(confidence, right),
    }


CHI2_2DOF_95 = 5.991464547107979  # P(chi-square, 2 dof <= x) = 0.95: the 95% ellipse


def _pose_consistency(columns: dict[str, list[Any]]) -> dict[str, Any]:
    """
    Measure whether the published covariance covers the real error (published matches).

    ``within_95``: share whose true position lies inside their own 95% ellipse (a circle of
    radius ``sigma * sqrt(chi2_2(0.95))``: the covariance is diagonal with equal east/north
    variance); a covariance that means what it says gives about 0.95.
    """
    errors, sigmas = [], []
    for matched, distance, sigma in zip(columns['matched'], columns['distance_m'],
                                        columns['sigma_m'], strict=True):
        if matched and distance is not None and sigma is not None:
            errors.append(distance)
            sigmas.append(sigma)
    if not errors:
        return {'num_published': 0, 'within_95': None, 'median_error_m': None,
                'p90_error_m': None}
    error = np.asarray(errors)
    radius = np.asarray(sigmas) * math.sqrt(CHI2_2DOF_95)
    return {'num_published': int(error.size), 'within_95': float(np.mean(error <= radius)),
            'median_error_m': float(np.median(error)),
            'p90_error_m': float(np.percentile(error, 90))}


def summarize(localizer: Localizer, frames: Sequence[LocalizedFrame], *,
              calibration_source: str | None = None,
              calibration_info: dict[str, Any] | None = None,
              failures: list[dict[str, Any]] | None = None,
              extra: dict[str, Any] | None = None) -> EvalResult:
    """
    Score frames that went through ``localizer``'s step (see the module docstring for keys).

    Args:
        localizer: the localizer that produced the results (its map, model and settings).
        frames: the results with their truth, in travel order.
        calibration_source: how the published confidence was calibrated (default: from the
            localizer: 'map manifest' or 'none').
        calibration_info: the calibration's own report (default: the localizer's).
        failures: wrong top-1s with their thumbnails, for the mosaic.
        extra: merged into the summary (dataset name, bags, notes).
    """
    if not frames:
        raise ConfigError('no localized frames to evaluate')
    config = localizer.config
    threshold_m = config.threshold_m
    places = localizer.database.places
    east = np.asarray(places['east'], dtype=np.float64)
    north = np.asarray(places['north'], dtype=np.float64)
    filtering = localizer.filter is not None
    g_rows, r_rows, f_rows = [], [], []
    columns: dict[str, list[Any]] = {name: [] for name in (
        'name', 'true', 'single', 'published', 'confidence', 'single_confidence',
        'raw_confidence', 'outside_prob', 'matched', 'right', 'single_right', 'in_map',
        'distance_m', 'sigma_m', 'true_east', 'true_north')}
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for frame in frames:
        result = frame.result
        ranking, decision = result.ranking, result.decision
        if ranking is None or decision is None:
            raise ConfigError(f'frame {frame.name}: results must come from Localizer.step')
        truth = frame_truth(frame, east, north, threshold_m)
        g_rows.append(_ranked_truth(truth.true, ranking.global_order()))
        r_rows.append(_ranked_truth(truth.true, ranking.ids))
        place = decision.place_id
        if filtering:
            f_rows.append(_ranked_truth(truth.true, _published_ranking(place, ranking.ids)))
        is_right = place != NO_PLACE and bool(truth.true[place])
        distance = (float(truth.distance[place])
                    if truth.distance is not None and place != NO_PLACE else None)
        estimate = decision.estimate
        values = {
            'name': frame.name, 'true': truth.closest,
            'single': int(ranking.ids[0]) if ranking.size else NO_PLACE, 'published': place,
            'confidence': decision.confidence, 'single_confidence': decision.single_confidence,
            'raw_confidence': decision.raw_confidence,
            'outside_prob': None if estimate is None else estimate.outside_prob,
            'matched': decision.matched, 'right': is_right,
            'single_right': bool(ranking.size and truth.true[ranking.ids[0]]),
            'in_map': truth.in_map, 'distance_m': distance, 'sigma_m': decision.sigma_m,
            'true_east': frame.east,
            'true_north': frame.north}
        for key, value in values.items():
            columns[key].append(value)
        for stage in STAGES[1:-1]:
            if stage in result.timings_ms:
                timings[stage].append(result.timings_ms[stage])
        if frame.decode_ms:
            timings['decode'].append(frame.decode_ms)
        timings['total'].append(frame.decode_ms + result.timings_ms.get('total', 0.0))
    in_map = np.asarray(columns['in_map'], dtype=bool)
    g_correct = np.asarray(g_rows, dtype=bool).reshape(-1, CURVE_MAX_N)
    r_correct = np.asarray(r_rows, dtype=bool).reshape(-1, CURVE_MAX_N)
    confidence = np.asarray(columns['confidence'], dtype=np.float64)
    single_conf = np.asarray(columns['single_confidence'], dtype=np.float64)
    raw_conf = np.asarray(columns['raw_confidence'], dtype=np.float64)
    right = np.asarray(columns['right'], dtype=bool)
    single_right = np.asarray(columns['single_right'], dtype=bool)
    matched = np.asarray(columns['matched'], dtype=bool)
    threshold = float(localizer.decider.threshold)
    single_matched = single_conf >= threshold
    published = _trust(confidence, right, matched)
    single = _trust(single_conf, single_right, single_matched)
    raw = _trust(raw_conf, single_right, raw_conf >= threshold)
    model = localizer.model
    reranked = bool(config.rerank_top_n)
    curve_ns = list(range(1, CURVE_MAX_N + 1))
    source = calibration_source or ('map manifest' if localizer.calibrated else 'none')
    info = localizer.calibration.info if calibration_info is None else calibration_info
    outside = ~in_map
    summary: dict[str, Any] = {
        'backbone': model.name, 'weights': weights_kind(model), 'banner': model_banner(model),
        'model': model.identity(),
        'num_queries': len(frames), 'num_queries_in_map': int(in_map.sum()),
        'num_map_places': localizer.database.num_places, 'threshold_m': threshold_m,
        'reranked': reranked, 'rerank_top_n': int(config.rerank_top_n),
        'retrieval_top_k': int(config.retrieval_top_k),
        'filter': config.filter, 'max_speed_mps': float(config.max_speed_mps),
        'calibrated': bool(localizer.calibrated),
        'recall_global': recall_at_n(g_correct[in_map]),
        'recall_reranked': recall_at_n(r_correct[in_map]),
        'recall_curve': {'n': curve_ns,
                         'global': list(recall_at_n(g_correct[in_map], curve_ns).values()),
                         'reranked': list(recall_at_n(r_correct[in_map], curve_ns).values())},
        'recall_filtered': (recall_at_n(np.asarray(f_rows, dtype=bool)[in_map])
                            if filtering else None),
        'latency_ms': latency_stats(timings),
        'ece': published['ece'],
        'matched_fraction': published['matched_fraction'],
        'matched_precision': published['matched_precision'],
        'matched_recall': published['matched_recall'],
        'outside_map': {'num_queries': int(outside.sum()),
                        'matched_fraction': (float(matched[outside].mean())
                                             if outside.any() else None)},
        'confidence': {
            'calibration': source,
            'calibration_info': {k: v for k, v in info.items() if not isinstance(v, np.ndarray)},
            'threshold': threshold,
            'threshold_source': getattr(localizer, 'threshold_source', 'set'),
            'average_precision': published['average_precision'],
            'roc_auc': published['roc_auc'],
            'reliability': published['reliability'],
        },
        'single_frame': {
            'recall_at_1': float(single_right[in_map].mean()) if in_map.any() else 0.0,
            'calibrated': bool(localizer.calibration.single_calibrated),
            **single,
            'ece_uncalibrated': raw['ece'],
            'average_precision_uncalibrated': raw['average_precision'],
            'roc_auc_uncalibrated': raw['roc_auc'],
            'reliability_uncalibrated': raw['reliability'],
        },
        'ece_uncalibrated': raw['ece'],
        'pose_consistency': _pose_consistency(columns),
        'track': {key: [None if isinstance(v, float) and v != v else v for v in values]
                  for key, values in columns.items()},
    }
    summary.update(extra or {})
    track = {key: np.asarray([np.nan if v is None else v for v in values])
             for key, values in columns.items() if key != 'name'}
    for key in ('single', 'published'):  # where the answers lie, for the track plot
        ids = np.asarray(columns[key], dtype=np.int64)
        known = ids != NO_PLACE
        track[f'{key}_east'] = np.where(known, east[np.clip(ids, 0, None)], np.nan)
        track[f'{key}_north'] = np.where(known, north[np.clip(ids, 0, None)], np.nan)
    return EvalResult(summary, g_correct, r_correct, confidence, right, single_conf, raw_conf,
                      single_right, failures or [], track)
