"""Image stamps placed in a pose frame (robots without GPS): interpolation, gaps, no GPS."""

import math

import numpy as np
import pytest

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.geo.coords import frame_position
from r2former_ros.core.geo.geotag import PoseArrays, filter_poses, pose_tag_images
from r2former_ros.core.geo.keyframes import select_keyframes


def ns(seconds):
    return (np.asarray(seconds, dtype=np.float64) * 1e9).astype(np.int64)


def poses_at(t, x, y, yaw, z=None):
    t = np.asarray(t, dtype=np.float64)
    return PoseArrays(ns(t), np.asarray(x, dtype=float), np.asarray(y, dtype=float),
                      np.zeros(t.size) if z is None else np.asarray(z, dtype=float),
                      np.asarray(yaw, dtype=float), ('map',))


def test_stamps_get_interpolated_positions_and_yaw_in_the_pose_frame():
    poses = poses_at([0.0, 1.0, 2.0], [10.0, 12.0, 12.0], [-5.0, -5.0, -1.0], [0.0, 0.5, 1.5],
                     z=[0.0, 1.0, 1.0])
    tags = pose_tag_images(ns([0.5, 1.5, 2.0]), poses, max_gap_s=1.0)
    assert tags.image_index.tolist() == [0, 1, 2]
    np.testing.assert_allclose(tags.east, [11.0, 12.0, 12.0])
    np.testing.assert_allclose(tags.north, [-5.0, -3.0, -1.0])
    np.testing.assert_allclose(tags.up, [0.5, 1.0, 1.0])
    np.testing.assert_allclose(tags.heading, [0.25, 1.0, 1.5])
    # Nothing geodetic is invented for a frame without GPS.
    assert np.isnan(tags.lat).all() and np.isnan(tags.lon).all() and np.isnan(tags.alt).all()
    assert tags.origin is None and tags.n_usable_fixes == 3


def test_yaw_interpolates_across_the_wrap():
    poses = poses_at([0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [3.0, -3.0])
    (heading,) = pose_tag_images(ns([0.5]), poses).heading
    assert abs(abs(heading) - math.pi) < 1e-9


def test_gaps_and_the_ends_of_the_poses_drop_images_and_are_counted():
    poses = poses_at([0.0, 1.0, 5.0, 6.0], [0.0, 1.0, 5.0, 6.0], [0.0] * 4, [0.0] * 4)
    tags = pose_tag_images(ns([-0.5, 0.5, 3.0, 5.5, 6.5]), poses, max_gap_s=1.0)
    assert tags.image_index.tolist() == [1, 3]
    assert tags.n_dropped_gap == 1 and tags.n_dropped_outside == 2


def test_poses_without_a_finite_position_and_repeated_stamps_are_skipped():
    poses = poses_at([0.0, 0.5, 0.5, 1.0], [0.0, math.nan, 7.0, 2.0], [0.0] * 4, [0.0] * 4)
    usable = filter_poses(poses)
    assert usable.stamp_ns.tolist() == ns([0.0, 0.5, 1.0]).tolist()
    assert usable.x.tolist() == [0.0, 7.0, 2.0] and usable.frame_ids == ('map',)
    tags = pose_tag_images(ns([0.25]), poses)
    assert tags.east.tolist() == [3.5] and tags.n_usable_fixes == 3


def test_no_usable_pose_places_nothing():
    poses = poses_at([0.0, 1.0], [math.nan, math.nan], [0.0, 0.0], [0.0, 0.0])
    tags = pose_tag_images(ns([0.5]), poses)
    assert tags.image_index.size == 0 and tags.n_dropped_outside == 1
    with pytest.raises(ConfigError, match='max_gap_s'):
        pose_tag_images(ns([0.5]), poses, max_gap_s=0.0)


def test_keyframes_work_in_the_frame_metres():
    # 1 m per pose step along a rotated line: a keyframe every 1.5 m keeps every other image.
    t = np.arange(11, dtype=float)
    poses = poses_at(t, t * math.cos(2.0), t * math.sin(2.0), np.full(t.size, 2.0))
    tags = pose_tag_images(ns(t), poses)
    kept = select_keyframes(tags.stamp_ns, tags.east, tags.north, min_distance_m=1.5)
    assert kept.tolist() == [0, 2, 4, 6, 8, 10]


def test_frame_position_keeps_the_frame_and_invents_no_gps():
    place = frame_position(3.0, -4.0, 0.5, 1.25)
    assert (place.east, place.north, place.up, place.heading) == (3.0, -4.0, 0.5, 1.25)
    assert math.isnan(place.latitude) and math.isnan(place.longitude)
    assert math.isnan(place.utm_easting) and place.utm_zone == 0
    assert frame_position(0.0, 0.0, 0.0, math.nan).heading is None
