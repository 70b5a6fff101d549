"""
Small bags for tests: rosbag2 (sqlite3/MCAP, optionally zstd), bare .mcap and ROS 1 .bag.

Messages are rosbags typestore objects (ROS 2 Jazzy by default, ROS 1 Noetic for ROS 1 bags);
each builder takes ``ts=`` so the same call works for both. Typical use::

    from bag_factory import drive_messages, write_rosbag2
    bag = write_rosbag2(tmp_path / 'bag', drive_messages(n_images=10), storage='mcap')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
import math
from pathlib import Path
import shutil
import tempfile
from typing import Any

import numpy as np
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from r2former_ros.core.geo.coords import enu_to_wgs84
from r2former_ros.core.io.images import rgb_to_compressed, rgb_to_raw_image

JAZZY = get_typestore(Stores.ROS2_JAZZY)
NOETIC = get_typestore(Stores.ROS1_NOETIC)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
NAVSAT = 'sensor_msgs/msg/NavSatFix'
ODOMETRY = 'nav_msgs/msg/Odometry'
POSE_STAMPED = 'geometry_msgs/msg/PoseStamped'

ORIGIN = (48.137154, 11.576124, 520.0)  # Munich; any land point away from zone edges works
START_NS = 1_700_000_000_000_000_000


@dataclass
class BagMessage:
    """One message to write; ``msg`` may be raw bytes when ``msgdef`` describes its type."""

    topic: str
    msgtype: str
    receive_ns: int
    msg: Any
    msgdef: str | None = None  # for raw-bytes messages of types the typestore lacks


def synthetic_rgb(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Deterministic, visibly different RGB images (smooth gradients plus a bright block)."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack(
        [(cols * 4 + seed * 37) % 256, (rows * 5 + seed * 11) % 256, ((rows + cols) * 3) % 256],
        axis=-1,
    ).astype(np.uint8)
    top, left = (seed * 7) % max(1, height - 8), (seed * 13) % max(1, width - 8)
    image[top : top + 8, left : left + 8] = (255, 255 - seed % 256, seed % 256)
    return image


def _time(ts: Any, stamp_ns: int) -> Any:
    return ts.types['builtin_interfaces/msg/Time'](
        sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)
    )


def header(stamp_ns: int, frame_id: str = '', ts: Any = JAZZY) -> Any:
    """A std_msgs/Header; ROS 1 stores get ``seq=0``."""
    cls = ts.types['std_msgs/msg/Header']
    if 'seq' in cls.__dataclass_fields__:
        return cls(seq=0, stamp=_time(ts, stamp_ns), frame_id=frame_id)
    return cls(stamp=_time(ts, stamp_ns), frame_id=frame_id)


def raw_image_msg(
    data: bytes | np.ndarray, encoding: str, height: int, width: int, step: int,
    stamp_ns: int, is_bigendian: int = 0, ts: Any = JAZZY,
) -> Any:
    """A sensor_msgs/Image with arbitrary fields (for encoding tests)."""
    return ts.types[IMAGE](
        header=header(stamp_ns, 'camera', ts), height=height, width=width, encoding=encoding,
        is_bigendian=is_bigendian, step=step,
        data=np.frombuffer(bytes(data), dtype=np.uint8).copy(),
    )


def image_msg(rgb: np.ndarray, stamp_ns: int, encoding: str = 'rgb8', ts: Any = JAZZY) -> Any:
    """A sensor_msgs/Image of an RGB array in rgb8, bgr8 or mono8."""
    raw = rgb_to_raw_image(rgb, encoding)
    return raw_image_msg(
        raw.data, raw.encoding, raw.height, raw.width, raw.step, stamp_ns, raw.is_bigendian, ts
    )


def compressed_msg(rgb: np.ndarray, stamp_ns: int, fmt: str = 'jpeg', ts: Any = JAZZY) -> Any:
    """A sensor_msgs/CompressedImage (format field as image_transport writes it)."""
    data = rgb_to_compressed(rgb, fmt)
    return ts.types[COMPRESSED](
        header=header(stamp_ns, 'camera', ts), format=f'rgb8; {fmt} compressed bgr8',
        data=np.frombuffer(data, dtype=np.uint8).copy(),
    )


def navsat_msg(
    stamp_ns: int, lat: float, lon: float, alt: float, status: int = 0,
    covariance_type: int = 2, ts: Any = JAZZY,
) -> Any:
    """A sensor_msgs/NavSatFix with a diagonal 1 m^2 covariance."""
    return ts.types[NAVSAT](
        header=header(stamp_ns, 'gps', ts),
        status=ts.types['sensor_msgs/msg/NavSatStatus'](status=status, service=1),
        latitude=lat, longitude=lon, altitude=alt,
        position_covariance=np.diag([1.0, 1.0, 4.0]).reshape(-1),
        position_covariance_type=covariance_type,
    )


def _pose(ts: Any, x: float, y: float, z: float, yaw: float) -> Any:
    point = ts.types['geometry_msgs/msg/Point'](x=x, y=y, z=z)
    quat = ts.types['geometry_msgs/msg/Quaternion'](
        x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)
    )
    return ts.types['geometry_msgs/msg/Pose'](position=point, orientation=quat)


def odometry_msg(
    stamp_ns: int, x: float, y: float, z: float, yaw: float, ts: Any = JAZZY
) -> Any:
    """A nav_msgs/Odometry at a pose with the given yaw (zero twist)."""
    vector = ts.types['geometry_msgs/msg/Vector3']
    twist = ts.types['geometry_msgs/msg/Twist'](
        linear=vector(x=0.0, y=0.0, z=0.0), angular=vector(x=0.0, y=0.0, z=0.0)
    )
    return ts.types[ODOMETRY](
        header=header(stamp_ns, 'odom', ts), child_frame_id='base_link',
        pose=ts.types['geometry_msgs/msg/PoseWithCovariance'](
            pose=_pose(ts, x, y, z, yaw), covariance=np.zeros(36)
        ),
        twist=ts.types['geometry_msgs/msg/TwistWithCovariance'](
            twist=twist, covariance=np.zeros(36)
        ),
    )


def pose_stamped_msg(
    stamp_ns: int, x: float, y: float, z: float, yaw: float, ts: Any = JAZZY
) -> Any:
    """A geometry_msgs/PoseStamped."""
    return ts.types[POSE_STAMPED](header=header(stamp_ns, 'map', ts), pose=_pose(ts, x, y, z, yaw))


def drive_messages(
    n_images: int = 20,
    *,
    image_topic: str = '/camera/image_raw',
    fix_topic: str = '/gps/fix',
    odom_topic: str | None = '/odom',
    compressed: bool = False,
    image_hz: float = 10.0,
    fix_hz: float = 5.0,
    speed_mps: float = 2.0,
    heading_rad: float = math.pi / 4,
    start_ns: int = START_NS,
    origin: tuple[float, float, float] = ORIGIN,
    ts: Any = JAZZY,
) -> list[BagMessage]:
    """
    A robot driving straight at constant speed: images, fixes and odometry in receive order.

    Fixes cover the whole image time span (one fix before the first and after the last image).
    Image i shows ``synthetic_rgb(i)``; odometry x/y are the ENU position, so yaw is the heading.
    """
    messages: list[BagMessage] = []
    image_dt = int(1e9 / image_hz)
    duration = (n_images - 1) * image_dt
    for i in range(n_images):
        stamp = start_ns + i * image_dt
        rgb = synthetic_rgb(i)
        msg = compressed_msg(rgb, stamp, ts=ts) if compressed else image_msg(rgb, stamp, ts=ts)
        messages.append(BagMessage(image_topic, COMPRESSED if compressed else IMAGE, stamp, msg))
    fix_dt = int(1e9 / fix_hz)
    for k in range(-1, duration // fix_dt + 2):
        stamp = start_ns + k * fix_dt
        dist = speed_mps * (stamp - start_ns) * 1e-9
        east, north = dist * math.cos(heading_rad), dist * math.sin(heading_rad)
        lat, lon, alt = enu_to_wgs84(east, north, 0.0, *origin)
        fix = navsat_msg(stamp, lat, lon, alt, ts=ts)
        messages.append(BagMessage(fix_topic, NAVSAT, stamp, fix))
        if odom_topic:
            odom = odometry_msg(stamp, east, north, 0.0, heading_rad, ts=ts)
            messages.append(BagMessage(odom_topic, ODOMETRY, stamp, odom))
    messages.sort(key=lambda m: m.receive_ns)
    return messages


def _serialize(ts: Any, message: BagMessage, ros1: bool) -> bytes:
    if isinstance(message.msg, (bytes, bytearray, memoryview)):
        return bytes(message.msg)
    if ros1:
        return bytes(ts.serialize_ros1(message.msg, message.msgtype))
    return bytes(ts.serialize_cdr(message.msg, message.msgtype))


def write_rosbag2(
    path: str | Path,
    messages: Iterable[BagMessage],
    *,
    storage: str = 'sqlite3',
    ts: Any = JAZZY,
    compression: str | None = None,
) -> Path:
    """
    Write a rosbag2 directory (version 9).

    Args:
        path: Directory to create (must not exist).
        messages: Messages in any order.
        storage: ``'sqlite3'`` or ``'mcap'``.
        ts: Typestore that knows every message type (except raw-bytes messages).
        compression: None, ``'file'`` or ``'message'`` (zstd).

    Returns:
        The bag directory.

    """
    path = Path(path)
    plugin = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}[storage]
    writer = Writer(path, version=9, storage_plugin=plugin)
    if compression:
        mode = {'file': CompressionMode.FILE, 'message': CompressionMode.MESSAGE}[compression]
        writer.set_compression(mode, CompressionFormat.ZSTD)
    connections: dict[tuple[str, str], Any] = {}
    with writer:
        for message in messages:
            key = (message.topic, message.msgtype)
            if key not in connections:
                if message.msgdef is not None:
                    connections[key] = writer.add_connection(
                        message.topic, message.msgtype, msgdef=message.msgdef,
                        rihs01='RIHS01_' + '0' * 64,
                    )
                else:
                    connections[key] = writer.add_connection(
                        message.topic, message.msgtype, typestore=ts
                    )
            writer.write(connections[key], message.receive_ns, _serialize(ts, message, False))
    return path


def write_bare_mcap(path: str | Path, messages: Iterable[BagMessage], ts: Any = JAZZY) -> Path:
    """Write a single ``.mcap`` file with no rosbag2 directory around it."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        bag = write_rosbag2(Path(tmp) / 'bag', messages, storage='mcap', ts=ts)
        (mcap,) = bag.glob('*.mcap')
        shutil.move(str(mcap), path)
    return path


def write_ros1_bag(path: str | Path, messages: Iterable[BagMessage], ts: Any = NOETIC) -> Path:
    """Write a ROS 1 ``.bag`` file; build its messages with ``ts=NOETIC``."""
    path = Path(path)
    connections: dict[tuple[str, str], Any] = {}
    with Writer1(path) as writer:
        for message in messages:
            key = (message.topic, message.msgtype)
            if key not in connections:
                connections[key] = writer.add_connection(
                    message.topic, message.msgtype, typestore=ts
                )
            writer.write(connections[key], message.receive_ns, _serialize(ts, message, True))
    return path


def write_drive_bag(path: str | Path, storage: str = 'sqlite3', **kwargs: Any) -> Path:
    """Write :func:`drive_messages` as rosbag2 ('sqlite3'/'mcap'), 'bare_mcap' or 'ros1'."""
    if storage == 'ros1':
        return write_ros1_bag(path, drive_messages(ts=NOETIC, **kwargs))
    if storage == 'bare_mcap':
        return write_bare_mcap(path, drive_messages(**kwargs))
    return write_rosbag2(path, drive_messages(**kwargs), storage=storage)


def topics_of(messages: Sequence[BagMessage]) -> dict[str, str]:
    """Topic -> type of a message list."""
    return {m.topic: m.msgtype for m in messages}
