"""The traverse-bag writer's map-frame poses (a robot without GPS), read back with rosbags."""

import math

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.io.bag_tracks import read_poses
from r2former_ros.core.io.traverse_bag import (
    FIX_OFFSET_NS,
    POSE_TOPIC,
    START_NS,
    MapFramePoses,
    write_traverse_bag,
)


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('img')
    rng = np.random.default_rng(2)
    paths = []
    for i in range(3):
        paths.append(folder / f'{i}.png')
        cv2.imwrite(str(paths[-1]), rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    return paths


def test_poses_are_the_track_rotated_and_shifted_into_the_map_frame(images, tmp_path):
    poses = MapFramePoses(rotation_rad=0.5, offset_m=(100.0, -20.0, 3.0))
    bag = write_traverse_bag(tmp_path / 'bag', images, lateral_m=1.0, poses=poses, gps=False)
    with AnyReader([bag]) as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {
            '/camera/image_raw': 'sensor_msgs/msg/Image',
            POSE_TOPIC: 'geometry_msgs/msg/PoseStamped'}
    track = read_poses(bag, POSE_TOPIC)
    assert track.frame_ids == ('map',) and len(track) == 6
    # Frame i (10 m per frame along east, 1 m to the north) at both of its pose stamps.
    assert track.stamp_ns[2] == START_NS + 10**9 - FIX_OFFSET_NS
    c, s = math.cos(0.5), math.sin(0.5)
    for i in range(3):
        east, north = 10.0 * i, 1.0
        for k in (2 * i, 2 * i + 1):
            assert track.x[k] == pytest.approx(c * east - s * north + 100.0)
            assert track.y[k] == pytest.approx(s * east + c * north - 20.0)
            assert track.z[k] == pytest.approx(3.0) and track.yaw[k] == pytest.approx(0.5)
    # Distances are those of the ENU track: the frame only turns and shifts it.
    assert math.hypot(track.x[2] - track.x[0], track.y[2] - track.y[0]) == pytest.approx(10.0)


def test_gps_and_poses_together_and_a_bag_without_positions(images, tmp_path):
    bag = write_traverse_bag(tmp_path / 'both', images, poses=MapFramePoses())
    with AnyReader([bag]) as reader:
        assert {c.topic for c in reader.connections} == {'/camera/image_raw', '/gps/fix',
                                                         POSE_TOPIC}
    np.testing.assert_allclose(read_poses(bag, POSE_TOPIC).yaw, MapFramePoses().rotation_rad)
    with pytest.raises(ConfigError, match='needs positions'):
        write_traverse_bag(tmp_path / 'none', images, gps=False)
    with pytest.raises(ConfigError, match='frame_id'):
        write_traverse_bag(tmp_path / 'noframe', images, poses=MapFramePoses(frame_id=''))
    assert not (tmp_path / 'none').exists() and not (tmp_path / 'noframe').exists()
