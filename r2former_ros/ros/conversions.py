"""
rclpy messages <-> the core's data: images in, results out.

The numbers come from ``r2former_ros.core.io.result_messages`` (shared with the ROS-free bag
replay); this module only copies them into message objects. Covariance formula: see that module
(``sigma = threshold_m / max(confidence, 0.05)`` per axis, ``COVARIANCE_TYPE_DIAGONAL_KNOWN``).
"""

from __future__ import annotations

import array
from collections.abc import Mapping, Sequence
import importlib
from typing import Any

from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
from numpy.typing import NDArray
from sensor_msgs.msg import CompressedImage, Image, NavSatFix, PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from r2former_ros.core.io import result_messages
from r2former_ros.core.io.images import compressed_image_to_rgb, raw_image_to_rgb
from r2former_ros.core.types import LocalizationResult, PlacePosition

CANDIDATES_NS = 'candidates'
BEST_NS = 'best'
LABEL_NS = 'best_label'
# At most this many places are sent as points (16 bytes each: 4 MB), see places_cloud.
MAX_PLACE_POINTS = 250_000
PLACE_POINT_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('place_id', '<u4')])
# (name, byte offset, sensor_msgs/PointField datatype) of the fields above.
PLACE_POINT_FIELDS = (('x', 0, PointField.FLOAT32), ('y', 4, PointField.FLOAT32),
                      ('z', 8, PointField.FLOAT32), ('place_id', 12, PointField.UINT32))
CANDIDATE_SCALE_M = 2.0
BEST_SCALE_M = 4.0


# ---------------------------------------------------------------------------------- input


def image_to_rgb(msg: Image | CompressedImage) -> NDArray[np.uint8]:
    """
    Decode a sensor_msgs Image or CompressedImage to (H, W, 3) uint8 RGB.

    Raises:
        ImageError: unsupported encoding or malformed data.
    """
    if isinstance(msg, CompressedImage):
        return compressed_image_to_rgb(msg.data, msg.format)
    return raw_image_to_rgb(msg.data, msg.encoding, msg.height, msg.width, msg.step,
                            msg.is_bigendian)


def stamp_ns(header: Any) -> int:
    """Header stamp in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# ------------------------------------------------------------------------ dict -> message


def _sequence_element_class(msg: Any, name: str) -> type | None:
    """Return the element class of a sequence-of-messages field, None for primitives."""
    slot_types = type(msg).SLOT_TYPES
    index = list(type(msg).get_fields_and_field_types()).index(name)
    value_type = getattr(slot_types[index], 'value_type', None)
    namespaces = getattr(value_type, 'namespaces', None)
    if value_type is None or not namespaces:
        return None
    module = importlib.import_module('.'.join(namespaces))
    return getattr(module, value_type.name)


def fill_message(msg: Any, fields: Mapping[str, Any]) -> Any:
    """Copy a ``result_messages`` builder dict into an rclpy message; returns ``msg``."""
    for name, value in fields.items():
        if isinstance(value, Mapping):
            fill_message(getattr(msg, name), value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            setattr(msg, name, array.array('B', bytes(value)))
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            element = _sequence_element_class(msg, name)
            if element is None:
                raise TypeError(f'{type(msg).__name__}.{name} is not a sequence of messages')
            setattr(msg, name, [fill_message(element(), item) for item in value])
        else:
            setattr(msg, name, value)
    return msg


# --------------------------------------------------------------------------------- output


def to_place_recognition(msg_class: type, result: LocalizationResult, *, header: Any,
                         map_frame_id: str, backbone: str, decode_ms: float = 0.0,
                         total_ms: float | None = None, map_id: str = '',
                         position_frame: str | None = None) -> Any:
    """
    r2former_ros/PlaceRecognition of a result.

    Args:
        msg_class: the generated ``r2former_ros.msg.PlaceRecognition``.
        result: the localizer's result.
        header: the query image's header (stamp and frame id are copied).
        map_frame_id: the map's ENU frame.
        backbone: the model's backbone name.
        decode_ms: image message -> RGB time the node measured.
        total_ms: receive-to-publish time the node measured (None: decode + localizer).
        map_id: the map the result came from (``MapDatabase.map_id``).
        position_frame: the map's position frame (a pose-frame map's own frame wins over
            ``map_frame_id``; see ``result_messages.output_frame``).
    """
    fields = result_messages.place_recognition_fields(
        result, stamp_ns=stamp_ns(header), frame_id=header.frame_id, map_frame_id=map_frame_id,
        backbone=backbone, decode_ms=decode_ms, total_ms=total_ms, map_id=map_id,
        position_frame=position_frame)
    return fill_message(msg_class(), fields)


def to_navsat_fix(result: LocalizationResult, *, header: Any,
                  threshold_m: float) -> NavSatFix | None:
    """NavSatFix of the matched place (frame: the image's); None when there is no match."""
    fields = result_messages.navsat_fields(result, stamp_ns=stamp_ns(header),
                                           frame_id=header.frame_id, threshold_m=threshold_m)
    return None if fields is None else fill_message(NavSatFix(), fields)


def to_pose(result: LocalizationResult, *, header: Any, map_frame_id: str,
            threshold_m: float, position_frame: str | None = None
            ) -> PoseWithCovarianceStamped | None:
    """Pose of the matched place in the map's frame; None when there is no match."""
    fields = result_messages.pose_fields(result, stamp_ns=stamp_ns(header),
                                         map_frame_id=map_frame_id, threshold_m=threshold_m,
                                         position_frame=position_frame)
    return None if fields is None else fill_message(PoseWithCovarianceStamped(), fields)


def to_image(rgb: NDArray[np.uint8], *, header: Any) -> Image:
    """rgb8 sensor_msgs/Image of an RGB array with the given header's stamp and frame."""
    fields = result_messages.image_fields(rgb, stamp_ns=stamp_ns(header),
                                          frame_id=header.frame_id)
    return fill_message(Image(), fields)


# -------------------------------------------------------------------------------- markers


def score_colour(score: float, alpha: float = 0.9) -> ColorRGBA:
    """Red (0) through yellow to green (1); NaN scores are grey."""
    if not np.isfinite(score):
        return ColorRGBA(r=0.6, g=0.6, b=0.6, a=alpha)
    t = float(min(max(score, 0.0), 1.0))
    return ColorRGBA(r=float(min(1.0, 2 * (1 - t))), g=float(min(1.0, 2 * t)), b=0.1, a=alpha)


def _marker(header: Any, ns: str, marker_id: int, marker_type: int, scale: float) -> Marker:
    marker = Marker()
    marker.header = header
    marker.ns = ns
    marker.id = marker_id
    marker.type = marker_type
    marker.action = Marker.ADD
    marker.pose.orientation.w = 1.0
    marker.scale.x = marker.scale.y = marker.scale.z = float(scale)
    return marker


def _at(marker: Marker, position: PlacePosition) -> Marker:
    marker.pose.position.x = position.east
    marker.pose.position.y = position.north
    marker.pose.position.z = position.up
    return marker


def places_cloud(header: Any, east: Sequence[float] | NDArray[np.floating],
                 north: Sequence[float] | NDArray[np.floating],
                 up: Sequence[float] | NDArray[np.floating],
                 max_points: int = MAX_PLACE_POINTS) -> PointCloud2:
    """
    Put the map's places in one PointCloud2: x = east, y = north, z = up (float32), place_id.

    A point cloud, not a marker, because it is a flat byte array: building and publishing it
    costs milliseconds even for a million places, where a marker with one ``Point`` object per
    place holds the interpreter for seconds (and the executor with it). At most ``max_points``
    are sent (a bigger map is drawn by every k-th place, k = ceil(N / max_points), in id order):
    16 bytes per point, 4 MB at the cap; all 1M places would be 16 MB.
    """
    count = len(east)
    stride = max(1, -(-count // max(1, max_points)))
    points = np.zeros(len(range(0, count, stride)), dtype=PLACE_POINT_DTYPE)
    points['x'] = np.asarray(east, dtype=np.float64)[::stride]
    points['y'] = np.asarray(north, dtype=np.float64)[::stride]
    points['z'] = np.asarray(up, dtype=np.float64)[::stride]
    points['place_id'] = np.arange(0, count, stride, dtype=np.uint32)
    cloud = PointCloud2(header=header, height=1, width=points.size, is_bigendian=False,
                        point_step=PLACE_POINT_DTYPE.itemsize,
                        row_step=PLACE_POINT_DTYPE.itemsize * points.size, is_dense=True)
    cloud.fields = [PointField(name=name, offset=offset, datatype=datatype, count=1)
                    for name, offset, datatype in PLACE_POINT_FIELDS]
    cloud.data = array.array('B', points.tobytes())
    return cloud


def result_markers(result: LocalizationResult, header: Any, max_candidates: int) -> list[Marker]:
    """
    Top-k candidates as spheres coloured by score and the best place highlighted.

    Candidate ids ``0 .. max_candidates - 1`` are always sent (DELETE for those beyond this
    result's count), so markers of an earlier, longer result never linger.
    """
    markers = []
    for rank in range(max_candidates):
        marker = _marker(header, CANDIDATES_NS, rank, Marker.SPHERE, CANDIDATE_SCALE_M)
        if rank < len(result.candidates):
            candidate = result.candidates[rank]
            score = candidate.rerank_score if candidate.rerank_score is not None \
                else candidate.global_score
            marker.color = score_colour(score)
            markers.append(_at(marker, candidate.position))
        else:
            marker.action = Marker.DELETE
            markers.append(marker)
    best = result.best
    highlight = _marker(header, BEST_NS, 0, Marker.CYLINDER, BEST_SCALE_M)
    label = _marker(header, LABEL_NS, 0, Marker.TEXT_VIEW_FACING, BEST_SCALE_M / 2)
    if best is None:
        highlight.action = label.action = Marker.DELETE
    else:
        _at(highlight, best.position)
        highlight.scale.z = 0.5
        highlight.color = ColorRGBA(r=0.1, g=1.0, b=0.2, a=0.8) if result.matched \
            else ColorRGBA(r=1.0, g=0.5, b=0.0, a=0.6)
        _at(label, best.position)
        label.pose.position.z += BEST_SCALE_M
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        verdict = 'match' if result.matched else 'no match'
        label.text = f'place {best.place_id} ({verdict}, conf {result.confidence:.2f})'
    markers += [highlight, label]
    return markers


def marker_array(markers: Sequence[Marker]) -> MarkerArray:
    """Wrap markers."""
    return MarkerArray(markers=list(markers))
