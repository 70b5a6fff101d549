"""
Fixtures for tests with real rclpy: isolated DDS per test, node subprocesses, an in-process probe.

Usage in a test module::

    pytestmark = pytest.mark.ros

    def test_something(r2former_msgs, probe, start_node):
        node = start_node('-m', 'r2former_ros.ros.localization_node', '--ros-args', ...)
        results = probe.collect(r2former_msgs.PlaceRecognition, 'place_recognition')
        assert probe.wait_for_publishers('place_recognition'), node.output()
        ...
        node.assert_stops_cleanly()

Without rclpy or without the cmake install (``.ci/ros_setup.sh``) these fixtures skip the test;
with ``R2FORMER_ROS_REQUIRE=1`` (set by ``_ci/ros_env.sh``) they fail it instead, so CI cannot
silently lose the ROS tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ros_testing import (
    NodeProcess,
    Probe,
    RosEnv,
    claim_domain_id,
    enable_generated_messages,
    isolation_variables,
    make_ros_env,
)


def _unavailable(reason: str) -> None:
    if os.environ.get('R2FORMER_ROS_REQUIRE') == '1':
        pytest.fail(f'{reason} (R2FORMER_ROS_REQUIRE=1)', pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope='session')
def rclpy_module() -> ModuleType:
    """The real rclpy; skips (or fails, see module docstring) where it cannot be imported."""
    try:
        import rclpy
    except ImportError as error:
        _unavailable(f'rclpy is not importable: {error}')
    return rclpy


@pytest.fixture(scope='session')
def r2former_msgs(rclpy_module: ModuleType) -> ModuleType:
    """The generated ``r2former_ros.msg`` module, loaded from the cmake install."""
    try:
        return enable_generated_messages()
    except ImportError as error:
        _unavailable(f'generated r2former_ros messages are not importable: {error}')
        raise  # unreachable: _unavailable skips or fails


@pytest.fixture
def ros_env(
    rclpy_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RosEnv]:
    """
    A private ROS domain on loopback for one test.

    Sets the isolation variables in this process too (rclpy contexts created here read them) and
    writes the Fast DDS loopback profile into ``tmp_path``.
    """
    with claim_domain_id() as domain_id:
        env = make_ros_env(domain_id, tmp_path)
        monkeypatch.delenv('ROS_LOCALHOST_ONLY', raising=False)
        for name, value in isolation_variables(domain_id, env.profiles_file).items():
            monkeypatch.setenv(name, value)
        yield env


@pytest.fixture
def probe(ros_env: RosEnv) -> Iterator[Probe]:
    """An in-process rclpy node in the test's domain (see ``ros_testing.Probe``)."""
    instance = Probe(ros_env)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def start_node(ros_env: RosEnv) -> Iterator[Callable[..., NodeProcess]]:
    """
    Factory: ``start_node(*argv, name='node')`` runs ``sys.executable *argv`` in the test's domain.

    Example: ``start_node('-m', 'r2former_ros.ros.localization_node', '--ros-args', '-p',
    'map:=/path')``. The subprocess imports r2former_ros from the cmake install (PYTHONPATH) and
    runs in ``tmp_path``. Processes still running at teardown get SIGINT, then SIGKILL; the test
    itself should call ``assert_stops_cleanly()`` to check the exit code.
    """
    started: list[NodeProcess] = []

    def start(*argv: str, name: str = 'node') -> NodeProcess:
        process = NodeProcess(argv, ros_env, name=f'{name}{len(started)}')
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(timeout=5.0)


@pytest.fixture(scope='module')
def route_map(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The 12-place route map of the node tests and its world (small seeded model)."""
    from map_factory import write_route_map
    from model_factory import small_place_model

    return write_route_map(tmp_path_factory.mktemp('map') / 'route', small_place_model())
