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
          decoy_prob: float = 0.2, strength: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Top-K ids and scores: high near the truth, noise elsewhere, sometimes a far decoy."""
    scores = 0.3 + 0.05 * rng.standard_normal(east.size)
    if position is not None:
        scores += strength * np.exp(-((east - position) / 15.0) ** 2)
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
    # Odometry replaces the speed bound: a kernel at the distance travelled, 3 sigma wide
    # (sigma = slack + 10% of the distance).
    estimate = filt.update(ids, [0.8], stamp_s=6.0, odom_distance_m=2.0)
    assert estimate.motion.startswith('odometry')
    assert estimate.reach_m == pytest.approx(2.0 + 3 * (5.0 + 0.2))
    # Without stamps one nominal interval passes (the velocity estimate, standing still, keeps
    # a share of the speed bound).
    estimate = filt.update(ids, [0.8])
    assert estimate.motion == 'velocity' and estimate.reach_m == pytest.approx(15.0)


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


def drive_past_the_end(odometry: bool, seed: int = 6, frames_after: int = 12,
                       velocity_doubt: float | None = None) -> tuple[list, int]:
    """A map of 100 places 10 m apart; the drive runs 10 m/s along it and on past its end."""
    east, north = line_world(100)
    rng = np.random.default_rng(seed)
    config = {} if velocity_doubt is None else {'velocity_doubt': velocity_doubt}
    filt = SequenceFilter(east, north, FilterConfig(max_speed_mps=20.0, **config), OBSERVATION)
    start, end = 60, 99
    positions = [east[start] + SPACING_M * k for k in range(end - start + 1 + frames_after)]
    estimates = []
    for t, position in enumerate(positions):
        # Past the end the images keep looking a little like the map's last place (the
        # corridor goes on): weak evidence, but evidence "here", not "nowhere".
        beyond = position > east[-1]
        ids, scores = frame(east, min(position, east[-1]), rng, decoy_prob=0.0,
                            strength=0.3 if beyond else 0.5)
        estimates.append(filt.update(ids, scores, stamp_s=float(t),
                                     odom_distance_m=SPACING_M if odometry and t else None))
    return estimates, end - start


def frames_to_leave(estimates: list, last_inside: int) -> int:
    """Frames after the map's last place until P(not in the map) > 0.5 for good."""
    after = [e.outside_prob > 0.5 for e in estimates[last_inside + 1:]]
    for k in range(len(after)):
        if all(after[k:]):
            return k + 1
    return len(after) + 1


def test_driving_past_the_end_leaves_the_map_within_a_few_frames():
    with_odometry, last = drive_past_the_end(odometry=True)
    without, _ = drive_past_the_end(odometry=False)
    # Inside the map the filter is sure; past the end it says so soon, faster with odometry.
    assert max(e.outside_prob for e in with_odometry[5:last]) < 0.5
    assert max(e.outside_prob for e in without[5:last]) < 0.5
    # (A filter that only bounds the speed, as before odometry and the velocity estimate, parks
    # on the last place: 6 frames here without odometry, 8 with it.)
    assert frames_to_leave(with_odometry, last) <= 2
    assert frames_to_leave(without, last) <= 3
    parked, _ = drive_past_the_end(odometry=False, velocity_doubt=1.0)
    assert frames_to_leave(parked, last) >= 5
    # The velocity estimate learned the drive: 10 m/s east.
    assert without[last].motion == 'velocity'


def test_a_robot_that_stops_at_the_end_stays_in_the_map():
    east, north = line_world(100)
    rng = np.random.default_rng(7)
    filt = SequenceFilter(east, north, FilterConfig(max_speed_mps=20.0), OBSERVATION)
    route = list(range(80, 100)) + [99] * 10  # drives to the last place and stops there
    estimates = []
    for t, place in enumerate(route):
        ids, scores = frame(east, east[place], rng, decoy_prob=0.0)
        estimates.append(filt.update(ids, scores, stamp_s=float(t)))
    stopped = estimates[22:]
    assert all(abs(e.place_id - 99) <= 1 for e in stopped)
    assert max(e.outside_prob for e in stopped) < 0.5


def test_the_velocity_estimate_follows_the_drive_and_is_forgotten_on_reset():
    east, north = line_world()
    rng = np.random.default_rng(8)
    filt = SequenceFilter(east, north, FilterConfig(max_speed_mps=20.0), OBSERVATION)
    for t, place in enumerate(range(30, 50)):
        filt.update(*frame(east, east[place], rng, decoy_prob=0.0), stamp_s=0.5 * t)
    velocity = filt.velocity_mps
    assert velocity is not None and velocity == pytest.approx([20.0, 0.0], abs=2.0)
    filt.reset()
    assert filt.velocity_mps is None
