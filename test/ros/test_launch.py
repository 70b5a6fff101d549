"""
launch_testing, for real: localize.launch.py brings the node up unconfigured (autostart:=false)
on a compressed camera stream (image_transport:=compressed, odom_topic:=), ``ros2 lifecycle``
configures and activates it, a published JPEG gets a result, ``ros2 service call`` swaps the map
(a bad map is refused and the old one keeps serving; a 50k-place map is swapped in while frames
stream at 30 Hz and every one of them is still received; then a small one), and SIGINT at the
end stops everything with exit code 0.

Needs launch_testing and the ``ros2`` command (a ROS 2 install, or the ros2_tooling bundle that
.ci/setup.sh installs beside the PyPI wheels) and the package's cmake or colcon install
(R2FORMER_ROS_PREFIX, see ros_testing.py); it skips otherwise. Run with ``python -m pytest
test/ros/test_launch.py -s`` or ``launch_test test/ros/test_launch.py``.
"""

import contextlib
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import pytest

pytest.importorskip('launch_testing')  # when it skips, launch_testing's plugin is absent too

from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402

import launch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # ros_testing, map_factory (also under launch_test)
from ros_testing import (  # noqa: E402
    claim_domain_id,
    enable_generated_messages,
    install_prefix,
    install_site,
    isolation_variables,
)

ROOT = HERE.parents[1]
LAUNCH_FILE = ROOT / 'launch' / 'localize.launch.py'
PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'
SITE = install_site()
MISSING = [what for what, ok in (
    ('the ros2 command', shutil.which('ros2') is not None),
    (f'the package install ({SITE})', (SITE / 'r2former_ros' / 'msg' / '__init__.py').is_file()),
) if not ok]
NODE = '/localization_node'
# `ros2 lifecycle get` prints "<label> [<id>]"; a bare substring test would take 'inactive'
# for 'active'.
LIFECYCLE_STATE = r'(?m)^{} \['
WORKDIR = Path(tempfile.mkdtemp(prefix='r2former_launch_test_'))
BIG_MAP_PLACES = 50_000
STREAM_HZ = 30.0
STATE: dict = {}


def ros2(*args: str, timeout: float = 120.0) -> str:
    """
    Run the ros2 command (the real CLI) in the test's domain; return and print its output.

    A fresh ros2 daemon (or --no-daemon) may not have discovered the node yet on a busy machine
    ("Node not found", "... not available"): such answers are retried for up to a minute.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(SITE), os.environ.get('PYTHONPATH')])))
    deadline = time.monotonic() + 60.0
    while True:
        done = subprocess.run(['ros2', *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        text = (done.stdout + done.stderr).strip()
        not_seen = 'Node not found' in text or 'not available' in text
        if not not_seen or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    print(f'$ ros2 {" ".join(args)}\n{text}', flush=True)
    return text


@pytest.mark.launch_test
@pytest.mark.slow  # a launch, lifecycle and service round trip: about 40 s on 2 cores
@pytest.mark.skipif(bool(MISSING), reason=f'missing {" and ".join(MISSING)}')
def generate_test_description():
    from map_factory import write_route_map, write_synthetic_map
    from model_factory import small_place_model

    model = small_place_model()
    route, world = write_route_map(WORKDIR / 'route', model)
    six, _ = write_route_map(WORKDIR / 'six', model, num_places=6)
    big = write_synthetic_map(WORKDIR / 'big', model.identity(), BIG_MAP_PLACES)
    STATE.update(world=world, route=route, six=six, big=big)
    # A parameters file of our own (random weights: only global retrieval finds an exact map
    # image again), given with params_file:=; the launch arguments override its map.
    params_file = WORKDIR / 'params.yaml'
    params_file.write_text('/**:\n  ros__parameters:\n    rerank:\n      top_n: 0\n'
                           '    diagnostics_period_s: 0.5\n')
    # One private domain on this host for the node, this process and the ros2 commands (held
    # until this process exits); the large-image profile for this process too (it publishes
    # full-size frames).
    held = contextlib.ExitStack()
    STATE['domain'] = held
    os.environ.update(isolation_variables(held.enter_context(claim_domain_id()), PROFILE))
    os.environ.pop('ROS_LOCALHOST_ONLY', None)
    os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(
        filter(None, [str(install_prefix()), os.environ.get('AMENT_PREFIX_PATH')]))
    localize = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={
            'map': str(route), 'device': 'cpu', 'rviz': 'false', 'autostart': 'false',
            'image_topic': '/test/image', 'image_transport': 'compressed',
            'odom_topic': '/test/odom', 'params_file': str(params_file),
        }.items(),
    )
    return launch.LaunchDescription([
        # the node imports r2former_ros (with its generated msg/srv) from the install, as
        # `ros2 run` does; no real checkpoint: the map's seeded weights
        SetEnvironmentVariable('PYTHONPATH', str(SITE)),
        SetEnvironmentVariable('R2FORMER_CACHE', str(WORKDIR / 'no_cache')),
        localize,
        launch_testing.actions.ReadyToTest(),
    ])


class TestLifecycleAndMapSwap(unittest.TestCase):
    def test_lifecycle_result_and_load_map(self, proc_output):
        import rclpy

        rclpy.init()
        try:
            node = rclpy.create_node('launch_test_probe')
            self._run(node, proc_output)
            node.destroy_node()
        finally:
            rclpy.try_shutdown()
            ros2('daemon', 'stop')

    def _run(self, node, proc_output):
        from diagnostic_msgs.msg import DiagnosticArray
        from node_helpers import compressed_msg
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage

        from r2former_ros.core.io.images import rgb_to_compressed
        from r2former_ros.core.mapdb import MapDatabase

        PlaceRecognition = enable_generated_messages(SITE).PlaceRecognition  # noqa: N806

        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and 'localization_node' not in node.get_node_names():
            rclpy_spin(node, 0.2)
        self.assertIn('localization_node', node.get_node_names())
        self.assertRegex(ros2('lifecycle', 'get', NODE), LIFECYCLE_STATE.format('unconfigured'))
        self.assertEqual(node.count_subscribers('/test/image/compressed'), 0)
        self.assertIn('Transitioning successful', ros2('lifecycle', 'set', NODE, 'configure'))
        self.assertRegex(ros2('lifecycle', 'get', NODE), LIFECYCLE_STATE.format('inactive'))
        self.assertIn('Transitioning successful', ros2('lifecycle', 'set', NODE, 'activate'))
        self.assertRegex(ros2('lifecycle', 'get', NODE), LIFECYCLE_STATE.format('active'))
        # parameters from the launch file (launch arguments) and from config/localize.yaml
        self.assertIn(str(STATE['route']), ros2('param', 'get', NODE, 'map'))
        self.assertIn('cpu', ros2('param', 'get', NODE, 'device'))
        self.assertRegex(ros2('param', 'get', NODE, 'rerank.top_n'),  # from the file
                         re.compile(r'^Integer value is: 0$', re.MULTILINE))
        self.assertRegex(ros2('param', 'get', NODE, 'retrieval.top_k'),  # the default
                         re.compile(r'^Integer value is: 100$', re.MULTILINE))
        # image_transport:= and odom_topic:= (which sets use_odometry)
        self.assertRegex(ros2('param', 'get', NODE, 'image_transport'),
                         re.compile(r'^String value is: compressed$', re.MULTILINE))
        self.assertRegex(ros2('param', 'get', NODE, 'use_odometry'),
                         re.compile(r'^Boolean value is: True$', re.MULTILINE))
        self.assertEqual(node.count_subscribers('/test/image'), 0)  # compressed only

        results, diagnostics = [], []
        node.create_subscription(PlaceRecognition, '/place_recognition', results.append, 10)
        node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
        publisher = node.create_publisher(CompressedImage, '/test/image/compressed',
                                          qos_profile_sensor_data)
        world = STATE['world']
        ids = {name: MapDatabase.open(STATE[name]).map_id for name in ('route', 'big', 'six')}
        jpegs = [rgb_to_compressed(image, quality=90) for image in world.map_images]

        def localize(place: int, stamp: int):
            msg = compressed_msg(jpegs[place], stamp)
            for _ in range(5):
                publisher.publish(msg)
                end = time.monotonic() + 6.0
                while time.monotonic() < end:
                    rclpy_spin(node, 0.1)
                    got = [r for r in results if r.header.stamp.sec == stamp]
                    if got:
                        print(f'JPEG of place {place} ({len(jpegs[place])} bytes) -> place_id '
                              f'{got[0].place_id}, confidence {got[0].confidence:.3f}, map '
                              f'{got[0].map_id}', flush=True)
                        return got[0]
            self.fail(f'no result for stamp {stamp}')

        def frames_in() -> int:
            end = time.monotonic() + 1.5  # settled: a diagnostics message after the last frame
            while time.monotonic() < end:
                rclpy_spin(node, 0.1)
            (status,) = diagnostics[-1].status
            return int(next(kv.value for kv in status.values if kv.key == 'frames_in'))

        first = localize(9, 1)
        self.assertEqual((first.place_id, first.map_id), (9, ids['route']))
        bad = ros2('service', 'call', f'{NODE}/load_map', 'r2former_ros/srv/LoadMap',
                   f"{{map: '{WORKDIR / 'no_such_map'}'}}")
        self.assertIn('success=False', bad)
        self.assertEqual(localize(9, 2).place_id, 9)  # the old map keeps serving

        # A big map swapped in while the camera streams: reception never pauses.
        before = frames_in()
        sent = []
        stop = threading.Event()

        def stream() -> None:
            start = time.monotonic()
            while not stop.is_set():
                publisher.publish(compressed_msg(jpegs[len(sent) % 12], 1000 + len(sent)))
                sent.append(time.monotonic())
                time.sleep(max(0.0, start + len(sent) / STREAM_HZ - time.monotonic()))

        streamer = threading.Thread(target=stream)
        streamer.start()
        try:
            swapped = ros2('service', 'call', f'{NODE}/load_map', 'r2former_ros/srv/LoadMap',
                           f"{{map: '{STATE['big']}'}}")
            time.sleep(0.5)
        finally:
            stop.set()
            streamer.join()
        self.assertIn('success=True', swapped)
        counted = frames_in() - before
        print(f'swap to {BIG_MAP_PLACES} places while streaming JPEGs at {STREAM_HZ:.0f} Hz: '
              f'sent {len(sent)}, counted {counted}', flush=True)
        # A stall in reception loses frames in a run (the old swap lost 12 of 48); a few single
        # best-effort losses happen on a starved 2-core machine (69 of 75 once, with two busy
        # loops beside the test), so 90% still tells a stall from noise.
        self.assertGreaterEqual(counted, len(sent) * 90 // 100)
        self.assertEqual(localize(3, 3).map_id, ids['big'])
        good = ros2('service', 'call', f'{NODE}/load_map', 'r2former_ros/srv/LoadMap',
                    f"{{map: '{STATE['six']}'}}")
        self.assertIn('success=True', good)
        last = localize(11, 4)
        self.assertLess(last.place_id, 6)  # the new map has places 0-5 only
        self.assertEqual(last.map_id, ids['six'])
        proc_output.assertWaitFor('now querying map', timeout=10)  # the node logs to stderr


def rclpy_spin(node, seconds: float) -> None:
    import rclpy

    rclpy.spin_once(node, timeout_sec=seconds)


@launch_testing.post_shutdown_test()
class TestCleanExit(unittest.TestCase):
    def test_exit_codes_after_sigint(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info)  # launch stops the node with SIGINT
        for output in proc_output:
            self.assertNotIn("publisher's context is invalid", output.text.decode())
