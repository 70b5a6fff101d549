"""
Streaming bag reader on top of rosbags (no rclpy, no rosbag2_py).

Accepted inputs, alone or several in one call (read one after the other, in the given order):
    * rosbag2 directories with ``metadata.yaml`` (sqlite3 ``.db3`` or ``.mcap`` storage, also
      zstd file/message compression, which rosbags decompresses into the system temp dir);
    * rosbag2 directories whose ``metadata.yaml`` is missing (recording killed): their
      ``.db3``/``.mcap`` files are read directly;
    * bare ``.mcap`` or ``.db3`` files and ROS 1 ``.bag`` files.

Nothing is ever written next to the input (sqlite3 files are opened immutable), so bags on
read-only media work.

Types are resolved per requested connection, not per bag: the message definition embedded in
the bag is used when it parses, else the stock ROS 2 Jazzy / ROS 1 Noetic definition. Topics of
unknown or broken types (custom packages, rosbag2 service-event topics) are therefore never
parsed unless requested; ``rosbags.highlevel.AnyReader`` parses every definition at open and
fails the whole bag on one bad type, which is why it is not used here.

Stamps: with ``stamp_source='header'`` (default) a message's time is its header stamp, or the
bag receive time when the header stamp is zero (drivers that never fill it). Header stamps far
(> 10 s) from receive times -- a bag re-recorded during replay, a sensor on its own clock, sim
time -- are still used, because images and fixes must share one clock for geotagging; a warning
is logged once per topic, and ``stamp_source='receive'`` switches every topic to receive times.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag1 import Reader as Reader1
from rosbags.rosbag2 import Reader as Reader2
from rosbags.typesys import (
    Stores,
    TypesysError,
    get_types_from_idl,
    get_types_from_msg,
    get_typestore,
)

from r2former_ros.core.errors import BagError, ConfigError, ImageError
from r2former_ros.core.geo.geotag import FixArrays, PoseArrays
from r2former_ros.core.io.images import compressed_image_to_rgb, raw_image_to_rgb

_LOG = logging.getLogger(__name__)

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
NAVSAT_TYPE = 'sensor_msgs/msg/NavSatFix'
ODOMETRY_TYPE = 'nav_msgs/msg/Odometry'
POSE_STAMPED_TYPE = 'geometry_msgs/msg/PoseStamped'
POSE_COV_TYPE = 'geometry_msgs/msg/PoseWithCovarianceStamped'
POSE_TYPES = (ODOMETRY_TYPE, POSE_STAMPED_TYPE, POSE_COV_TYPE)

FAR_STAMP_NS = 10_000_000_000
"""Header vs receive time difference above which a warning is logged."""
STAMP_SOURCES = ('header', 'receive')
_STORAGE_SUFFIXES = ('.db3', '.mcap')

PathLike = str | os.PathLike
Paths = PathLike | Sequence[PathLike]


@dataclass(frozen=True)
class TopicInfo:
    """A topic in one or more bags."""

    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class ImageRecord:
    """One decoded image; ``index`` counts the topic's messages within its bag from 0."""

    stamp_ns: int
    bag_path: str
    topic: str
    index: int
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    receive_ns: int = 0


@dataclass(frozen=True)
class EncodedImage:
    """
    One image message whose pixels are not decoded yet (see :func:`iter_encoded_images`).

    Decoding is the expensive step (a 640x480 JPEG takes milliseconds); cv2 releases the GIL
    while it decodes, so callers can :meth:`decode` several of these in threads.
    """

    stamp_ns: int
    bag_path: str
    topic: str
    index: int
    receive_ns: int
    msgtype: str
    message: Any

    def decode(self) -> np.ndarray:
        """
        Return the (H, W, 3) uint8 RGB pixels.

        Raises:
            ImageError: The image cannot be decoded; the text names bag, topic and message.

        """
        try:
            return _decode_image(self.message, self.msgtype)
        except ImageError as err:
            raise ImageError(f'bag {self.bag_path} topic {self.topic} message {self.index}: '
                             f'{err}') from err


@dataclass
class _OpenBag:
    """An open reader and what it holds."""

    path: Path
    reader: Any
    is_ros1: bool

    def connections_of(self, topic: str) -> list[Connection]:
        return [c for c in self.reader.connections if c.topic == topic]

    def topic_types(self) -> dict[str, str]:
        return {c.topic: c.msgtype for c in self.reader.connections}


def _as_path_list(paths: Paths) -> list[Path]:
    """
    Normalise one path or a sequence of paths, expanding metadata-less rosbag2 directories.

    Raises:
        BagError: If no path is given, a path is missing, or is not a recognisable bag.

    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise BagError('no bag path given')
    result: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise BagError(f'bag {path} does not exist')
        if path.is_dir() and not (path / 'metadata.yaml').is_file():
            files = sorted(p for p in path.iterdir() if p.suffix in _STORAGE_SUFFIXES)
            if not files:
                raise BagError(
                    f'{path} is not a bag: no metadata.yaml and no .db3/.mcap files in it'
                )
            _LOG.warning('%s has no metadata.yaml; reading %d storage files directly',
                         path, len(files))
            result.extend(files)
        elif path.is_dir() or path.suffix in (*_STORAGE_SUFFIXES, '.bag'):
            result.append(path)
        else:
            raise BagError(
                f'{path} is not a bag: expected a rosbag2 directory, a .mcap/.db3 file or a '
                'ROS 1 .bag file'
            )
    return result


@contextmanager
def _open_bag(path: Path) -> Iterator[_OpenBag]:
    """
    Open one bag read-only; every failure becomes a BagError naming the path.

    Raises:
        BagError: If the bag cannot be opened (not a bag, truncated, unsupported).

    """
    is_ros1 = path.suffix == '.bag' and path.is_file()
    try:
        reader = Reader1(path) if is_ros1 else Reader2(path)
        reader.open()
    # rosbags surfaces corrupt input as many unrelated types (sqlite3, struct, zstd, KeyError).
    except Exception as err:
        raise BagError(
            f'cannot open bag {path} (truncated, corrupt or unsupported): '
            f'{type(err).__name__}: {err}'
        ) from err
    try:
        yield _OpenBag(path, reader, is_ros1)
    finally:
        reader.close()


def list_topics(paths: Paths) -> list[TopicInfo]:
    """
    List the topics of one or more bags, with message counts summed over the bags.

    Args:
        paths: Bag path(s).

    Returns:
        TopicInfo per topic, sorted by name.

    Raises:
        BagError: If a bag cannot be opened.

    """
    merged: dict[str, TopicInfo] = {}
    for path in _as_path_list(paths):
        with _open_bag(path) as bag:
            for name, info in bag.reader.topics.items():
                old = merged.get(name)
                count = int(info.msgcount) + (old.count if old else 0)
                msgtype = old.msgtype if old else str(info.msgtype)
                merged[name] = TopicInfo(name, msgtype, count)
    return [merged[name] for name in sorted(merged)]


def _describe_topics(types: dict[str, str]) -> str:
    """Format topics for error messages."""
    if not types:
        return 'the bag has no topics'
    return 'available: ' + ', '.join(f'{t} [{types[t]}]' for t in sorted(types))


def _check_requested(
    paths: list[Path], topics: Sequence[str], allowed: Sequence[str], what: str
) -> None:
    """
    Require each topic in at least one bag, always with an allowed type.

    Raises:
        BagError: If a topic is absent from all bags or has another type.

    """
    seen: dict[str, str] = {}
    for path in paths:
        with _open_bag(path) as bag:
            for topic, msgtype in bag.topic_types().items():
                if topic in topics and msgtype not in allowed:
                    raise BagError(
                        f'topic {topic} in bag {path} has type {msgtype}, expected {what} '
                        f'({", ".join(allowed)})'
                    )
                seen.setdefault(topic, msgtype)
    missing = [t for t in topics if t not in seen]
    if missing:
        bags = ', '.join(str(p) for p in paths)
        raise BagError(f'topic(s) {", ".join(missing)} not in {bags}; {_describe_topics(seen)}')


@functools.lru_cache(maxsize=2)
def _default_store(ros1: bool) -> Any:
    """Stock typestore for bags without usable embedded definitions."""
    return get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_JAZZY)


def _embedded_types(connection: Connection) -> dict[str, Any]:
    """
    Parse the message definition a bag carries for a connection (MSG or IDL text).

    Returns:
        The rosbags type dictionary; empty when the bag carries no definition.

    """
    msgdef = connection.msgdef
    if msgdef.format == MessageDefinitionFormat.MSG and msgdef.data:
        return dict(get_types_from_msg(msgdef.data, connection.msgtype))
    if msgdef.format == MessageDefinitionFormat.IDL and msgdef.data:
        separator = '=' * 80 + '\n'
        if not msgdef.data.startswith(separator + 'IDL: '):
            return dict(get_types_from_idl(msgdef.data))
        types: dict[str, Any] = {}
        # Concatenated IDL files: each section starts with an "IDL: name" line.
        for section in msgdef.data.split(separator)[1:]:
            types.update(get_types_from_idl(section.split('\n', 1)[1]))
        return types
    return {}


def _store_for(bag: _OpenBag, connection: Connection) -> Any:
    """
    Build a typestore able to deserialize one connection.

    Raises:
        BagError: If neither the embedded nor the stock definitions describe the type.

    """
    try:
        types = _embedded_types(connection)
        if connection.msgtype in types:
            store = get_typestore(Stores.EMPTY)
            store.register(types)
            # Walks every nested type: a definition that parsed but references types it does
            # not define (garbage text parses surprisingly often) fails here, not mid-bag.
            store.generate_msgdef(connection.msgtype, ros_version=1 if bag.is_ros1 else 2)
            return store
    # A broken embedded definition is not fatal while the stock one still fits.
    except (TypesysError, ValueError, KeyError, IndexError) as err:
        _LOG.warning('bag %s: embedded definition of %s unusable (%s); trying stock types',
                     bag.path, connection.msgtype, err)
    store = _default_store(bag.is_ros1)
    if connection.msgtype in store.types:
        return store
    raise BagError(
        f'cannot decode topic {connection.topic} in bag {bag.path}: type '
        f'{connection.msgtype} has no usable definition in the bag and is not a stock type'
    )


def _deserializer(bag: _OpenBag, connection: Connection) -> Callable[[bytes], Any]:
    """Return a function turning raw bytes of the connection into a message object."""
    store = _store_for(bag, connection)
    msgtype = connection.msgtype
    if bag.is_ros1:
        return lambda raw: store.deserialize_ros1(raw, msgtype)
    return lambda raw: store.deserialize_cdr(raw, msgtype)


def _messages(bag: _OpenBag, topics: Sequence[str]) -> Iterator[tuple[Connection, int, Any]]:
    """
    Stream (connection, receive_ns, message) of the topics in receive order.

    Raises:
        BagError: If the bag is truncated/corrupt or a message cannot be deserialized.

    """
    connections = [c for t in topics for c in bag.connections_of(t)]
    if not connections:
        return
    decoders = {c.id: _deserializer(bag, c) for c in connections}
    stream = iter(bag.reader.messages(connections=connections))
    while True:
        try:
            connection, receive_ns, raw = next(stream)
        except StopIteration:
            return
        except Exception as err:
            raise BagError(
                f'bag {bag.path} is truncated or corrupt: {type(err).__name__}: {err}'
            ) from err
        try:
            message = decoders[connection.id](raw)
        except Exception as err:
            raise BagError(
                f'cannot deserialize a {connection.msgtype} message on {connection.topic} in '
                f'bag {bag.path}: {err}'
            ) from err
        yield connection, int(receive_ns), message


def _header_ns(message: Any) -> int:
    """Header stamp of a message in nanoseconds."""
    stamp = message.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class _Stamper:
    """Chooses header or receive stamps and warns once per topic about far-off headers."""

    def __init__(self, source: str) -> None:
        if source not in STAMP_SOURCES:
            raise ConfigError(f'stamp_source must be one of {STAMP_SOURCES}, got {source!r}')
        self.source = source
        self.warned: set[tuple[str, str]] = set()

    def __call__(self, bag: _OpenBag, topic: str, message: Any, receive_ns: int) -> int:
        if self.source == 'receive':
            return receive_ns
        header_ns = _header_ns(message)
        if header_ns == 0:
            return receive_ns
        key = (str(bag.path), topic)
        if abs(header_ns - receive_ns) > FAR_STAMP_NS and key not in self.warned:
            self.warned.add(key)
            _LOG.warning(
                'bag %s topic %s: header stamps differ from receive times by %.1f s; using '
                'header stamps (stamp_source="receive" to change)',
                bag.path, topic, (header_ns - receive_ns) * 1e-9,
            )
        return header_ns


def _decode_image(message: Any, msgtype: str) -> np.ndarray:
    """Decode an Image or CompressedImage message to RGB."""
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return compressed_image_to_rgb(message.data, message.format)
    return raw_image_to_rgb(
        message.data, message.encoding, message.height, message.width, message.step,
        message.is_bigendian,
    )


def _as_topics(topics: str | Iterable[str]) -> list[str]:
    """
    Normalise one topic or several into a de-duplicated list.

    Raises:
        BagError: If no topic is given.

    """
    names = [topics] if isinstance(topics, str) else list(dict.fromkeys(topics))
    if not names:
        raise BagError('no topic requested')
    return names


def _image_messages(paths: Paths, topics: str | Iterable[str],
                    stamp_source: str) -> Iterator[tuple[Path, Connection, int, int, int, Any]]:
    """
    Yield image messages of `topics` bag by bag: (path, connection, index, stamp, receive, msg).

    `index` counts every message of the topic in its bag, so selections made on one pass (stamps)
    address the same messages on the next (pixels).
    """
    names = _as_topics(topics)
    stamper = _Stamper(stamp_source)
    bag_paths = _as_path_list(paths)
    _check_requested(bag_paths, names, IMAGE_TYPES, 'an image type')
    for path in bag_paths:
        with _open_bag(path) as bag:
            counters = dict.fromkeys(names, 0)
            for connection, receive_ns, message in _messages(bag, names):
                index = counters[connection.topic]
                counters[connection.topic] += 1
                stamp = stamper(bag, connection.topic, message, receive_ns)
                yield path, connection, index, stamp, receive_ns, message


def iter_images(
    paths: Paths,
    topics: str | Iterable[str],
    *,
    stamp_source: str = 'header',
    skip_undecodable: bool = False,
    select: Callable[[str, str, int], bool] | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[ImageRecord]:
    """
    Stream decoded images of the requested topics, one bag after the other.

    Only one message is decoded at a time, so memory stays flat for any bag size.

    Args:
        paths: Bag path(s).
        topics: Image topic(s) (``sensor_msgs/msg/Image`` or ``CompressedImage``).
        stamp_source: ``'header'`` (zero stamps fall back to receive time) or ``'receive'``.
        skip_undecodable: Log and skip images that fail to decode instead of raising.
        select: ``select(bag_path, topic, index)`` -> whether to decode that message; the
            others are skipped before pixel decoding (indices still count every message).
        on_skip: Called with the message of each image skipped as undecodable.

    Yields:
        ImageRecord per (selected) message, in receive order within each bag.

    Raises:
        BagError: Missing/corrupt bag, absent topic, non-image topic type.
        ImageError: An image cannot be decoded (unless skip_undecodable).
        ConfigError: Unknown stamp_source.

    """
    encoded_images = iter_encoded_images(paths, topics, stamp_source=stamp_source,
                                         select=select)
    try:
        for encoded in encoded_images:
            try:
                rgb = encoded.decode()
            except ImageError as err:
                if not skip_undecodable:
                    raise
                _LOG.warning('skipping undecodable image: %s', err)
                if on_skip is not None:
                    on_skip(str(err))
                continue
            yield ImageRecord(encoded.stamp_ns, encoded.bag_path, encoded.topic, encoded.index,
                              rgb, encoded.receive_ns)
    finally:
        encoded_images.close()  # releases the open bag now, also when the caller stops early


def iter_encoded_images(
    paths: Paths,
    topics: str | Iterable[str],
    *,
    stamp_source: str = 'header',
    select: Callable[[str, str, int], bool] | None = None,
) -> Generator[EncodedImage, None, None]:
    """
    Stream the (selected) image messages of the topics without decoding their pixels.

    Same arguments, order and errors as :func:`iter_images`, which decodes these one by one;
    map building decodes them in a thread pool instead.
    """
    for path, connection, index, stamp, receive_ns, message in _image_messages(
            paths, topics, stamp_source):
        if select is not None and not select(str(path), connection.topic, index):
            continue
        yield EncodedImage(stamp, str(path), connection.topic, index, receive_ns,
                           connection.msgtype, message)


@dataclass(frozen=True)
class ImageStamp:
    """Where and when one image message is, without its pixels (see :func:`iter_image_stamps`)."""

    stamp_ns: int
    bag_path: str
    topic: str
    index: int
    receive_ns: int = 0


def iter_image_stamps(
    paths: Paths, topics: str | Iterable[str], *, stamp_source: str = 'header'
) -> Iterator[ImageStamp]:
    """
    Stream the stamps of image messages without decoding any pixels.

    A first pass for geotagging and keyframe selection, which need every stamp before deciding
    which images to decode; the indices match :func:`iter_images` for the same arguments.
    Deserialization leaves the pixel buffer a view into the raw message, so this costs little
    more than reading the bag.

    Args:
        paths: Bag path(s).
        topics: Image topic(s).
        stamp_source: ``'header'`` or ``'receive'``.

    Yields:
        ImageStamp per message, in receive order within each bag.

    Raises:
        BagError: Missing/corrupt bag, absent topic, non-image topic type.
        ConfigError: Unknown stamp_source.

    """
    for path, connection, index, stamp, receive_ns, _ in _image_messages(
            paths, topics, stamp_source):
        yield ImageStamp(stamp, str(path), connection.topic, index, receive_ns)


def count_messages(paths: Paths, topics: str | Iterable[str]) -> int:
    """
    Count the messages of the topics from bag metadata (for progress reports).

    Args:
        paths: Bag path(s).
        topics: Topic name(s).

    Returns:
        The total message count recorded in the bags' indexes.

    Raises:
        BagError: If a bag cannot be opened.

    """
    names = set(_as_topics(topics))
    return sum(t.count for t in list_topics(paths) if t.name in names)


def _collect(
    paths: Paths, topic: str, allowed: Sequence[str], what: str, stamp_source: str,
    extract: Callable[[Any, str], tuple],
) -> tuple[list[int], list[tuple]]:
    """Read one topic fully into stamps and extracted value tuples."""
    stamper = _Stamper(stamp_source)
    bag_paths = _as_path_list(paths)
    _check_requested(bag_paths, [topic], allowed, what)
    stamps: list[int] = []
    rows: list[tuple] = []
    for path in bag_paths:
        with _open_bag(path) as bag:
            for connection, receive_ns, message in _messages(bag, [topic]):
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
    """(x, y, z, yaw) of an Odometry, PoseStamped or PoseWithCovarianceStamped."""
    pose = message.pose if msgtype == POSE_STAMPED_TYPE else message.pose.pose
    p, q = pose.position, pose.orientation
    return float(p.x), float(p.y), float(p.z), yaw_from_quaternion(q.x, q.y, q.z, q.w)


def read_poses(paths: Paths, topic: str, *, stamp_source: str = 'header') -> PoseArrays:
    """
    Read Odometry / PoseStamped / PoseWithCovarianceStamped messages into arrays.

    Args:
        paths: Bag path(s).
        topic: Pose or odometry topic.
        stamp_source: ``'header'`` or ``'receive'``.

    Returns:
        PoseArrays (stamp_ns, x, y, z, yaw) sorted by stamp.

    Raises:
        BagError: Missing/corrupt bag, absent topic or wrong type.

    """
    stamps, rows = _collect(paths, topic, POSE_TYPES, 'a pose type', stamp_source, _pose_row)
    columns = list(zip(*rows, strict=True)) if rows else [()] * 4
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind='stable')
    x, y, z, yaw = (np.asarray(c, dtype=np.float64)[order] for c in columns)
    return PoseArrays(np.asarray(stamps, dtype=np.int64)[order], x, y, z, yaw)
