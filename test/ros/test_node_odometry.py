"""
The node with odometry (real rclpy): nav_msgs/Odometry beside the images drives the filter's
motion step; a stream that stops or jumps is refused with a warning, never a crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node_helpers import (
    STARTUP_TIMEOUT,
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

ODOM_HZ = 10
STEP_M = 10.0  # the route map's places are 10 m apart


def odometry(stamp_s: float, x: float) -> Any:
    from nav_msgs.msg import Odometry

    msg = Odometry()
    msg.header.stamp.sec = int(stamp_s)
    msg.header.stamp.nanosec = int(round((stamp_s - int(stamp_s)) * 1e9))
    msg.header.frame_id = 'odom'
    msg.child_frame_id = 'base_link'
    msg.pose.pose.position.x = float(x)
    msg.pose.pose.orientation.w = 1.0
    return msg


def drive_odometry(probe: Probe, publisher: Any, start_s: float, end_s: float,
                   x_at: Any) -> None:
    """Publish the odometry of [start_s, end_s] at ODOM_HZ (x = x_at(t))."""
    steps = int(round((end_s - start_s) * ODOM_HZ))
    for k in range(steps + 1):
        t = start_s + k / ODOM_HZ
        publisher.publish(odometry(t, x_at(t)))
    probe.spin_for(0.2)  # delivered before the image that needs it


def latest_diagnostics(probe: Probe, diagnostics: list[Any], after: int) -> dict[str, str]:
    """The first diagnostics message received after ``after`` messages."""
    assert probe.spin_until(lambda: len(diagnostics) > after + 1, 10.0), 'no diagnostics'
    return diagnostics_values(diagnostics[-1])


def test_odometry_drives_the_filter_and_a_bad_stream_only_warns(
        route_map: tuple[Path, Any], r2former_msgs: Any, probe: Probe, start_node: Any,
        ros_env: RosEnv) -> None:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image

    map_path, world = route_map
    results = probe.collect(r2former_msgs.PlaceRecognition, 'place_recognition')
    diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    node = start_localizer(start_node, ros_env, map_path, 'rerank.top_n:=0', 'filter:=hmm',
                           'use_odometry:=true')
    images = probe.publisher(Image, 'image')
    odom = probe.publisher(Odometry, 'odom', 50)
    assert probe.wait_for_matched(images, timeout=STARTUP_TIMEOUT), node.output()
    assert probe.wait_for_matched(odom, timeout=STARTUP_TIMEOUT), node.output()

    # A good stream: the robot drives one place (10 m) per second, frames are map images.
    drive_odometry(probe, odom, 0.0, 4.0, lambda t: STEP_M * t)
    for k in range(1, 5):
        result = send_and_wait(probe, images, image_msg(world.map_images[k], k), results, node)
        assert result.place_id == k
    # Then it speeds up: 3 places in the next second. The filter follows the odometry to place 7;
    # from its speed bound and velocity alone it would say place 5 (test_localizer pins both).
    drive_odometry(probe, odom, 4.1, 5.0, lambda t: 4 * STEP_M + 3 * STEP_M * (t - 4.0))
    result = send_and_wait(probe, images, image_msg(world.map_images[7], 5), results, node)
    assert result.place_id == 7 and result.matched, result
    values = latest_diagnostics(probe, diagnostics, len(diagnostics))
    assert values['filter_motion'].startswith('odometry'), values
    assert values['odometry_fallback_frames'] == '0' and values['odometry_problem'] == ''
    assert int(values['odometry_messages']) >= 50

    # The stream stops: the next frames fall back (warned, counted), the node goes on.
    for stamp, place in ((6, 8), (7, 9)):
        send_and_wait(probe, images, image_msg(world.map_images[place], stamp), results, node)
    values = latest_diagnostics(probe, diagnostics, len(diagnostics))
    assert 'stopped' in values['odometry_problem'], values
    assert int(values['odometry_fallback_frames']) >= 2
    assert diagnostics[-1].status[0].level == DiagnosticStatus.WARN
    assert 'odometry not used' in diagnostics[-1].status[0].message

    # The stream comes back with a 500 m jump (a reset) between frames 8 and 9: the step across
    # the gap (7 -> 8) and the one across the jump (8 -> 9) are refused; the node goes on.
    drive_odometry(probe, odom, 7.5, 9.0,
                   lambda t: STEP_M * (t + 2.0) + (500.0 if t >= 8.5 else 0.0))
    send_and_wait(probe, images, image_msg(world.map_images[10], 8), results, node)
    values = latest_diagnostics(probe, diagnostics, len(diagnostics))
    assert 'gap' in values['odometry_problem'], values
    send_and_wait(probe, images, image_msg(world.map_images[11], 9), results, node)
    values = latest_diagnostics(probe, diagnostics, len(diagnostics))
    assert 'jumped' in values['odometry_problem'], values
    assert node.running
    assert 'odometry not used for this frame' in node.output()
    node.assert_stops_cleanly()
