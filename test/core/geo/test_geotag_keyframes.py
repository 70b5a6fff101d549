"""Fix filtering, interpolation, gap dropping, headings and keyframe selection."""

import math

import numpy as np
import pytest

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.geo.coords import enu_to_wgs84, wgs84_to_enu
from r2former_ros.core.geo.geotag import (
    FixArrays,
    PoseArrays,
    filter_fixes,
    geotag_images,
    heading_from_poses,
    usable_fix_mask,
)
from r2former_ros.core.geo.keyframes import select_keyframes

S = 1_000_000_000
ORIGIN = (48.0, 11.0, 500.0)


def fixes_from(stamps_s, lat, lon, alt=None, status=None):
    n = len(stamps_s)
    return FixArrays(
        stamp_ns=(np.asarray(stamps_s, dtype=np.float64) * S).astype(np.int64),
        lat=np.asarray(lat, dtype=np.float64) * np.ones(n),
        lon=np.asarray(lon, dtype=np.float64) * np.ones(n),
        alt=np.asarray(500.0 if alt is None else alt, dtype=np.float64) * np.ones(n),
        status=np.asarray(0 if status is None else status, dtype=np.int16) * np.ones(n, np.int16),
        covariance_type=np.zeros(n, np.uint8),
    )


def track(stamps_s, east, north):
    lat, lon, alt = enu_to_wgs84(np.asarray(east, float), np.asarray(north, float),
                                 np.zeros(len(stamps_s)), *ORIGIN)
    return fixes_from(stamps_s, lat, lon, alt)


def ns(seconds):
    return (np.asarray(seconds, dtype=np.float64) * S).astype(np.int64)


def test_usable_fix_rule():
    fixes = fixes_from(
        range(9),
        lat=[48, 48, 48, 48, 48, np.nan, 48, 0, 95],
        lon=[11, 11, 11, 11, 11, 11, np.inf, 0, 11],
        alt=[1, 1, 1, 1, np.nan, 1, 1, 1, 1],
        status=[-2, -1, 0, 2, 0, 0, 0, 0, 0],
    )
    assert usable_fix_mask(fixes).tolist() == [False, False, True, True, False, False, False,
                                                False, False]
    assert usable_fix_mask(fixes, min_status=1).tolist()[2:4] == [False, True]


def test_filter_sorts_and_drops_repeated_stamps():
    fixes = fixes_from([3, 1, 2, 2], lat=[48.3, 48.1, 48.2, 48.25], lon=11)
    kept = filter_fixes(fixes)
    assert kept.stamp_ns.tolist() == [1 * S, 2 * S, 3 * S]
    assert kept.lat.tolist() == [48.1, 48.2, 48.3]


def test_linear_interpolation_between_fixes():
    fixes = track([0, 1, 2], east=[0, 10, 30], north=[0, 0, 40])
    tags = geotag_images(ns([0.5, 1.5, 2.0]), fixes, origin=ORIGIN)
    np.testing.assert_allclose(tags.east, [5, 20, 30], atol=1e-6)
    np.testing.assert_allclose(tags.north, [0, 20, 40], atol=1e-6)
    e, n, _ = wgs84_to_enu(tags.lat, tags.lon, tags.alt, *ORIGIN)
    np.testing.assert_allclose(np.stack([e, n]), [[5, 20, 30], [0, 20, 40]], atol=1e-6)


def test_default_origin_is_the_first_usable_fix():
    fixes = fixes_from([0, 1, 2], lat=[47.0, 47.5, 47.6], lon=11.0, status=[-1, 0, 0])
    tags = geotag_images(ns([1.0]), fixes)
    assert tags.origin == (47.5, 11.0, 500.0)
    assert tags.east[0] == pytest.approx(0.0, abs=1e-6)


def test_interpolation_across_the_antimeridian_stays_near_it():
    fixes = fixes_from([0, 2], lat=-16.0, lon=[179.9999, -179.9999])
    tags = geotag_images(ns([1.0]), fixes, max_gap_s=5)
    assert abs(abs(tags.lon[0]) - 180.0) < 1e-6
    assert tags.lat[0] == pytest.approx(-16.0, abs=1e-8)


def test_images_too_far_from_fixes_are_dropped_and_counted():
    fixes = track([0, 1, 2, 10, 11], east=[0, 1, 2, 10, 11], north=[0] * 5)
    images = ns([-1.0, 0.0, 1.5, 2.9, 5.0, 10.5, 11.0, 12.0])
    tags = geotag_images(images, fixes, max_gap_s=1.0)
    assert tags.image_index.tolist() == [1, 2, 5, 6]
    assert tags.stamp_ns.tolist() == images[[1, 2, 5, 6]].tolist()
    assert (tags.n_dropped_gap, tags.n_dropped_outside, tags.n_dropped) == (2, 2, 4)
    assert tags.n_usable_fixes == 5


def test_no_usable_fixes_drops_everything():
    tags = geotag_images(ns([1.0, 2.0]), fixes_from([0, 3], lat=48, lon=11, status=-1))
    assert tags.image_index.size == 0 and tags.n_dropped_outside == 2 and tags.origin is None


def test_heading_from_gnss_motion():
    t = np.arange(0, 10, 0.5)
    moving = track(t, east=-2.0 * t, north=-2.0 * t)  # south-west at 2.8 m/s
    tags = geotag_images(ns([2.0, 5.0, 9.5]), moving)
    np.testing.assert_allclose(tags.heading, -3 * math.pi / 4, atol=1e-6)
    jitter = track(t, east=0.05 * np.sin(7 * t), north=0.05 * np.cos(5 * t))
    slow = geotag_images(ns([2.0, 5.0]), jitter, min_speed_mps=0.5)
    assert np.isnan(slow.heading).all()


def test_heading_from_poses_wraps_through_pi_and_respects_gaps():
    poses = PoseArrays(ns([0, 1, 5]), np.zeros(3), np.zeros(3), np.zeros(3),
                       np.radians([170.0, -170.0, -170.0]))
    heading = heading_from_poses(ns([0.5, 3.0]), poses, max_gap_s=1.0)
    assert abs(heading[0]) == pytest.approx(math.pi)
    assert np.isnan(heading[1])


def test_poses_take_precedence_over_motion():
    t = np.arange(0, 4, 0.5)
    fixes = track(t, east=3.0 * t, north=0.0 * t)  # driving east
    poses = PoseArrays(ns(t), 0 * t, 0 * t, 0 * t, np.full(t.size, 1.0))
    tags = geotag_images(ns([1.0, 2.0]), fixes, poses=poses)
    np.testing.assert_allclose(tags.heading, 1.0)
    assert geotag_images(ns([1.0]), fixes).heading[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize('kwargs', [{'max_gap_s': 0}, {'heading_window_s': -1},
                                    {'min_speed_mps': -0.1}])
def test_geotag_parameter_checks(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        geotag_images(ns([0.0]), track([0], [0], [0]), **kwargs)


def line(n, step_m, dt_s=1.0):
    return ns(np.arange(n) * dt_s), np.arange(n) * step_m, np.zeros(n)


def test_keyframes_by_distance():
    stamps, east, north = line(10, 0.4)
    kept = select_keyframes(stamps, east, north, min_distance_m=1.0)
    assert kept.tolist() == [0, 3, 6, 9]
    assert kept.dtype == np.int64


def test_keyframes_by_time_when_standing_still():
    stamps, east, north = line(10, 0.0, dt_s=0.5)
    kept = select_keyframes(stamps, east, north, min_distance_m=1.0, min_interval_s=2.0)
    assert kept.tolist() == [0, 4, 8]
    assert select_keyframes(stamps, east, north, min_distance_m=None,
                            min_interval_s=2.0).tolist() == [0, 4, 8]


def test_either_rule_triggers_and_distance_is_horizontal():
    stamps = ns([0, 1, 2, 10])
    east = np.array([0.0, 0.0, 5.0, 5.0])
    north = np.zeros(4)
    kept = select_keyframes(stamps, east, north, min_distance_m=4.0, min_interval_s=5.0)
    assert kept.tolist() == [0, 2, 3]


def test_all_frames_and_empty_input():
    stamps, east, north = line(5, 0.0)
    assert select_keyframes(stamps, east, north, all_frames=True).tolist() == [0, 1, 2, 3, 4]
    assert select_keyframes(ns([]), [], []).size == 0


@pytest.mark.parametrize('kwargs, word', [
    ({'min_distance_m': None, 'min_interval_s': None}, 'needs'),
    ({'min_distance_m': -1.0}, 'min_distance_m'),
    ({'min_interval_s': float('nan')}, 'min_interval_s'),
])
def test_keyframe_rule_checks(kwargs, word):
    stamps, east, north = line(3, 1.0)
    with pytest.raises(ConfigError, match=word):
        select_keyframes(stamps, east, north, **kwargs)


def test_keyframe_length_mismatch():
    with pytest.raises(ConfigError, match='length'):
        select_keyframes(ns([0, 1]), [0.0], [0.0, 1.0])
