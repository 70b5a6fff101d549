"""The sequence filter on small synthetic worlds: places on a line, scores drawn near the truth."""

import numpy as np
import pytest

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.place_grid import PlaceGrid
from r2former_ros.core.localize.sequence_filter import (
    FilterConfig,
    ObservationModel,
    SequenceFilter,
)

SPACING_M = 10.0
# Fitted by hand to the scores `frame` draws: a top score of ~0.8 gives LR ~ e^2.6, ~0.35 gives
# LR < 1 (looks like nothing matches).
OBSERVATION = ObservationModel(weight_score=12.0, weight_gap=10.0, bias=-7.0, floor=0.05,
                               fitted=True)


def line_world(num_places: int = 200) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(num_places) * SPACING_M, np.zeros(num_places)


def frame(east: np.ndarray, position: float | None, rng: np.random.Generator, top_k: int = 20,
          decoy_prob: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Top-K ids and scores: high near the truth, noise elsewhere, sometimes a far decoy."""
    scores = 0.3 + 0.05 * rng.standard_normal(east.size)
    if position is not None:
        scores += 0.5 * np.exp(-((east - position) / 15.0) ** 2)
    if rng.random() < decoy_prob:
        scores[rng.integers(east.size)] += 0.6
    order = np.argsort(-scores)[:top_k]
    return order, scores[order]


def run(places: list[int | None], seed: int = 0, **config) -> list:
    east, north = line_world()
    rng = np.random.default_rng(seed)
    filt = SequenceFilter(east, north, FilterConfig(**config), OBSERVATION)
    out = []
    for t, place in enumerate(places):
        ids, scores = frame(east, None if place is None else east[place], rng)
        out.append(filt.update(ids, scores, stamp_s=float(t)))
    return out


def test_follows_the_route_better_than_single_frames():
    route = list(range(20, 120))
    estimates = run(route, seed=1)
    rng = np.random.default_rng(1)
    east, _ = line_world()
    single = [frame(east, east[p], rng)[0][0] for p in route]
    filtered_right = np.mean([abs(e.place_id - p) <= 2
                              for e, p in zip(estimates, route, strict=True)])
    single_right = np.mean([abs(s - p) <= 2 for s, p in zip(single, route, strict=True)])
    assert single_right < 0.9  # the decoys make single frames wrong now and then
    assert filtered_right >= 0.97
    # Confident once settled.
    assert np.mean([e.confidence for e in estimates[5:]]) > 0.9


def test_either_direction():
    backwards = list(range(180, 80, -1))
    estimates = run(backwards, seed=2)
    right = [abs(e.place_id - p) <= 2 for e, p in zip(estimates, backwards, strict=True)]
    assert np.mean(right[3:]) >= 0.97


def test_kidnap_recovers_within_a_few_frames():
    route = list(range(20, 60)) + list(range(150, 190))
    estimates = run(route, seed=3)
    assert abs(estimates[39].place_id - 59) <= 2
    after = [abs(e.place_id - p) <= 2 for e, p in zip(estimates[40:], route[40:], strict=True)]
    recovered = after.index(True)
    assert recovered <= 3 and all(after[recovered:recovered + 10])


def test_leaves_the_map_and_comes_back():
    route = list(range(100, 140)) + [None] * 15 + list(range(140, 170))
    estimates = run(route, seed=4)
    inside = estimates[:40]
    outside = estimates[42:55]
    assert max(e.outside_prob for e in inside[5:]) < 0.5
    assert min(e.outside_prob for e in outside) > 0.7
    assert max(e.confidence for e in outside) < 0.3
    # Back in the map at frame 55: the place is right at once, the confidence follows within
    # a few frames (the map is 200 places: the evidence has to beat 1/200 first).
    back = estimates[55:]
    assert np.mean([abs(e.place_id - p) <= 2
                    for e, p in zip(back, route[55:], strict=True)]) >= 0.95
    settled = next(i for i, e in enumerate(back) if e.outside_prob < 0.5)
    assert settled <= 6
    assert max(e.outside_prob for e in back[settled + 1:]) < 0.3


def test_dropped_frames_widen_the_reach():
    east, north = line_world()
    filt = SequenceFilter(east, north, FilterConfig(max_speed_mps=10.0, slack_m=5.0),
                          OBSERVATION)
    ids = np.array([50])
    assert filt.update(ids, [0.8], stamp_s=0.0).reach_m == 0.0
    assert filt.update(ids, [0.8], stamp_s=1.0).reach_m == pytest.approx(15.0)
    # Three frames dropped: four seconds since the last one.
    assert filt.update(ids, [0.8], stamp_s=5.0).reach_m == pytest.approx(45.0)
    # Odometry replaces the speed bound.
    assert filt.update(ids, [0.8], stamp_s=6.0, odom_distance_m=2.0).reach_m == \
        pytest.approx(7.0)
    # Without stamps one nominal interval passes.
    assert filt.update(ids, [0.8]).reach_m == pytest.approx(15.0)


def test_a_dropped_frame_lets_the_filter_follow_a_jump_it_would_otherwise_refuse():
    east, north = line_world()

    def after_gap(gap_s: float) -> int:
        filt = SequenceFilter(east, north, FilterConfig(max_speed_mps=10.0, kidnap_prob=1e-6),
                              OBSERVATION)
        for t in range(10):  # settle at place 50
            filt.update(np.array([50, 49, 51]), [0.8, 0.7, 0.7], stamp_s=float(t))
        # The next frame says "place 54" (40 m on) once, weakly.
        return filt.update(np.array([54, 50]), [0.75, 0.45], stamp_s=9.0 + gap_s).place_id

    assert after_gap(1.0) == 50  # 40 m in 1 s at 10 m/s: out of reach, the filter stays
    assert after_gap(4.0) == 54  # four seconds: reachable, the filter moves


def test_sparse_cost_follows_the_neighbourhood_not_the_map_size():
    rng = np.random.default_rng(5)
    counts = {}
    for num_places in (1_000, 100_000):
        east, north = np.arange(num_places) * 5.0, np.zeros(num_places)
        filt = SequenceFilter(east, north, FilterConfig(max_speed_mps=10.0, slack_m=5.0),
                              OBSERVATION)
        edges = []
        for t in range(30):
            truth = 100 + 2 * t
            ids = np.r_[truth, rng.choice(num_places, 19, replace=False)]
            scores = np.r_[0.85, np.full(19, 0.35)]
            est = filt.update(ids, scores, stamp_s=float(t))
            edges.append(est.num_edges)
            assert est.num_active <= filt.config.max_active
        counts[num_places] = max(edges)
    # Each active place has at most 2 * 15 / 5 + 1 = 7 neighbours within 15 m.
    assert counts[100_000] <= filt.config.max_active * 7
    assert counts[100_000] <= 2 * counts[1_000]


def test_place_grid_finds_exactly_the_places_within_the_radius():
    rng = np.random.default_rng(6)
    east, north = rng.uniform(0, 500, 400), rng.uniform(0, 300, 400)
    grid = PlaceGrid(east, north, cell_m=25.0)
    sources = np.array([0, 17, 399])
    for radius in (10.0, 25.0, 60.0):
        rows, ids = grid.pairs_within(sources, radius)
        for row, src in enumerate(sources):
            expected = np.flatnonzero(np.hypot(east - east[src], north - north[src]) <= radius)
            assert sorted(ids[rows == row]) == sorted(expected)


def test_posterior_stays_a_distribution_and_reset_forgets():
    east, north = line_world()
    filt = SequenceFilter(east, north, FilterConfig(), OBSERVATION)
    rng = np.random.default_rng(7)
    for t in range(20):
        filt.update(*frame(east, east[60 + t], rng), stamp_s=float(t))
        assert filt.posterior().sum() + filt.outside_prob == pytest.approx(1.0)
    filt.reset()
    dense = filt.posterior()
    assert np.allclose(dense, dense[0])  # uniform again


def test_bad_input_is_refused():
    east, north = line_world(10)
    filt = SequenceFilter(east, north)
    with pytest.raises(ConfigError, match='place ids'):
        filt.update([12], [0.5])
    with pytest.raises(ConfigError, match='scores'):
        filt.update([1, 2], [0.5])
    with pytest.raises(ConfigError, match='max_speed_mps'):
        FilterConfig(max_speed_mps=0.0).validate()
    with pytest.raises(ConfigError, match='odom_distance_m'):
        filt.update([1], [0.5])
        filt.update([1], [0.5], odom_distance_m=-1.0)
