"""
The node's output messages as plain data, shared by the ROS node and the ROS-free bag replay.

Every builder returns a dict whose keys are the ROS message's field names (nested dicts for
sub-messages, lists for sequences, ``bytes`` for ``uint8[]`` image data). ``r2former_ros.ros``
copies them into rclpy messages; :func:`to_rosbags` turns them into rosbags typestore objects for
writing bags. Keeping one builder means the node and ``r2former localize-bag`` publish the same
numbers by construction.

Covariance of a matched place (NavSatFix and PoseWithCovarianceStamped): the decision's
``sigma_m``, the moment-matched spread of right and wrong matches at the published confidence
(``ErrorModel`` in ``localize/calibration_store``: fitted on the calibration drive, else right
matches within ``threshold_m / 2`` and wrong ones ``4 * threshold_m``); results without a
decision fall back to ``threshold_m / max(confidence, CONFIDENCE_FLOOR)``. East, north and up
get the same variance ``sigma**2`` (diagonal, ``COVARIANCE_TYPE_DIAGONAL_KNOWN``).
The pose's yaw sigma is ``HEADING_SIGMA_RAD / max(confidence, CONFIDENCE_FLOOR)`` when the map
knows the heading; roll, pitch and an unknown yaw get ``UNKNOWN_VARIANCE``.

Frames: a GPS map's positions are ENU metres about its origin, published in the frame the caller
names (``map_frame_id``, the node's parameter); a map built from poses holds them in the poses'
own frame (its ``position_frame``, e.g. ``'map'``), and that frame is the one published
(:func:`output_frame`). Such a map has no geodetic position, so no NavSatFix is built for it.
"""

from __future__ import annotations

from collections.abc import Mapping
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.geo.coords import WGS84_FRAME
from r2former_ros.core.types import Candidate, LocalizationResult, PlacePosition

CONFIDENCE_FLOOR = 0.05
HEADING_SIGMA_RAD = 0.35  # about 20 degrees at confidence 1
UNKNOWN_VARIANCE = 1.0e6  # "not observed" for robot_localization and rviz
COVARIANCE_TYPE_DIAGONAL_KNOWN = 2  # sensor_msgs/NavSatFix
STATUS_FIX = 0  # sensor_msgs/NavSatStatus.STATUS_FIX
SERVICE_GPS = 1  # NavSatStatus.SERVICE_GPS: the closest of the four service bits
NO_PLACE = -1  # PlaceRecognition.NO_PLACE

PACKAGE = 'r2former_ros'
PLACE_CANDIDATE_TYPE = f'{PACKAGE}/msg/PlaceCandidate'
PLACE_RECOGNITION_TYPE = f'{PACKAGE}/msg/PlaceRecognition'
NAVSAT_TYPE = 'sensor_msgs/msg/NavSatFix'
POSE_COV_TYPE = 'geometry_msgs/msg/PoseWithCovarianceStamped'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
MESSAGE_NAMES = ('PlaceCandidate', 'PlaceRecognition')  # dependency order


# ---------------------------------------------------------------------------- the pipeline


def position_sigma_m(confidence: float, threshold_m: float) -> float:
    """Per-axis 1-sigma of a matched place's position, metres (see the module docstring)."""
    return float(threshold_m) / max(float(confidence), CONFIDENCE_FLOOR)


def result_sigma_m(result: LocalizationResult, threshold_m: float) -> float:
    """
    Per-axis 1-sigma of a result's published position.

    The decision's own (the calibrated error model of ``localize/calibration_store``); for a
    result built without one (tests, old callers), the confidence-scaled match distance.
    """
    decision = result.decision
    if decision is not None and decision.sigma_m is not None:
        return float(decision.sigma_m)
    return position_sigma_m(result.confidence, threshold_m)


def heading_sigma_rad(confidence: float) -> float:
    """1-sigma of the yaw taken from a matched place's mapped heading, radians."""
    return HEADING_SIGMA_RAD / max(float(confidence), CONFIDENCE_FLOOR)


def output_frame(map_frame_id: str, position_frame: str | None = None) -> str:
    """
    Return the frame id that published positions (pose, result, markers) are in.

    Args:
        map_frame_id: the name the caller gives a GPS map's local ENU frame (the node's
            ``map_frame_id`` parameter).
        position_frame: the map's position frame (``MapDatabase.position_frame``): ``'wgs84'``
            or None for a GPS map, else the frame of the poses the map was built from, which
            wins (the positions are in it, whatever the caller calls its ENU frame).
    """
    if position_frame is None or position_frame == WGS84_FRAME:
        return map_frame_id
    return position_frame


def has_geodetic_position(position: PlacePosition) -> bool:
    """Whether a place has a WGS84 position (False for a map built from poses: NaN)."""
    return math.isfinite(position.latitude) and math.isfinite(position.longitude)


def yaw_quaternion(yaw: float) -> dict[str, float]:
    """Quaternion (x, y, z, w) of a rotation by ``yaw`` radians about z."""
    return {'x': 0.0, 'y': 0.0, 'z': math.sin(yaw / 2.0), 'w': math.cos(yaw / 2.0)}


# ----------------------------------------------------------------------------- builders


def header_fields(stamp_ns: int, frame_id: str) -> dict[str, Any]:
    """std_msgs/Header."""
    stamp_ns = int(stamp_ns)
    return {'stamp': {'sec': stamp_ns // 1_000_000_000, 'nanosec': stamp_ns % 1_000_000_000},
            'frame_id': str(frame_id)}


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _position_fields(position: PlacePosition) -> dict[str, Any]:
    """Return the WGS84, ENU, heading and UTM fields of PlaceCandidate and PlaceRecognition."""
    return {
        'latitude': position.latitude, 'longitude': position.longitude,
        'altitude': position.altitude,
        'position': {'x': position.east, 'y': position.north, 'z': position.up},
        'heading': _nan_if_none(position.heading),
        'utm_zone': int(position.utm_zone), 'utm_northern': bool(position.utm_northern),
        'utm_easting': position.utm_easting, 'utm_northing': position.utm_northing,
    }


def candidate_fields(candidate: Candidate) -> dict[str, Any]:
    """r2former_ros/PlaceCandidate."""
    return {'place_id': int(candidate.place_id), **_position_fields(candidate.position),
            'global_score': float(candidate.global_score),
            'rerank_score': _nan_if_none(candidate.rerank_score)}


def place_recognition_fields(result: LocalizationResult, *, stamp_ns: int, frame_id: str,
                             map_frame_id: str, backbone: str, decode_ms: float = 0.0,
                             total_ms: float | None = None,
                             position_frame: str | None = None,
                             map_id: str = '') -> dict[str, Any]:
    """
    r2former_ros/PlaceRecognition of one result.

    Args:
        result: the localizer's result.
        stamp_ns: the query image's header stamp.
        frame_id: the query image's frame.
        map_frame_id: the name of a GPS map's ENU frame.
        backbone: the model's backbone name.
        decode_ms: time spent turning the image message into RGB.
        total_ms: receive-to-publish time; None = decode plus the result's own total.
        position_frame: the map's position frame; a pose frame replaces ``map_frame_id`` in
            the message's ``map_frame_id`` (see :func:`output_frame`).
        map_id: the map the result came from (``MapDatabase.map_id``).
    """
    timings = result.timings_ms
    best = result.best
    nan = math.nan
    fields: dict[str, Any] = {
        'header': header_fields(stamp_ns, frame_id),
        'matched': bool(result.matched) and best is not None,
        'confidence': float(result.confidence),
        'calibrated': bool(result.calibrated),
        'map_frame_id': output_frame(map_frame_id, position_frame),
        'candidates': [candidate_fields(c) for c in result.candidates],
        'decode_ms': float(decode_ms),
        'extract_ms': float(timings.get('extract', 0.0)),
        'retrieve_ms': float(timings.get('retrieve', 0.0)),
        'rerank_ms': float(timings.get('rerank', 0.0)),
        'total_ms': float(decode_ms + timings.get('total', 0.0) if total_ms is None
                          else total_ms),
        'backbone': backbone,
        'map_id': map_id,
    }
    if best is None:
        fields.update({
            'place_id': NO_PLACE, 'latitude': nan, 'longitude': nan, 'altitude': nan,
            'position': {'x': nan, 'y': nan, 'z': nan}, 'heading': nan, 'utm_zone': 0,
            'utm_northern': False, 'utm_easting': nan, 'utm_northing': nan,
            'rerank_score': nan, 'global_score': nan,
        })
    else:
        fields.update(candidate_fields(best))
    return fields


def navsat_fields(result: LocalizationResult, *, stamp_ns: int, frame_id: str,
                  threshold_m: float) -> dict[str, Any] | None:
    """
    sensor_msgs/NavSatFix at the matched place.

    None when the result is not a match, and for a place without a geodetic position (a map
    built from poses, no GPS): no fix is invented.
    """
    best = result.best
    if not result.matched or best is None or not has_geodetic_position(best.position):
        return None
    variance = result_sigma_m(result, threshold_m) ** 2
    return {
        'header': header_fields(stamp_ns, frame_id),
        'status': {'status': STATUS_FIX, 'service': SERVICE_GPS},
        'latitude': best.position.latitude, 'longitude': best.position.longitude,
        'altitude': best.position.altitude,
        'position_covariance': [variance, 0.0, 0.0, 0.0, variance, 0.0, 0.0, 0.0, variance],
        'position_covariance_type': COVARIANCE_TYPE_DIAGONAL_KNOWN,
    }


def pose_fields(result: LocalizationResult, *, stamp_ns: int, map_frame_id: str,
                threshold_m: float, position_frame: str | None = None) -> dict[str, Any] | None:
    """
    geometry_msgs/PoseWithCovarianceStamped of the matched place in the map's frame.

    The frame is ``map_frame_id`` (a GPS map's ENU frame), or the map's own ``position_frame``
    when it was built from poses (:func:`output_frame`). Orientation is the mapped heading
    (yaw about up; for a pose map the poses' yaw) when known, else identity with an
    ``UNKNOWN_VARIANCE`` yaw. None when the result is not a match.
    """
    best = result.best
    if not result.matched or best is None:
        return None
    position = best.position
    variance = result_sigma_m(result, threshold_m) ** 2
    known = position.heading is not None
    yaw_variance = heading_sigma_rad(result.confidence) ** 2 if known else UNKNOWN_VARIANCE
    covariance = np.diag([variance, variance, variance, UNKNOWN_VARIANCE, UNKNOWN_VARIANCE,
                          yaw_variance]).reshape(-1).tolist()
    return {
        'header': header_fields(stamp_ns, output_frame(map_frame_id, position_frame)),
        'pose': {
            'pose': {
                'position': {'x': position.east, 'y': position.north, 'z': position.up},
                'orientation': yaw_quaternion(position.heading)
                if position.heading is not None
                else {'x': 0.0, 'y': 0.0, 'z': 0.0, 'w': 1.0},
            },
            'covariance': covariance,
        },
    }


def image_fields(rgb: NDArray[np.uint8], *, stamp_ns: int, frame_id: str) -> dict[str, Any]:
    """sensor_msgs/Image (rgb8, unpadded) of an RGB array; ``data`` is bytes."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return {'header': header_fields(stamp_ns, frame_id), 'height': int(height),
            'width': int(width), 'encoding': 'rgb8', 'is_bigendian': 0, 'step': int(width * 3),
            'data': rgb.tobytes()}


# ------------------------------------------------------------------------- rosbags side

_NUMPY_TYPES = {
    'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8, 'int8': np.int8, 'uint8': np.uint8,
    'int16': np.int16, 'uint16': np.uint16, 'int32': np.int32, 'uint32': np.uint32,
    'int64': np.int64, 'uint64': np.uint64, 'float32': np.float32, 'float64': np.float64,
}


def message_directories() -> list[Path]:
    """
    Where ``PlaceCandidate.msg`` / ``PlaceRecognition.msg`` may be, in lookup order.

    The source checkout's ``msg/``, the cmake/colcon install's ``share/r2former_ros/msg`` next
    to this package, then every AMENT_PREFIX_PATH entry's.
    """
    package_dir = Path(__file__).resolve().parents[2]  # r2former_ros/ (this is core/io/...)
    dirs = [package_dir.parent / 'msg']
    if len(package_dir.parents) > 3:  # <prefix>/lib/pythonX.Y/site-packages/r2former_ros
        dirs.append(package_dir.parents[3] / 'share' / PACKAGE / 'msg')
    dirs += [Path(p) / 'share' / PACKAGE / 'msg'
             for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    return dirs


def message_definitions() -> dict[str, str]:
    """``{'r2former_ros/msg/PlaceCandidate': text, ...}`` read from the first complete msg dir."""
    for directory in message_directories():
        files = [directory / f'{name}.msg' for name in MESSAGE_NAMES]
        if all(f.is_file() for f in files):
            return {f'{PACKAGE}/msg/{f.stem}': f.read_text(encoding='utf-8') for f in files}
    searched = ', '.join(str(d) for d in message_directories())
    raise ConfigError(f'cannot find the r2former_ros message definitions (searched {searched}); '
                      'run from a source checkout or a colcon/cmake install')


def result_typestore(definitions: Mapping[str, str] | None = None) -> Any:
    """Return a ROS 2 Jazzy rosbags typestore with our messages registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore  # noqa: PLC0415

    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    for name, text in (definitions or message_definitions()).items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


# A rosbags field definition is ``(Nodetype, detail)``: BASE ``(type name, string bound)``,
# NAME ``'pkg/msg/Type'``, ARRAY ``(element, length)``, SEQUENCE ``(element, bound)``.


def _default(store: Any, node: tuple[Any, Any]) -> Any:
    from rosbags.interfaces import Nodetype  # noqa: PLC0415 - rosbags only for bag writing

    kind, detail = Nodetype(node[0]), node[1]
    if kind is Nodetype.BASE:
        name = detail[0]
        return '' if name == 'string' else False if name == 'bool' else 0
    if kind is Nodetype.NAME:
        return to_rosbags(store, detail, {})
    if kind is Nodetype.ARRAY:
        return _build(store, node, [_default(store, detail[0])] * detail[1])
    return _build(store, node, [])  # SEQUENCE


def _build(store: Any, node: tuple[Any, Any], value: Any) -> Any:
    from rosbags.interfaces import Nodetype  # noqa: PLC0415 - rosbags only for bag writing

    kind, detail = Nodetype(node[0]), node[1]
    if kind is Nodetype.BASE:
        name = detail[0]
        if name == 'string':
            return str(value)
        if name == 'bool':
            return bool(value)
        if name in ('float32', 'float64'):
            return float(value)
        return int(value)
    if kind is Nodetype.NAME:
        return to_rosbags(store, detail, value)
    element = detail[0]
    if Nodetype(element[0]) is Nodetype.BASE and element[1][0] in _NUMPY_TYPES:
        dtype = _NUMPY_TYPES[element[1][0]]
        if isinstance(value, (bytes, bytearray, memoryview)):
            return np.frombuffer(value, dtype=dtype).copy()
        return np.asarray(value, dtype=dtype)
    return [_build(store, element, item) for item in value]


def to_rosbags(store: Any, msgtype: str, fields: Mapping[str, Any]) -> Any:
    """
    Build a rosbags message of ``msgtype`` from a builder dict; missing fields get zero values.

    Raises:
        ConfigError: a key is not a field of ``msgtype``.
    """
    _, field_defs = store.fielddefs[msgtype]
    names = {name for name, _ in field_defs}
    unknown = set(fields) - names
    if unknown:
        raise ConfigError(f'{msgtype} has no field(s) {sorted(unknown)}')
    values = {name: _build(store, node, fields[name]) if name in fields else _default(store, node)
              for name, node in field_defs}
    return store.types[msgtype](**values)
