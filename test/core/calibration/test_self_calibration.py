"""Calibration of the confidence on the map itself: ECE, logistic fit, degenerate maps."""


from map_factory import write_route_map
from model_factory import small_place_model
import numpy as np
import pytest

from r2former_ros.core.calibration.fitting import expected_calibration_error, fit_logistic
from r2former_ros.core.calibration.self_calibration import calibrate_map, fit_confidence
from r2former_ros.core.localize.confidence import ConfidenceModel
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.localize.settings import LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase

# Random weights: the reranker is meaningless, the global descriptor matches nearby windows.
GLOBAL_ONLY = LocalizerConfig(rerank_top_n=0, filter='none')


def test_ece_constructed_cases():
    # Perfectly calibrated: in bin [0.2, 0.3) 1 of 4 true at p 0.25; in [0.7, 0.8) 3 of 4.
    probs = [0.25] * 4 + [0.75] * 4
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    # Always 0.9 but right half the time: |0.5 - 0.9| = 0.4.
    assert expected_calibration_error([0.9] * 10, [1, 0] * 5) == pytest.approx(0.4)
    # Two bins weighted by count: 2 samples off by 1.0, 6 samples off by 0.
    probs = [1.0, 1.0, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]
    labels = [0, 0, 0, 0, 0, 0, 0, 0]
    assert expected_calibration_error(probs, labels) == pytest.approx((2 * 1.0 + 6 * 0.05) / 8)
    assert expected_calibration_error([], []) == 0.0
    # p = 1.0 lands in the last bin, not outside.
    assert expected_calibration_error([1.0], [1], bins=10) == pytest.approx(0.0)


def test_fit_logistic_recovers_a_known_model():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40000, 2)) * [2.0, 0.5] + [1.0, -3.0]
    true_w, true_b = np.array([1.5, -2.0]), -0.5
    y = rng.random(40000) < 1 / (1 + np.exp(-(x @ true_w + true_b)))
    w, b = fit_logistic(x, y, l2=1e-6)
    assert np.allclose(w, true_w, atol=0.15) and b == pytest.approx(true_b, abs=0.5)

    def log_likelihood(w, b):
        z = x @ w + b
        return np.sum(y * z - np.logaddexp(0, z))

    # The maximum-likelihood fit explains the sample at least as well as the true model.
    assert log_likelihood(w, b) >= log_likelihood(true_w, true_b)
    # A constant column gets weight 0, and separable data stays finite.
    x_sep = np.c_[np.r_[np.zeros(10), np.ones(10)], np.full(20, 3.0)]
    w_sep, b_sep = fit_logistic(x_sep, np.r_[np.zeros(10), np.ones(10)])
    assert np.all(np.isfinite(w_sep)) and np.isfinite(b_sep) and w_sep[1] == 0.0


@pytest.fixture(scope='module')
def route_map(tmp_path_factory):
    model = small_place_model()
    path, _ = write_route_map(tmp_path_factory.mktemp('cal') / 'map', model, num_places=25)
    return model, path


def test_calibration_on_route_map_lowers_ece_and_is_stored(route_map):
    model, path = route_map
    info = calibrate_map(path, model, threshold_m=25.0, localizer_config=GLOBAL_ONLY)
    assert info['calibrated'] and info['reason'] is None
    assert info['num_true'] > 0 and info['num_false'] > 0
    assert info['exclude_radius_m'] == 12.5  # default: half the threshold
    # Cross-validated (held-out map queries) and in-sample ECE both beat the raw score.
    assert info['ece_calibrated'] < info['ece_uncalibrated']
    assert info['ece_calibrated_cv'] < info['ece_uncalibrated']
    manifest = MapDatabase.open(path).manifest
    stored = ConfidenceModel.from_dict(manifest['calibration'])
    assert stored.calibrated and stored.weights == pytest.approx(info['weights'])
    # The localizer picks the calibration up; confidences are probabilities.
    localizer = Localizer(model, MapDatabase.open(path), GLOBAL_ONLY)
    assert localizer.calibration.single.calibrated and localizer.calibrated
    result = localizer.step(MapDatabase.open(path).global_desc[3],
                            MapDatabase.open(path).local_features([3])[0])
    assert result.calibrated and 0.0 <= result.confidence <= 1.0


def test_exclusion_hides_the_neighbourhood(route_map):
    model, path = route_map
    # Hiding 100 m around each query leaves no place within 25 m: all false -> uncalibrated.
    info = calibrate_map(path, model, threshold_m=25.0, exclude_radius_m=100.0,
                         localizer_config=GLOBAL_ONLY)
    assert not info['calibrated'] and info['num_true'] == 0
    assert 'no query found a place within' in info['reason']
    assert ConfidenceModel.from_dict(MapDatabase.open(path).manifest['calibration']).weights \
        is None


def test_degenerate_all_true_and_tiny(route_map, tmp_path):
    model, path = route_map
    info = calibrate_map(path, model, threshold_m=10_000.0, exclude_radius_m=5.0,
                         localizer_config=GLOBAL_ONLY)
    assert not info['calibrated'] and info['num_false'] == 0
    assert 'every query found' in info['reason']
    tiny, _ = write_route_map(tmp_path / 'tiny', model, num_places=4)
    info = calibrate_map(tiny, model, localizer_config=GLOBAL_ONLY)
    assert not info['calibrated'] and 'too few' in info['reason']
    # max_queries subsamples evenly.
    info = calibrate_map(path, model, max_queries=5, localizer_config=GLOBAL_ONLY)
    assert info['num_queries'] == 5


def test_fit_confidence_needs_both_classes():
    features = np.c_[np.linspace(0, 1, 20), np.zeros(20), np.zeros(20)]
    labels = np.zeros(20, dtype=bool)
    labels[0] = True
    raw = features[:, 0]
    model = fit_confidence(features, labels, raw, 25.0)
    assert not model.calibrated and 'need at least' in model.info['reason']
    labels[:10] = True
    model = fit_confidence(features, labels, raw, 25.0)
    assert model.calibrated and model.info['ece_calibrated'] is not None


def test_a_time_budget_sizes_the_calibration_and_says_so(route_map, monkeypatch):
    from r2former_ros.core.calibration import self_calibration

    model, path = route_map
    monkeypatch.setattr(self_calibration, 'BUDGET_MIN_QUERIES', 6)
    # No time at all: the least it may use, with the measured cost per query recorded.
    info = calibrate_map(path, model, threshold_m=25.0, localizer_config=GLOBAL_ONLY,
                         progress=False, time_budget_s=0.0)
    assert info['num_queries'] == 6 and info['queries_within_budget'] == 0
    assert info['seconds_per_query'] > 0 and info['time_budget_s'] == 0.0
    # Plenty of time: every map image, as without a budget.
    info = calibrate_map(path, model, threshold_m=25.0, localizer_config=GLOBAL_ONLY,
                         progress=False, time_budget_s=1e6)
    assert info['num_queries'] == 25
