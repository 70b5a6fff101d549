"""
Shared pieces of the node benchmarks (camera_delivery.py, soak_node.py).

A test map, the node started with ``ros2 launch``, a camera process publishing raw frames, and a
probe.

Run the benchmarks in a shell where the r2former_ros workspace is sourced (``ros2`` on PATH,
``r2former_ros.msg`` importable), e.g. after ``. _ci/ros_env.sh`` (CI set-up) or in a sourced
colcon workspace.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DDS_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')
PROFILE = ROOT / 'config' / 'fastdds_large_images.xml'


def write_test_map(directory: Path) -> Path:
    """Write the 12-place route map of the node tests (seeded 128x160 model, 48 tokens)."""
    sys.path.insert(0, str(ROOT / 'test'))
    from map_factory import write_route_map  # noqa: PLC0415
    from model_factory import small_place_model  # noqa: PLC0415

    path, _ = write_route_map(directory / 'route', small_place_model())
    return path


def ros_environment(domain_id: int, dds_profile: Path | None, workdir: Path) -> dict[str, str]:
    """Environment of one process: a private domain on this host, the DDS profile or none."""
    env = dict(os.environ)
    for name in (*DDS_VARIABLES, 'ROS_LOCALHOST_ONLY', '_ROS_WHEELS_BOOTSTRAP_COMPLETE'):
        env.pop(name, None)
    env.update({'ROS_DOMAIN_ID': str(domain_id), 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
                'RCUTILS_COLORIZED_OUTPUT': '0', 'PYTHONUNBUFFERED': '1',
                'R2FORMER_CACHE': str(workdir / 'no_cache')})  # never a real checkpoint
    env.pop('R2FORMER_CHECKPOINT', None)
    if dds_profile is not None:
        env.update({name: str(dds_profile) for name in DDS_VARIABLES})
    return env


class Launched:
    """``with-sigint ros2 launch r2former_ros localize.launch.py ...`` as a subprocess."""

    def __init__(self, arguments: list[str], env: dict[str, str], log: Path) -> None:
        """Start the launch file with ``name:=value`` arguments."""
        self.log_path = log
        self._log = open(log, 'wb')  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ['with-sigint', 'ros2', 'launch', 'r2former_ros', 'localize.launch.py', 'rviz:=false',
             *arguments], env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)

    def node_pid(self) -> int | None:
        """Process id of the localization node (the launch process's child)."""
        for child in Path(f'/proc/{self.process.pid}/task').glob('*/children'):
            for pid in child.read_text().split():
                cmdline = Path(f'/proc/{pid}/cmdline').read_bytes()
                if b'localization_node' in cmdline:
                    return int(pid)
        return None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT the launch (it stops the node) and return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code

    def output(self) -> str:
        """Return what the launch printed so far."""
        return self.log_path.read_text(errors='replace')


def start_camera(width: int, height: int, frames: int, rate_hz: float, env: dict[str, str],
                 log: Path) -> subprocess.Popen:
    """Start a camera-like publisher in its own process (see :func:`camera_main`)."""
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), 'camera', str(width), str(height),
         str(frames), str(rate_hz)], env=env, stdout=open(log, 'wb'),  # noqa: SIM115
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def camera_main(width: int, height: int, frames: int, rate_hz: float) -> int:
    """Publish ``frames`` bgr8 images at ``rate_hz`` on /camera/image_raw, sensor-data QoS."""
    import array  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    import rclpy  # noqa: PLC0415
    from rclpy.qos import qos_profile_sensor_data  # noqa: PLC0415
    from sensor_msgs.msg import Image  # noqa: PLC0415

    rclpy.init()
    node = rclpy.create_node('bench_camera')
    publisher = node.create_publisher(Image, '/camera/image_raw', qos_profile_sensor_data)
    deadline = time.monotonic() + 120.0
    while publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)  # let the match settle on both sides
    rng = np.random.default_rng(0)
    pictures = [array.array('B', rng.integers(0, 256, (height, width, 3), np.uint8).tobytes())
                for _ in range(4)]
    msg = Image(height=height, width=width, encoding='bgr8', step=width * 3)
    msg.header.frame_id = 'camera'
    start = time.monotonic()
    for index in range(frames):
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.data = pictures[index % len(pictures)]
        publisher.publish(msg)
        pause = start + (index + 1) / rate_hz - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    elapsed = time.monotonic() - start
    print(f'published {frames} frames of {width}x{height} in {elapsed:.1f} s', flush=True)
    time.sleep(2.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


class Probe:
    """An rclpy node that keeps the node's latest /diagnostics values (and more subscriptions)."""

    def __init__(self, domain_id: int) -> None:
        """Create a context in ``domain_id`` (no signal handlers)."""
        from diagnostic_msgs.msg import DiagnosticArray  # noqa: PLC0415
        import rclpy  # noqa: PLC0415
        from rclpy.executors import SingleThreadedExecutor  # noqa: PLC0415
        from rclpy.signals import SignalHandlerOptions  # noqa: PLC0415

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('bench_probe', context=self.context)
        self.diagnostics: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if 'localization' in status.name:
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Spin until ``condition()``; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return condition()

    def count(self, key: str) -> int:
        """Return an integer diagnostics value, -1 when not reported yet."""
        return int(self.diagnostics.get(key, -1))

    def close(self) -> None:
        """Destroy the node and the context."""
        with contextlib.suppress(Exception):
            self.executor.shutdown()
            self.node.destroy_node()
        self.context.try_shutdown()


if __name__ == '__main__' and len(sys.argv) == 6 and sys.argv[1] == 'camera':
    sys.exit(camera_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                         float(sys.argv[5])))
