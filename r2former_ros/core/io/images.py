"""
Our own cv_bridge: raw ``sensor_msgs/Image`` fields and CompressedImage bytes to RGB.

Only numpy and cv2 are used, so the ROS-free core can decode images coming from rosbags,
rclpy or a test without cv_bridge (which has no usable ROS 2 wheel).

Conventions:
    * Every decoder returns a fresh, writable, C-contiguous ``(H, W, 3)`` uint8 RGB array.
    * 16-bit data (mono16, 16UC1, rgb16, bayer_*16, ...) is scaled to 8 bit like cv_bridge
      does (``value * 255 / 65535`` rounded to nearest), so 65535 maps to 255. Depth images
      in millimetres therefore look almost black; they are not a use case of this package.
    * Generic OpenCV encodings carry no channel order. ``8UC3``/``8UC4`` are read as BGR/BGRA
      because such images almost always come from OpenCV code (``cv2_to_imgmsg`` with
      ``passthrough``). rosbags-image reads them as RGB instead.
    * ROS Bayer names give the colours of the top-left 2x2 cell (``bayer_rggb8``: R at (0, 0)),
      OpenCV names use the second row and column, so ROS ``rggb`` is OpenCV ``BayerBG``.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from typing import Any

import cv2
import numpy as np

from r2former_ros.core.errors import ConfigError, ImageError

# Per encoding: (bytes per channel, channels, how the channels turn into RGB).
_RGB = 'rgb'
_BGR = 'bgr'
_RGBA = 'rgba'
_BGRA = 'bgra'
_GRAY = 'gray'
_UYVY = 'uyvy'
_YUYV = 'yuyv'

_ENCODINGS: dict[str, tuple[int, int, str]] = {
    'rgb8': (1, 3, _RGB),
    'bgr8': (1, 3, _BGR),
    'rgba8': (1, 4, _RGBA),
    'bgra8': (1, 4, _BGRA),
    'rgb16': (2, 3, _RGB),
    'bgr16': (2, 3, _BGR),
    'rgba16': (2, 4, _RGBA),
    'bgra16': (2, 4, _BGRA),
    'mono8': (1, 1, _GRAY),
    'mono16': (2, 1, _GRAY),
    '8UC1': (1, 1, _GRAY),
    '8UC3': (1, 3, _BGR),
    '8UC4': (1, 4, _BGRA),
    '16UC1': (2, 1, _GRAY),
    'yuv422': (1, 2, _UYVY),
    'uyvy': (1, 2, _UYVY),
    'yuv422_yuy2': (1, 2, _YUYV),
    'yuyv': (1, 2, _YUYV),
}

# ROS Bayer pattern (top-left 2x2 cell) -> OpenCV code, whose name is shifted by one pixel.
_BAYER_CODES: dict[str, int] = {
    'rggb': cv2.COLOR_BayerBG2RGB,
    'bggr': cv2.COLOR_BayerRG2RGB,
    'gbrg': cv2.COLOR_BayerGR2RGB,
    'grbg': cv2.COLOR_BayerGB2RGB,
}
for _pattern in _BAYER_CODES:
    _ENCODINGS[f'bayer_{_pattern}8'] = (1, 1, f'bayer_{_pattern}')
    _ENCODINGS[f'bayer_{_pattern}16'] = (2, 1, f'bayer_{_pattern}')

_YUV_CODES = {_UYVY: cv2.COLOR_YUV2RGB_UYVY, _YUYV: cv2.COLOR_YUV2RGB_YUYV}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(sorted(_ENCODINGS))
"""Encodings that :func:`raw_image_to_rgb` accepts."""

_RAW_OUTPUT_ENCODINGS = ('rgb8', 'bgr8', 'mono8')
_COMPRESSED_FORMATS = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}


@dataclass(frozen=True)
class RawImage:
    """The fields of a ``sensor_msgs/Image`` message, ready to copy into one."""

    data: bytes
    encoding: str
    height: int
    width: int
    step: int
    is_bigendian: int


def _as_byte_array(data: Any, encoding: str) -> np.ndarray:
    """
    View bytes, memoryview, array.array, a list or a numpy array as flat uint8.

    Args:
        data: The message's ``data`` field.
        encoding: The encoding, for the error message.

    Returns:
        A 1-D uint8 array, a view when the input allows it.

    Raises:
        ImageError: If the data cannot be read as bytes.

    """
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (list, tuple)):
        # rclpy may hand over a plain list of ints in old releases.
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as err:
        raise ImageError(
            f'{encoding} image data of type {type(data).__name__} is not a byte buffer'
        ) from err


def _scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """
    Scale uint16 to uint8 as cv_bridge does: ``round(v * 255 / 65535)``.

    Args:
        values: uint16 array.

    Returns:
        uint8 array of the same shape.

    """
    # 65535 = 255 * 257, so v * 255 / 65535 == v / 257; integer rounding avoids float ties.
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _check_geometry(
    size: int, encoding: str, height: int, width: int, step: int, pixel_bytes: int
) -> None:
    """
    Reject shapes that the data cannot hold.

    Args:
        size: Number of bytes in the data.
        encoding: The encoding, for messages.
        height: Rows.
        width: Columns.
        step: Bytes per row including padding.
        pixel_bytes: Bytes per pixel of the encoding.

    Raises:
        ImageError: If any dimension is invalid or the data is too short.

    """
    if height <= 0 or width <= 0:
        raise ImageError(f'{encoding} image has an empty size {width}x{height}')
    if step < width * pixel_bytes:
        raise ImageError(
            f'{encoding} image step {step} is smaller than width {width} x {pixel_bytes} '
            'bytes per pixel'
        )
    if size < step * height:
        raise ImageError(
            f'{encoding} image data has {size} bytes, fewer than step {step} x height '
            f'{height} = {step * height}'
        )


def _unpack_rows(
    flat: np.ndarray, height: int, width: int, step: int, depth: int, channels: int,
    is_bigendian: bool,
) -> np.ndarray:
    """
    Cut off row padding and reinterpret the bytes as (H, W, C) of the channel depth.

    Args:
        flat: 1-D uint8 data.
        height: Rows.
        width: Columns.
        step: Bytes per row including padding.
        depth: Bytes per channel (1 or 2).
        channels: Channels per pixel.
        is_bigendian: Byte order of 16-bit data.

    Returns:
        (H, W, C) uint8 or native-endian uint16 array (possibly a view).

    """
    rows = flat[: step * height].reshape(height, step)[:, : width * channels * depth]
    if depth == 1:
        return rows.reshape(height, width, channels)
    dtype = np.dtype('>u2' if is_bigendian else '<u2')
    # The row slice keeps its last axis contiguous, which is all .view() needs.
    words = np.ascontiguousarray(rows).view(dtype).astype(np.uint16)
    return words.reshape(height, width, channels)


def _to_rgb(pixels: np.ndarray, kind: str, encoding: str) -> np.ndarray:
    """
    Turn unpacked pixels into 8-bit RGB according to the encoding's channel kind.

    Args:
        pixels: (H, W, C) uint8 or uint16 array.
        kind: One of the channel kinds of ``_ENCODINGS``.
        encoding: The encoding, for messages.

    Returns:
        (H, W, 3) uint8 RGB array.

    Raises:
        ImageError: If OpenCV rejects the data (e.g. odd width for YUV 4:2:2).

    """
    if kind.startswith('bayer_'):
        # Demosaic at full depth before scaling to keep 16-bit precision in the interpolation.
        mosaic = np.ascontiguousarray(pixels[:, :, 0])
        pixels = cv2.cvtColor(mosaic, _BAYER_CODES[kind[len('bayer_') :]])
    elif kind in _YUV_CODES:
        if pixels.shape[1] % 2:
            raise ImageError(f'{encoding} image width {pixels.shape[1]} must be even')
        pixels = cv2.cvtColor(np.ascontiguousarray(pixels), _YUV_CODES[kind])
    elif kind == _GRAY:
        pixels = np.repeat(pixels, 3, axis=2)
    elif kind in (_BGR, _BGRA):
        pixels = pixels[:, :, 2::-1]
    else:
        pixels = pixels[:, :, :3]
    if pixels.dtype == np.uint16:
        return _scale_16_to_8(pixels)
    # Always hand out a private copy: the input may be a read-only message buffer.
    return np.array(pixels, dtype=np.uint8, order='C', copy=True)


def raw_image_to_rgb(
    data: Any, encoding: str, height: int, width: int, step: int, is_bigendian: bool | int = 0
) -> np.ndarray:
    """
    Decode the fields of a ``sensor_msgs/Image`` into an RGB image.

    Args:
        data: Pixel bytes (bytes, memoryview, array.array, list or numpy uint8 array).
        encoding: ROS encoding, one of :data:`SUPPORTED_ENCODINGS`.
        height: Rows.
        width: Columns.
        step: Bytes per row, including any padding at the end of each row.
        is_bigendian: Byte order of 16-bit data; ignored for 8-bit encodings.

    Returns:
        (height, width, 3) uint8 RGB array that the caller owns.

    Raises:
        ImageError: Unknown encoding, inconsistent sizes or too little data.

    """
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise ImageError(
            f'unsupported image encoding {encoding!r}; supported: {", ".join(SUPPORTED_ENCODINGS)}'
        )
    depth, channels, kind = spec
    height, width, step = int(height), int(width), int(step)
    flat = _as_byte_array(data, encoding)
    _check_geometry(flat.size, encoding, height, width, step, depth * channels)
    pixels = _unpack_rows(flat, height, width, step, depth, channels, bool(is_bigendian))
    try:
        return _to_rgb(pixels, kind, encoding)
    except cv2.error as err:
        raise ImageError(f'OpenCV cannot convert the {encoding} image: {err}') from err


def compressed_image_to_rgb(data: Any, format: str = '') -> np.ndarray:  # noqa: A002
    """
    Decode the bytes of a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) into RGB.

    Args:
        data: The compressed bytes (bytes, memoryview, array.array or numpy uint8 array).
        format: The message's ``format`` field, e.g. ``'jpeg'`` or ``'bgr8; jpeg compressed
            bgr8'``; only used to reject formats that OpenCV cannot decode and for messages.

    Returns:
        (H, W, 3) uint8 RGB array; grey or 16-bit images are expanded/scaled to it.

    Raises:
        ImageError: If the bytes are empty, a compressedDepth image, or not decodable.

    """
    label = format or 'compressed'
    if 'compresseddepth' in format.lower().replace(' ', ''):
        raise ImageError(f'{label!r} images (depth) are not supported')
    buffer = _as_byte_array(data, label)
    if buffer.size == 0:
        raise ImageError(f'{label!r} image has no data')
    try:
        rgb = _imdecode_rgb(buffer)
    except cv2.error as err:
        raise ImageError(f'cannot decode {label!r} image: {err}') from err
    if rgb is None or rgb.size == 0:
        raise ImageError(f'cannot decode {label!r} image of {buffer.size} bytes')
    return rgb


# OpenCV >= 4.10 decodes straight to RGB: the same pixels as BGR plus a channel flip, without
# the flip's full-frame copy (half the CPU time of a 640x480 JPEG; map building decodes many).
_IMREAD_RGB = getattr(cv2, 'IMREAD_COLOR_RGB', None)


def _imdecode_rgb(buffer: np.ndarray) -> np.ndarray | None:
    """Decode encoded bytes to contiguous (H, W, 3) uint8 RGB; None when OpenCV cannot."""
    if _IMREAD_RGB is not None:
        return cv2.imdecode(buffer, _IMREAD_RGB)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)



def read_image_file(path: str | os.PathLike[str]) -> np.ndarray:
    """
    Read an image file (JPEG, PNG, ...) as a (H, W, 3) uint8 RGB array; grey and alpha converted.

    The one reader for image files (map folders, datasets, the demo's images). The bytes are
    read by numpy and decoded from memory, so paths OpenCV's own file reader cannot open
    (non-ASCII names on Windows) work too.

    Raises:
        ImageError: the file cannot be read or decoded, naming the file.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageError(f'image file {path} cannot be read ({err.strerror or err})') from err
    try:
        rgb = _imdecode_rgb(data) if data.size else None
    except cv2.error:
        rgb = None
    if rgb is None:
        raise ImageError(f'image file {path} cannot be decoded (corrupt or unsupported format)')
    return rgb

def _check_rgb(rgb: np.ndarray) -> None:
    """
    Require an (H, W, 3) uint8 array.

    Args:
        rgb: Candidate image.

    Raises:
        ImageError: If the shape or dtype is wrong.

    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        shape = getattr(rgb, 'shape', None)
        dtype = getattr(rgb, 'dtype', type(rgb).__name__)
        raise ImageError(f'expected a non-empty (H, W, 3) uint8 RGB image, got {shape} {dtype}')


def rgb_to_raw_image(rgb: np.ndarray, encoding: str = 'rgb8') -> RawImage:
    """
    Encode an RGB image as the fields of a ``sensor_msgs/Image`` without row padding.

    Args:
        rgb: (H, W, 3) uint8 RGB array.
        encoding: ``'rgb8'``, ``'bgr8'`` or ``'mono8'`` (ITU-R BT.601 luma via OpenCV).

    Returns:
        RawImage with ``step = width * channels`` and ``is_bigendian = 0``.

    Raises:
        ImageError: If the image is not (H, W, 3) uint8 or the encoding is not supported.

    """
    _check_rgb(rgb)
    if encoding == 'rgb8':
        pixels = np.ascontiguousarray(rgb)
    elif encoding == 'bgr8':
        pixels = np.ascontiguousarray(rgb[:, :, ::-1])
    elif encoding == 'mono8':
        pixels = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    else:
        raise ImageError(
            f'cannot encode to {encoding!r}; supported: {", ".join(_RAW_OUTPUT_ENCODINGS)}'
        )
    height, width = rgb.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return RawImage(
        data=pixels.tobytes(), encoding=encoding, height=int(height), width=int(width),
        step=int(width * channels), is_bigendian=0,
    )


def rgb_to_compressed(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90) -> bytes:
    """
    Compress an RGB image for a ``sensor_msgs/CompressedImage``.

    Args:
        rgb: (H, W, 3) uint8 RGB array.
        fmt: ``'jpeg'`` (or ``'jpg'``) or ``'png'``.
        quality: JPEG quality 1..100; ignored for PNG.

    Returns:
        The encoded bytes, which decode to the same colours (OpenCV writes standard files).

    Raises:
        ImageError: If the image is malformed or the format is unsupported.
        ConfigError: If the quality is out of range.

    """
    _check_rgb(rgb)
    suffix = _COMPRESSED_FORMATS.get(fmt.lower())
    if suffix is None:
        raise ImageError(f'cannot compress to {fmt!r}; supported: jpeg, png')
    if not 1 <= int(quality) <= 100:
        raise ConfigError(f'JPEG quality must be within 1..100, got {quality}')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if suffix == '.jpg' else []
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    ok, encoded = cv2.imencode(suffix, bgr, params)
    if not ok:
        raise ImageError(f'OpenCV failed to encode a {rgb.shape} image as {fmt}')
    return encoded.tobytes()
