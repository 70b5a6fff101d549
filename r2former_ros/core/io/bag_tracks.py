"""
Whole-topic trajectory readers: NavSatFix fixes and odometry / pose messages.

Each returns arrays sorted by stamp; bags are opened and stamped as described in
:mod:`.bag_open`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
from typing import Any

import numpy as np

from r2former_ros.core.geo.geotag import FixArrays, PoseArrays
from r2former_ros.core.io.bag_open import (
    NAVSAT_TYPE,
    POSE_STAMPED_TYPE,
    POSE_TYPES,
    Paths,
    Stamper,
    as_path_list,
    check_requested,
    open_bag,
    read_messages,
)


def _collect(
    paths: Paths, topic: str, allowed: Sequence[str], what: str, stamp_source: str,
    extract: Callable[[Any, str], tuple],
) -> tuple[list[int], list[tuple]]:
    """Read one topic fully into stamps and extracted value tuples."""
    stamper = Stamper(stamp_source)
    bag_paths = as_path_list(paths)
    check_requested(bag_paths, [topic], allowed, what)
    stamps: list[int] = []
    rows: list[tuple] = []
    for path in bag_paths:
        with open_bag(path) as bag:
            for connection, receive_ns, message in read_messages(bag, [topic]):
                stamps.append(stamper(bag, topic, message, receive_ns))
                rows.append(extract(message, connection.msgtype))
    return stamps, rows


def _fix_row(message: Any, _msgtype: str) -> tuple:
    """(lat, lon, alt, status, covariance type) of a NavSatFix."""
    return (
        float(message.latitude), float(message.longitude), float(message.altitude),
        int(message.status.status), int(message.position_covariance_type),
    )


def read_navsat(paths: Paths, topic: str, *, stamp_source: str = 'header') -> FixArrays:
    """
    Read all ``sensor_msgs/msg/NavSatFix`` messages of a topic into arrays, sorted by stamp.

    No filtering happens here; see :func:`r2former_ros.core.geo.geotag.filter_fixes`.

    Args:
        paths: Bag path(s).
        topic: NavSatFix topic.
        stamp_source: ``'header'`` or ``'receive'``.

    Returns:
        FixArrays (stamp_ns, lat, lon, alt, status, covariance_type).

    Raises:
        BagError: Missing/corrupt bag, absent topic or wrong type.

    """
    stamps, rows = _collect(paths, topic, (NAVSAT_TYPE,), 'NavSatFix', stamp_source, _fix_row)
    columns = list(zip(*rows, strict=True)) if rows else [()] * 5
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind='stable')
    return FixArrays(
        stamp_ns=np.asarray(stamps, dtype=np.int64)[order],
        lat=np.asarray(columns[0], dtype=np.float64)[order],
        lon=np.asarray(columns[1], dtype=np.float64)[order],
        alt=np.asarray(columns[2], dtype=np.float64)[order],
        status=np.asarray(columns[3], dtype=np.int16)[order],
        covariance_type=np.asarray(columns[4], dtype=np.uint8)[order],
    )


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """
    Rotation about z (ZYX convention) of a quaternion, in (-pi, pi].

    Args:
        x: Quaternion x.
        y: Quaternion y.
        z: Quaternion z.
        w: Quaternion w.

    Returns:
        Yaw in radians.

    """
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _pose_row(message: Any, msgtype: str) -> tuple:
    """(x, y, z, yaw, frame id) of an Odometry, PoseStamped or PoseWithCovarianceStamped."""
    pose = message.pose if msgtype == POSE_STAMPED_TYPE else message.pose.pose
    p, q = pose.position, pose.orientation
    return (float(p.x), float(p.y), float(p.z), yaw_from_quaternion(q.x, q.y, q.z, q.w),
            str(message.header.frame_id))


def read_poses(paths: Paths, topic: str, *, stamp_source: str = 'header') -> PoseArrays:
    """
    Read Odometry / PoseStamped / PoseWithCovarianceStamped messages into arrays.

    Args:
        paths: Bag path(s).
        topic: Pose or odometry topic.
        stamp_source: ``'header'`` or ``'receive'``.

    Returns:
        PoseArrays (stamp_ns, x, y, z, yaw) sorted by stamp, with the distinct header frame
        ids of the messages (in order of first appearance).

    Raises:
        BagError: Missing/corrupt bag, absent topic or wrong type.

    """
    stamps, rows = _collect(paths, topic, POSE_TYPES, 'a pose type', stamp_source, _pose_row)
    columns = list(zip(*rows, strict=True)) if rows else [()] * 5
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind='stable')
    x, y, z, yaw = (np.asarray(c, dtype=np.float64)[order] for c in columns[:4])
    frame_ids = tuple(dict.fromkeys(columns[4]))
    return PoseArrays(np.asarray(stamps, dtype=np.int64)[order], x, y, z, yaw, frame_ids)
