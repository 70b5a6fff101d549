"""
The localization node's lifecycle and map swap, with real rclpy: the node as a subprocess,
transitions and services called from an in-process probe.
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

NODE = '/localization_node'
BIG_MAP_PLACES = 50_000  # opening it takes the old, executor-bound node about half a second
STREAM_HZ = 30.0


def latched_qos() -> Any:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def lifecycle_state(probe: Probe) -> str:
    from lifecycle_msgs.srv import GetState

    answer = call_service(probe, GetState, f'{NODE}/get_state', GetState.Request())
    return answer.current_state.label


def transition(probe: Probe, label: str) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    ids = {'configure': Transition.TRANSITION_CONFIGURE,
           'activate': Transition.TRANSITION_ACTIVATE,
           'deactivate': Transition.TRANSITION_DEACTIVATE,
           'cleanup': Transition.TRANSITION_CLEANUP}
    request = ChangeState.Request()
    request.transition.id = ids[label]
    return call_service(probe, ChangeState, f'{NODE}/change_state', request,
                        timeout=STARTUP_TIMEOUT).success


def load_map(probe: Probe, r2former_srvs: Any, path: Path | str) -> Any:
    request = r2former_srvs.LoadMap.Request(map=str(path))
    return call_service(probe, r2former_srvs.LoadMap, f'{NODE}/load_map', request, timeout=60.0)


@pytest.fixture(scope='module')
def other_maps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 6-place map of the same model, and a map built with 32 tokens (another model)."""
    from map_factory import write_route_map
    from model_factory import SMALL_CONFIG, small_place_model

    from r2former_ros.core.model.config import R2FormerConfig

    root = tmp_path_factory.mktemp('maps')
    six, _ = write_route_map(root / 'six', small_place_model(), num_places=6)
    other = small_place_model(R2FormerConfig(input_hw=SMALL_CONFIG.input_hw, num_local=32))
    mismatched, _ = write_route_map(root / 'tokens32', other, num_places=4)
    return six, mismatched


@pytest.fixture(scope='module')
def big_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic map of BIG_MAP_PLACES places for the route map's model."""
    from map_factory import write_synthetic_map
    from model_factory import small_place_model

    return write_synthetic_map(tmp_path_factory.mktemp('big') / 'big',
                               small_place_model().identity(), BIG_MAP_PLACES)


@pytest.fixture
def r2former_srvs(r2former_msgs: Any) -> Any:
    import importlib

    return importlib.import_module('r2former_ros.srv')


def test_lifecycle_transitions_and_map_swap(
        route_map: tuple[Path, Any], other_maps: tuple[Path, Path], r2former_msgs: Any,
        r2former_srvs: Any, probe: Probe, start_node: Any, ros_env: RosEnv) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, PointCloud2

    from r2former_ros.core.mapdb import MapDatabase

    map_path, world = route_map
    six_places, mismatched = other_maps
    route_id, six_id = (MapDatabase.open(path).map_id for path in (map_path, six_places))
    results = probe.collect(r2former_msgs.PlaceRecognition, 'place_recognition')
    diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    clouds = probe.collect(PointCloud2, 'map_places', latched_qos())
    publisher = probe.publisher(Image, 'image')
    node = start_localizer(start_node, ros_env, map_path, 'autostart:=false', 'rerank.top_n:=0',
                           'visualization:=false')
    assert probe.wait_for_node('localization_node', timeout=STARTUP_TIMEOUT), node.output()
    log = []

    def step(text: str) -> None:
        log.append(text)
        print(text)

    assert lifecycle_state(probe) == 'unconfigured'
    assert probe.node.count_subscribers('image') == 0
    refused = load_map(probe, r2former_srvs, six_places)
    assert not refused.success and 'unconfigured' in refused.message
    step(f'unconfigured: load_map -> {refused.success}: {refused.message}')

    assert transition(probe, 'configure'), node.output()
    assert lifecycle_state(probe) == 'inactive'
    probe.spin_for(0.5)
    assert probe.node.count_subscribers('image') == 0  # inactive: not listening yet
    step('configure -> inactive (model and map loaded, no image subscription)')

    assert transition(probe, 'activate')
    assert lifecycle_state(probe) == 'active'
    assert probe.wait_for_subscribers('image', 1, 10.0)
    first = send_and_wait(probe, publisher, image_msg(world.map_images[9], 1), results, node)
    assert first.place_id == 9 and first.map_id == route_id
    step(f'activate -> active; frame of place 9 -> place_id {first.place_id}')

    for bad, why in ((ros_env.workdir / 'no_such_map', 'does not exist'),
                     (mismatched, 'was built with')):
        answer = load_map(probe, r2former_srvs, bad)
        assert not answer.success and why in answer.message, answer.message
        assert str(map_path) in answer.message  # says which map keeps serving
        kept = send_and_wait(probe, publisher, image_msg(world.map_images[9], 10 + len(log)),
                             results, node)
        assert kept.place_id == 9
        step(f'load_map {bad.name} -> {answer.success}: {answer.message}; still place_id 9')

    assert probe.spin_until(lambda: len(clouds) == 1) and clouds[0].width == 12
    swapped = load_map(probe, r2former_srvs, six_places)
    assert swapped.success, swapped.message
    assert six_id in swapped.message
    after = send_and_wait(probe, publisher, image_msg(world.map_images[2], 50), results, node)
    assert after.place_id == 2 and after.map_id == six_id
    # The places are sent again with the new map (and only then: refused swaps sent nothing).
    assert probe.spin_until(lambda: len(clouds) == 2) and clouds[1].width == 6
    near_end = send_and_wait(probe, publisher, image_msg(world.map_images[11], 51), results, node)
    assert 0 <= near_end.place_id < 6  # place 11 is not in the new map
    assert probe.spin_until(lambda: diagnostics and diagnostics_values(diagnostics[-1]).get(
        'map_places') == '6', 5.0)
    values = diagnostics_values(diagnostics[-1])
    assert values['map'] == str(six_places) and values['map_swaps'] == '1'
    assert values['map_id'] == six_id
    step(f'load_map six -> {swapped.success}: {swapped.message}; place 11 -> '
         f'{near_end.place_id}')

    assert transition(probe, 'deactivate')
    assert lifecycle_state(probe) == 'inactive'
    assert probe.spin_until(lambda: probe.node.count_subscribers('image') == 0, 10.0)
    count = len(results)
    publisher.publish(image_msg(world.map_images[3], 60))
    probe.spin_for(1.0)
    assert len(results) == count  # inactive: nothing published
    step('deactivate -> inactive (unsubscribed; a frame sent now gets no result)')

    assert transition(probe, 'cleanup')
    assert lifecycle_state(probe) == 'unconfigured'
    assert probe.spin_until(lambda: probe.node.count_publishers('place_recognition') == 0, 10.0)
    step('cleanup -> unconfigured (publishers, model and map released)')
    node.assert_stops_cleanly()
    assert 'context is invalid' not in node.output(100_000)


def test_configure_failure_leaves_the_node_unconfigured_with_the_reason(
        r2former_msgs: Any, probe: Probe, start_node: Any, ros_env: RosEnv) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    node = start_localizer(start_node, ros_env, ros_env.workdir / 'no_such_map',
                           'autostart:=false')
    assert probe.wait_for_node('localization_node', timeout=STARTUP_TIMEOUT), node.output()
    assert not transition(probe, 'configure')
    assert lifecycle_state(probe) == 'unconfigured'

    def reason_reported() -> bool:
        if not diagnostics:
            return False
        (status,) = diagnostics[-1].status
        return 'unconfigured: ' in status.message and 'does not exist' in status.message

    assert probe.spin_until(reason_reported, 10.0), diagnostics[-1] if diagnostics else None
    assert 'cannot configure' in node.output() and 'Traceback' not in node.output()
    node.assert_stops_cleanly()


def test_a_swap_under_load_keeps_counting_frames_and_never_mixes_maps(
        route_map: tuple[Path, Any], big_map: Path, r2former_msgs: Any, r2former_srvs: Any,
        probe: Probe, start_node: Any, ros_env: RosEnv) -> None:
    import time

    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from r2former_ros.core.mapdb import MapDatabase

    map_path, world = route_map
    route_id, big_id = (MapDatabase.open(path).map_id for path in (map_path, big_map))
    results = probe.collect(r2former_msgs.PlaceRecognition, 'place_recognition')
    diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    publisher = probe.publisher(Image, 'image')
    node = start_localizer(start_node, ros_env, map_path, 'rerank.top_n:=0',
                           'visualization:=false')
    assert probe.wait_for_subscribers('image', 1, STARTUP_TIMEOUT), node.output()
    send_and_wait(probe, publisher, image_msg(world.map_images[4], 1), results, node)

    def frames_in() -> int:
        probe.spin_for(1.0)  # settled: the last frames counted, a fresh diagnostics message
        return int(diagnostics_values(diagnostics[-1])['frames_in'])

    before = frames_in()
    client = probe.node.create_client(r2former_srvs.LoadMap, f'{NODE}/load_map')
    assert probe.spin_until(client.service_is_ready, 10.0)
    frames = [image_msg(world.map_images[i % 12], 100 + i) for i in range(600)]
    sent, call, answered = 0, None, None
    start = time.monotonic()
    # Full-size frames at 30 Hz: 0.3 s of them, the swap, 0.3 s more.
    while answered is None or time.monotonic() < answered + 0.3:
        publisher.publish(frames[sent])
        sent += 1
        if call is None and time.monotonic() > start + 0.3:
            call_stamp = frames[sent - 1].header.stamp.sec
            call = client.call_async(r2former_srvs.LoadMap.Request(map=str(big_map)))
        if call is not None and answered is None and call.done():
            answered, answer_stamp = time.monotonic(), frames[sent - 1].header.stamp.sec
        probe.spin_until(lambda due=start + sent / STREAM_HZ: time.monotonic() >= due, 1.0)
        assert sent < len(frames), 'load_map never answered'
    assert call.result().success, call.result().message
    counted = frames_in() - before
    stream = [r for r in results if r.header.stamp.sec >= 100]
    print(f'\nswap to {BIG_MAP_PLACES} places under a {STREAM_HZ:.0f} Hz stream: service '
          f'{answered - start - 0.3:.2f} s, sent {sent}, counted {counted}, results '
          f'{len(stream)}')
    # Reception never pauses: every frame sent around the swap is received and counted.
    assert counted >= sent - 1, (counted, sent, node.output())
    # Every result names its map: the old one up to the call, the new one after the answer,
    # and its place ids are that map's.
    assert {r.map_id for r in stream} <= {route_id, big_id}
    assert all(r.map_id == route_id for r in stream if r.header.stamp.sec < call_stamp)
    assert all(r.map_id == big_id for r in stream if r.header.stamp.sec > answer_stamp)
    assert all(r.place_id < 12 for r in stream if r.map_id == route_id)
    assert any(r.map_id == big_id for r in stream)
    node.assert_stops_cleanly()
