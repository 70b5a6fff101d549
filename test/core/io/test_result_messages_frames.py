"""The node's output messages for a map in a pose frame: its frame, and no invented NavSatFix."""

import math

import pytest

from r2former_ros.core.geo.coords import frame_position
from r2former_ros.core.io import result_messages as rm
from r2former_ros.core.types import Candidate, LocalizationResult, PlacePosition

GPS_PLACE = PlacePosition(35.0, 139.0, 40.0, 1.0, 2.0, 0.5, 54, True, 3.9e5, 3.9e6, heading=0.5)
SLAM_PLACE = frame_position(12.0, -7.5, 0.25, 2.0)


def matched(position: PlacePosition) -> LocalizationResult:
    return LocalizationResult(True, 0.9, [Candidate(3, position, 0.8, 0.7)])


def test_a_place_without_a_geodetic_position_gets_no_fix():
    assert rm.navsat_fields(matched(SLAM_PLACE), stamp_ns=1, frame_id='cam',
                            threshold_m=10.0) is None
    fix = rm.navsat_fields(matched(GPS_PLACE), stamp_ns=1, frame_id='cam', threshold_m=10.0)
    assert fix is not None and fix['latitude'] == 35.0


def test_pose_and_result_are_in_the_maps_own_frame():
    result = matched(SLAM_PLACE)
    pose = rm.pose_fields(result, stamp_ns=1, map_frame_id='enu', threshold_m=10.0,
                          position_frame='map')
    assert pose is not None and pose['header']['frame_id'] == 'map'
    where = pose['pose']['pose']
    assert (where['position']['x'], where['position']['y']) == (12.0, -7.5)
    assert where['orientation']['z'] == pytest.approx(math.sin(1.0))
    fields = rm.place_recognition_fields(result, stamp_ns=1, frame_id='cam', map_frame_id='enu',
                                         backbone='b', position_frame='map')
    assert fields['map_frame_id'] == 'map' and fields['position']['x'] == 12.0
    assert math.isnan(fields['latitude']) and fields['utm_zone'] == 0


def test_a_gps_map_keeps_the_callers_frame_name():
    result = matched(GPS_PLACE)
    for position_frame in (None, 'wgs84'):
        pose = rm.pose_fields(result, stamp_ns=1, map_frame_id='enu', threshold_m=10.0,
                              position_frame=position_frame)
        assert pose is not None and pose['header']['frame_id'] == 'enu'
        fields = rm.place_recognition_fields(result, stamp_ns=1, frame_id='cam',
                                             map_frame_id='enu', backbone='b',
                                             position_frame=position_frame)
        assert fields['map_frame_id'] == 'enu'
    assert rm.output_frame('enu') == 'enu' and rm.output_frame('enu', 'odom') == 'odom'
