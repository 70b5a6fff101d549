"""
Opening bags with rosbags (no rclpy, no rosbag2_py): inputs, topics, type stores, stamps.

The readers built on it are :mod:`.bags` (images) and :mod:`.bag_tracks` (GPS and poses).

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

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
import functools
import logging
import os
from pathlib import Path
from typing import Any

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

from r2former_ros.core.errors import BagError, ConfigError

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


@dataclass
class OpenBag:
    """An open reader and what it holds."""

    path: Path
    reader: Any
    is_ros1: bool

    def connections_of(self, topic: str) -> list[Connection]:
        return [c for c in self.reader.connections if c.topic == topic]

    def topic_types(self) -> dict[str, str]:
        return {c.topic: c.msgtype for c in self.reader.connections}


def as_path_list(paths: Paths) -> list[Path]:
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
def open_bag(path: Path) -> Iterator[OpenBag]:
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
        yield OpenBag(path, reader, is_ros1)
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
    for path in as_path_list(paths):
        with open_bag(path) as bag:
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


def check_requested(
    paths: list[Path], topics: Sequence[str], allowed: Sequence[str], what: str
) -> None:
    """
    Require each topic in at least one bag, always with an allowed type.

    Raises:
        BagError: If a topic is absent from all bags or has another type.

    """
    seen: dict[str, str] = {}
    for path in paths:
        with open_bag(path) as bag:
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


def check_drive_topics(paths: Paths, image_topic: str, gps_topic: str | None = None,
                       odom_topic: str | None = None, pose_topic: str | None = None) -> None:
    """
    Require a drive's image topic and, if named, its NavSatFix, odometry and pose topics.

    Meant to run before a model loads, so a wrong topic costs a second, not a minute.

    Raises:
        BagError: a topic is absent or has another type; the message lists what the bags hold.
    """
    bags = as_path_list(paths)
    check_requested(bags, [image_topic], IMAGE_TYPES, 'an image type')
    if gps_topic:
        check_requested(bags, [gps_topic], [NAVSAT_TYPE], 'sensor_msgs/NavSatFix')
    if odom_topic:
        check_requested(bags, [odom_topic], POSE_TYPES, 'odometry or a pose type')
    if pose_topic:
        check_requested(bags, [pose_topic], POSE_TYPES, 'a pose type')


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


def _store_for(bag: OpenBag, connection: Connection) -> Any:
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


def _deserializer(bag: OpenBag, connection: Connection) -> Callable[[bytes], Any]:
    """Return a function turning raw bytes of the connection into a message object."""
    store = _store_for(bag, connection)
    msgtype = connection.msgtype
    if bag.is_ros1:
        return lambda raw: store.deserialize_ros1(raw, msgtype)
    return lambda raw: store.deserialize_cdr(raw, msgtype)


def read_messages(bag: OpenBag, topics: Sequence[str]) -> Iterator[tuple[Connection, int, Any]]:
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


class Stamper:
    """Chooses header or receive stamps and warns once per topic about far-off headers."""

    def __init__(self, source: str) -> None:
        if source not in STAMP_SOURCES:
            raise ConfigError(f'stamp_source must be one of {STAMP_SOURCES}, got {source!r}')
        self.source = source
        self.warned: set[tuple[str, str]] = set()

    def __call__(self, bag: OpenBag, topic: str, message: Any, receive_ns: int) -> int:
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


def as_topics(topics: str | Iterable[str]) -> list[str]:
    """
    Normalise one topic or several into a de-duplicated list.

    Raises:
        BagError: If no topic is given.

    """
    names = [topics] if isinstance(topics, str) else list(dict.fromkeys(topics))
    if not names:
        raise BagError('no topic requested')
    return names


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
    names = set(as_topics(topics))
    return sum(t.count for t in list_topics(paths) if t.name in names)
