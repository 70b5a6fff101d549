"""
Calibrate the confidence on a second drive of the route: the normal case, the one to trust.

Users record a route more than once. One drive builds the map; another, with GPS, shows what
live queries against that map look like: scores of true revisits (taken on another day, from
another lane) and of false matches, and how often the top place is right. On it we fit:

1. the single-frame confidence (logistic on the features of
   :mod:`~r2former_ros.core.localize.confidence`; label: the top place is within threshold_m of
   the frame's GPS position);
2. the sequence filter's observation model (likelihood ratios from every ranked candidate,
   :func:`~r2former_ros.core.calibration.fitting.fit_observation_model`, with each frame also
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
from r2former_ros.core.calibration.fitting import (
    CV_FOLDS,
    choose_operating_point,
    contiguous_folds,
    expected_calibration_error,
    fit_observation_model,
    fit_platt,
    predict_logistic,
)
from r2former_ros.core.calibration.self_calibration import cross_validated_probs, fit_confidence
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.io.bag_truth import TruthSource
from r2former_ros.core.localize.calibration_store import (
    AppliedCalibration,
    ErrorModel,
    FilteredConfidence,
    posterior_logit,
    ranking_name,
)
from r2former_ros.core.localize.confidence import ConfidenceModel
from r2former_ros.core.localize.decision import Decider
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.localize.odometry import OdometryTrack
from r2former_ros.core.localize.sequence_filter import ObservationModel
from r2former_ros.core.localize.settings import DEFAULT_TARGET_PRECISION, LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.types import NO_PLACE, FilterEstimate, LocalizationResult, Ranking

TEMPERINGS = (0.25, 0.5, 1.0)
MIN_FRAMES = 8

Progress = Callable[[str], Any]


@dataclass
class DriveFrame:
    """One ranked frame of a drive with its ground truth (map ENU metres)."""

    ranking: Ranking  # the frame's retrieved places, best first
    features: NDArray[np.float64]  # single-frame confidence features (from the step)
    raw_confidence: float  # the uncalibrated single-frame confidence (from the step)
    east: float  # the frame's GPS position (label only)
    north: float
    stamp_s: float | None = None
    name: str = ''
    odom_distance_m: float | None = None  # odometry since the previous frame (None: without)

    @property
    def ids(self) -> NDArray[np.int64]:
        """The ranked places that have a ranking score, best first."""
        return self.ranking.scored_ids

    @property
    def scores(self) -> NDArray[np.float64]:
        """Their ranking scores (rerank when reranked, else cosine)."""
        return np.asarray(self.ranking.scores, dtype=np.float64)


def drive_frame(result: LocalizationResult, east: float, north: float,
                stamp_s: float | None = None, name: str = '') -> DriveFrame:
    """Keep what calibration needs from one step of a localizer (filter off) on a drive frame."""
    if result.ranking is None or result.decision is None:
        raise ConfigError('a drive frame needs the result of Localizer.step')
    return DriveFrame(result.ranking, result.decision.features, result.decision.raw_confidence,
                      float(east), float(north), stamp_s, name, result.decision.odom_distance_m)


def bag_drive_frames(localizer: Localizer, bag_paths: str | Path | Sequence[str | Path],
                     image_topic: str, gps_topic: str | None, every: int = 1,
                     max_gap_s: float = 1.0, progress: Progress | None = None, *,
                     pose_topic: str | None = None
                     ) -> tuple[list[DriveFrame], dict[str, int]]:
    """
    Encode and rank every image of a drive bag its truth covers (in time order).

    The truth is the drive's GPS (``gps_topic``, a GPS map) or its poses in the map's frame
    (``pose_topic``, a map built from poses); exactly one of the two.
    """
    # rosbags only when a drive is read
    from r2former_ros.core.io.bag_geotag import geotagged_bag_images  # noqa: PLC0415
    from r2former_ros.core.io.bag_truth import TruthSource  # noqa: PLC0415

    truth = TruthSource.from_topics(gps_topic, pose_topic).read_for(bag_paths,
                                                                   localizer.database)
    images, stats = geotagged_bag_images(bag_paths, image_topic, truth, max_gap_s, every)
    frames: list[DriveFrame] = []
    for image in images:
        stamp_s = image.record.stamp_ns * 1e-9
        result, _ = localizer.localize_image(image.record.rgb, token_pairs=False,
                                             stamp_s=stamp_s)
        frames.append(drive_frame(result, image.east, image.north, stamp_s, image.name))
        if progress and len(frames) % 10 == 0:
            progress(f'{len(frames)} drive frames ranked')
    return frames, stats


def run_filter(frames: Iterable[DriveFrame], east: NDArray[np.float64],
               north: NDArray[np.float64], config: LocalizerConfig,
               observation: ObservationModel) -> list[FilterEstimate]:
    """
    Replay the frames, in order, through a fresh decider with this observation model.

    The filter runs exactly as the node runs it (stamps drive the motion bound); fitting reads
    its raw estimate (the posterior mass before any Platt scaling).
    """
    uncalibrated = AppliedCalibration(ConfidenceModel(threshold_m=config.threshold_m), None,
                                      observation, False)
    # The decision's threshold does not matter here: fitting reads the raw estimate.
    decider = Decider(east, north, replace(config, filter='hmm', confidence_threshold=0.5),
                      uncalibrated)
    estimates = []
    for f in frames:
        estimate = decider.decide(f.ranking, stamp_s=f.stamp_s,
                                  odom_distance_m=f.odom_distance_m).estimate
        assert estimate is not None  # the decider filters
        estimates.append(estimate)
    return estimates


def _labels(frames: Sequence[DriveFrame], places: NDArray[np.int64], east: NDArray[np.float64],
            north: NDArray[np.float64], threshold_m: float) -> NDArray[np.bool_]:
    """Whether each frame's place is within threshold_m of its truth (no place: wrong)."""
    truth_e = np.array([f.east for f in frames])
    truth_n = np.array([f.north for f in frames])
    known = np.clip(places, 0, None)
    near = np.hypot(east[known] - truth_e, north[known] - truth_n) <= threshold_m
    return near & (places != NO_PLACE)


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
                  east: NDArray[np.float64], north: NDArray[np.float64],
                  config: LocalizerConfig, tempering: float | None) -> dict[str, Any]:
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
                          north: NDArray[np.float64], backbone: str, config: LocalizerConfig,
                          drive: str | None = None, folds: int = CV_FOLDS,
                          target_precision: float = DEFAULT_TARGET_PRECISION
                          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Fit the single-frame and (with ``config.filter == 'hmm'``) the filtered confidence.

    Args:
        frames: the drive's ranked frames, in time order.
        east: (N,) the map places' ENU east.
        north: (N,) their north.
        backbone: the model's backbone name (stored with the settings).
        config: the settings the node will run (ranking, threshold_m, filter, max_speed_mps).
        drive: the drive's name (stored as the source).
        folds: cross-validation folds (contiguous blocks of the drive).
        target_precision: the precision "matched" must keep: the operating point stored for
            each confidence is the lowest threshold whose held-out precision on this drive,
            with a 95% Wilson lower bound for its size, reaches it.

    Returns:
        The manifest block (see :mod:`~r2former_ros.core.localize.calibration_store`) and a
        report: frames, top-1 accuracy and ECE (raw, in-sample, cross-validated) of each, and
        the operating points.
    """
    if len(frames) < MIN_FRAMES:
        raise ConfigError(f'only {len(frames)} drive frames with a true position '
                          f'(need {MIN_FRAMES})')
    config = config.validate()
    # 'auto' calibrates the filter: that is what makes 'auto' turn it on.
    filter_name = 'none' if config.filter == 'none' else 'hmm'
    threshold_m, rerank_top_n = config.threshold_m, config.rerank_top_n
    east = np.asarray(east, dtype=np.float64)
    north = np.asarray(north, dtype=np.float64)
    top1 = np.array([f.ranking.ids[0] if f.ranking.size else NO_PLACE for f in frames])
    single_labels = _labels(frames, top1, east, north, threshold_m)
    truth = _frame_truth(frames, east, north, threshold_m)
    truth_covered = truth[1] > 0
    features = np.stack([f.features for f in frames])
    info = {'method': 'drive with true positions (GPS or poses)', 'drive': drive,
            'threshold_m': threshold_m,
            'backbone': backbone, 'ranking': 'rerank' if rerank_top_n else 'global',
            'rerank_top_n': int(rerank_top_n), 'num_outside_map': int((~truth_covered).sum())}
    raw = np.array([f.raw_confidence for f in frames])
    single = fit_confidence(features, single_labels, raw, threshold_m, info)
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
    single_cv = cross_validated_probs(features, single_labels.astype(np.float64), folds)
    operating_points = {'none': choose_operating_point(
        single_cv if single_cv is not None else
        predict_logistic(np.asarray(single.weights or [0.0] * features.shape[1]), single.bias,
                         features), single_labels, target_precision)}
    published = top1
    published_right = single_labels
    if filter_name == 'hmm':
        operating_points['hmm'] = choose_operating_point(held_out, fit['labels'],
                                                         target_precision)
        published, published_right = fit['places'], fit['labels']
    for name, point in operating_points.items():
        point['basis'] = 'cross-validated' if name == 'hmm' or single_cv is not None \
            else 'in-sample'
    report['operating_points'] = operating_points
    error_model = fit_error_model(frames, published, published_right, east, north, threshold_m)
    report['error_model'] = error_model.to_dict()
    report['observation'] = fit['observation'].to_dict()
    report['observation_fit'] = fit['observation_fit']
    filters = ['none', 'hmm'] if filter_name == 'hmm' and single.calibrated else \
        (['none'] if single.calibrated else [])
    block = {**single.to_dict(),
             'settings': {'backbone': backbone, 'ranking': ranking_name(rerank_top_n),
                          'threshold_m': float(threshold_m), 'filters': filters,
                          'max_speed_mps': config.max_speed_mps,
                          'odometry': any(f.odom_distance_m is not None for f in frames)},
             'source': {'kind': 'drive', 'drive': drive},
             'observation': fit['observation'].to_dict(),
             'filtered': filtered.to_dict() if filtered is not None else None,
             'ece_cv': {'single': report['single']['ece_cv'],
                        'filtered': filtered_report['ece_cv'] if filtered_report else None,
                        'folds': folds, 'split': 'contiguous blocks'},
             'operating_points': operating_points,
             'error_model': error_model.to_dict()}
    return block, report


def fit_error_model(frames: Sequence[DriveFrame], places: NDArray[np.int64],
                    right: NDArray[np.bool_], east: NDArray[np.float64],
                    north: NDArray[np.float64], threshold_m: float) -> ErrorModel:
    """
    Per-axis spread of the published places' errors on the drive: right ones and wrong ones.

    The RMS of each class divided by sqrt(2) (two axes); a class the drive never saw keeps the
    default (``ErrorModel.default``), and wrong matches never spread less than right ones.
    """
    default = ErrorModel.default(threshold_m)
    known = places != NO_PLACE
    if not known.any():
        return default
    index = np.clip(places, 0, None)
    error = np.hypot(east[index] - np.array([f.east for f in frames]),
                     north[index] - np.array([f.north for f in frames]))

    def spread(mask: NDArray[np.bool_], fallback: float) -> float:
        chosen = error[mask & known]
        return float(np.sqrt(np.mean(chosen ** 2) / 2.0)) if chosen.size else fallback

    sigma_right = max(spread(right, default.sigma_right_m), 1e-3)
    sigma_wrong = max(spread(~right, default.sigma_wrong_m), sigma_right)
    return ErrorModel(sigma_right, sigma_wrong, True)


def drive_name(bag_paths: str | Path | Sequence[str | Path]) -> str:
    """Name a drive by its bag names, joined."""
    paths = [bag_paths] if isinstance(bag_paths, (str, os.PathLike)) else list(bag_paths)
    return '+'.join(Path(p).name for p in paths)


def calibrate_on_drive(map_dir: str | Path, place_model: PlaceModel,
                       bag_paths: str | Path | Sequence[str | Path], image_topic: str,
                       gps_topic: str | None, config: LocalizerConfig | None = None,
                       every: int = 1, max_gap_s: float = 1.0, write: bool = True,
                       progress: Progress | None = None,
                       odom_topic: str | None = None,
                       target_precision: float = DEFAULT_TARGET_PRECISION, *,
                       pose_topic: str | None = None) -> dict[str, Any]:
    """
    Calibrate a map's confidence on a drive bag with its truth and store it in the manifest.

    Args:
        map_dir: the map (only manifest.json is rewritten, atomically).
        place_model: the model the map was built with.
        bag_paths: the drive (another recording of the route; not the map's own bag).
        image_topic: the drive's image topic.
        gps_topic: its NavSatFix topic (labels only), for a GPS map; else None.
        config: ranking, threshold_m, filter ('hmm' also fits the filtered confidence) and
            max_speed_mps, as the node will run them.
        every: use every N-th image.
        max_gap_s: largest gap to a GPS fix for an image to count.
        write: store the result (False: only report).
        progress: called with a short line now and then.
        odom_topic: the drive's odometry topic: the filter is fitted with the distances it
            gives, as a node reading odometry runs it (the calibration then holds only with
            odometry).
        target_precision: the precision the stored operating point keeps (see
            :func:`fit_drive_calibration`).
        pose_topic: instead of ``gps_topic``, for a map built from poses: the drive's poses
            in the map's frame (labels only).

    Returns:
        The report of :func:`fit_drive_calibration`, plus the bag's image counts.
    """
    config = (config or LocalizerConfig()).validate()
    database = MapDatabase.open(map_dir)
    odometry = OdometryTrack.from_bag(bag_paths, odom_topic) if odom_topic else None
    localizer = Localizer(place_model, database, replace(config, filter='none'),
                          ranking_only=True, odometry=odometry)
    frames, stats = bag_drive_frames(localizer, bag_paths, image_topic, gps_topic, every,
                                     max_gap_s, progress, pose_topic=pose_topic)
    if not frames:
        what = TruthSource.from_topics(gps_topic, pose_topic).describe()
        raise ConfigError(f'no image of {image_topic} has a true position from {what} '
                          f'({stats})')
    places = database.places
    block, report = fit_drive_calibration(frames, places['east'], places['north'],
                                          place_model.name, config, drive_name(bag_paths),
                                          target_precision=target_precision)
    report['bag_images'] = stats
    report['settings'] = block['settings']
    if write:  # refused if the map changed (appended, recalibrated) while the drive was fitted
        mapdb.write_calibration(map_dir, block,
                                expected_manifest_sha256=database.identity.manifest_sha256)
    report['written'] = bool(write)
    return report
