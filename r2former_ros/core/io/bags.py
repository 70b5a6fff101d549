"""
Streaming images out of bags, one message in memory at a time.

Decoded (:func:`iter_images`), still encoded (:func:`iter_encoded_images`, for decoding in
threads) or only their stamps (:func:`iter_image_stamps`, for planning).

Which inputs are accepted, how types resolve and which stamps are used is described in
:mod:`.bag_open`; NavSatFix and pose topics are read by :mod:`.bag_tracks`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
import logging
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Connection

from r2former_ros.core.errors import ImageError
from r2former_ros.core.io.bag_open import (
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPES,
    Paths,
    Stamper,
    as_path_list,
    as_topics,
    check_requested,
    open_bag,
    read_messages,
)
from r2former_ros.core.io.images import compressed_image_to_rgb, raw_image_to_rgb

_LOG = logging.getLogger(__name__)


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

    def decoded(self) -> ImageRecord:
        """Return this message as an :class:`ImageRecord` with decoded pixels (see decode)."""
        return ImageRecord(self.stamp_ns, self.bag_path, self.topic, self.index, self.decode(),
                           self.receive_ns)


def _decode_image(message: Any, msgtype: str) -> np.ndarray:
    """Decode an Image or CompressedImage message to RGB."""
    if msgtype == COMPRESSED_IMAGE_TYPE:
        return compressed_image_to_rgb(message.data, message.format)
    return raw_image_to_rgb(
        message.data, message.encoding, message.height, message.width, message.step,
        message.is_bigendian,
    )


def _image_messages(paths: Paths, topics: str | Iterable[str],
                    stamp_source: str) -> Iterator[tuple[Path, Connection, int, int, int, Any]]:
    """
    Yield image messages of `topics` bag by bag: (path, connection, index, stamp, receive, msg).

    `index` counts every message of the topic in its bag, so selections made on one pass (stamps)
    address the same messages on the next (pixels).
    """
    names = as_topics(topics)
    stamper = Stamper(stamp_source)
    bag_paths = as_path_list(paths)
    check_requested(bag_paths, names, IMAGE_TYPES, 'an image type')
    for path in bag_paths:
        with open_bag(path) as bag:
            counters = dict.fromkeys(names, 0)
            for connection, receive_ns, message in read_messages(bag, names):
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
                record = encoded.decoded()
            except ImageError as err:
                if not skip_undecodable:
                    raise
                _LOG.warning('skipping undecodable image: %s', err)
                if on_skip is not None:
                    on_skip(str(err))
                continue
            yield record
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
