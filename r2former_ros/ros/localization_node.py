"""
The localization node: camera images in, place recognition results out.

A managed (lifecycle) node, as Nav2-style stacks expect:
    configure   read the parameters, open the map, load the model (a failure leaves the node
                unconfigured and logs the reason; /diagnostics repeats it);
    activate    subscribe to the images: results are published from here on;
    deactivate  unsubscribe (a frame in progress still finishes);
    cleanup     drop the model and the map and free the GPU memory (torch.cuda.empty_cache).
With the ``autostart`` parameter (default true) the node configures and activates itself at start,
like an unmanaged node; a start-up failure then exits with code 1.

Services: ``~/load_map`` (r2former_ros/srv/LoadMap) swaps the map at run time: the new map is
opened and checked against the running model first, and the old one keeps serving meanwhile and
if that fails; the call returns once the swap is done. ``~/reset_filter`` (std_srvs/Trigger)
restarts the sequence filter before the next frame.

Threads: the executor (multi-threaded, images, services and the diagnostics timer in separate
callback groups) only receives images into a one-slot mailbox (a newer frame replaces one that is
still waiting, and counts as a drop), publishes diagnostics and serves transitions, parameters
and services: it never does heavy work, so image reception and counting never pause. One worker
thread takes the newest frame, runs the core ``Localizer`` and publishes, so a slow model never
builds a backlog. One loader thread does the heavy part of ``~/load_map`` (open the map, build
its localizer and the places cloud) while the old map keeps serving. Parameter changes,
``reset_filter`` and map swaps reach the worker through one locked hand-off
(``node_state.Handoff``), taken once per frame: a parameter change applies to every frame the
worker starts after it was accepted (the worker rebuilds the localizer first when the core
settings changed), a change is never lost or half-applied, and the filter is only ever touched
by the worker.

Map swaps and results: every result names the map it came from (``PlaceRecognition.map_id``).
A frame received before a swap completed is never localized with the new map: the one frame in
progress finishes on the old map (and says so), a frame still waiting is dropped and counted
(``frames_dropped_at_map_swap`` in /diagnostics).

Topics (relative, so they follow the node's namespace):
    in:  ``image`` (sensor_msgs/Image) and/or ``image/compressed`` (CompressedImage), sensor-data
         QoS, chosen by the ``image_transport`` parameter.
    out: ``place_recognition`` (r2former_ros/PlaceRecognition, every processed frame),
         ``fix`` (NavSatFix, matched frames), ``pose`` (PoseWithCovarianceStamped, matched frames),
         ``place_markers`` (MarkerArray: the top-k and the best place, every frame),
         ``map_places`` (PointCloud2, transient-local depth 1: the map's places, at most
         250,000 of them, sent when a map is configured or swapped in), ``match_image`` (Image,
         when ``visualization`` is on and someone listens), ``/diagnostics`` (DiagnosticArray,
         every ``diagnostics_period_s``).

Exit codes: 0 after SIGINT/SIGTERM or shutdown; 1 when autostart cannot configure (one error line
says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import CancelledError
import gc
import os
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from std_srvs.srv import Trigger

from r2former_ros.core.errors import ConfigError, ImageError, R2FormerError
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.localize.odometry import OdometryTrack
from r2former_ros.core.localize.relocalize import RelocalizeGate
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.places import factory
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.threads import apply_threads
from r2former_ros.ros import conversions
from r2former_ros.ros.node_outputs import Outputs, diagnostics_array
from r2former_ros.ros.node_state import Frame, Handoff, JobThread, Mailbox, Serving, Stats
from r2former_ros.ros.odometry_input import OdometryInput
from r2former_ros.ros.parameters import (
    NodeParameters,
    declare_parameters,
    read_parameters,
    with_changes,
)
from r2former_ros.ros.stopping import release_context, spin_until, stop_on_signals

NODE_NAME = 'localization_node'
BAD_INPUT_LOG_PERIOD_S = 5.0
DIAGNOSTICS_TOPIC = '/diagnostics'
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
STOP_LOGGER = 'r2former_ros'
# Images, services, the timer and the lifecycle/parameter services may all run at once.
EXECUTOR_THREADS = 4
THREAD_JOIN_S = 10.0
# A callback still running after this (a load_map waiting for a big map) is left behind.
EXECUTOR_STOP_S = 2.0


def load_node_model(params: NodeParameters, database: MapDatabase) -> PlaceModel:
    """
    Load the node's place model: what the parameters leave unset comes from the map.

    The one "model for this map" function of every tool (``factory.load_model_for_map``), so
    the node runs the model and the float math (TF32 off, reduced precision opt-in) of the CLI.
    """
    apply_threads(params.threads)  # before the model's first torch operation (core.threads)
    return factory.load_model_for_map(
        database.manifest['model'], backbone=params.backbone, checkpoint=params.checkpoint,
        input_hw=params.input_hw, num_local=params.num_local, device=params.device,
        precision=params.precision)


def free_model_memory(device: Any) -> None:
    """Collect the dropped model's tensors and return cached CUDA blocks to the driver."""
    gc.collect()
    if str(device).startswith('cuda'):
        import torch  # noqa: PLC0415 - only when a CUDA model was loaded

        torch.cuda.empty_cache()


class LocalizationNode(LifecycleNode):
    """Visual place recognition against one (swappable) map."""

    def __init__(self, **kwargs: Any) -> None:
        """Declare the parameters and the always-on interfaces; configure() loads the rest."""
        super().__init__(NODE_NAME, **kwargs)
        from r2former_ros.msg import PlaceRecognition  # noqa: PLC0415 - only in the ROS build
        from r2former_ros.srv import LoadMap  # noqa: PLC0415

        self._place_recognition_type = PlaceRecognition
        declare_parameters(self)
        self.state_label = 'unconfigured'
        self.last_error = ''
        self._outputs: Outputs | None = None
        self._handoff: Handoff[NodeParameters] = Handoff()
        self._params_lock = threading.Lock()  # one parameter change validated at a time
        self._lock = threading.Lock()  # the counters
        self._stats = Stats()
        self._mailbox = Mailbox()
        self._worker: threading.Thread | None = None
        self._loader: JobThread | None = None
        self._odometry: OdometryInput | None = None
        self._gate = RelocalizeGate()
        self._odometry_problem = ''  # the last frame's reason for not using odometry
        self._filter_motion = ''  # how the last frame's filter step predicted the motion
        self._image_subscriptions: list[Any] = []
        self._topics: list[str] = []
        # Own callback groups: a load_map call waiting for its swap, or a configure loading a
        # model, never holds up image reception or diagnostics (multi-threaded executor).
        self._image_group = MutuallyExclusiveCallbackGroup()
        control_group = MutuallyExclusiveCallbackGroup()
        timer_group = MutuallyExclusiveCallbackGroup()
        self._pub_diag = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        period = float(self.get_parameter('diagnostics_period_s').value)
        self.create_timer(max(period, 0.1), self._publish_diagnostics, callback_group=timer_group)
        self.create_service(LoadMap, '~/load_map', self._on_load_map,
                            callback_group=control_group)
        self.create_service(Trigger, '~/reset_filter', self._on_reset_filter,
                            callback_group=control_group)
        self.create_service(Trigger, '~/relocalize', self._on_relocalize,
                            callback_group=control_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------------ transitions

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, open the map, load the model, create publishers, start the threads."""
        try:
            params = read_parameters(self)
            database = MapDatabase.open(params.map)
            model = load_node_model(params, database)
            self._odometry = OdometryInput(self, callback_group=self._image_group) \
                if params.use_odometry else None
            localizer = Localizer(model, database, params.localizer, odometry=self._track())
        except R2FormerError as err:
            return self._configure_failed(str(err))
        except Exception as err:  # noqa: BLE001 - e.g. a corrupt checkpoint: say so, stay up
            return self._configure_failed(repr(err))
        self.last_error = ''
        self._gate = RelocalizeGate(params.gate_config)
        self._outputs = Outputs(self, self._place_recognition_type, params.map_frame_id)
        self._handoff.start(Serving(localizer, params, database.map_id, generation=0))
        self._outputs.publish_places(self._outputs.places_cloud(database))
        self._mailbox = Mailbox()
        self._loader = JobThread('map_loader')
        self._worker = threading.Thread(target=self._work, name='localizer', daemon=True)
        self._worker.start()
        self.state_label = 'inactive'
        weights = 'seeded RANDOM weights' if getattr(model, 'random_weights', False) \
            else 'checkpoint weights'
        self.get_logger().info(
            f'configured: map {database.path} ({database.num_places} places, id '
            f'{database.map_id}), {model.name} {list(model.input_hw)} on {model.device} with '
            f'{weights}')
        return SUCCESS

    def _track(self) -> OdometryTrack | None:
        """Return the robot's odometry for the filter (None without ``use_odometry``)."""
        return self._odometry.track if self._odometry is not None else None

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        if self._odometry is not None:
            self._odometry.destroy()
            self._odometry = None
        self.last_error = reason
        self.get_logger().error(f'cannot configure: {reason}')
        return FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera: from now on every frame is localized and published."""
        from sensor_msgs.msg import CompressedImage, Image  # noqa: PLC0415

        params = self._handoff.latest_params()
        assert params is not None
        qos = image_qos()
        image_topic = self.resolve_topic_name('image')
        self._topics = []
        if params.image_transport in ('raw', 'both'):
            self._image_subscriptions.append(self.create_subscription(
                Image, 'image', self._on_image, qos, callback_group=self._image_group))
            self._topics.append(image_topic)
        if params.image_transport in ('compressed', 'both'):
            compressed_topic = image_topic.rstrip('/') + '/compressed'
            self._image_subscriptions.append(self.create_subscription(
                CompressedImage, compressed_topic, self._on_image, qos,
                callback_group=self._image_group))
            self._topics.append(compressed_topic)
        self.state_label = 'active'
        self.get_logger().info(f'active: listening on {", ".join(self._topics)}')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe; a waiting frame is dropped, the one in progress still publishes."""
        self._unsubscribe()
        self.state_label = 'inactive'
        self.get_logger().info('inactive: not listening to images')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the threads, drop publishers, model and map, free GPU memory."""
        self._release()
        self.get_logger().info('unconfigured: model and map released')
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything from whichever state the node was in."""
        self._release()
        self.state_label = 'finalized'
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release what a failed transition built and go back to unconfigured."""
        self._release()
        return SUCCESS

    def _unsubscribe(self) -> None:
        for subscription in self._image_subscriptions:
            self.destroy_subscription(subscription)
        self._image_subscriptions = []
        self._topics = []
        self._mailbox.discard()

    def _release(self) -> None:
        self._unsubscribe()
        self._mailbox.close()
        if self._loader is not None:
            # Queued swaps are cancelled (their callers hear so); one in progress may finish.
            self._loader.close(THREAD_JOIN_S)
            self._loader = None
        if self._worker is not None:
            self._worker.join(THREAD_JOIN_S)
            self._worker = None
        serving = self._handoff.serving()
        device = serving.localizer.model.device if serving is not None else 'cpu'
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        if self._odometry is not None:
            self._odometry.destroy()
            self._odometry = None
        self._handoff.clear()
        self.state_label = 'unconfigured'
        del serving
        free_model_memory(device)

    # ------------------------------------------------------------------- executor thread

    def _on_image(self, msg: Any) -> None:
        replaced = self._mailbox.put(Frame(msg, time.perf_counter(), self._handoff.generation))
        with self._lock:
            self._stats.frames_in += 1
            self._stats.window_in += 1
            if replaced:
                self._stats.drops += 1

    def _on_set_parameters(self, changed: Sequence[Parameter]) -> SetParametersResult:
        with self._params_lock:
            current = self._handoff.latest_params()
            serving = self._handoff.serving()
            if current is None or serving is None:  # unconfigured: checked by configure
                return SetParametersResult(successful=True)
            try:
                new = with_changes(current, {p.name: p.value for p in changed})
                if new.localizer.rerank_top_n and not serving.localizer.model.has_reranker:
                    raise ConfigError('the model has no reranker; rerank.top_n must stay 0')
            except (ConfigError, TypeError) as err:
                return SetParametersResult(successful=False, reason=str(err))
            # The worker applies the whole set before its next frame (rebuilding the localizer
            # when the core settings changed): no frame after this sees a mix, none the old set.
            self._handoff.accept_params(new)
        return SetParametersResult(successful=True)

    def _on_load_map(self, request: Any, response: Any) -> Any:
        """Hand the swap to the loader thread and answer once it is done (or refused)."""
        loader = self._loader
        if loader is None or self._handoff.serving() is None:
            response.success = False
            response.message = f'the node is {self.state_label}: configure it first'
            return response
        path = str(request.map)
        try:
            response.success, response.message = loader.submit(
                lambda: self._load_map(path)).result()
        except CancelledError:
            response.success, response.message = False, 'cancelled: the node is shutting down'
        except Exception as err:  # noqa: BLE001 - the old map keeps serving; say why
            response.success, response.message = False, f'kept the old map: {err!r}'
            self.get_logger().error(f'load_map failed: {err!r}')
        return response

    def _on_reset_filter(self, request: Any, response: Any) -> Any:
        serving = self._handoff.serving()
        if serving is None:
            response.success, response.message = False, f'the node is {self.state_label}'
        elif serving.localizer.filter is None:
            response.success, response.message = True, "no sequence filter (filter='none')"
        else:
            # The worker restarts it between frames: never inside an update in progress.
            self._handoff.request_reset()
            self._gate.reset()
            response.success = True
            response.message = 'sequence filter restarts before the next frame'
        return response

    def _on_relocalize(self, request: Any, response: Any) -> Any:
        """Arm one /initialpose: sent once the filter is matched for a few frames in a row."""
        serving = self._handoff.serving()
        if serving is None:
            response.success, response.message = False, f'the node is {self.state_label}'
        elif serving.localizer.filter is None:
            response.success = False
            response.message = ('the sequence filter is off (filter none, or auto on a map '
                                'without a drive calibration of it): no pose is trusted enough '
                                'for /initialpose')
        else:
            self._gate.arm()
            response.success = True
            response.message = (f'armed: the pose goes to /initialpose once the filter is '
                                f'matched for {self._gate.config.min_frames} frames in a row')
        return response

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self._lock:
            totals = self._stats.totals()
            window = self._stats.take_window(now)
        serving = self._handoff.serving()
        localizer = serving.localizer if serving is not None else None
        array = diagnostics_array(
            name=f'{self.get_fully_qualified_name()}: localization', state=self.state_label,
            last_error=self.last_error, totals=totals, window=window, localizer=localizer,
            map_id=serving.map_id if serving is not None else '',
            backbone=localizer.model.name if localizer is not None else '', topics=self._topics,
            extra=self._diagnostic_extras(totals))
        array.header.stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(array)

    def _diagnostic_extras(self, totals: Stats) -> dict[str, Any]:
        """Odometry and relocalization entries of /diagnostics (``totals``: the counters)."""
        extras: dict[str, Any] = {
            'filter_motion': self._filter_motion,
            'initialpose_published': self._gate.published,
            'relocalize_armed': str(self._gate.armed).lower()}
        if self._odometry is not None:
            extras.update({'odometry_messages': self._odometry.messages,
                           'odometry_fallback_frames': totals.odometry_fallbacks,
                           'odometry_problem': self._odometry_problem})
        return extras

    # ---------------------------------------------------------------------- loader thread

    def _load_map(self, path: str) -> tuple[bool, str]:
        """Open and check the new map; swap it in only when both succeed."""
        serving, params, outputs = (self._handoff.serving(), self._handoff.latest_params(),
                                    self._outputs)
        if serving is None or params is None or outputs is None:
            return False, f'the node is {self.state_label}: configure it first'
        old = serving.localizer.database.path
        try:
            if not path:
                raise ConfigError('map is empty: give a map directory written by build_map')
            database = MapDatabase.open(path)
            # Checks the model identity (backbone, weights hash, input size, tokens) and applies
            # the new map's calibration; a new Localizer also restarts the sequence filter.
            localizer = Localizer(serving.localizer.model, database, params.localizer,
                                  odometry=self._track())
            cloud = outputs.places_cloud(database)
        except R2FormerError as err:
            message = f'kept map {old}: {err}'
            self.get_logger().warning(f'load_map refused: {message}')
            return False, message
        self._handoff.swap_map(localizer, params, database.map_id)
        self._gate.reset()  # confidence in the new map has to be earned first
        with self._lock:
            self._stats.map_swaps += 1
        outputs.publish_places(cloud)
        message = (f'now querying map {database.path} ({database.num_places} places, id '
                   f'{database.map_id}) instead of {old}; sequence filter restarted')
        self.get_logger().info(message)
        return True, message

    # ---------------------------------------------------------------------- worker thread

    def _work(self) -> None:
        mailbox, outputs = self._mailbox, self._outputs
        while True:
            frame = mailbox.take()
            if frame is None or outputs is None or not self._handle(frame, outputs):
                return

    def _handle(self, frame: Frame, outputs: Outputs) -> bool:
        """Localize one frame; False when the node is going away. Holds nothing afterwards."""
        # (a separate call, so the worker keeps no reference to a swapped-out map while it
        # waits for the next frame: its memory is freed at the swap, not a frame later)
        serving, params, reset = self._handoff.for_frame()
        if serving is None or params is None:
            return False
        try:
            if params is not serving.params:
                serving = self._apply_parameters(serving, params)
            if reset:
                serving.localizer.reset_filter()
            if frame.generation != serving.generation:
                with self._lock:  # received before the map swap: not for the new map
                    self._stats.drops += 1
                    self._stats.dropped_at_swap += 1
                return True
            self._process(frame, serving, outputs)
        except Exception as err:  # noqa: BLE001 - the node must survive any input
            if not self.context.ok():
                return False
            with self._lock:
                self._stats.errors += 1
            self.get_logger().error(f'processing a frame failed: {err!r}',
                                    throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)
        return True

    def _apply_parameters(self, serving: Serving[NodeParameters],
                          params: NodeParameters) -> Serving[NodeParameters]:
        """Serve ``params`` from this frame on; return what serves now."""
        localizer = serving.localizer
        if params.localizer != serving.params.localizer:
            # Re-applies the calibration for the new settings and restarts the sequence filter
            # (its motion model may have changed).
            localizer = Localizer(localizer.model, localizer.database, params.localizer,
                                  odometry=self._track())
            self._gate.reset()  # a restarted filter earns its streak again
        self._gate.configure(params.gate_config)
        current = self._handoff.replace_localizer(serving, localizer, params)
        assert current is not None  # only cleanup clears it, after joining this thread
        return current

    def _process(self, frame: Frame, serving: Serving[NodeParameters], outputs: Outputs) -> None:
        msg, localizer, params = frame.msg, serving.localizer, serving.params
        start = time.perf_counter()
        try:
            rgb = conversions.image_to_rgb(msg)
        except ImageError as err:
            with self._lock:
                self._stats.bad_inputs += 1
                self._stats.window_bad += 1
            self.get_logger().warning(f'skipping bad image on {self._topics}: {err}',
                                      throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)
            return
        decode_ms = (time.perf_counter() - start) * 1e3
        # Token pairs only feed the match image: skip them when nobody would see it.
        draw = params.visualization and outputs.match_image_wanted()
        stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        result, query_local = localizer.localize_image(rgb, token_pairs=draw,
                                                       stamp_s=stamp_s or None)
        total_ms = (time.perf_counter() - frame.received) * 1e3
        matched, place_id, confidence, pose = outputs.publish_result(
            result, header=msg.header, params=params, backbone=localizer.model.name,
            map_id=serving.map_id, decode_ms=decode_ms, total_ms=total_ms,
            position_frame=localizer.database.position_frame)
        decision = result.decision
        # Every frame reaches the gate: an unmatched one must break the streak of matched frames.
        filtered = decision is not None and decision.estimate is not None
        if self._gate.update(stamp_s or frame.received, filtered, matched) and pose is not None:
            outputs.publish_initialpose(pose)
            self.get_logger().info(f'published /initialpose at place {place_id} (confidence '
                                   f'{confidence:.2f})')
        self._note_odometry(decision)
        with self._lock:
            s = self._stats
            s.processed += 1
            s.window_out += 1
            s.matched += int(matched)
            s.last_place, s.last_confidence = place_id, confidence
            s.max_total_ms = max(s.max_total_ms, total_ms)
            # end to end (message received -> result published), not the pipeline's own total
            timings = {**result.timings_ms, 'decode': decode_ms, 'total': total_ms}
            for stage, values in s.latencies.items():
                values.append(float(timings.get(stage, 0.0)))
        outputs.publish_markers(result, params.localizer.result_top_k)
        if draw:
            outputs.publish_match_image(localizer, rgb, query_local, result, msg.header)

    def _note_odometry(self, decision: Any) -> None:
        """Warn (throttled) and count when a frame's filter step could not use odometry."""
        if decision is not None and decision.estimate is not None:
            self._filter_motion = decision.estimate.motion
        if self._odometry is None or decision is None:
            return
        problem = decision.odometry_problem or ''
        self._odometry_problem = problem
        if problem:
            with self._lock:
                self._stats.odometry_fallbacks += 1
            self.get_logger().warning(f'odometry not used for this frame ({problem}); the '
                                      'filter falls back to its velocity estimate or speed bound',
                                      throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)

    # ------------------------------------------------------------------------- shutdown

    def stats(self) -> Stats:
        """Return a snapshot of the counters (for shutdown logging)."""
        with self._lock:
            return self._stats.totals()


def image_qos() -> Any:
    """
    Sensor-data QoS (best effort, volatile) with a history of 5, as camera drivers publish.

    A depth of 1 would let DDS overwrite a frame the executor has not taken yet, unseen by
    ``frames_in``; with 5 the executor takes every frame that arrives and the mailbox decides
    (and counts) what is dropped.
    """
    from rclpy.qos import qos_profile_sensor_data  # noqa: PLC0415

    return qos_profile_sensor_data


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; 0 on a clean stop, 1 when it cannot start."""
    # A signal only asks the loop to stop; the executor stops first, then the node, then the
    # context, so no wait set is ever built on a context already shut down (see stopping.py).
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except rclpy_implementation.RCLError as error:  # e.g. a params file that is not YAML: no trace
        get_logger(NODE_NAME).error(f'cannot start: {error}')
        return 1
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    node: LocalizationNode | None = None
    with stop_on_signals() as stop:
        try:
            node = LocalizationNode()
            executor.add_node(node)
            if node.get_parameter('autostart').value:
                node.trigger_configure()
                if node.state_label != 'inactive':
                    node.get_logger().error(f'cannot start: {node.last_error}')
                    return 1
                node.trigger_activate()
            spin_until(executor, stop, node.context)
        except ExternalShutdownException:
            pass
        finally:
            executor.shutdown(timeout_sec=EXECUTOR_STOP_S)
            if node is not None:
                s = node.stats()
                get_logger(STOP_LOGGER).info(
                    f'stopped: frames in {s.frames_in}, processed {s.processed}, dropped '
                    f'{s.drops} ({s.dropped_at_swap} at map swaps), bad {s.bad_inputs}, errors '
                    f'{s.errors}, map swaps {s.map_swaps}, max latency {s.max_total_ms:.1f} ms')
                node._release()  # noqa: SLF001 - as the shutdown transition, without events
                node.destroy_node()
            rclpy.try_shutdown()
            # Before exit_now's os._exit: else the DDS shared-memory segment (64 MiB) outlives
            # the process in /dev/shm (see stopping.release_context).
            context = executor.context
            del node, executor
            release_context(context)
    return 0


def exit_now(code: int) -> None:
    """
    Exit without the interpreter's finalization, everything the node owns being released.

    Tearing down torch, faiss and the DDS libraries at interpreter exit took several seconds on
    a loaded 2-core machine, longer than ``ros2 launch`` waits between SIGINT and SIGTERM (5 s),
    which turned a clean stop into exit code -15.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> None:
    """Entry point of every launcher (installed script, console script, ``python -m``)."""
    exit_now(main())


if __name__ == '__main__':
    run()
