"""Calibration on a second drive, the settings it holds for, contiguous-block CV, subsampling."""

import logging

from map_factory import write_route_map
from model_factory import small_place_model
import numpy as np
import pytest

from r2former_ros.core.calibration.drive import DriveFrame, drive_frame, fit_drive_calibration
from r2former_ros.core.calibration.fitting import (
    contiguous_folds,
    fit_observation_model,
    fit_platt,
)
from r2former_ros.core.calibration.self_calibration import (
    calibrate_map,
    cross_validated_probs,
    even_subsample,
)
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.calibration_store import CalibrationSettings, apply_calibration
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.localize.sequence_filter import SequenceFilter
from r2former_ros.core.localize.settings import LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase, write_calibration
from r2former_ros.core.types import Ranking

GLOBAL_ONLY = LocalizerConfig(rerank_top_n=0, filter='none')


def test_contiguous_folds_are_blocks_not_round_robin():
    folds = contiguous_folds(10, 5)
    assert folds.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # Uneven sizes still cover every sample once, in order.
    folds = contiguous_folds(13, 5)
    assert np.all(np.diff(folds) >= 0) and set(folds.tolist()) == set(range(5))


def test_cross_validation_holds_out_whole_blocks():
    # A drive whose second half is a different regime: feature 1 predicts the label in the
    # first half, the opposite in the second. Round-robin folds would see both regimes in
    # training and predict well; contiguous blocks cannot, and say so with a worse fit.
    n = 100
    x = np.c_[np.tile([0.0, 1.0], n // 2)]
    y = np.r_[np.tile([0.0, 1.0], n // 4), np.tile([1.0, 0.0], n // 4)]
    cv = cross_validated_probs(x, y, folds=2)
    # Fold 0 (first half) is predicted by a model fitted on the second half: backwards.
    assert np.mean((cv[:50] > 0.5) == y[:50].astype(bool)) < 0.1


def test_even_subsample():
    picked = even_subsample(5000, 2000)
    assert picked.size == 2000 and picked[0] == 0 and picked[-1] == 4999
    assert np.all(np.diff(picked) >= 2) and np.all(np.diff(picked) <= 3)
    assert even_subsample(10, None).tolist() == list(range(10))
    assert even_subsample(10, 50).size == 10


def test_platt_is_finite_when_every_frame_was_right():
    logits = np.linspace(-1.0, 4.0, 30)
    weight, bias = fit_platt(logits, np.ones(30, dtype=bool))
    assert np.isfinite(weight) and np.isfinite(bias) and weight > 0.5
    # Mixed labels that follow the logits: the fit stays near the identity.
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    labels = rng.random(4000) < 1 / (1 + np.exp(-z))
    weight, bias = fit_platt(z, labels)
    assert weight == pytest.approx(1.0, abs=0.15) and bias == pytest.approx(0.0, abs=0.15)


def test_observation_model_ratios_rise_with_the_score():
    rng = np.random.default_rng(1)
    scores, labels = [], []
    for _ in range(200):
        s = np.sort(rng.uniform(0.2, 0.5, 20))[::-1]
        truth = rng.integers(0, 3)
        s[truth] += 0.4
        order = np.argsort(-s)
        scores.append(s[order])
        labels.append((np.arange(20) == truth)[order])
    model, stats = fit_observation_model(scores, labels, np.ones(200), num_places=500)
    assert model.fitted and stats['reason'] is None
    ratios, floor = model.ratios(np.array([0.85, 0.4, 0.3]))
    assert ratios[0] > 10 and ratios[0] > ratios[1] >= floor


def synthetic_drive(num_places: int = 80, frames: int = 60, seed: int = 2):
    """Places every 10 m; a drive at 10 m/s whose top-K is right most of the time."""
    rng = np.random.default_rng(seed)
    east, north = np.arange(num_places) * 10.0, np.zeros(num_places)
    drive = []
    for t in range(frames):
        truth = 5 + t
        scores = 0.3 + 0.05 * rng.standard_normal(num_places)
        scores += 0.5 * np.exp(-((east - east[truth]) / 15.0) ** 2)
        if rng.random() < 0.25:
            scores[rng.integers(num_places)] += 0.6
        ids = np.argsort(-scores)[:20]
        top = scores[ids]
        feats = np.array([top[0], top[0] - top[1], 0.5])
        drive.append(DriveFrame(Ranking(ids, top.astype(np.float32)), feats,
                                float(np.clip(top[0], 0.0, 1.0)), east[truth] + 1.0, 1.0,
                                float(t)))
    return drive, east, north


def test_drive_calibration_fits_both_confidences_and_names_its_settings():
    drive, east, north = synthetic_drive()
    config = LocalizerConfig(rerank_top_n=0, threshold_m=25.0, filter='hmm', max_speed_mps=20.0)
    block, report = fit_drive_calibration(drive, east, north, 'r2former', config,
                                          'second_drive.bag')
    assert block['settings'] == {'backbone': 'r2former', 'ranking': 'global',
                                 'threshold_m': 25.0, 'filters': ['none', 'hmm'],
                                 'max_speed_mps': 20.0, 'odometry': False}
    assert block['source'] == {'kind': 'drive', 'drive': 'second_drive.bag'}
    assert block['ece_cv']['split'] == 'contiguous blocks'
    assert block['observation']['fitted'] and block['filtered']['weights']
    # The filter beats single frames on this drive and both calibrated ECEs are reported.
    assert report['filtered']['top1_right'] > report['single']['top1_right']
    assert report['filtered']['ece_cv'] is not None and report['single']['ece_cv'] is not None


def test_settings_mismatch_gives_raw_scores():
    drive, east, north = synthetic_drive()
    block, _ = fit_drive_calibration(drive, east, north, 'r2former',
                                     LocalizerConfig(rerank_top_n=0, filter='none'))
    ok = apply_calibration(block, CalibrationSettings('r2former', 'global', 'none', 25.0))
    assert ok.calibrated and ok.single.calibrated and ok.single_calibrated
    for running, what in (
            (CalibrationSettings('dinov2-s14', 'global', 'none', 25.0), 'backbone'),
            (CalibrationSettings('r2former', 'rerank_top_100', 'none', 25.0), 'ranking'),
            (CalibrationSettings('r2former', 'global', 'none', 10.0), 'threshold_m')):
        applied = apply_calibration(block, running)
        assert not applied.calibrated and not applied.single.calibrated
        assert not applied.single_calibrated and what in applied.mismatch
    # A filter the block was not fitted for: the published (filtered) confidence is raw, while
    # the single-frame one, which does not depend on the filter, stays calibrated.
    applied = apply_calibration(block, CalibrationSettings('r2former', 'global', 'hmm', 25.0))
    assert not applied.calibrated and applied.filtered is None and 'filter' in applied.mismatch
    assert applied.single_calibrated and applied.single.calibrated


@pytest.fixture(scope='module')
def route_map(tmp_path_factory):
    model = small_place_model()
    path, world = write_route_map(tmp_path_factory.mktemp('drive') / 'map', model,
                                  num_places=25)
    return model, path, world


def test_localizer_warns_once_and_says_uncalibrated(route_map, caplog):
    model, path, world = route_map
    info = calibrate_map(path, model, localizer_config=GLOBAL_ONLY, progress=False)
    assert info['calibrated']
    # Map images score far higher against their own traverse than a second drive does:
    # "outside the map" learned from them would reject real frames, so none is shown.
    assert info['observation_fit']['outside_frames'] == 0
    database = MapDatabase.open(path)
    assert database.manifest['calibration']['settings']['ranking'] == 'global'
    features = model.encode_rgb(world.query_images[:3])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        matching = Localizer(model, database, GLOBAL_ONLY)
    assert not [r for r in caplog.records if 'raw score' in r.getMessage()]
    result = matching.step(features.global_desc[0], features.local_feats[0])
    assert result.calibrated
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        other = Localizer(model, database, LocalizerConfig(rerank_top_n=0, threshold_m=10.0))
        results = [other.step(features.global_desc[i], features.local_feats[i])
                   for i in range(3)]
    warnings = [r for r in caplog.records if 'raw score' in r.getMessage()]
    assert len(warnings) == 1 and 'threshold_m' in warnings[0].getMessage()
    assert not any(r.calibrated for r in results)
    # The raw score is the clipped top cosine.
    top = float(results[0].ranking.global_scores[0])
    assert results[0].confidence == pytest.approx(min(max(top, 0.0), 1.0))


def test_filtered_localizer_publishes_the_posterior_place(route_map):
    model, path, world = route_map
    database = MapDatabase.open(path)
    config = LocalizerConfig(rerank_top_n=0, filter='hmm', max_speed_mps=15.0)
    single_frame = Localizer(model, database, GLOBAL_ONLY)
    features = model.encode_rgb(world.query_images)
    drive = [drive_frame(single_frame.step(features.global_desc[i], features.local_feats[i]),
                         float(world.query_east[i]), 0.0, float(i))
             for i in range(len(world.query_images))]
    places = database.places
    block, _ = fit_drive_calibration(drive, places['east'], places['north'], model.name, config,
                                     'route queries')
    write_calibration(path, block)
    localizer = Localizer(model, MapDatabase.open(path), config)
    assert localizer.calibrated
    results = [localizer.step(features.global_desc[i], features.local_feats[i],
                              stamp_s=float(i))
               for i in range(len(world.query_images))]
    for result in results:
        assert result.filtered_best is not None and result.best is result.filtered_best
        assert result.calibrated and result.outside_prob is not None
        # Candidates keep their single-frame order and scores.
        scores = [c.global_score for c in result.candidates]
        assert scores == sorted(scores, reverse=True)
    localizer.reset_filter()
    first = localizer.step(features.global_desc[5], features.local_feats[5], stamp_s=100.0)
    assert first.filtered_best is not None
    # With the filter off, the contract's `best` is the top candidate.
    plain = Localizer(model, MapDatabase.open(path), GLOBAL_ONLY)
    single = plain.step(features.global_desc[5], features.local_feats[5])
    assert single.filtered_best is None and single.best is single.candidates[0]


def outside_aware_fits(boost: float = 0.3):
    """Observation models fitted without and with each frame's "not in the map" view."""
    rng = np.random.default_rng(1)
    scores, labels, outside = [], [], []
    for _ in range(200):
        s = np.sort(rng.uniform(0.2, 0.5, 20))[::-1]
        truth = rng.integers(0, 3)
        s[truth] += boost
        order = np.argsort(-s)
        scores.append(s[order])
        labels.append((np.arange(20) == truth)[order])
        rest = np.delete(s, truth)
        outside.append(np.sort(rest)[::-1])
    blind, _ = fit_observation_model(scores, labels, np.ones(200), num_places=500)
    seen, stats = fit_observation_model(scores, labels, np.ones(200), 500, outside,
                                        np.full(200, 499))
    return blind, seen, stats, rng


def test_observation_model_learns_what_outside_the_map_looks_like():
    blind, seen, stats, rng = outside_aware_fits()
    assert stats['outside_frames'] == 200 and seen.fitted
    # The top of a frame where nothing matches: the usual score, no gap to the second.
    # Its evidence for "somewhere in the map" against "not in the map" is the mean ratio over
    # all 500 places (the top-K's ratios, the floor for the rest).
    probe = np.sort(rng.uniform(0.2, 0.5, 20))[::-1]

    def in_map_evidence(model):
        ratios, floor = model.ratios(probe)
        return (ratios.sum() + (500 - probe.size) * floor) / 500

    assert in_map_evidence(seen) < 1.0 < in_map_evidence(blind)
    # A clear match still says "here".
    assert seen.ratios(np.r_[0.8, probe])[0][0] > 10
    # Fed a drive outside the map (tops at unrelated places), only the outside-aware model
    # lets the filter say so.
    east = np.arange(500) * 10.0
    outside_prob = {}
    for name, model in (('blind', blind), ('seen', seen)):
        filt = SequenceFilter(east, np.zeros(500), observation=model)
        frame_rng = np.random.default_rng(7)
        for t in range(10):
            estimate = filt.update(frame_rng.choice(500, 20, replace=False),
                                   np.sort(frame_rng.uniform(0.2, 0.5, 20))[::-1], float(t))
        outside_prob[name] = estimate.outside_prob
    assert outside_prob['seen'] > 0.9 > outside_prob['blind']


def test_outside_frames_must_say_how_many_places_they_saw():
    with pytest.raises(ConfigError, match='place counts'):
        fit_observation_model([np.r_[0.9, 0.1]], [np.r_[True, False]], [1], 10,
                              [np.r_[0.2]], [9, 9])
