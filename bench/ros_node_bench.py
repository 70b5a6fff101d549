"""
Shared pieces of the node benchmarks (camera_delivery.py, soak_node.py, swap_gap.py).

A test map, the node started with ``ros2 launch`` (or directly, recording when each image
arrived), a camera process publishing raw or JPEG frames, and a probe.

Run the benchmarks in a shell where the r2former_ros workspace is sourced (``ros2`` on PATH,
``r2former_ros.msg`` importable), e.g. after ``. _ci/ros_env.sh`` (CI set-up: its
``R2FORMER_ROS_SITE`` is put first on PYTHONPATH here) or in a sourced colcon workspace.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import json
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
    site = os.environ.get('R2FORMER_ROS_SITE')
    if site and site not in env.get('PYTHONPATH', '').split(os.pathsep):
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [site, env.get('PYTHONPATH')]))
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
                 log: Path, transport: str = 'raw', times_file: Path | None = None
                 ) -> subprocess.Popen:
    """Start a camera-like publisher in its own process (see :func:`camera_main`)."""
    extra = [str(times_file)] if times_file is not None else []
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), 'camera', str(width), str(height),
         str(frames), str(rate_hz), transport, *extra], env=env,
        stdout=open(log, 'wb'),  # noqa: SIM115
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def camera_pictures(width: int, height: int, transport: str, count: int = 4) -> list[bytes]:
    """
    Return ``count`` frames as the camera sends them (raw bgr8 bytes or JPEG files).

    Raw: noise. JPEG (quality 85): a corridor image upscaled to full size with sensor-like noise
    (sigma 8), about the size a real 1080p camera's JPEG has (380 KB; the noise-free upscale
    would be an unrealistic 100 KB).
    """
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    if transport == 'raw':
        return [rng.integers(0, 256, (height, width, 3), np.uint8).tobytes()
                for _ in range(count)]
    import cv2  # noqa: PLC0415

    folder = ROOT / 'r2former_ros' / 'data' / 'demo' / 'corridor' / 'query'
    pictures = []
    for name in sorted(p.name for p in folder.glob('*.jpg'))[:count]:
        small = cv2.imread(str(folder / name), cv2.IMREAD_COLOR)
        large = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        noisy = np.clip(large + rng.normal(0.0, 8.0, large.shape), 0, 255).astype(np.uint8)
        ok, encoded = cv2.imencode('.jpg', noisy, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        pictures.append(encoded.tobytes())
    return pictures


def camera_main(width: int, height: int, frames: int, rate_hz: float, transport: str = 'raw',
                times_file: str | None = None) -> int:
    """
    Publish ``frames`` images at ``rate_hz``, sensor-data QoS, as a camera driver does.

    ``raw``: bgr8 sensor_msgs/Image on /camera/image_raw; ``compressed``: JPEG
    sensor_msgs/CompressedImage on /camera/image_raw/compressed. With ``times_file`` the
    publish times (time.monotonic, which all processes share) are written there as JSON.
    """
    import array  # noqa: PLC0415

    import rclpy  # noqa: PLC0415
    from rclpy.qos import qos_profile_sensor_data  # noqa: PLC0415
    from sensor_msgs.msg import CompressedImage, Image  # noqa: PLC0415

    rclpy.init()
    node = rclpy.create_node('bench_camera')
    msg: Any
    if transport == 'compressed':
        topic, msg = '/camera/image_raw/compressed', CompressedImage(format='jpeg')
    else:
        topic, msg = '/camera/image_raw', Image(height=height, width=width, encoding='bgr8',
                                                step=width * 3)
    publisher = node.create_publisher(type(msg), topic, qos_profile_sensor_data)
    deadline = time.monotonic() + 120.0
    while publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)  # let the match settle on both sides
    pictures = [array.array('B', data) for data in camera_pictures(width, height, transport)]
    msg.header.frame_id = 'camera'
    times = []
    start = time.monotonic()
    for index in range(frames):
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.data = pictures[index % len(pictures)]
        times.append(time.monotonic())
        publisher.publish(msg)
        pause = start + (index + 1) / rate_hz - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    elapsed = time.monotonic() - start
    print(f'published {frames} {transport} frames of {width}x{height} in {elapsed:.1f} s',
          flush=True)
    if times_file:
        Path(times_file).write_text(json.dumps(times))
    time.sleep(2.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def start_recording_node(parameters: list[str], env: dict[str, str], record: Path,
                         log: Path) -> subprocess.Popen:
    """
    Start the localization node directly (no launch), recording when each image arrived.

    Works with any version of the node (the one on PYTHONPATH): it wraps the node's image
    callback, and writes ``[[time.monotonic(), stamp_sec, stamp_nanosec], ...]`` to ``record``
    when the node stops (SIGINT).
    """
    ros_args = [item for parameter in parameters for item in ('-p', parameter)]
    ros_args += ['-r', 'image:=/camera/image_raw']  # where start_camera publishes
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), 'node', str(record), '--ros-args',
         *ros_args], env=env, stdout=open(log, 'wb'),  # noqa: SIM115
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def recording_node_main(record: str, ros_args: list[str]) -> None:
    """Run the node's ``main`` with its image callback wrapped to note each arrival."""
    from r2former_ros.ros import localization_node as module  # noqa: PLC0415

    arrivals: list[tuple[float, int, int]] = []
    original = module.LocalizationNode._on_image  # noqa: SLF001

    def on_image(self: Any, msg: Any) -> None:
        arrivals.append((time.monotonic(), msg.header.stamp.sec, msg.header.stamp.nanosec))
        original(self, msg)

    module.LocalizationNode._on_image = on_image  # type: ignore[method-assign]  # noqa: SLF001
    code = 1
    try:
        code = module.main(['node', *ros_args])
    finally:
        Path(record).write_text(json.dumps(arrivals))
        sys.stdout.flush()
        os._exit(code)


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

    def call(self, service_type: Any, name: str, request: Any, timeout: float) -> Any:
        """Call a service, spinning meanwhile; the response (None on timeout)."""
        client = self.node.create_client(service_type, name)
        try:
            if not self.spin_until(client.service_is_ready, 30.0):
                return None
            future = client.call_async(request)
            self.spin_until(future.done, timeout)
            return future.result() if future.done() else None
        finally:
            self.node.destroy_client(client)

    def count(self, key: str) -> int:
        """Return an integer diagnostics value, -1 when not reported yet."""
        return int(self.diagnostics.get(key, -1))

    def close(self) -> None:
        """Destroy the node and the context."""
        with contextlib.suppress(Exception):
            self.executor.shutdown()
            self.node.destroy_node()
        self.context.try_shutdown()


if __name__ == '__main__' and len(sys.argv) in (6, 7, 8) and sys.argv[1] == 'camera':
    sys.exit(camera_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                         float(sys.argv[5]), *sys.argv[6:]))
if __name__ == '__main__' and len(sys.argv) > 2 and sys.argv[1] == 'node':
    recording_node_main(sys.argv[2], sys.argv[3:])
