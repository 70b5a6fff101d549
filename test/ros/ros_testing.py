"""
Support for tests that run ROS 2 nodes with real rclpy (the PyPI ros-jazzy-* wheels).

Importing this module needs no rclpy; the pieces that use it import it when called.

The generated message package (``r2former_ros/msg``) exists only in the cmake install prefix
written by ``.ci/ros_setup.sh`` (``_ci/install`` unless ``R2FORMER_ROS_PREFIX`` says otherwise).
The test process keeps importing ``r2former_ros`` from the source tree and borrows ``msg/`` (plus
its typesupport extensions) from the install through the package path, see
:func:`enable_generated_messages`. Node subprocesses run entirely from the install tree, like
``ros2 run`` would: :class:`RosEnv.env` puts the install's site-packages first on PYTHONPATH.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
import ctypes
from dataclasses import dataclass, field
import fcntl
import importlib
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import tempfile
import time
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PREFIX = REPO_ROOT / '_ci' / 'install'
# Fast DDS on Linux computes ports as 7400 + 250 * domain; ids up to 101 stay clear of the
# ephemeral port range. 0 is left to whatever else runs on the machine.
DOMAIN_IDS = range(1, 102)

FASTDDS_LOOPBACK_PROFILE = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- All DDS traffic of a test stays on this host: UDP on 127.0.0.1 only, plus shared memory
     with the segment size of config/fastdds_large_images.xml (raw full-size frames fit). -->
<dds xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>loopback_udp</transport_id>
        <type>UDPv4</type>
        <interfaceWhiteList>
          <address>127.0.0.1</address>
        </interfaceWhiteList>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>local_shm</transport_id>
        <type>SHM</type>
        <segment_size>67108864</segment_size>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="r2former_ros_test_loopback" is_default_profile="true">
      <rtps>
        <builtin>
          <initialPeersList>
            <locator>
              <udpv4>
                <address>127.0.0.1</address>
              </udpv4>
            </locator>
          </initialPeersList>
        </builtin>
        <userTransports>
          <transport_id>loopback_udp</transport_id>
          <transport_id>local_shm</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def install_prefix() -> Path:
    """Return the package's cmake install prefix (``R2FORMER_ROS_PREFIX`` or ``_ci/install``)."""
    return Path(os.environ.get('R2FORMER_ROS_PREFIX', DEFAULT_PREFIX))


def install_site(prefix: Path | None = None) -> Path:
    """Return the install's site-packages (``PYTHON_INSTALL_DIR``) for this interpreter."""
    prefix = install_prefix() if prefix is None else prefix
    version = f'python{sys.version_info.major}.{sys.version_info.minor}'
    return prefix / 'lib' / version / 'site-packages'


def enable_generated_messages(site: Path | None = None) -> ModuleType:
    """
    Make ``r2former_ros.msg`` importable in this process and return it.

    Appends the install's ``r2former_ros`` directory to the package path of whichever
    ``r2former_ros`` is already imported (normally the source tree): the source tree keeps
    precedence for everything it has, and ``msg`` plus the ``r2former_ros_s__rosidl_typesupport_*``
    extensions (which the source tree never has) resolve from the install. The extensions find
    their libraries through the RPATH set by ``.ci/ros_setup.sh``.

    Raises:
        ImportError: The install is missing or its messages cannot be loaded.
    """
    site = install_site() if site is None else site
    package_dir = site / 'r2former_ros'
    if not (package_dir / 'msg' / '__init__.py').is_file():
        raise ImportError(
            f'no generated messages in {package_dir}; run .ci/ros_setup.sh (or set '
            'R2FORMER_ROS_PREFIX to the install prefix)'
        )
    _preload_interface_libraries(site)
    import r2former_ros

    if str(package_dir) not in r2former_ros.__path__:
        r2former_ros.__path__.append(str(package_dir))
    return importlib.import_module('r2former_ros.msg')


def _preload_interface_libraries(site: Path) -> None:
    """
    Load the install's ``libr2former_ros__*.so`` by full path.

    The rmw looks its typesupport library up by bare name with ``dlopen``, which searches the
    LD_LIBRARY_PATH the process *started* with. A library already loaded under that soname is
    found regardless, so this makes the in-process probe work whether or not ``_ci/ros_env.sh``
    was sourced before pytest started (node subprocesses get LD_LIBRARY_PATH from
    :func:`make_ros_env`).
    """
    lib_dir = site.parents[1]  # <prefix>/lib/pythonX.Y/site-packages -> <prefix>/lib
    for library in sorted(lib_dir.glob('libr2former_ros__*.so')):
        ctypes.CDLL(str(library))


@contextlib.contextmanager
def claim_domain_id(ids: Sequence[int] = DOMAIN_IDS) -> Iterator[int]:
    """
    Hold a ROS domain id that no other test process on this host holds.

    Each id is an exclusive ``flock`` on a file in the temp directory, so concurrent pytest
    sessions (several checkouts, xdist workers) never share a domain. The lock goes with the
    process, so a crashed session leaks nothing.
    """
    lock_dir = Path(tempfile.gettempdir()) / 'r2former_ros_domain_ids'
    lock_dir.mkdir(exist_ok=True)
    order = list(ids)
    random.shuffle(order)
    for domain_id in order:
        handle = open(lock_dir / f'{domain_id}.lock', 'w')  # noqa: SIM115 (held while in use)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield domain_id
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    raise RuntimeError(f'all {len(order)} ROS domain ids are held by other test processes')


@dataclass(frozen=True)
class RosEnv:
    """The isolated ROS environment of one test."""

    domain_id: int
    profiles_file: Path  # the Fast DDS loopback profile
    workdir: Path  # cwd of node subprocesses (the test's tmp_path)
    # complete environment for node subprocesses: the DDS isolation variables, the install's
    # site-packages first on PYTHONPATH and its lib/ first on LD_LIBRARY_PATH
    env: dict[str, str] = field(repr=False)


def make_ros_env(domain_id: int, workdir: Path, prefix: Path | None = None) -> RosEnv:
    """
    Write the loopback profile into ``workdir`` and build the environment for subprocesses.

    The caller also applies :func:`isolation_variables` to ``os.environ`` (the conftest fixture
    does, with monkeypatch) so that in-process rclpy contexts are isolated the same way.
    """
    prefix = install_prefix() if prefix is None else prefix
    profiles_file = workdir / 'fastdds_loopback.xml'
    profiles_file.write_text(FASTDDS_LOOPBACK_PROFILE)
    env = dict(os.environ)
    env.pop('ROS_LOCALHOST_ONLY', None)  # deprecated; would override the discovery range
    env.update(isolation_variables(domain_id, profiles_file))
    env['PYTHONPATH'] = os.pathsep.join(
        [str(install_site(prefix)), *filter(None, [os.environ.get('PYTHONPATH')])]
    )
    env['LD_LIBRARY_PATH'] = os.pathsep.join(
        [str(prefix / 'lib'), *filter(None, [os.environ.get('LD_LIBRARY_PATH')])]
    )
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(
        [str(prefix), *filter(None, [os.environ.get('AMENT_PREFIX_PATH')])]
    )
    env['PYTHONUNBUFFERED'] = '1'  # node logs reach the log file before a crash
    env['RCUTILS_COLORIZED_OUTPUT'] = '0'
    return RosEnv(domain_id=domain_id, profiles_file=profiles_file, workdir=workdir, env=env)


def isolation_variables(domain_id: int, profiles_file: Path) -> dict[str, str]:
    """Return the variables that keep ROS traffic of one test on this host and in its domain."""
    variables = {
        'ROS_DOMAIN_ID': str(domain_id),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
    }
    variables.update({name: str(profiles_file) for name in profile_variables()})
    return variables


def profile_variables(distro: str | None = None) -> tuple[str, ...]:
    """
    The Fast DDS profile variable(s) of this ROS distribution (``ROS_DISTRO``).

    Fast DDS 2.x (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE; Fast DDS 3 (Kilted on)
    reads FASTDDS_DEFAULT_PROFILES_FILE and, when both are set, loads the file twice and rejects
    the second copy ("other transport with the same id"). Unknown distribution: both.
    """
    distro = os.environ.get('ROS_DISTRO', '') if distro is None else distro
    if distro in ('humble', 'iron', 'jazzy'):
        return ('FASTRTPS_DEFAULT_PROFILES_FILE',)
    if distro:
        return ('FASTDDS_DEFAULT_PROFILES_FILE',)
    return ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')


def wait_until(
    condition: Callable[[], bool], timeout: float, step: Callable[[], None] | None = None
) -> bool:
    """Call ``step`` (default: sleep 20 ms) until ``condition()`` holds; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        if step is None:
            time.sleep(0.02)
        else:
            step()


class NodeProcess:
    """A node (or any Python program) running as a subprocess of the test."""

    def __init__(self, argv: Sequence[str], ros_env: RosEnv, name: str = 'node') -> None:
        """
        Start ``sys.executable *argv`` in ``ros_env.workdir`` with ``ros_env.env``.

        Output (stdout and stderr) goes to ``<workdir>/<name>.log``; see :meth:`output`.
        """
        self.argv = [sys.executable, *argv]
        self.log_path = ros_env.workdir / f'{name}.log'
        self._log = open(self.log_path, 'wb')  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            self.argv,
            cwd=ros_env.workdir,
            env=ros_env.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.process.poll() is None

    def output(self, tail: int = 4000) -> str:
        """Return the last ``tail`` characters of what the process printed."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')[-tail:]

    def stop(self, timeout: float = 10.0) -> int:
        """
        Send SIGINT (as Ctrl-C and ``ros2 launch`` do) and return the exit code.

        A process still alive after ``timeout`` seconds is killed and -9 is returned.
        """
        if self.running:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = -signal.SIGKILL
        self._log.close()
        return code

    def assert_stops_cleanly(self, timeout: float = 10.0) -> None:
        """Stop with SIGINT and assert exit code 0, showing the process output otherwise."""
        was_running = self.running
        code = self.stop(timeout)
        assert was_running, f'{self.argv} exited early with {code}:\n{self.output()}'
        assert code == 0, f'{self.argv} exited with {code} after SIGINT:\n{self.output()}'


class Probe:
    """
    An in-process rclpy node in the test's domain that publishes, collects and watches the graph.

    It has its own context, so nothing leaks between tests, and installs no signal handlers.
    """

    def __init__(self, ros_env: RosEnv, name: str = 'test_probe') -> None:
        """Create the context, the node and a single-threaded executor."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(
            context=self.context,
            domain_id=ros_env.domain_id,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_once(self, timeout: float = 0.05) -> None:
        """Process at most one ready callback, waiting up to ``timeout`` seconds."""
        self.executor.spin_once(timeout_sec=timeout)

    def spin_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Spin until ``condition()`` holds; False on timeout."""
        return wait_until(condition, timeout, self.spin_once)

    def spin_for(self, seconds: float) -> None:
        """Spin for a fixed time (to let messages that should *not* arrive show up)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.spin_once(min(0.05, max(0.0, deadline - time.monotonic())))

    def publisher(self, msg_type: Any, topic: str, qos: Any = 10) -> Any:
        """Create a publisher (default QoS: reliable, keep last 10)."""
        return self.node.create_publisher(msg_type, topic, qos)

    def collect(self, msg_type: Any, topic: str, qos: Any = 10) -> list[Any]:
        """Subscribe and return the list the received messages are appended to, in order."""
        received: list[Any] = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout: float = 15.0) -> bool:
        """Wait until ``topic`` has at least ``count`` subscriptions (the probe's included)."""
        return self.spin_until(lambda: self.node.count_subscribers(topic) >= count, timeout)

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = 15.0) -> bool:
        """Wait until ``topic`` has at least ``count`` publishers (the probe's included)."""
        return self.spin_until(lambda: self.node.count_publishers(topic) >= count, timeout)

    def wait_for_matched(self, endpoint: Any, count: int = 1, timeout: float = 15.0) -> bool:
        """
        Wait until the probe's own ``endpoint`` has matched ``count`` remote ends.

        The graph (``count_subscribers``) can list a remote endpoint before DDS has matched it
        with ours; a reliable message published in that gap is dropped, not retried. The
        matched count is the one that decides delivery: for a publisher, the subscriptions it
        will send to; for a subscription, the publishers it listens to.
        """
        if hasattr(endpoint, 'get_subscription_count'):
            matched = endpoint.get_subscription_count
        else:
            matched = endpoint.get_publisher_count
        return self.spin_until(lambda: matched() >= count, timeout)

    def wait_for_node(self, name: str, namespace: str = '/', timeout: float = 15.0) -> bool:
        """Wait until a node called ``name`` in ``namespace`` is in the graph."""

        def present() -> bool:
            return (name, namespace) in self.node.get_node_names_and_namespaces()

        return self.spin_until(present, timeout)

    def close(self) -> None:
        """Destroy the node and shut the context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
