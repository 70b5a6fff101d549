"""The traverse-bag writer's synthetic odometry, read back from real rosbag2 files with rosbags."""

import math

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.io.traverse_bag import (
    FRAME_NS,
    IMAGE_TOPIC,
    ODOM_TOPIC,
    START_NS,
    SyntheticOdometry,
    synthetic_odometry,
    write_traverse_bag,
)

SPACING = 10.0


@pytest.fixture(scope='module')
def tiny_image(tmp_path_factory):
    """One small real image file: the odometry does not care what the camera saw."""
    path = tmp_path_factory.mktemp('img') / 'frame.png'
    rng = np.random.default_rng(1)
    cv2.imwrite(str(path), rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    return path


def read_odometry(bag):
    """(header stamp ns, bag stamp ns, x, y, yaw, speed) rows of the bag's /odom topic."""
    rows = []
    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic == ODOM_TOPIC]
        assert [c.msgtype for c in connections] == ['nav_msgs/msg/Odometry']
        for connection, stamp, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            q = msg.pose.pose.orientation
            yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y ** 2 + q.z ** 2))
            rows.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, stamp,
                         msg.pose.pose.position.x, msg.pose.pose.position.y, yaw,
                         msg.twist.twist.linear.x))
            assert msg.header.frame_id == 'odom' and msg.child_frame_id == 'base_link'
    return np.array(rows, dtype=np.float64)


def path_at_images(rows, n_images):
    """Odometry path length at each image stamp (a message falls on every image stamp)."""
    steps = np.hypot(np.diff(rows[:, 2]), np.diff(rows[:, 3]))
    path = np.concatenate([[0.0], np.cumsum(steps)])
    at = [int(np.flatnonzero(rows[:, 0] == START_NS + i * FRAME_NS)[0]) for i in range(n_images)]
    return path[at]


def test_odometry_read_back_has_the_stated_scale_error_and_noise(tmp_path, tiny_image):
    n = 200
    bag = write_traverse_bag(tmp_path / 'drive', [tiny_image] * n, odometry=SyntheticOdometry())
    rows = read_odometry(bag)
    # 10 Hz from half a second before the first image to half a second after the last
    assert len(rows) == 10 * n + 1
    assert np.array_equal(rows[:, 0], rows[:, 1])  # header stamps are the bag's stamps
    assert np.allclose(np.diff(rows[:, 0]), 0.1e9)
    assert rows[0, 0] == START_NS - 0.5e9 and rows[-1, 0] == START_NS + (n - 0.5) * 1e9
    ratios = np.diff(path_at_images(rows, n)) / SPACING
    # 199 frame steps: the mean's standard error is 0.0035, the std's about 0.0025
    assert abs(ratios.mean() - 1.03) < 0.012
    assert 0.04 < ratios.std() < 0.06
    # the pose drifts like integrated odometry: 3% long and off the straight line by heading
    true_end = (n - 1) * SPACING
    odo_end = rows[np.flatnonzero(rows[:, 0] == START_NS + (n - 1) * FRAME_NS)[0]]
    assert 0.02 * true_end < math.hypot(odo_end[2], odo_end[3]) - true_end < 0.04 * true_end
    assert abs(odo_end[4]) > 0.0 and np.abs(rows[:, 3]).max() > 1.0
    # the twist is the measured forward speed: about 10.3 m/s while driving
    assert 9.5 < np.median(rows[20:-20, 5]) < 11.0


def test_odometry_is_seeded(tmp_path, tiny_image):
    first = synthetic_odometry(np.arange(20) * SPACING, SyntheticOdometry(seed=4))
    again = synthetic_odometry(np.arange(20) * SPACING, SyntheticOdometry(seed=4))
    other = synthetic_odometry(np.arange(20) * SPACING, SyntheticOdometry(seed=5))
    assert np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)
    assert not np.array_equal(first.x, other.x)


def test_noise_free_odometry_is_the_true_track_scaled(tiny_image):
    stream = synthetic_odometry(np.arange(30) * SPACING, SyntheticOdometry(
        scale_error=0.0, step_noise=0.0, heading_noise_rad=0.0))
    at_images = stream.x[5::10]  # messages at -0.5 s + 0.1 s k: every tenth is an image stamp
    assert np.allclose(at_images, np.arange(30) * SPACING)
    assert np.allclose(stream.y, 0.0) and np.allclose(stream.yaw, 0.0)


def test_a_stopped_stream_has_no_message_after_the_stop(tmp_path, tiny_image):
    n = 40
    bag = write_traverse_bag(tmp_path / 'drive', [tiny_image] * n,
                             odometry=SyntheticOdometry(stop_after_s=15.0))
    rows = read_odometry(bag)
    assert rows[-1, 0] == START_NS + 15 * FRAME_NS
    with AnyReader([bag]) as reader:  # the images go on to the end of the drive
        images = [c for c in reader.connections if c.topic == IMAGE_TOPIC]
        assert sum(1 for _ in reader.messages(connections=images)) == n


def test_a_jumping_stream_jumps_once_by_the_stated_offset(tmp_path, tiny_image):
    bag = write_traverse_bag(tmp_path / 'drive', [tiny_image] * 40,
                             odometry=SyntheticOdometry(jump_after_s=20.05, jump_m=150.0))
    rows = read_odometry(bag)
    steps = np.hypot(np.diff(rows[:, 2]), np.diff(rows[:, 3]))
    big = np.flatnonzero(steps > 10.0)
    assert big.tolist() == [int(np.flatnonzero(rows[:, 0] > START_NS + 20.05e9)[0]) - 1]
    assert 149.0 < steps[big[0]] < 152.0
    assert steps[np.arange(steps.size) != big[0]].max() < 2.0  # 10 m/s: about 1 m per 0.1 s


def test_a_kidnap_in_the_true_track_is_not_driven_by_the_wheels(tiny_image):
    along = [*range(5, 25), *range(45, 60)]  # the robot is carried from place 24 to place 45
    stream = synthetic_odometry(np.asarray(along, dtype=float) * SPACING, SyntheticOdometry(
        scale_error=0.0, step_noise=0.0, heading_noise_rad=0.0))
    at_images = stream.x[5::10]
    assert np.allclose(np.diff(at_images), SPACING)  # one usual step where the track jumps


def test_without_odometry_the_bag_has_no_odometry_topic(tmp_path, tiny_image):
    bag = write_traverse_bag(tmp_path / 'drive', [tiny_image] * 3)
    with AnyReader([bag]) as reader:
        assert ODOM_TOPIC not in {c.topic for c in reader.connections}


@pytest.mark.parametrize('settings', [
    SyntheticOdometry(rate_hz=1.0), SyntheticOdometry(step_noise=-0.1),
    SyntheticOdometry(scale_error=1.5), SyntheticOdometry(heading_noise_rad=float('nan'))])
def test_bad_odometry_settings_are_one_clear_error(tmp_path, tiny_image, settings):
    with pytest.raises(ConfigError, match='odometry'):
        write_traverse_bag(tmp_path / 'drive', [tiny_image] * 3, odometry=settings)
    assert not (tmp_path / 'drive').exists()  # refused before anything is written


def test_the_filters_odometry_reader_sees_the_steps_the_stop_and_the_jump(tmp_path, tiny_image):
    """What the tools' --odom-topic reads from such a bag: ~10.3 m a frame, then the faults."""
    from r2former_ros.core.io.bag_tracks import read_poses
    from r2former_ros.core.localize.odometry import OdometryTrack

    def track_of(settings):
        bag = write_traverse_bag(tmp_path / 'drive', [tiny_image] * 40, odometry=settings)
        poses = read_poses(bag, ODOM_TOPIC)
        return OdometryTrack.from_arrays(poses.stamp_ns * 1e-9, poses.x, poses.y, poses.yaw)

    image_s = [(START_NS + i * FRAME_NS) * 1e-9 for i in range(40)]
    healthy = track_of(SyntheticOdometry())
    steps = [healthy.step(a, b) for a, b in zip(image_s, image_s[1:], strict=False)]
    distances = np.array([s.distance_m for s in steps], dtype=float)
    assert all(s.usable for s in steps) and abs(distances.mean() / SPACING - 1.03) < 0.03
    stopped = track_of(SyntheticOdometry(stop_after_s=15.0))
    assert stopped.step(image_s[10], image_s[11]).usable
    assert not stopped.step(image_s[20], image_s[21]).usable
    jumping = track_of(SyntheticOdometry(jump_after_s=20.05))
    assert jumping.step(image_s[10], image_s[11]).usable
    assert not jumping.step(image_s[20], image_s[21]).usable
