"""
Calibrate the confidence on a second drive of the route: the normal case, the one to trust.

Users record a route more than once. One drive builds the map; another, with GPS, shows what
live queries against that map look like: scores of true revisits (taken on another day, from
another lane) and of false matches, and how often the top place is right. On it we fit:

1. the single-frame confidence (logistic on the features of
   :mod:`~r2former_ros.core.localize.confidence`; label: the top place is within threshold_m of
   the frame's GPS position);
2. the sequence filter's observation model (likelihood ratios from every ranked candidate,
   :func:`~r2former_ros.core.localize.fitting.fit_observation_model`, with each frame also
   seen as if the map did not cover it: its list without the places within threshold_m, so
   the filter learns what "not in the map" looks like) and its tempering (how
   much one frame's evidence counts: consecutive frames are not independent), chosen by the
   log-loss of the filter's raw posterior;
3. the filtered confidence: Platt scaling of the posterior mass within threshold_m of the
   filter's place (label: that place is within threshold_m).

Each is cross-validated in contiguous blocks of the drive (the observation model and the
scaling refitted without the held-out block), and the calibration is stored in the map's
manifest with the settings it holds for and the drive's name
(:mod:`~r2former_ros.core.localize.calibration_store`). The drive's GPS is only the label:
the filter never reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core import mapdb
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.calibration import fit_confidence
from r2former_ros.core.localize.calibration_store import (
    FilteredConfidence,
    posterior_logit,
    ranking_name,
)
from r2former_ros.core.localize.confidence import confidence_features
from r2former_ros.core.localize.fitting import (
    CV_FOLDS,
    contiguous_folds,
    expected_calibration_error,
    fit_observation_model,
    fit_platt,
)
from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig
from r2former_ros.core.localize.sequence_filter import (
    FilterConfig,
    FilterEstimate,
    ObservationModel,
    SequenceFilter,
)
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.places.base import PlaceModel

TEMPERINGS = (0.25, 0.5, 1.0)
MIN_FRAMES = 8

Progress = Callable[[str], Any]


@dataclass
class DriveFrame:
    """One ranked frame of a drive with its ground truth (map ENU metres)."""

    ids: NDArray[np.int64]  # ranked place ids that have a ranking score, best first
    scores: NDArray[np.float64]  # their ranking scores (rerank when reranked, else cosine)
    features: NDArray[np.float64]  # single-frame confidence features
    east: float  # the frame's GPS position (label only)
    north: float
    stamp_s: float | None = None
    name: str = ''


def rank_frame(localizer: Localizer, query_global: NDArray[np.float32],
               query_local: NDArray[np.float32], east: float, north: float,
               stamp_s: float | None = None, name: str = '') -> DriveFrame:
    """Rank one query and keep what calibration needs (no filter involved)."""
    ids, global_scores, rerank_scores, _ = localizer.rank(query_global, query_local)
    scores = rerank_scores if rerank_scores is not None else global_scores
    scored = np.asarray(ids[:len(scores)], dtype=np.int64)
    feats = confidence_features(scores, localizer._east[scored], localizer._north[scored],
                                localizer.config.threshold_m)
    return DriveFrame(scored, np.asarray(scores, dtype=np.float64), feats, float(east),
                      float(north), stamp_s, name)


def bag_drive_frames(localizer: Localizer, bag_paths: str | Path | Sequence[str | Path],
                     image_topic: str, gps_topic: str, every: int = 1,
                     max_gap_s: float = 1.0, progress: Progress | None = None
                     ) -> tuple[list[DriveFrame], dict[str, int]]:
    """Encode and rank every GPS-covered image of a drive bag (in time order)."""
    from r2former_ros.core.io.bag_geotag import geotagged_bag_images  # noqa: PLC0415 - rosbags

    images, stats = geotagged_bag_images(bag_paths, image_topic, gps_topic,
                                         localizer.database.origin, max_gap_s, every)
    frames: list[DriveFrame] = []
    for image in images:
        features = localizer.model.encode_rgb([image.record.rgb])
        frames.append(rank_frame(localizer, features.global_desc[0], features.local_feats[0],
                                 image.east, image.north, image.record.stamp_ns * 1e-9,
                                 image.name))
        if progress and len(frames) % 10 == 0:
            progress(f'{len(frames)} drive frames ranked')
    return frames, stats


def run_filter(frames: Iterable[DriveFrame], east: NDArray[np.float64],
               north: NDArray[np.float64], config: FilterConfig,
               observation: ObservationModel) -> list[FilterEstimate]:
    """Run a fresh filter over the frames in order (stamps drive the motion bound)."""
    filt = SequenceFilter(east, north, config, observation)
    return [filt.update(f.ids, f.scores, f.stamp_s) for f in frames]


def _labels(frames: Sequence[DriveFrame], places: NDArray[np.int64], east: NDArray[np.float64],
            north: NDArray[np.float64], threshold_m: float) -> NDArray[np.bool_]:
    truth_e = np.array([f.east for f in frames])
    truth_n = np.array([f.north for f in frames])
    return np.hypot(east[places] - truth_e, north[places] - truth_n) <= threshold_m


def _frame_truth(frames: Sequence[DriveFrame], east: NDArray[np.float64],
                 north: NDArray[np.float64], threshold_m: float
                 ) -> tuple[list[NDArray[np.bool_]], NDArray[np.int64]]:
    """
    Return, per frame, which candidates and how many map places lie within ``threshold_m``.

    A count of 0: the map does not cover the frame. One distance pass over the map per frame,
    shared by the fit and every cross-validation fold.
    """
    near, true_counts = [], []
    for f in frames:
        within = np.hypot(east - f.east, north - f.north) <= threshold_m
        near.append(within[f.ids])
        true_counts.append(int(within.sum()))
    return near, np.array(true_counts, dtype=np.int64)


def _observation(frames: Sequence[DriveFrame], near: Sequence[NDArray[np.bool_]],
                 true_counts: NDArray[np.int64], num_places: int
                 ) -> tuple[ObservationModel, dict[str, Any]]:
    scores, labels, counts = [], [], []
    outside_scores, outside_places = [], []
    for f, f_near, true_count in zip(frames, near, true_counts.tolist(), strict=True):
        if true_count:
            scores.append(f.scores)
            labels.append(f_near)
            counts.append(true_count)
        # The same frame as if the map did not cover it: its list without the places near
        # it (for a frame the map really does not cover, the list as it is).
        outside_scores.append(f.scores[~f_near])
        outside_places.append(num_places - true_count)
    return fit_observation_model(scores, labels, counts, num_places, outside_scores,
                                 outside_places)


def _log_loss(probs: NDArray[np.float64], labels: NDArray[np.bool_]) -> float:
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(labels, np.log(p), np.log(1 - p))))


def _filtered_fit(frames: Sequence[DriveFrame], train: NDArray[np.bool_],
                  truth: tuple[list[NDArray[np.bool_]], NDArray[np.int64]],
                  east: NDArray[np.float64], north: NDArray[np.float64], config: FilterConfig,
                  tempering: float | None) -> dict[str, Any]:
    """Observation model and Platt scaling fitted on the ``train`` frames; filter run on all."""
    near, true_counts = truth
    chosen = np.flatnonzero(train).tolist()
    observation, obs_stats = _observation([frames[i] for i in chosen],
                                          [near[i] for i in chosen], true_counts[chosen],
                                          east.size)
    candidates = (tempering,) if tempering is not None else TEMPERINGS
    best: dict[str, Any] | None = None
    for gamma in candidates:
        model = replace(observation, tempering=gamma)
        estimates = run_filter(frames, east, north, config, model)
        places = np.array([e.place_id for e in estimates])
        mass = np.array([e.confidence for e in estimates])
        labels = _labels(frames, places, east, north, config.threshold_m)
        loss = _log_loss(mass[train], labels[train])
        if best is None or loss < best['loss']:
            best = {'loss': loss, 'observation': model, 'mass': mass, 'labels': labels,
                    'places': places, 'estimates': estimates, 'observation_fit': obs_stats}
    assert best is not None
    logits = np.array([posterior_logit(m) for m in best['mass']])
    weight, bias = fit_platt(logits[train], best['labels'][train])
    best['platt'] = FilteredConfidence(weight, bias)
    best['probs'] = np.array([best['platt'].predict(m) for m in best['mass']])
    return best


def fit_drive_calibration(frames: Sequence[DriveFrame], east: NDArray[np.float64],
                          north: NDArray[np.float64], backbone: str, rerank_top_n: int,
                          threshold_m: float, filter_name: str = 'hmm',
                          max_speed_mps: float | None = None, drive: str | None = None,
                          folds: int = CV_FOLDS) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Fit the single-frame and (with ``filter_name='hmm'``) the filtered confidence on a drive.

    Returns:
        The manifest block (see :mod:`~r2former_ros.core.localize.calibration_store`) and a
        report: frames, top-1 accuracy and ECE (raw, in-sample, cross-validated) of each.
    """
    if len(frames) < MIN_FRAMES:
        raise ConfigError(f'only {len(frames)} drive frames with GPS (need {MIN_FRAMES})')
    if filter_name not in ('none', 'hmm'):
        raise ConfigError(f"filter '{filter_name}' must be 'none' or 'hmm'")
    east = np.asarray(east, dtype=np.float64)
    north = np.asarray(north, dtype=np.float64)
    config = (FilterConfig(threshold_m=threshold_m) if max_speed_mps is None else
              FilterConfig(threshold_m=threshold_m, max_speed_mps=max_speed_mps)).validate()
    top1 = np.array([f.ids[0] if f.ids.size else 0 for f in frames])
    single_labels = _labels(frames, top1, east, north, threshold_m)
    truth = _frame_truth(frames, east, north, threshold_m)
    truth_covered = truth[1] > 0
    features = np.stack([f.features for f in frames])
    info = {'method': 'drive with GPS', 'drive': drive, 'threshold_m': threshold_m,
            'backbone': backbone, 'ranking': 'rerank' if rerank_top_n else 'global',
            'rerank_top_n': int(rerank_top_n), 'num_outside_map': int((~truth_covered).sum())}
    single = fit_confidence(features, single_labels, threshold_m, info)
    report: dict[str, Any] = {
        'drive': drive, 'num_frames': len(frames),
        'num_outside_map': int((~truth_covered).sum()),
        'single': {'top1_right': float(single_labels.mean()),
                   'ece_raw': single.info['ece_uncalibrated'],
                   'ece_calibrated': single.info['ece_calibrated'],
                   'ece_cv': single.info['ece_calibrated_cv'], 'calibrated': single.calibrated,
                   'reason': single.info.get('reason')}}
    everything = np.ones(len(frames), dtype=bool)
    fit = _filtered_fit(frames, everything, truth, east, north, config, None)
    filtered = None
    filtered_report = None
    if filter_name == 'hmm':
        fold_of = contiguous_folds(len(frames), folds)
        held_out = np.empty(len(frames))
        for k in range(folds):
            test = fold_of == k
            fold_fit = _filtered_fit(frames, ~test, truth, east, north, config,
                                     fit['observation'].tempering)
            held_out[test] = fold_fit['probs'][test]
        filtered = fit['platt']
        filtered_report = {
            'top1_right': float(fit['labels'].mean()),
            'tempering': fit['observation'].tempering,
            'ece_raw': expected_calibration_error(fit['mass'], fit['labels']),
            'ece_calibrated': expected_calibration_error(fit['probs'], fit['labels']),
            'ece_cv': expected_calibration_error(held_out, fit['labels']),
            'platt': filtered.to_dict()}
    report['filtered'] = filtered_report
    report['observation'] = fit['observation'].to_dict()
    report['observation_fit'] = fit['observation_fit']
    filters = ['none', 'hmm'] if filter_name == 'hmm' and single.calibrated else \
        (['none'] if single.calibrated else [])
    block = {**single.to_dict(),
             'settings': {'backbone': backbone, 'ranking': ranking_name(rerank_top_n),
                          'threshold_m': float(threshold_m), 'filters': filters,
                          'max_speed_mps': config.max_speed_mps},
             'source': {'kind': 'drive', 'drive': drive},
             'observation': fit['observation'].to_dict(),
             'filtered': filtered.to_dict() if filtered is not None else None,
             'ece_cv': {'single': report['single']['ece_cv'],
                        'filtered': filtered_report['ece_cv'] if filtered_report else None,
                        'folds': folds, 'split': 'contiguous blocks'}}
    return block, report


def drive_name(bag_paths: str | Path | Sequence[str | Path]) -> str:
    """Name a drive by its bag names, joined."""
    paths = [bag_paths] if isinstance(bag_paths, (str, os.PathLike)) else list(bag_paths)
    return '+'.join(Path(p).name for p in paths)


def calibrate_on_drive(map_dir: str | Path, place_model: PlaceModel,
                       bag_paths: str | Path | Sequence[str | Path], image_topic: str,
                       gps_topic: str, config: LocalizerConfig | None = None, every: int = 1,
                       max_gap_s: float = 1.0, write: bool = True,
                       progress: Progress | None = None) -> dict[str, Any]:
    """
    Calibrate a map's confidence on a drive bag with GPS and store it in the manifest.

    Args:
        map_dir: the map (only manifest.json is rewritten, atomically).
        place_model: the model the map was built with.
        bag_paths: the drive (another recording of the route; not the map's own bag).
        image_topic: the drive's image topic.
        gps_topic: its NavSatFix topic (labels only).
        config: ranking, threshold_m, filter ('hmm' also fits the filtered confidence) and
            max_speed_mps, as the node will run them.
        every: use every N-th image.
        max_gap_s: largest gap to a GPS fix for an image to count.
        write: store the result (False: only report).
        progress: called with a short line now and then.

    Returns:
        The report of :func:`fit_drive_calibration`, plus the bag's image counts.
    """
    config = (config or LocalizerConfig()).validate()
    if config.rerank_top_n and not place_model.has_reranker:
        config = replace(config, rerank_top_n=0)
    database = MapDatabase.open(map_dir)
    localizer = Localizer(place_model, database, replace(config, filter='none'),
                          ranking_only=True)
    frames, stats = bag_drive_frames(localizer, bag_paths, image_topic, gps_topic, every,
                                     max_gap_s, progress)
    if not frames:
        raise ConfigError(f'no image of {image_topic} has a GPS position from {gps_topic} '
                          f'({stats})')
    block, report = fit_drive_calibration(
        frames, localizer._east, localizer._north, place_model.name, config.rerank_top_n,
        config.threshold_m, config.filter, config.max_speed_mps, drive_name(bag_paths))
    report['bag_images'] = stats
    report['settings'] = block['settings']
    if write:
        mapdb.write_calibration(map_dir, block)
    report['written'] = bool(write)
    return report
