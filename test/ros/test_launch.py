"""
launch_testing: localize.launch.py starts the node, which joins the graph and exits cleanly.

Runs only where launch_testing exists (a ROS 2 install; the PyPI wheels do not ship it) and
R2FORMER_ROS_TEST_MAP names a map directory (R2FORMER_ROS_TEST_CHECKPOINT optionally a
checkpoint). Run with ``launch_test test/ros/test_launch.py`` or launch_testing's pytest plugin.
"""

import os
from pathlib import Path
import time
import unittest

import pytest

pytest.importorskip('launch_testing')

from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402

import launch  # noqa: E402

MAP = os.environ.get('R2FORMER_ROS_TEST_MAP', '')
CHECKPOINT = os.environ.get('R2FORMER_ROS_TEST_CHECKPOINT', '')
if not MAP:
    pytest.skip('R2FORMER_ROS_TEST_MAP is not set', allow_module_level=True)

LAUNCH_FILE = Path(__file__).resolve().parents[2] / 'launch' / 'localize.launch.py'


@pytest.mark.launch_test
def generate_test_description():
    localize = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={
            'map': MAP,
            'checkpoint': CHECKPOINT,
            'device': 'cpu',
            'rviz': 'false',
            'image_topic': '/test/image',
        }.items(),
    )
    return launch.LaunchDescription([localize, launch_testing.actions.ReadyToTest()])


class TestNodeComesUp(unittest.TestCase):
    def test_node_in_graph(self):
        rclpy.init()
        try:
            node = rclpy.create_node('launch_test_probe')
            deadline = time.monotonic() + 60.0
            names: list[str] = []
            while time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
                names = node.get_node_names()
                if 'localization_node' in names and node.count_publishers('place_recognition'):
                    break
            self.assertIn('localization_node', names)
            self.assertGreaterEqual(node.count_publishers('place_recognition'), 1)
            node.destroy_node()
        finally:
            rclpy.try_shutdown()


@launch_testing.post_shutdown_test()
class TestCleanExit(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
