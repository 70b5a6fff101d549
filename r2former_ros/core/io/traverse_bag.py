"""
A drive as a bag: images with a synthetic GPS track (and, optionally, odometry).

:func:`write_traverse_bag` writes a rosbag2 (sqlite3) with ``sensor_msgs/Image`` frames on
:data:`IMAGE_TOPIC` and ``sensor_msgs/NavSatFix`` fixes on :data:`GPS_TOPIC`, one image per
second, laid out along a straight synthetic track (``spacing_m`` metres per frame, default
:data:`SPACING_M`, from :data:`ORIGIN`). The bundled corridor images become the demo's two drives
this way.

With ``odometry=SyntheticOdometry(...)`` it also writes ``nav_msgs/Odometry`` on
:data:`ODOM_TOPIC` at a higher rate than the images, integrated from the true track the way
wheel odometry is: every frame step is measured with a scale error and noise, the heading drifts,
and the integrated pose drifts with them. The stream can stop or jump at a given time, so the
tools' handling of a bad odometry stream can be tested on a real bag.

With ``poses=MapFramePoses(...)`` it writes the true track as ``geometry_msgs/PoseStamped`` in a
robot's own map frame (rotated and shifted from the synthetic ENU track, as a SLAM map is), and
with ``gps=False`` no NavSatFix at all: the drive of a robot without GPS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import importlib.resources
import math
from pathlib import Path
import shutil
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.geo.coords import enu_to_wgs84
from r2former_ros.core.io.images import read_image_file, rgb_to_raw_image

IMAGE_TOPIC = '/camera/image_raw'
GPS_TOPIC = '/gps/fix'
ODOM_TOPIC = '/odom'
POSE_TOPIC = '/map_pose'
ORIGIN = (-27.4775, 153.0280, 30.0)  # a synthetic track starts here (lat, lon, alt)
SPACING_M = 10.0  # metres per frame along the corridor (see data/demo/README.md)
START_NS = 1_700_000_000 * 10**9
FRAME_NS = 10**9  # one image per second
FIX_OFFSET_NS = FRAME_NS // 4  # fixes a quarter second before and after each image
QUERY_OFFSET_M = 1.0  # the demo's query traverse runs this far to the side of the map's


@dataclass(frozen=True)
class SyntheticOdometry:
    """
    How the synthetic odometry stream of a drive errs.

    Each step between two images is measured as ``true * (1 + scale_error + e)`` with ``e``
    drawn from N(0, step_noise) (``step_noise`` is a share of the step length), and the heading
    takes a N(0, heading_noise_rad) step per frame; the messages in between are the same
    motion, spread evenly. A jump in the true track larger than ``kidnap_frames`` frames is a
    kidnap: the wheels did not travel it, so the odometry measures a one-frame step there.
    """

    rate_hz: float = 10.0  # messages per second (images come at 1 Hz)
    scale_error: float = 0.03  # systematic: odometry says 3% more than was travelled
    step_noise: float = 0.05  # random: std of a frame step's error, share of its length
    heading_noise_rad: float = 0.01  # random walk of the heading, std per frame step
    seed: int = 0
    stop_after_s: float | None = None  # no message after this long past the first image
    jump_after_s: float | None = None  # from this time past the first image on, poses jump ...
    jump_m: float = 100.0  # ... by this much along the odometry frame's x axis
    kidnap_frames: float = 3.0  # steps longer than this many frames are kidnaps, not driving
    topic: str = ODOM_TOPIC

    def check(self) -> None:
        """Refuse settings that cannot make a stream (one line naming the value)."""
        if not (self.rate_hz > 1.0 and math.isfinite(self.rate_hz)):
            raise ConfigError(f'odometry rate_hz={self.rate_hz} must be > 1 (images are 1 Hz)')
        for name in ('step_noise', 'heading_noise_rad', 'kidnap_frames'):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f'odometry {name}={value} must be a finite number >= 0')
        if not (-1.0 < self.scale_error < 1.0):
            raise ConfigError(f'odometry scale_error={self.scale_error} must be in (-1, 1)')


@dataclass(frozen=True)
class MapFramePoses:
    """
    The true track as poses in a robot's own map frame, the way a SLAM map holds it.

    A frame's (x, y, z) is the track's ENU position (east along the corridor, north to its
    side) rotated by ``rotation_rad`` about the vertical and shifted by ``offset_m``; its yaw is
    the direction of travel (east) plus the rotation. One PoseStamped at each fix's stamp,
    so interpolation gives each image exactly its own position, as the GPS does.
    """

    topic: str = POSE_TOPIC
    frame_id: str = 'map'
    rotation_rad: float = 0.7
    offset_m: tuple[float, float, float] = (-43.0, 127.5, 1.5)

    def check(self) -> None:
        """Refuse a pose stream that cannot be written (one line naming the value)."""
        if not self.frame_id:
            raise ConfigError('map-frame poses need a frame_id')
        values = (self.rotation_rad, *self.offset_m)
        if len(self.offset_m) != 3 or not all(math.isfinite(v) for v in values):
            raise ConfigError(f'map-frame poses need a finite rotation and an (x, y, z) offset, '
                              f'got {self.rotation_rad}, {self.offset_m}')

    def to_frame(self, east: float, north: float, up: float) -> tuple[float, float, float]:
        """Turn an ENU track position into the map frame."""
        cos, sin = math.cos(self.rotation_rad), math.sin(self.rotation_rad)
        return (cos * east - sin * north + self.offset_m[0],
                sin * east + cos * north + self.offset_m[1], up + self.offset_m[2])


@dataclass(frozen=True)
class OdometryStream:
    """A synthetic odometry stream: stamps (ns) and integrated poses in the odometry frame."""

    stamp_ns: NDArray[np.int64]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    yaw: NDArray[np.float64]
    speed: NDArray[np.float64]  # measured forward speed (m/s), the message's twist


def bundled_corridor() -> Path:
    """Return the bundled corridor images (``ref/`` and ``query/``; installed with the package)."""
    return Path(str(importlib.resources.files('r2former_ros') / 'data' / 'demo' / 'corridor'))


def track_position(index: float, lateral_m: float = 0.0,
                   spacing_m: float = SPACING_M) -> tuple[float, float, float]:
    """WGS84 of frame ``index`` (fractional allowed) on the synthetic track."""
    lat, lon, alt = enu_to_wgs84(index * spacing_m, lateral_m, 0.0, *ORIGIN)
    return float(lat), float(lon), float(alt)


def synthetic_odometry(along_m: Sequence[float], settings: SyntheticOdometry,
                       spacing_m: float = SPACING_M) -> OdometryStream:
    """
    Integrate an odometry stream over a drive whose image i is at ``along_m[i]`` at START + i s.

    Messages run from half a second before the first image to half a second after the last, so
    every image stamp has odometry on both sides (until ``stop_after_s``).
    """
    settings.check()
    along = np.asarray(along_m, dtype=np.float64)
    if along.ndim != 1 or along.size < 2:
        raise ConfigError('odometry needs a drive of at least two images')
    rng = np.random.default_rng(settings.seed)
    true_steps = np.diff(along)
    kidnapped = np.abs(true_steps) > settings.kidnap_frames * spacing_m
    if kidnapped.any():  # the robot was carried: its wheels drove a usual step
        usual = float(np.median(true_steps[~kidnapped])) if (~kidnapped).any() else spacing_m
        true_steps = np.where(kidnapped, usual, true_steps)
    factors = 1.0 + settings.scale_error + rng.normal(0.0, settings.step_noise, true_steps.size)
    measured_steps = true_steps * factors
    heading_steps = rng.normal(0.0, settings.heading_noise_rad, true_steps.size)
    # measured path length and heading at each image (cumulative), then at each message time
    # by spreading each frame step evenly over its second
    image_s = np.arange(along.size, dtype=np.float64)
    path_at_image = np.concatenate([[0.0], np.cumsum(measured_steps)])
    yaw_at_image = np.concatenate([[0.0], np.cumsum(heading_steps)])
    count = int(math.floor((image_s[-1] + 1.0) * settings.rate_hz + 1e-9)) + 1
    times = np.arange(count) / settings.rate_hz - 0.5  # exact at whole seconds for 10 Hz
    path = np.interp(times, image_s, path_at_image)  # flat before the first / after the last
    yaw = np.interp(times, image_s, yaw_at_image)
    # integrate the pose: each small step goes along the heading of its midpoint
    dpath = np.diff(path)
    mid_yaw = 0.5 * (yaw[1:] + yaw[:-1])
    x = np.concatenate([[0.0], np.cumsum(dpath * np.cos(mid_yaw))])
    y = np.concatenate([[0.0], np.cumsum(dpath * np.sin(mid_yaw))])
    if settings.jump_after_s is not None:
        x = x + np.where(times >= settings.jump_after_s, settings.jump_m, 0.0)
    speed = np.gradient(path, times)
    keep = np.ones(times.size, dtype=bool)
    if settings.stop_after_s is not None:
        keep = times <= settings.stop_after_s + 1e-9
    stamp_ns = START_NS + np.round(times * 1e9).astype(np.int64)
    return OdometryStream(stamp_ns[keep], x[keep], y[keep], yaw[keep], speed[keep])


def write_traverse_bag(path: Path, image_files: list[Path], lateral_m: float = 0.0,
                       along: Sequence[float] | None = None,
                       odometry: SyntheticOdometry | None = None,
                       spacing_m: float = SPACING_M, *, poses: MapFramePoses | None = None,
                       gps: bool = True) -> Path:
    """
    Write a rosbag2 (sqlite3) with the images as sensor_msgs/Image and NavSatFix fixes.

    Image i is stamped START + i s and lies ``along[i] * spacing_m`` metres along the track
    (default ``along[i] = i``). Two fixes bracket each image, a quarter second before and after,
    at the image's own position: interpolation gives each image exactly its position, and a jump
    in ``along`` (a kidnapped drive) is a jump in the GPS too, never interpolated across.
    ``odometry`` adds a nav_msgs/Odometry stream (see :class:`SyntheticOdometry`); ``poses``
    adds the true track as PoseStamped in a map frame at the fixes' stamps (see
    :class:`MapFramePoses`), and ``gps=False`` leaves the fixes out.
    """
    positions = list(range(len(image_files))) if along is None else list(along)
    if len(positions) != len(image_files):
        raise ValueError(f'{len(positions)} track positions for {len(image_files)} images')
    if not (spacing_m > 0 and math.isfinite(spacing_m)):
        raise ConfigError(f'spacing_m={spacing_m} must be a finite number > 0')
    if not gps and poses is None:
        raise ConfigError('a traverse bag needs positions: GPS, map-frame poses or both')
    if odometry is not None:
        odometry.check()  # before any image is read: a bad setting writes nothing
    if poses is not None:
        poses.check()
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
        lat, lon, alt = track_position(position, lateral_m, spacing_m)
        for fix_stamp in (stamp - FIX_OFFSET_NS, stamp + FIX_OFFSET_NS):
            if gps:
                fix = types['sensor_msgs/msg/NavSatFix'](
                    header=header(fix_stamp, 'gps'),
                    status=types['sensor_msgs/msg/NavSatStatus'](status=0, service=1),
                    latitude=lat, longitude=lon, altitude=alt,
                    position_covariance=np.diag([1.0, 1.0, 4.0]).reshape(-1),
                    position_covariance_type=2)
                messages.append((fix_stamp, GPS_TOPIC, 'sensor_msgs/msg/NavSatFix', fix))
            if poses is not None:
                messages.append((fix_stamp, poses.topic, POSE_STAMPED,
                                 _map_pose(poses, position * spacing_m, lateral_m, types,
                                           header(fix_stamp, poses.frame_id))))
    topics = [(IMAGE_TOPIC, 'sensor_msgs/msg/Image')]
    if gps:
        topics.append((GPS_TOPIC, 'sensor_msgs/msg/NavSatFix'))
    if poses is not None:
        topics.append((poses.topic, POSE_STAMPED))
    if odometry is not None:
        stream = synthetic_odometry([p * spacing_m for p in positions], odometry, spacing_m)
        messages += [(stamp, odometry.topic, 'nav_msgs/msg/Odometry', msg)
                     for stamp, msg in _odometry_messages(stream, types, header)]
        topics.append((odometry.topic, 'nav_msgs/msg/Odometry'))
    messages.sort(key=lambda m: m[0])
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3)
    with writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=ts)
                       for topic, msgtype in topics}
        for stamp, topic, msgtype, msg in messages:
            writer.write(connections[topic], stamp, ts.serialize_cdr(msg, msgtype))
    return path


POSE_STAMPED = 'geometry_msgs/msg/PoseStamped'


def _map_pose(poses: MapFramePoses, east: float, north: float, types: Any, header: Any) -> Any:
    """PoseStamped of a track position (ENU, metres) in the map frame, facing along the track."""
    x, y, z = poses.to_frame(east, north, 0.0)
    yaw = poses.rotation_rad  # the track runs east: heading 0 in ENU
    pose = types['geometry_msgs/msg/Pose'](
        position=types['geometry_msgs/msg/Point'](x=x, y=y, z=z),
        orientation=types['geometry_msgs/msg/Quaternion'](
            x=0.0, y=0.0, z=math.sin(yaw / 2.0), w=math.cos(yaw / 2.0)))
    return types['geometry_msgs/msg/PoseStamped'](header=header, pose=pose)


def _odometry_messages(stream: OdometryStream, types: Any,
                       header: Any) -> list[tuple[int, Any]]:
    """nav_msgs/Odometry messages of a stream (frame ``odom``, child ``base_link``)."""
    out = []
    # a covariance that says "wheel odometry": a few cm in position, loose in what it cannot see
    pose_cov = np.diag([0.05, 0.05, 1e6, 1e6, 1e6, 0.01]).reshape(-1)
    twist_cov = np.diag([0.01, 0.01, 1e6, 1e6, 1e6, 0.01]).reshape(-1)
    vector3 = types['geometry_msgs/msg/Vector3']
    for stamp, x, y, yaw, speed in zip(stream.stamp_ns.tolist(), stream.x.tolist(),
                                       stream.y.tolist(), stream.yaw.tolist(),
                                       stream.speed.tolist(), strict=True):
        pose = types['geometry_msgs/msg/Pose'](
            position=types['geometry_msgs/msg/Point'](x=x, y=y, z=0.0),
            orientation=types['geometry_msgs/msg/Quaternion'](
                x=0.0, y=0.0, z=math.sin(yaw / 2.0), w=math.cos(yaw / 2.0)))
        twist = types['geometry_msgs/msg/Twist'](linear=vector3(x=speed, y=0.0, z=0.0),
                                                 angular=vector3(x=0.0, y=0.0, z=0.0))
        msg = types['nav_msgs/msg/Odometry'](
            header=header(int(stamp), 'odom'), child_frame_id='base_link',
            pose=types['geometry_msgs/msg/PoseWithCovariance'](pose=pose, covariance=pose_cov),
            twist=types['geometry_msgs/msg/TwistWithCovariance'](twist=twist,
                                                                 covariance=twist_cov))
        out.append((int(stamp), msg))
    return out
