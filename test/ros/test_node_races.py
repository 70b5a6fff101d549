"""
Races between the node's threads, made to happen on purpose.

The node runs in this process (real rclpy, a multi-threaded executor, the probe in another
context), so a test can hold its worker thread at a chosen point of handling a frame and make
the other thread act right there:

* a ``reset_filter`` call arriving while the worker is inside the sequence filter's update;
* a parameter change arriving between any two of the worker's reads of the node's state (the
  test walks every such point of one frame).

Each node is stopped the way ``main`` stops it: executor first, then the node, then its
context (a wait set built on a context already shut down is the ``failed to initialize wait
set`` error).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
import threading
from typing import Any

from node_helpers import image_msg
import pytest
from ros_testing import Probe, RosEnv

pytestmark = [
    pytest.mark.ros,
    pytest.mark.slow,
    pytest.mark.filterwarnings('ignore::DeprecationWarning:lark.*'),
]

WORKER_THREAD = 'localizer'  # the node's worker thread's name
TIMEOUT = 60.0  # one frame, or one model load, on a busy 2-core machine
BASE_PARAMETERS = {'input_size': '128x160', 'num_local': 48, 'device': 'cpu',
                   'rerank.top_n': 0, 'visualization': False}


class InProcessNode:
    """A LocalizationNode (or a subclass) spinning in this process, with its own context."""

    def __init__(self, node_class: type, parameters: dict[str, Any], domain_id: int) -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id,
                   signal_handler_options=SignalHandlerOptions.NO)
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        self.node = node_class(context=self.context, parameter_overrides=overrides)
        self.node.trigger_configure()
        assert self.node.state_label == 'inactive', self.node.last_error
        self.node.trigger_activate()
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._spinner = threading.Thread(target=self._spin, name='test_executor')
        self._spinner.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        """Executor, then node, then context: nothing waits on a context that is gone."""
        self._stop.set()
        self._spinner.join(10.0)
        self.executor.shutdown()
        self.node._release()  # noqa: SLF001 - what main() does at the end
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture
def in_process_node(ros_env: RosEnv, r2former_msgs: Any, route_map: tuple[Path, Any],
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., InProcessNode]]:
    """Factory: ``in_process_node(node_class=None, **parameters)`` on the route map."""
    from r2former_ros.ros.localization_node import LocalizationNode

    monkeypatch.setenv('R2FORMER_CACHE', str(ros_env.workdir / 'no_cache'))  # seeded weights
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)
    started: list[InProcessNode] = []

    def start(node_class: type | None = None, **parameters: Any) -> InProcessNode:
        values = {'map': str(route_map[0]), **BASE_PARAMETERS, **parameters}
        node = InProcessNode(node_class or LocalizationNode, values, ros_env.domain_id)
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()


def wait_for_result(probe: Probe, results: list[Any], stamp: int) -> Any:
    def arrived() -> bool:
        return any(r.header.stamp.sec == stamp for r in results)

    assert probe.spin_until(arrived, TIMEOUT), f'no result for stamp {stamp}'
    return next(r for r in results if r.header.stamp.sec == stamp)


def connect(probe: Probe, r2former_msgs: Any) -> tuple[Any, list[Any]]:
    """The probe's image publisher (matched with the node) and the results it collects."""
    from sensor_msgs.msg import Image

    results: list[Any] = []
    subscription = probe.node.create_subscription(r2former_msgs.PlaceRecognition,
                                                  'place_recognition', results.append, 10)
    publisher = probe.publisher(Image, 'image')
    assert probe.wait_for_matched(publisher, 1, TIMEOUT)
    assert probe.wait_for_matched(subscription, 1, TIMEOUT)
    return publisher, results


# ------------------------------------------------------------------------- reset vs update


def test_a_reset_arriving_inside_the_filter_update_never_tears_the_filter(
        in_process_node: Callable[..., InProcessNode], probe: Probe, r2former_msgs: Any,
        route_map: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from model_factory import small_place_model
    from std_srvs.srv import Trigger

    from r2former_ros.core.localize import sequence_filter
    from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig
    from r2former_ros.core.mapdb import MapDatabase

    map_path, world = route_map
    node = in_process_node(filter='hmm')
    publisher, results = connect(probe, r2former_msgs)
    places = {1: 3, 2: 4, 3: 5, 4: 6}  # stamp (s) -> place whose map image is sent
    frames = {stamp: image_msg(world.map_images[place], stamp) for stamp, place in places.items()}
    for stamp in (1, 2):
        publisher.publish(frames[stamp])
        wait_for_result(probe, results, stamp)

    # Hold the worker inside the filter's update of frame 3 (after the motion step, before the
    # observation), and reset the filter right then.
    inside, release = threading.Event(), threading.Event()
    real_ratios = sequence_filter.ObservationModel.ratios

    def held_ratios(model: Any, scores: Any) -> Any:
        if threading.current_thread().name == WORKER_THREAD and not release.is_set():
            inside.set()
            assert release.wait(TIMEOUT)
        return real_ratios(model, scores)

    monkeypatch.setattr(sequence_filter.ObservationModel, 'ratios', held_ratios)
    publisher.publish(frames[3])
    assert inside.wait(TIMEOUT), 'the worker never reached the filter update'
    client = probe.node.create_client(Trigger, '/localization_node/reset_filter')
    assert probe.spin_until(client.service_is_ready, TIMEOUT)
    answer = client.call_async(Trigger.Request())
    assert probe.spin_until(answer.done, TIMEOUT) and answer.result().success
    release.set()
    wait_for_result(probe, results, 3)
    monkeypatch.setattr(sequence_filter.ObservationModel, 'ratios', real_ratios)
    publisher.publish(frames[4])
    after = wait_for_result(probe, results, 4)

    # The reset was asked for after frame 3 arrived: frame 4 is the first of a fresh filter,
    # exactly as a new localizer sees it. A reset applied in the middle of the update instead
    # leaves a mix that matches neither that nor the filter without any reset.
    config = LocalizerConfig(rerank_top_n=0, filter='hmm')
    database = MapDatabase.open(map_path)
    fresh = Localizer(small_place_model(), database, config)
    first, _ = fresh.localize_image(world.map_images[6], token_pairs=False, stamp_s=4.0)
    continuing = Localizer(small_place_model(), database, config)
    for stamp, place in places.items():
        unreset, _ = continuing.localize_image(world.map_images[place], token_pairs=False,
                                               stamp_s=float(stamp))
    assert abs(first.confidence - unreset.confidence) > 1e-3  # the test can tell them apart
    assert after.place_id == first.best.place_id
    assert after.confidence == pytest.approx(first.confidence, abs=1e-5)
    stats = node.node.stats()
    assert stats.errors == 0


# --------------------------------------------------------------------- parameter vs frame


def test_a_parameter_change_at_any_point_of_a_frame_applies_to_the_next_frame(
        in_process_node: Callable[..., InProcessNode], probe: Probe,
        r2former_msgs: Any, route_map: tuple[Path, Any]) -> None:
    from rclpy.parameter import Parameter

    from r2former_ros.ros.localization_node import LocalizationNode

    _, world = route_map
    gate = ReadGate()

    class Instrumented(LocalizationNode):
        """The node, with every read of its attributes by the worker thread passing the gate."""

        def __getattribute__(self, name: str) -> Any:
            value = super().__getattribute__(name)
            if threading.current_thread().name == WORKER_THREAD:
                gate.passed(name)
            return value

    node = in_process_node(Instrumented, **{'result.top_k': 5, 'retrieval.top_k': 10})
    publisher, results = connect(probe, r2former_msgs)
    top_k, stamp, points = 5, 1000, []
    for position in range(400):
        gate.arm(position)
        stamp += 2
        publisher.publish(image_msg(world.map_images[position % 12], stamp))
        if not probe.spin_until(lambda sent=stamp: gate.held.is_set() or any(
                r.header.stamp.sec == sent for r in results), TIMEOUT):
            pytest.fail(f'neither a result nor a held read at position {position}')
        # The worker still reads a few attributes after publishing the result.
        if not gate.held.is_set() and not gate.held.wait(1.0):
            break  # past the last read of a frame: every point has been tried
        # The worker is held just after reading node.<name>: change the parameter now.
        top_k = 3 if top_k == 5 else 5
        points.append(gate.name)
        (outcome,) = node.node.set_parameters([Parameter('result.top_k', value=top_k)])
        assert outcome.successful, outcome.reason
        gate.open()
        wait_for_result(probe, results, stamp)
        publisher.publish(image_msg(world.map_images[(position + 1) % 12], stamp + 1))
        following = wait_for_result(probe, results, stamp + 1)
        assert len(following.candidates) == top_k, (
            f'result.top_k={top_k} was set while the worker had just read node.{gate.name} '
            f'(read {position} of a frame); the next frame still used the old value')
    assert len(points) >= 4, points  # the worker's reads of one frame, all tried
    print(f"\nparameter change tried after each of the worker's {len(points)} reads of one "
          f'frame: {points}')
    assert node.node.stats().errors == 0


class ReadGate:
    """Holds the worker at its n-th read of a node attribute once armed, until opened."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target = -1
        self._count = 0
        self.name = ''
        self.held = threading.Event()
        self._go = threading.Event()

    def arm(self, target: int) -> None:
        with self._lock:
            self._target, self._count = target, 0
        self.held.clear()
        self._go.clear()

    def passed(self, name: str) -> None:
        with self._lock:
            if self._target < 0:
                return
            hit = self._count == self._target
            self._count += 1
            if hit:
                self._target = -1
                self.name = name
        if hit:
            self.held.set()
            assert self._go.wait(TIMEOUT)

    def open(self) -> None:
        self._go.set()
