"""
What the localization node publishes: its publishers and the diagnostics message.

:class:`Outputs` is created by the node's configure transition and destroyed by cleanup, so an
unconfigured node advertises nothing but /diagnostics and its services.

The map's places and the per-frame markers are apart, so per-frame traffic stays small whatever
the map's size: ``map_places`` (sensor_msgs/PointCloud2, see ``conversions.places_cloud``) carries
the places, latched (transient-local, depth 1) and sent only when a map is configured or swapped
in; ``place_markers`` carries, per frame, the top-k candidates and the best place
(``result.top_k`` + 2 small markers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, NavSatFix, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from r2former_ros.core.drawing.match_image import result_match_image
from r2former_ros.core.io import result_messages
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.types import LocalizationResult
from r2former_ros.ros import conversions
from r2former_ros.ros.node_state import Stats, stage_summary
from r2former_ros.ros.parameters import NodeParameters

MAP_PLACES_TOPIC = 'map_places'
INITIALPOSE_TOPIC = '/initialpose'  # where AMCL and Nav2's localizers listen (absolute)


class Outputs:
    """The node's result publishers (all but /diagnostics)."""

    def __init__(self, node: Node, place_recognition_type: type, map_frame_id: str) -> None:
        """Create the publishers on ``node``."""
        self._node = node
        self._place_recognition_type = place_recognition_type
        self._map_frame_id = map_frame_id
        self._frame = map_frame_id  # where positions are: a pose-frame map's own frame wins
        reliable = QoSProfile(depth=10)
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.result = node.create_publisher(place_recognition_type, 'place_recognition',
                                            reliable)
        self.fix = node.create_publisher(NavSatFix, 'fix', reliable)
        self.pose = node.create_publisher(PoseWithCovarianceStamped, 'pose', reliable)
        # Latched too, so a subscriber of either durability matches; a late one gets the last.
        self.markers = node.create_publisher(MarkerArray, 'place_markers', latched)
        self.places = node.create_publisher(PointCloud2, MAP_PLACES_TOPIC, latched)
        self.match = node.create_publisher(Image, 'match_image', QoSProfile(depth=1))
        self.initialpose = node.create_publisher(PoseWithCovarianceStamped, INITIALPOSE_TOPIC,
                                                 QoSProfile(depth=1))
        self._all = [self.result, self.fix, self.pose, self.markers, self.places, self.match,
                     self.initialpose]

    def destroy(self) -> None:
        """Destroy every publisher (cleanup)."""
        for publisher in self._all:
            self._node.destroy_publisher(publisher)
        self._all = []

    def frame_of(self, database: MapDatabase) -> str:
        """Return the frame a map's positions are published in (a pose-frame map's own)."""
        return result_messages.output_frame(self._map_frame_id, database.position_frame)

    def places_cloud(self, database: MapDatabase) -> PointCloud2:
        """Build the point cloud of a map's places (reads the whole places table)."""
        places = database.places
        return conversions.places_cloud(Header(frame_id=self.frame_of(database)),
                                        places['east'], places['north'], places['up'])

    def publish_places(self, cloud: PointCloud2) -> None:
        """Send the places of the map now serving (configure, map swap): latched, once."""
        self._frame = str(cloud.header.frame_id)  # the per-frame markers follow the map
        self.places.publish(cloud)

    def publish_result(self, result: LocalizationResult, *, header: Any, params: NodeParameters,
                       backbone: str, map_id: str, decode_ms: float, total_ms: float,
                       position_frame: str | None = None
                       ) -> tuple[bool, int, float, PoseWithCovarianceStamped | None]:
        """
        Publish place_recognition, and fix and pose on a match; return what diagnostics use.

        A pose-frame map (``position_frame`` not 'wgs84') publishes its pose and result in its
        own frame and no NavSatFix (it has no geodetic position). Returns matched, place id,
        confidence and the pose message (None when not matched), for ``/initialpose``.
        """
        threshold_m = params.localizer.threshold_m
        fix = conversions.to_navsat_fix(result, header=header, threshold_m=threshold_m)
        pose = conversions.to_pose(result, header=header, map_frame_id=params.map_frame_id,
                                   threshold_m=threshold_m, position_frame=position_frame)
        out = conversions.to_place_recognition(
            self._place_recognition_type, result, header=header,
            map_frame_id=params.map_frame_id, backbone=backbone, decode_ms=decode_ms,
            total_ms=total_ms, map_id=map_id, position_frame=position_frame)
        self.result.publish(out)
        if fix is not None:
            self.fix.publish(fix)
        if pose is not None:
            self.pose.publish(pose)
        return bool(out.matched), int(out.place_id), float(out.confidence), pose

    def publish_initialpose(self, pose: PoseWithCovarianceStamped) -> None:
        """Hand a localizer (AMCL, Nav2) the pose to restart from (the relocalize gate said so)."""
        self.initialpose.publish(pose)

    def publish_markers(self, result: LocalizationResult, top_k: int) -> None:
        """Top-k and best-place markers of one frame (an empty result clears them)."""
        markers = conversions.result_markers(result, self._header(), top_k)
        self.markers.publish(conversions.marker_array(markers))

    def match_image_wanted(self) -> bool:
        """Whether anyone subscribes to match_image."""
        return self.match.get_subscription_count() > 0

    def publish_match_image(self, localizer: Localizer, rgb: Any, query_local: Any,
                            result: LocalizationResult, header: Any) -> None:
        """Query beside the matched map image with the strongest token pairs."""
        picture = result_match_image(localizer, rgb, query_local, result)
        if picture is not None:
            self.match.publish(conversions.to_image(picture, header=header))

    def _header(self) -> Header:
        return Header(frame_id=self._frame)


def diagnostics_array(*, name: str, state: str, last_error: str, totals: Stats,
                      window: tuple[float, dict[str, list[float]], int, int, int],
                      localizer: Localizer | None, map_id: str, backbone: str,
                      topics: Sequence[str],
                      extra: dict[str, Any] | None = None) -> DiagnosticArray:
    """One DiagnosticStatus with the counters since start and the latency of the last window."""
    elapsed, latencies, window_in, window_out, window_bad = window
    rates = (window_in / elapsed, window_out / elapsed)
    values: dict[str, Any] = {
        'state': state,
        'frames_in': totals.frames_in, 'frames_processed': totals.processed,
        'frames_dropped': totals.drops, 'bad_inputs': totals.bad_inputs,
        'processing_errors': totals.errors, 'frames_matched': totals.matched,
        'map_swaps': totals.map_swaps, 'frames_dropped_at_map_swap': totals.dropped_at_swap,
        'input_rate_hz': f'{rates[0]:.2f}', 'output_rate_hz': f'{rates[1]:.2f}',
        'last_place_id': totals.last_place, 'last_confidence': f'{totals.last_confidence:.3f}',
        'max_total_ms_since_start': f'{totals.max_total_ms:.1f}',
        'image_topics': ' '.join(topics), 'backbone': backbone,
    }
    if localizer is not None:
        values.update({
            'map': str(localizer.database.path),
            'map_id': map_id,
            'map_places': localizer.database.num_places,
            'device': str(localizer.model.device),
            'calibrated': str(localizer.calibrated).lower(),
            'filter': localizer.config.filter,
            'confidence_threshold': f'{localizer.decider.threshold:.3f}',
            'threshold_source': localizer.threshold_source,
            'position_frame': localizer.database.position_frame,
        })
    values.update(extra or {})
    values.update(stage_summary(latencies))
    if state == 'unconfigured' and last_error:
        level, text = DiagnosticStatus.ERROR, f'unconfigured: {last_error}'
    elif state != 'active':
        level, text = DiagnosticStatus.OK, state
    elif window_bad:
        level, text = DiagnosticStatus.WARN, f'{window_bad} bad input image(s) skipped'
    elif values.get('odometry_problem'):
        level, text = DiagnosticStatus.WARN, f'odometry not used: {values["odometry_problem"]}'
    elif rates[1] > 0:
        level, text = DiagnosticStatus.OK, f'localizing at {rates[1]:.1f} Hz'
    else:
        level, text = DiagnosticStatus.OK, 'waiting for images'
    status = DiagnosticStatus(
        level=level, name=name, message=text,
        hardware_id=str(localizer.database.path) if localizer is not None else '',
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    return DiagnosticArray(status=[status])
