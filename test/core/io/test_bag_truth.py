"""A drive's truth from GPS or from poses, and the refusals when it does not fit the map."""

from __future__ import annotations

import math

from bag_factory import (
    JAZZY,
    POSE_STAMPED,
    START_NS,
    BagMessage,
    _pose,
    drive_messages,
    header,
    pose_stamped_msg,
    write_rosbag2,
)
import numpy as np
import pytest

from r2former_ros.core.errors import BagError, ConfigError
from r2former_ros.core.geo.coords import wgs84_to_enu
from r2former_ros.core.geo.geotag import PoseArrays
from r2former_ros.core.io.bag_tracks import read_poses
from r2former_ros.core.io.bag_truth import GPS, POSE, TruthSource, pose_frame

POSE_COV = 'geometry_msgs/msg/PoseWithCovarianceStamped'


def pose_cov_msg(stamp_ns: int, x: float, y: float, frame: str):
    return JAZZY.types[POSE_COV](
        header=header(stamp_ns, frame),
        pose=JAZZY.types['geometry_msgs/msg/PoseWithCovariance'](
            pose=_pose(JAZZY, x, y, 0.0, 0.3), covariance=np.zeros(36)))


@pytest.fixture(scope='module')
def drive(tmp_path_factory):
    """Images, GPS and odometry (frame 'odom'), plus /map_pose PoseStamped in frame 'map'."""
    messages = drive_messages(6)
    for k in range(-1, 8):
        stamp = START_NS + k * 100_000_000
        messages.append(BagMessage('/map_pose', POSE_STAMPED, stamp,
                                   pose_stamped_msg(stamp, 100.0 + k, -50.0, 0.0, 0.5)))
        messages.append(BagMessage('/amcl_pose', POSE_COV, stamp,
                                   pose_cov_msg(stamp, 1.0 * k, 2.0, 'map')))
    messages.sort(key=lambda m: m.receive_ns)
    return write_rosbag2(tmp_path_factory.mktemp('truth') / 'drive', messages)


class FakeMap:
    """What a truth reads of a map (MapDatabase's path, position_frame and origin)."""

    def __init__(self, frame, origin=None):
        self.path, self.position_frame, self._origin = 'the_map', frame, origin

    @property
    def origin(self):
        if self._origin is None:
            raise AssertionError('a pose-frame map has no origin to read')
        return self._origin


def test_exactly_one_truth_source():
    assert TruthSource.from_topics('/fix', None) == TruthSource(GPS, '/fix')
    assert TruthSource.from_topics(None, '/p') == TruthSource(POSE, '/p')
    with pytest.raises(ConfigError, match='not both'):
        TruthSource.from_topics('/fix', '/p')
    with pytest.raises(ConfigError, match='none was given'):
        TruthSource.from_topics(None, None)


def test_the_kind_must_fit_the_map():
    with pytest.raises(ConfigError, match="frame 'map' .*--pose-topic.*not --gps-topic /fix"):
        TruthSource(GPS, '/fix').check_map('map', 'M')
    with pytest.raises(ConfigError, match='GPS positions.*not --pose-topic /p'):
        TruthSource(POSE, '/p').check_map('wgs84', 'M')
    TruthSource(GPS, '/fix').check_map('wgs84', 'M')
    TruthSource(POSE, '/p').check_map('map', 'M')


def test_pose_truth_in_the_map_frame(drive):
    truth = TruthSource(POSE, '/map_pose').read_for(drive, FakeMap('map'))
    tags = truth.tag(np.array([START_NS + 250_000_000, START_NS + 10**10]), 1.0)
    assert tags.image_index.tolist() == [0]
    assert tags.east.tolist() == pytest.approx([102.5]) and tags.north.tolist() == [-50.0]
    assert truth.usable == 9 and truth.skipped_key == 'skipped_no_pose'
    # PoseWithCovarianceStamped (AMCL's) and Odometry (in its own frame) read the same way.
    amcl = TruthSource(POSE, '/amcl_pose').read_for(drive, FakeMap('map'))
    assert amcl.tag(np.array([START_NS]), 1.0).north.tolist() == [2.0]
    odom = TruthSource(POSE, '/odom').read_for(drive, FakeMap('odom'))
    assert odom.usable > 0


def test_gps_truth_in_the_map_enu(drive):
    from bag_factory import ORIGIN

    truth = TruthSource(GPS, '/gps/fix').read_for(drive, FakeMap('wgs84', ORIGIN))
    tags = truth.tag(np.array([START_NS + 100_000_000]), 1.0)
    east, north, _ = wgs84_to_enu(tags.lat[0], tags.lon[0], tags.alt[0], *ORIGIN)
    assert tags.east[0] == pytest.approx(east) and tags.north[0] == pytest.approx(north)
    assert math.hypot(tags.east[0], tags.north[0]) == pytest.approx(0.2, abs=1e-6)
    assert truth.skipped_key == 'skipped_no_gps' and truth.usable_key == 'usable_fixes'


def test_poses_in_another_frame_or_of_another_type_are_refused(drive):
    with pytest.raises(BagError, match="/odom are in frame 'odom'.*positions in frame 'map'"):
        TruthSource(POSE, '/odom').check_bag(drive, 'map', 'M')
    with pytest.raises(BagError, match='/gps/fix .*NavSatFix, expected a pose type'):
        TruthSource(POSE, '/gps/fix').check_bag(drive, 'map', 'M')
    with pytest.raises(BagError, match='/map_pose .*PoseStamped, expected .*NavSatFix'):
        TruthSource(GPS, '/map_pose').check_bag(drive, 'wgs84', 'M')
    with pytest.raises(ConfigError, match='GPS positions'):
        TruthSource(POSE, '/map_pose').check_bag(drive, 'wgs84', 'M')


def test_read_poses_gives_the_frames_and_pose_frame_needs_exactly_one(drive, tmp_path):
    assert read_poses(drive, '/map_pose').frame_ids == ('map',)
    assert pose_frame(read_poses(drive, '/odom'), '/odom') == 'odom'
    messages = [BagMessage('/p', POSE_STAMPED, START_NS + k,
                           JAZZY.types[POSE_STAMPED](header=header(START_NS + k, frame),
                                                     pose=_pose(JAZZY, 0.0, 0.0, 0.0, 0.0)))
                for k, frame in enumerate(('map', 'odom', 'map'))]
    mixed = read_poses(write_rosbag2(tmp_path / 'frames', messages), '/p')
    assert mixed.frame_ids == ('map', 'odom')
    with pytest.raises(BagError, match="2 frames \\('map', 'odom'\\)"):
        pose_frame(mixed, '/p')

    def frames(*names):
        return PoseArrays(np.zeros(1, np.int64), *np.zeros((4, 1)), frame_ids=names)

    with pytest.raises(BagError, match='empty header.frame_id'):
        pose_frame(frames(''), '/p')
    with pytest.raises(BagError, match='no messages'):
        pose_frame(frames(), '/p')
    with pytest.raises(BagError, match='keeps for GPS maps'):
        pose_frame(frames('wgs84'), '/p')
