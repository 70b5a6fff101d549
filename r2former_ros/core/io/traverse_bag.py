"""
A drive as a bag: images with a synthetic GPS track, for the demo, the benches and the tests.

:func:`write_traverse_bag` writes a rosbag2 (sqlite3) with ``sensor_msgs/Image`` frames on
:data:`IMAGE_TOPIC` and ``sensor_msgs/NavSatFix`` fixes on :data:`GPS_TOPIC`, one image per
second, laid out along a straight synthetic track (:data:`SPACING_M` metres per frame, from
:data:`ORIGIN`). The bundled corridor images become the demo's two drives this way.
"""

from __future__ import annotations

from collections.abc import Sequence
import importlib.resources
from pathlib import Path
import shutil
from typing import Any

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from r2former_ros.core.geo.coords import enu_to_wgs84
from r2former_ros.core.io.images import read_image_file, rgb_to_raw_image

IMAGE_TOPIC = '/camera/image_raw'
GPS_TOPIC = '/gps/fix'
ORIGIN = (-27.4775, 153.0280, 30.0)  # a synthetic track starts here (lat, lon, alt)
SPACING_M = 10.0  # metres per frame along the corridor (see data/demo/README.md)
START_NS = 1_700_000_000 * 10**9
FRAME_NS = 10**9  # one image per second
FIX_OFFSET_NS = FRAME_NS // 4  # fixes a quarter second before and after each image
QUERY_OFFSET_M = 1.0  # the demo's query traverse runs this far to the side of the map's


def bundled_corridor() -> Path:
    """Return the bundled corridor images (``ref/`` and ``query/``; installed with the package)."""
    return Path(str(importlib.resources.files('r2former_ros') / 'data' / 'demo' / 'corridor'))


def track_position(index: float, lateral_m: float = 0.0) -> tuple[float, float, float]:
    """WGS84 of frame ``index`` (fractional allowed) on the synthetic track."""
    lat, lon, alt = enu_to_wgs84(index * SPACING_M, lateral_m, 0.0, *ORIGIN)
    return float(lat), float(lon), float(alt)


def write_traverse_bag(path: Path, image_files: list[Path], lateral_m: float = 0.0,
                       along: Sequence[float] | None = None) -> Path:
    """
    Write a rosbag2 (sqlite3) with the images as sensor_msgs/Image and NavSatFix fixes.

    Image i is stamped START + i s and lies ``along[i] * SPACING_M`` metres along the track
    (default ``along[i] = i``). Two fixes bracket each image, a quarter second before and after,
    at the image's own position: interpolation gives each image exactly its position, and a jump
    in ``along`` (a kidnapped drive) is a jump in the GPS too, never interpolated across.
    """
    positions = list(range(len(image_files))) if along is None else list(along)
    if len(positions) != len(image_files):
        raise ValueError(f'{len(positions)} track positions for {len(image_files)} images')
    ts = get_typestore(Stores.ROS2_JAZZY)
    types = ts.types

    def header(stamp_ns: int, frame: str) -> Any:
        stamp = types['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                     nanosec=stamp_ns % 10**9)
        return types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame)

    messages = []
    for i, (file, position) in enumerate(zip(image_files, positions, strict=True)):
        raw = rgb_to_raw_image(read_image_file(file), 'rgb8')
        stamp = START_NS + i * FRAME_NS
        msg = types['sensor_msgs/msg/Image'](
            header=header(stamp, 'camera'), height=raw.height, width=raw.width,
            encoding=raw.encoding, is_bigendian=raw.is_bigendian, step=raw.step,
            data=np.frombuffer(raw.data, dtype=np.uint8).copy())
        messages.append((stamp, IMAGE_TOPIC, 'sensor_msgs/msg/Image', msg))
        lat, lon, alt = track_position(position, lateral_m)
        for fix_stamp in (stamp - FIX_OFFSET_NS, stamp + FIX_OFFSET_NS):
            fix = types['sensor_msgs/msg/NavSatFix'](
                header=header(fix_stamp, 'gps'),
                status=types['sensor_msgs/msg/NavSatStatus'](status=0, service=1),
                latitude=lat, longitude=lon, altitude=alt,
                position_covariance=np.diag([1.0, 1.0, 4.0]).reshape(-1),
                position_covariance_type=2)
            messages.append((fix_stamp, GPS_TOPIC, 'sensor_msgs/msg/NavSatFix', fix))
    messages.sort(key=lambda m: m[0])
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3)
    with writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=ts)
                       for topic, msgtype in ((IMAGE_TOPIC, 'sensor_msgs/msg/Image'),
                                              (GPS_TOPIC, 'sensor_msgs/msg/NavSatFix'))}
        for stamp, topic, msgtype, msg in messages:
            writer.write(connections[topic], stamp, ts.serialize_cdr(msg, msgtype))
    return path
