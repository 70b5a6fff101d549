"""
The node on a map built without GPS (real rclpy), and the pose it hands a robot's localizer.

A map in the robot's own frame publishes its poses in that frame and never a NavSatFix; after a
``~/relocalize`` call, one pose goes to ``/initialpose`` once the sequence filter is matched for
``initialpose.min_frames`` frames in a row, and none while the filter is not confident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node_helpers import (
    STARTUP_TIMEOUT,
    call_service,
    diagnostics_values,
    image_msg,
    send_and_wait,
    start_localizer,
)
import pytest
from ros_testing import Probe, RosEnv

pytestmark = [
    pytest.mark.ros,
    pytest.mark.slow,
    pytest.mark.filterwarnings('ignore::DeprecationWarning:lark.*'),
]

NODE_NAME = '/localization_node'


@pytest.fixture(scope='module')
def frame_map(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The route world mapped from poses in frame 'map' (turned, moved; no GPS)."""
    from map_factory import write_route_map_in_frame
    from model_factory import small_place_model

    return write_route_map_in_frame(tmp_path_factory.mktemp('map') / 'route_in_map',
                                    small_place_model())


def set_parameter(probe: Probe, name: str, value: float) -> Any:
    """Set one double parameter of the node through its set_parameters service."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    request = SetParameters.Request(parameters=[Parameter(
        name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value))])
    response = call_service(probe, SetParameters, f'{NODE_NAME}/set_parameters', request)
    (outcome,) = response.results
    return outcome


def test_pose_frame_map_publishes_in_its_frame_and_initialpose_only_when_confident(
        frame_map: tuple[Path, Any], r2former_msgs: Any, probe: Probe, start_node: Any,
        ros_env: RosEnv) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import Image, NavSatFix, PointCloud2
    from std_srvs.srv import Trigger

    from r2former_ros.core.mapdb import MapDatabase

    map_path, world = frame_map
    places = MapDatabase.open(map_path).places
    results = probe.collect(r2former_msgs.PlaceRecognition, 'place_recognition')
    poses = probe.collect(PoseWithCovarianceStamped, 'pose')
    fixes = probe.collect(NavSatFix, 'fix')
    initial = probe.collect(PoseWithCovarianceStamped, '/initialpose')
    diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    clouds = probe.collect(PointCloud2, 'map_places', latched)
    # map_frame_id names a GPS map's ENU frame; a pose map's own frame ('map') must win over it
    node = start_localizer(start_node, ros_env, map_path, 'rerank.top_n:=0', 'filter:=hmm',
                           'map_frame_id:=enu', 'initialpose.min_frames:=3',
                           'initialpose.min_interval_s:=0.0')
    images = probe.publisher(Image, 'image')
    assert probe.wait_for_matched(images, timeout=STARTUP_TIMEOUT), node.output()

    # Not armed: matched frames publish poses in the map's own frame, nothing on /initialpose.
    for k in range(1, 5):
        result = send_and_wait(probe, images, image_msg(world.map_images[k], k), results, node)
        assert result.place_id == k and result.matched, result
    assert probe.spin_until(lambda: len(poses) >= 4, 10.0), node.output()
    for pose in poses:
        place = int(round(pose.header.stamp.sec))
        assert pose.header.frame_id == 'map'
        assert pose.pose.pose.position.x == pytest.approx(places['east'][place], abs=1e-6)
        assert pose.pose.pose.position.y == pytest.approx(places['north'][place], abs=1e-6)
    assert fixes == [] and initial == []
    assert probe.spin_until(lambda: len(clouds) >= 1, 10.0), node.output()
    assert clouds[-1].header.frame_id == 'map' and clouds[-1].width == len(places['east'])

    # Armed: exactly one pose goes out, as the filter has been matched three frames in a row
    # already, with the next frame.
    answer = call_service(probe, Trigger, f'{NODE_NAME}/relocalize', Trigger.Request())
    assert answer.success, answer.message
    for k in range(5, 9):
        send_and_wait(probe, images, image_msg(world.map_images[k], k), results, node)
    assert probe.spin_until(lambda: len(initial) >= 1, 10.0), node.output()
    probe.spin_for(0.5)
    assert len(initial) == 1
    (sent,) = initial
    assert sent.header.frame_id == 'map'
    place = int(sent.header.stamp.sec)
    assert place == 5
    assert sent.pose.pose.position.x == pytest.approx(places['east'][place], abs=1e-6)
    assert sent.pose.covariance[0] > 0.0  # the map's error model, not a made-up certainty

    # Not confident (threshold above every confidence): armed again, nothing goes out.
    assert set_parameter(probe, 'confidence_threshold', 0.999).successful
    answer = call_service(probe, Trigger, f'{NODE_NAME}/relocalize', Trigger.Request())
    assert answer.success, answer.message
    for k in range(9, 12):
        result = send_and_wait(probe, images, image_msg(world.map_images[k], k), results, node)
        assert not result.matched
    probe.spin_for(0.5)
    assert len(initial) == 1 and fixes == []
    assert probe.spin_until(lambda: len(diagnostics) > 2, 10.0)
    values = diagnostics_values(diagnostics[-1])
    assert values['position_frame'] == 'map' and values['initialpose_published'] == '1'
    assert values['relocalize_armed'] == 'true' and values['filter'] == 'hmm'
    node.assert_stops_cleanly()


def test_relocalize_is_refused_without_the_sequence_filter(
        frame_map: tuple[Path, Any], probe: Probe, start_node: Any, ros_env: RosEnv) -> None:
    from std_srvs.srv import Trigger

    map_path, _ = frame_map
    # filter auto on a map without a drive calibration: no filter, so no trusted pose
    node = start_localizer(start_node, ros_env, map_path, 'rerank.top_n:=0')
    assert probe.wait_for_publishers('place_recognition', timeout=STARTUP_TIMEOUT), node.output()
    answer = call_service(probe, Trigger, f'{NODE_NAME}/relocalize', Trigger.Request())
    if answer.message.startswith('the node is'):  # asked between configure and activate
        probe.spin_for(2.0)
        answer = call_service(probe, Trigger, f'{NODE_NAME}/relocalize', Trigger.Request())
    assert not answer.success and 'sequence filter is off' in answer.message, answer.message
    assert node.running
    node.assert_stops_cleanly()
