"""Raw and compressed image decoding against rosbags-image as an oracle, plus edge cases."""

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from rosbags.image import compressed_image_to_cvimage, message_to_cvimage

from r2former_ros.core.errors import ConfigError, ImageError
from r2former_ros.core.io.images import (
    SUPPORTED_ENCODINGS,
    compressed_image_to_rgb,
    raw_image_to_rgb,
    rgb_to_compressed,
    rgb_to_raw_image,
)

# encoding -> (bytes per pixel, the rosbags-image encoding with the same meaning)
LAYOUT = {
    'rgb8': (3, 'rgb8'), 'bgr8': (3, 'bgr8'), 'rgba8': (4, 'rgba8'), 'bgra8': (4, 'bgra8'),
    'rgb16': (6, 'rgb16'), 'bgr16': (6, 'bgr16'), 'rgba16': (8, 'rgba16'),
    'bgra16': (8, 'bgra16'), 'mono8': (1, 'mono8'), 'mono16': (2, 'mono16'),
    # rosbags-image reads generic 8UC3/8UC4 as RGB; we read them as OpenCV's BGR on purpose.
    '8UC1': (1, 'mono8'), '8UC3': (3, 'bgr8'), '8UC4': (4, 'bgra8'), '16UC1': (2, 'mono16'),
    'yuv422': (2, 'yuv422'), 'uyvy': (2, 'uyvy'), 'yuv422_yuy2': (2, 'yuv422_yuy2'),
    'yuyv': (2, 'yuyv'),
    **{f'bayer_{p}{d}': (d // 8, f'bayer_{p}{d}')
       for p in ('rggb', 'bggr', 'gbrg', 'grbg') for d in (8, 16)},
}
H, W = 48, 64


def oracle(data, encoding, height=H, width=W):
    bpp = LAYOUT[encoding][0]
    msg = SimpleNamespace(data=np.frombuffer(data, np.uint8), encoding=LAYOUT[encoding][1],
                          height=height, width=width, step=width * bpp, is_bigendian=0)
    return message_to_cvimage(msg, 'rgb8')


def test_layout_table_covers_every_supported_encoding():
    assert set(LAYOUT) == set(SUPPORTED_ENCODINGS)


@pytest.mark.parametrize('encoding', sorted(LAYOUT))
def test_matches_rosbags_image(encoding):
    bpp = LAYOUT[encoding][0]
    data = np.random.default_rng(7).integers(0, 256, H * W * bpp, dtype=np.uint8).tobytes()
    rgb = raw_image_to_rgb(data, encoding, H, W, W * bpp, 0)
    expected = oracle(data, encoding)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    # 16-bit: the oracle truncates v * 255 / 65535 in float, we round; both are 8-bit views.
    tolerance = 1 if encoding.endswith('16') or encoding == '16UC1' else 0
    assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= tolerance


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
def test_bayer_pattern_names_follow_ros_not_opencv(pattern):
    colour = {'r': 200, 'g': 90, 'b': 20}
    mosaic = np.zeros((16, 16), np.uint8)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = colour[pattern[k]]
    rgb = raw_image_to_rgb(mosaic.tobytes(), f'bayer_{pattern}8', 16, 16, 16)
    # A uniform scene must demosaic to its own colour; a shifted pattern would swap R and B.
    assert rgb[8, 8].tolist() == [200, 90, 20]


def test_row_padding_is_ignored():
    rgb = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    step = W * 3 + 13
    padded = np.full((H, step), 255, np.uint8)
    padded[:, : W * 3] = rgb.reshape(H, -1)
    out = raw_image_to_rgb(padded.tobytes(), 'rgb8', H, W, step, 0)
    np.testing.assert_array_equal(out, rgb)


def test_padded_mono16_big_endian_equals_little_endian():
    values = np.random.default_rng(2).integers(0, 65536, (H, W), dtype=np.uint16)
    little = raw_image_to_rgb(values.astype('<u2').tobytes(), 'mono16', H, W, W * 2, 0)
    step = W * 2 + 6
    padded = np.zeros((H, step), np.uint8)
    padded[:, : W * 2] = values.astype('>u2').view(np.uint8).reshape(H, -1)
    big = raw_image_to_rgb(padded.tobytes(), 'mono16', H, W, step, 1)
    np.testing.assert_array_equal(big, little)


def test_sixteen_bit_scaling_rounds_like_cv_bridge():
    values = np.array([[0, 128, 129, 257, 257 * 100, 65534, 65535]], dtype='<u2')
    out = raw_image_to_rgb(values.tobytes(), '16UC1', 1, 7, 14, 0)
    assert out[0, :, 0].tolist() == [0, 0, 1, 1, 100, 255, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_bgr_and_alpha_orders():
    pixel = bytes([10, 20, 30, 40])
    assert raw_image_to_rgb(pixel, 'bgra8', 1, 1, 4)[0, 0].tolist() == [30, 20, 10]
    assert raw_image_to_rgb(pixel, 'rgba8', 1, 1, 4)[0, 0].tolist() == [10, 20, 30]
    assert raw_image_to_rgb(pixel[:3], 'bgr8', 1, 1, 3)[0, 0].tolist() == [30, 20, 10]


@pytest.mark.parametrize('wrap', [bytes, bytearray, memoryview, lambda b: array.array('B', b),
                                  lambda b: np.frombuffer(b, np.uint8), list])
def test_accepts_every_buffer_kind(wrap):
    rgb = np.random.default_rng(3).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    out = raw_image_to_rgb(wrap(rgb.tobytes()), 'rgb8', 4, 5, 15)
    np.testing.assert_array_equal(out, rgb)


def test_output_is_a_private_writable_copy():
    source = np.random.default_rng(4).integers(0, 256, 4 * 5 * 3, dtype=np.uint8)
    out = raw_image_to_rgb(source, 'rgb8', 4, 5, 15)
    out[:] = 0
    assert source.any() and out.flags.writeable and out.flags.c_contiguous


@pytest.mark.parametrize('kwargs, words', [
    ({'encoding': 'rgb9'}, ['rgb9', 'unsupported']),
    ({'encoding': '32FC1'}, ['32FC1']),
    ({'step': 10}, ['step 10', 'rgb8']),
    ({'data': bytes(10 * 4 * 3 - 1)}, ['rgb8', 'fewer']),
    ({'height': 0}, ['empty']),
    ({'data': object()}, ['not a byte buffer']),
])
def test_malformed_raw_images_raise_image_error(kwargs, words):
    args = {'data': bytes(10 * 4 * 3), 'encoding': 'rgb8', 'height': 4, 'width': 10, 'step': 30,
            'is_bigendian': 0, **kwargs}
    with pytest.raises(ImageError) as info:
        raw_image_to_rgb(**args)
    assert all(word in str(info.value) for word in words)


def test_yuv422_needs_even_width():
    with pytest.raises(ImageError, match='even'):
        raw_image_to_rgb(bytes(2 * 3 * 2), 'yuv422', 2, 3, 6)


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8'])
def test_raw_round_trip_is_exact(encoding):
    rgb = np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
    raw = rgb_to_raw_image(rgb, encoding)
    assert (raw.encoding, raw.height, raw.width, raw.step, raw.is_bigendian) == \
        (encoding, H, W, W * 3, 0)
    out = raw_image_to_rgb(raw.data, raw.encoding, raw.height, raw.width, raw.step,
                           raw.is_bigendian)
    np.testing.assert_array_equal(out, rgb)


def test_mono8_encoding_is_luma():
    rgb = np.random.default_rng(6).integers(0, 256, (H, W, 3), dtype=np.uint8)
    raw = rgb_to_raw_image(rgb, 'mono8')
    assert raw.step == W and len(raw.data) == H * W
    grey = raw_image_to_rgb(raw.data, 'mono8', H, W, W)
    np.testing.assert_array_equal(grey[..., 0], cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


@pytest.mark.parametrize('bad', [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4, 3), np.uint8)])
def test_encoders_reject_non_rgb(bad):
    with pytest.raises(ImageError, match='uint8 RGB'):
        rgb_to_raw_image(bad)
    with pytest.raises(ImageError, match='uint8 RGB'):
        rgb_to_compressed(bad)


def test_encoder_rejects_unknown_encoding():
    with pytest.raises(ImageError, match='mono16'):
        rgb_to_raw_image(np.zeros((2, 2, 3), np.uint8), 'mono16')


def test_png_round_trip_is_exact_and_matches_oracle():
    rgb = np.random.default_rng(8).integers(0, 256, (H, W, 3), dtype=np.uint8)
    data = rgb_to_compressed(rgb, 'png')
    out = compressed_image_to_rgb(data, 'png')
    np.testing.assert_array_equal(out, rgb)
    oracle_rgb = compressed_image_to_cvimage(SimpleNamespace(data=np.frombuffer(data, np.uint8),
                                                             format='png'), 'rgb8')
    np.testing.assert_array_equal(out, oracle_rgb)


def test_jpeg_keeps_colours():
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 220  # pure red must not come back blue
    out = compressed_image_to_rgb(rgb_to_compressed(rgb, 'jpeg', quality=95),
                                  'rgb8; jpeg compressed bgr8')
    assert out.shape == (H, W, 3)
    assert abs(int(out[..., 0].mean()) - 220) <= 3 and out[..., 2].mean() < 5


def test_grey_png_decodes_to_three_channels():
    ok, data = cv2.imencode('.png', np.full((6, 7), 77, np.uint8))
    assert ok
    out = compressed_image_to_rgb(data.tobytes(), 'mono8; png compressed mono8')
    assert out.shape == (6, 7, 3) and (out == 77).all()


@pytest.mark.parametrize('data, fmt, word', [
    (b'not an image at all', 'jpeg', 'cannot decode'),
    (b'', 'jpeg', 'no data'),
    (b'\x00' * 12 + b'\x89PNG', '16UC1; compressedDepth png', 'depth'),
])
def test_undecodable_compressed_images_raise(data, fmt, word):
    with pytest.raises(ImageError, match=word):
        compressed_image_to_rgb(data, fmt)


def test_compress_rejects_bad_format_and_quality():
    rgb = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ImageError, match='webp'):
        rgb_to_compressed(rgb, 'webp')
    with pytest.raises(ConfigError, match='quality'):
        rgb_to_compressed(rgb, 'jpeg', quality=0)
