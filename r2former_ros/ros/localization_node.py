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
opened and checked against the running model first, and the old one keeps serving if that fails;
``~/reset_filter`` (std_srvs/Trigger) restarts the sequence filter.

Threads: the executor thread only receives images into a one-slot mailbox (a newer frame
replaces one that is still waiting, and counts as a drop), publishes diagnostics and serves
transitions, parameters and services. One worker thread takes the newest frame, runs the core
``Localizer`` and publishes, so a slow model never builds a backlog.

Topics (relative, so they follow the node's namespace):
    in:  ``image`` (sensor_msgs/Image) and/or ``image/compressed`` (CompressedImage), sensor-data
         QoS, chosen by the ``image_transport`` parameter.
    out: ``place_recognition`` (r2former_ros/PlaceRecognition, every processed frame),
         ``fix`` (NavSatFix, matched frames), ``pose`` (PoseWithCovarianceStamped, matched frames),
         ``place_markers`` (MarkerArray, transient-local depth 1; all map places when configured,
         after a map swap and every ``publish_markers_every_n`` frames, the top-k and the best
         place every frame), ``match_image`` (Image, when ``visualization`` is on and someone
         listens), ``/diagnostics`` (DiagnosticArray, every ``diagnostics_period_s``).

Exit codes: 0 after SIGINT/SIGTERM or shutdown; 1 when autostart cannot configure (one error line
says why).
"""

from __future__ import annotations

from collections.abc import Sequence
import gc
import os
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from r2former_ros.core.errors import ConfigError, ImageError, R2FormerError
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.places import factory
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.threads import apply_threads
from r2former_ros.ros import conversions
from r2former_ros.ros.node_outputs import Outputs, diagnostics_array
from r2former_ros.ros.node_state import Frame, Mailbox, Stats
from r2former_ros.ros.parameters import (
    NodeParameters,
    declare_parameters,
    read_parameters,
    with_changes,
)

NODE_NAME = 'localization_node'
BAD_INPUT_LOG_PERIOD_S = 5.0
DIAGNOSTICS_TOPIC = '/diagnostics'
SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE
STOP_LOGGER = 'r2former_ros'


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
        self.params: NodeParameters | None = None  # set by configure
        self.localizer: Localizer | None = None
        self.state_label = 'unconfigured'
        self.last_error = ''
        self._outputs: Outputs | None = None
        self._active_params: NodeParameters | None = None  # the worker's copy
        self._pending: NodeParameters | None = None
        self._lock = threading.Lock()  # counters and the localizer reference
        self._stats = Stats()
        self._mailbox = Mailbox()
        self._worker: threading.Thread | None = None
        self._image_subscriptions: list[Any] = []
        self._topics: list[str] = []
        self._pub_diag = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        period = float(self.get_parameter('diagnostics_period_s').value)
        self.create_timer(max(period, 0.1), self._publish_diagnostics)
        self.create_service(LoadMap, '~/load_map', self._on_load_map)
        self.create_service(Trigger, '~/reset_filter', self._on_reset_filter)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------------ transitions

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read parameters, open the map, load the model, create publishers, start the worker."""
        try:
            params = read_parameters(self)
            database = MapDatabase.open(params.map)
            model = load_node_model(params, database)
            localizer = Localizer(model, database, params.localizer)
        except R2FormerError as err:
            return self._configure_failed(str(err))
        except Exception as err:  # noqa: BLE001 - e.g. a corrupt checkpoint: say so, stay up
            return self._configure_failed(repr(err))
        self.params = self._active_params = params
        self.localizer = localizer
        self.last_error = ''
        self._outputs = Outputs(self, self._place_recognition_type, params.map_frame_id)
        self._outputs.publish_places(database)
        self._mailbox = Mailbox()
        self._worker = threading.Thread(target=self._work, name='localizer', daemon=True)
        self._worker.start()
        self.state_label = 'inactive'
        weights = 'seeded RANDOM weights' if getattr(model, 'random_weights', False) \
            else 'checkpoint weights'
        self.get_logger().info(
            f'configured: map {database.path} ({database.num_places} places), '
            f'{self._backbone} {list(model.input_hw)} on {model.device} with {weights}')
        return SUCCESS

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        self.last_error = reason
        self.get_logger().error(f'cannot configure: {reason}')
        return FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera: from now on every frame is localized and published."""
        from sensor_msgs.msg import CompressedImage, Image  # noqa: PLC0415

        params = self.params
        assert params is not None
        qos = image_qos()
        image_topic = self.resolve_topic_name('image')
        self._topics = []
        if params.image_transport in ('raw', 'both'):
            self._image_subscriptions.append(
                self.create_subscription(Image, 'image', self._on_image, qos))
            self._topics.append(image_topic)
        if params.image_transport in ('compressed', 'both'):
            compressed_topic = image_topic.rstrip('/') + '/compressed'
            self._image_subscriptions.append(
                self.create_subscription(CompressedImage, compressed_topic, self._on_image, qos))
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
        """Stop the worker, drop publishers, model and map, free GPU memory."""
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
        if self._worker is not None:
            self._worker.join(10.0)
            self._worker = None
        device = self.localizer.model.device if self.localizer is not None else 'cpu'
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        with self._lock:
            self.localizer = None
        self.params = self._active_params = self._pending = None
        self.state_label = 'unconfigured'
        free_model_memory(device)

    @property
    def _backbone(self) -> str:
        if self.localizer is None:
            return ''
        return self.localizer.model.name  # = identity()['backbone'], without a dict per frame

    # ------------------------------------------------------------------- executor thread

    def _on_image(self, msg: Any) -> None:
        replaced = self._mailbox.put(Frame(msg, time.perf_counter()))
        with self._lock:
            self._stats.frames_in += 1
            self._stats.window_in += 1
            if replaced:
                self._stats.drops += 1

    def _on_set_parameters(self, changed: Sequence[Parameter]) -> SetParametersResult:
        if self.params is None:  # unconfigured: checked when configure reads them
            return SetParametersResult(successful=True)
        try:
            new = with_changes(self.params, {p.name: p.value for p in changed})
            localizer = self.localizer
            if new.localizer.rerank_top_n and localizer is not None and \
                    not localizer.model.has_reranker:
                raise ConfigError('the model has no reranker; rerank.top_n must stay 0')
        except (ConfigError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        self.params = new
        self._pending = new
        return SetParametersResult(successful=True)

    def _on_load_map(self, request: Any, response: Any) -> Any:
        """Open and check the new map; swap it in only when both succeed."""
        localizer = self.localizer
        params = self.params
        if localizer is None or params is None:
            response.success = False
            response.message = f'the node is {self.state_label}: configure it first'
            return response
        old = localizer.database.path
        try:
            if not request.map:
                raise ConfigError('map is empty: give a map directory written by build_map')
            database = MapDatabase.open(request.map)
            # Checks the model identity (backbone, weights hash, input size, tokens) and applies
            # the new map's calibration; a new Localizer also restarts the sequence filter.
            new = Localizer(localizer.model, database, params.localizer)
        except R2FormerError as err:
            response.success = False
            response.message = f'kept map {old}: {err}'
            self.get_logger().warning(f'load_map refused: {response.message}')
            return response
        with self._lock:
            self.localizer = new
            self._stats.map_swaps += 1
        if self._outputs is not None:
            self._outputs.publish_places(database)
        response.success = True
        response.message = (f'now querying map {database.path} ({database.num_places} places) '
                             f'instead of {old}; sequence filter restarted')
        self.get_logger().info(response.message)
        return response

    def _on_reset_filter(self, request: Any, response: Any) -> Any:
        localizer = self.localizer
        if localizer is None:
            response.success, response.message = False, f'the node is {self.state_label}'
        elif localizer.filter is None:
            response.success, response.message = True, "no sequence filter (filter='none')"
        else:
            localizer.reset_filter()
            response.success, response.message = True, 'sequence filter restarted'
        return response

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self._lock:
            totals = self._stats.totals()
            window = self._stats.take_window(now)
            localizer = self.localizer
        array = diagnostics_array(
            name=f'{self.get_fully_qualified_name()}: localization', state=self.state_label,
            last_error=self.last_error, totals=totals, window=window, localizer=localizer,
            backbone=self._backbone, topics=self._topics)
        array.header.stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(array)

    # ---------------------------------------------------------------------- worker thread

    def _work(self) -> None:
        mailbox = self._mailbox
        while True:
            frame = mailbox.take()
            if frame is None:
                return
            self._apply_pending_parameters()
            with self._lock:
                localizer, outputs = self.localizer, self._outputs
            params = self._active_params
            if localizer is None or outputs is None or params is None:
                return
            try:
                self._process(frame, localizer, outputs, params)
            except Exception as err:  # noqa: BLE001 - the node must survive any input
                if not self.context.ok():
                    return
                with self._lock:
                    self._stats.errors += 1
                self.get_logger().error(f'processing a frame failed: {err!r}',
                                        throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)

    def _apply_pending_parameters(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None or self._active_params is None:
            return
        changed = pending.localizer != self._active_params.localizer
        self._active_params = pending
        with self._lock:
            localizer = self.localizer
        if changed and localizer is not None:
            # A new Localizer re-applies the calibration for the new settings and restarts the
            # sequence filter (its motion model may have changed).
            rebuilt = Localizer(localizer.model, localizer.database, pending.localizer)
            with self._lock:
                if self.localizer is localizer:  # not swapped meanwhile by load_map
                    self.localizer = rebuilt

    def _process(self, frame: Frame, localizer: Localizer, outputs: Outputs,
                 params: NodeParameters) -> None:
        msg = frame.msg
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
        matched, place_id, confidence = outputs.publish_result(
            result, header=msg.header, params=params, backbone=self._backbone,
            decode_ms=decode_ms, total_ms=total_ms)
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
            processed = s.processed
        every = params.publish_markers_every_n
        outputs.publish_markers(result, params.localizer.result_top_k,
                                with_places=every > 0 and processed % every == 0)
        if draw:
            outputs.publish_match_image(localizer, rgb, query_local, result, msg.header)

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
    """Run the node until SIGINT/SIGTERM; 0 on a clean stop, 1 when autostart fails."""
    rclpy.init(args=args)
    node: LocalizationNode | None = None
    code = 0
    try:
        node = LocalizationNode()
        if node.get_parameter('autostart').value:
            node.trigger_configure()
            if node.state_label != 'inactive':
                node.get_logger().error(f'cannot start: {node.last_error}')
                return 1
            node.trigger_activate()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            s = node.stats()
            # Not the node's logger: after SIGINT the context is shut down, and a record of the
            # node's logger would fail to reach /rosout ("publisher's context is invalid").
            get_logger(STOP_LOGGER).info(
                f'stopped: frames in {s.frames_in}, processed {s.processed}, dropped {s.drops}, '
                f'bad {s.bad_inputs}, errors {s.errors}, map swaps {s.map_swaps}, '
                f'max latency {s.max_total_ms:.1f} ms')
            node._release()  # noqa: SLF001 - same as the shutdown transition, without events
            node.destroy_node()
        rclpy.try_shutdown()
    return code


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
