"""
The localization node: camera images in, place recognition results out.

Threads: the executor thread only receives images into a one-slot mailbox (a newer frame
replaces one that is still waiting, and counts as a drop), publishes diagnostics and handles
parameter changes. One worker thread takes the newest frame, runs the core ``Localizer`` and
publishes, so a slow model never builds a backlog.

Topics (relative, so they follow the node's namespace):
    in:  ``image`` (sensor_msgs/Image) and/or ``image/compressed`` (CompressedImage), sensor-data
         QoS depth 1, chosen by the ``image_transport`` parameter.
    out: ``place_recognition`` (r2former_ros/PlaceRecognition, every processed frame),
         ``fix`` (NavSatFix, matched frames), ``pose`` (PoseWithCovarianceStamped, matched frames),
         ``place_markers`` (MarkerArray, transient-local depth 1; all map places at startup and
         every ``publish_markers_every_n`` frames, the top-k and the best place every frame),
         ``match_image`` (Image, when ``visualization`` is on and someone listens),
         ``/diagnostics`` (DiagnosticArray, every ``diagnostics_period_s``).

Exit codes: 0 after SIGINT or shutdown; 1 when the node cannot start (bad parameter, map or
checkpoint; one error line says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image, NavSatFix
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from r2former_ros.core.drawing.match_image import result_match_image
from r2former_ros.core.errors import ConfigError, ImageError, R2FormerError
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.places.factory import load_place_model, model_settings_for_map
from r2former_ros.core.types import LocalizationResult
from r2former_ros.ros import conversions
from r2former_ros.ros.parameters import (
    NodeParameters,
    declare_parameters,
    read_parameters,
    with_changes,
)

NODE_NAME = 'localization_node'
STAGES = ('decode', 'extract', 'retrieve', 'rerank', 'total')
BAD_INPUT_LOG_PERIOD_S = 5.0
DIAGNOSTICS_TOPIC = '/diagnostics'


def load_node_model(params: NodeParameters, database: MapDatabase) -> PlaceModel:
    """
    Load the node's place model: unset checkpoint/input size/token count come from the map.

    Goes through `load_place_model`, so the node runs with the same float math (TF32 off,
    reduced precision opt-in on CUDA) as every command-line tool.
    """
    checkpoint, input_hw, num_local = model_settings_for_map(
        database.manifest['model'], params.checkpoint, params.input_hw, params.num_local)
    return load_place_model(params.backbone, checkpoint, params.device, input_hw, num_local,
                            precision=params.precision)


@dataclass
class Frame:
    """An image message waiting for the worker."""

    msg: Image | CompressedImage
    received: float  # time.perf_counter() at the callback


class Mailbox:
    """One slot: ``put`` replaces what is waiting (and says so), ``take`` blocks for the next."""

    def __init__(self) -> None:
        self._item: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: Frame) -> bool:
        """Store ``item``; True when it replaced an unprocessed one (a drop)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self) -> Frame | None:
        """Return the newest item, waiting for one; None once closed."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake the worker and make ``take`` return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class Stats:
    """Counters since start plus a window of per-frame figures since the last diagnostics."""

    frames_in: int = 0
    processed: int = 0
    drops: int = 0
    bad_inputs: int = 0
    errors: int = 0
    matched: int = 0
    window_in: int = 0
    window_out: int = 0
    window_bad: int = 0
    window_start: float = field(default_factory=time.monotonic)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    last_confidence: float = float('nan')
    last_place: int = -1
    max_total_ms: float = 0.0


class LocalizationNode(Node):
    """Visual place recognition against one map."""

    def __init__(self, **kwargs: Any) -> None:
        """Declare and read parameters, open the map, load the model, wire topics."""
        super().__init__(NODE_NAME, **kwargs)
        from r2former_ros.msg import PlaceRecognition  # noqa: PLC0415 - only in the ROS build

        self._place_recognition_type = PlaceRecognition
        declare_parameters(self)
        self.params: NodeParameters = read_parameters(self)
        params = self.params
        database = MapDatabase.open(params.map)
        model = load_node_model(params, database)
        self.localizer = Localizer(model, database, params.localizer_config)
        self._backbone = str(model.identity().get('backbone', params.backbone))
        self._active = params  # the worker's copy; replaced through _pending
        self._pending: NodeParameters | None = None

        self._lock = threading.Lock()
        self._stats = Stats()
        self._mailbox = Mailbox()
        self._closing = threading.Event()

        reliable = QoSProfile(depth=10)
        self._pub_result = self.create_publisher(PlaceRecognition, 'place_recognition', reliable)
        self._pub_fix = self.create_publisher(NavSatFix, 'fix', reliable)
        self._pub_pose = self.create_publisher(PoseWithCovarianceStamped, 'pose', reliable)
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._pub_markers = self.create_publisher(MarkerArray, 'place_markers', latched)
        self._pub_match = self.create_publisher(Image, 'match_image', QoSProfile(depth=1))
        self._pub_diag = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, reliable)

        sensor_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                                reliability=qos_profile_sensor_data.reliability,
                                durability=qos_profile_sensor_data.durability)
        image_topic = self.resolve_topic_name('image')
        self._topics: list[str] = []
        if params.image_transport in ('raw', 'both'):
            self.create_subscription(Image, 'image', self._on_image, sensor_qos)
            self._topics.append(image_topic)
        if params.image_transport in ('compressed', 'both'):
            compressed_topic = image_topic.rstrip('/') + '/compressed'
            self.create_subscription(CompressedImage, compressed_topic, self._on_image,
                                     sensor_qos)
            self._topics.append(compressed_topic)

        places = database.places
        self._places_marker = conversions.places_marker(
            Header(frame_id=params.map_frame_id), places['east'], places['north'], places['up'])
        self._publish_markers(None, Header(frame_id=params.map_frame_id), with_places=True)

        self._worker = threading.Thread(target=self._work, name='localizer', daemon=True)
        self._worker.start()
        self.create_timer(params.diagnostics_period_s, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        weights = 'seeded RANDOM weights' if getattr(model, 'random_weights', False) \
            else 'checkpoint weights'
        self.get_logger().info(
            f'ready: map {database.path} ({database.num_places} places), {self._backbone} '
            f'{list(model.input_hw)} on {model.device} with {weights}; listening on '
            f'{", ".join(self._topics)}')

    # ------------------------------------------------------------------- executor thread

    def _on_image(self, msg: Image | CompressedImage) -> None:
        replaced = self._mailbox.put(Frame(msg, time.perf_counter()))
        with self._lock:
            self._stats.frames_in += 1
            self._stats.window_in += 1
            if replaced:
                self._stats.drops += 1

    def _on_set_parameters(self, changed: Sequence[Parameter]) -> SetParametersResult:
        try:
            new = with_changes(self.params, {p.name: p.value for p in changed})
            if new.rerank_top_n and not self.localizer.model.has_reranker:
                raise ConfigError('the model has no reranker; rerank.top_n must stay 0')
        except (ConfigError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        self.params = new
        self._pending = new
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self._lock:
            s = self._stats
            elapsed = max(now - s.window_start, 1e-6)
            window = {name: list(values) for name, values in s.latencies.items()}
            totals = (s.frames_in, s.processed, s.drops, s.bad_inputs, s.errors, s.matched)
            rates = (s.window_in / elapsed, s.window_out / elapsed)
            window_bad, last = s.window_bad, (s.last_place, s.last_confidence)
            max_total = s.max_total_ms
            for values in s.latencies.values():
                values.clear()
            s.window_in = s.window_out = s.window_bad = 0
            s.window_start = now
        frames_in, processed, drops, bad, errors, matched = totals
        values = {
            'frames_in': frames_in, 'frames_processed': processed, 'frames_dropped': drops,
            'bad_inputs': bad, 'processing_errors': errors, 'frames_matched': matched,
            'input_rate_hz': f'{rates[0]:.2f}', 'output_rate_hz': f'{rates[1]:.2f}',
            'last_place_id': last[0], 'last_confidence': f'{last[1]:.3f}',
            'max_total_ms_since_start': f'{max_total:.1f}',
            'map_places': self.localizer.database.num_places, 'backbone': self._backbone,
            'device': str(self.localizer.model.device), 'image_topics': ' '.join(self._topics),
        }
        for stage in STAGES:
            samples = window[stage]
            mean = sum(samples) / len(samples) if samples else float('nan')
            values[f'{stage}_ms_mean'] = f'{mean:.2f}'
            values[f'{stage}_ms_max'] = f'{max(samples) if samples else float("nan"):.2f}'
        if window_bad:
            level, text = DiagnosticStatus.WARN, f'{window_bad} bad input image(s) skipped'
        elif rates[1] > 0:
            level, text = DiagnosticStatus.OK, f'localizing at {rates[1]:.1f} Hz'
        else:
            level, text = DiagnosticStatus.OK, 'waiting for images'
        status = DiagnosticStatus(
            level=level, name=f'{self.get_fully_qualified_name()}: localization', message=text,
            hardware_id=str(self.localizer.database.path),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(array)

    # ---------------------------------------------------------------------- worker thread

    def _work(self) -> None:
        while not self._closing.is_set():
            frame = self._mailbox.take()
            if frame is None:
                return
            pending, self._pending = self._pending, None
            if pending is not None:
                self._active = pending
                self.localizer.config = pending.localizer_config
            try:
                self._process(frame)
            except Exception as err:  # noqa: BLE001 - the node must survive any input
                if self._closing.is_set() or not self.context.ok():
                    return
                with self._lock:
                    self._stats.errors += 1
                self.get_logger().error(f'processing a frame failed: {err!r}',
                                        throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)

    def _process(self, frame: Frame) -> None:
        msg, params = frame.msg, self._active
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
        draw = params.visualization and self._pub_match.get_subscription_count() > 0
        result, query_local = self.localizer.localize_image(rgb, token_pairs=draw)
        header = msg.header
        fix = conversions.to_navsat_fix(result, header=header, threshold_m=params.threshold_m)
        pose = conversions.to_pose(result, header=header, map_frame_id=params.map_frame_id,
                                   threshold_m=params.threshold_m)
        total_ms = (time.perf_counter() - frame.received) * 1e3
        out = conversions.to_place_recognition(
            self._place_recognition_type, result, header=header,
            map_frame_id=params.map_frame_id, backbone=self._backbone, decode_ms=decode_ms,
            total_ms=total_ms)
        self._pub_result.publish(out)
        if fix is not None:
            self._pub_fix.publish(fix)
        if pose is not None:
            self._pub_pose.publish(pose)
        with self._lock:
            s = self._stats
            s.processed += 1
            s.window_out += 1
            s.matched += int(out.matched)
            s.last_place, s.last_confidence = out.place_id, out.confidence
            s.max_total_ms = max(s.max_total_ms, total_ms)
            # end to end (message received -> result published), not the pipeline's own total
            timings = {**result.timings_ms, 'decode': decode_ms, 'total': total_ms}
            for stage in STAGES:
                s.latencies[stage].append(float(timings.get(stage, 0.0)))
            processed = s.processed
        every = params.publish_markers_every_n
        with_places = every > 0 and processed % every == 0
        self._publish_markers(result, Header(frame_id=params.map_frame_id), with_places)
        if draw:
            picture = result_match_image(self.localizer, rgb, query_local, result)
            if picture is not None:
                self._pub_match.publish(conversions.to_image(picture, header=header))

    def _publish_markers(self, result: LocalizationResult | None, header: Header,
                         with_places: bool) -> None:
        result = result if result is not None else LocalizationResult(False, 0.0, [])
        markers = conversions.result_markers(result, header, self._active.result_top_k)
        if with_places:
            markers.insert(0, self._places_marker)
        self._pub_markers.publish(conversions.marker_array(markers))

    # ------------------------------------------------------------------------- shutdown

    def stats(self) -> Stats:
        """Return a snapshot of the counters (for shutdown logging)."""
        with self._lock:
            return Stats(**{k: getattr(self._stats, k) for k in (
                'frames_in', 'processed', 'drops', 'bad_inputs', 'errors', 'matched',
                'max_total_ms')})

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (waits for the frame in progress)."""
        self._closing.set()
        self._mailbox.close()
        self._worker.join(timeout)


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT; 0 on a clean stop, 1 when it cannot start."""
    rclpy.init(args=args)
    node: LocalizationNode | None = None
    try:
        try:
            node = LocalizationNode()
        except (R2FormerError, ParameterException) as err:
            get_logger(NODE_NAME).error(f'cannot start: {err}')
            return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            s = node.stats()
            get_logger(NODE_NAME).info(  # the node's own logger would try the dead rosout
                f'stopped: frames in {s.frames_in}, processed {s.processed}, dropped {s.drops}, '
                f'bad {s.bad_inputs}, errors {s.errors}, max latency {s.max_total_ms:.1f} ms')
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
