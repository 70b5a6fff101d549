"""Image folders: the one VG file-name parser (both of its uses) and the one image-file reader."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from r2former_ros.core.errors import ConfigError, ImageError
from r2former_ros.core.geo.coords import utm_to_wgs84, wgs84_to_utm
from r2former_ros.core.io.folders import parse_vg_name, read_vg_folder
from r2former_ros.core.io.images import read_image_file

PITTSBURGH = '@0584290.77@4477362.14@17@T@040.44441@-079.99584@abc@@@@@@pitch1_yaw1@.jpg'


def test_vg_name_fields():
    vg = parse_vg_name(f'/data/pitts/{PITTSBURGH}')
    assert (vg.utm_east, vg.utm_north, vg.utm_zone, vg.northern) == (584290.77, 4477362.14,
                                                                     17, True)
    assert (vg.lat, vg.lon) == (40.44441, -79.99584)
    assert vg.name == PITTSBURGH
    assert parse_vg_name('@1@2@33@C@@@x.jpg').northern is False  # bands C..M are south


def test_vg_name_positions_for_maps_and_for_evaluation():
    # Maps take the name's lat/lon (what UTM was computed from); without them, UTM converted.
    assert parse_vg_name(PITTSBURGH).latlon() == (40.44441, -79.99584)
    zone, northern, east, north = wgs84_to_utm(48.137, 11.575)
    vg = parse_vg_name(f'@{east:.3f}@{north:.3f}@{zone}@U@@@.jpg')
    assert vg.lat is None
    assert vg.latlon() == pytest.approx(tuple(float(v) for v in utm_to_wgs84(
        zone, northern, round(east, 3), round(north, 3))))
    assert vg.latlon() == pytest.approx((48.137, 11.575), abs=1e-6)
    # Evaluation needs only UTM metres, so the zone may be empty; a map position cannot.
    bare = parse_vg_name('@100.5@-20@@@.png')
    assert (bare.utm_east, bare.utm_north, bare.utm_zone, bare.northern) == (100.5, -20.0,
                                                                             None, None)
    with pytest.raises(ConfigError, match='neither lat/lon nor a UTM zone'):
        bare.latlon()


@pytest.mark.parametrize(('name', 'words'), [
    ('0000001.jpg', 'not a VG-benchmark file name'),
    ('@1@2@.jpg', 'not a VG-benchmark file name'),
    ('@east@2@33@T@.jpg', 'UTM easting'),
    ('@1@2@x@T@.jpg', 'UTM zone'),
    ('@1@2@33@Z@.jpg', 'zone letter'),
    ('@1@2@33@T@95.0@10.0@.jpg', 'latitude 95.0'),
])
def test_bad_vg_names_are_named(name, words):
    with pytest.raises(ConfigError, match=words) as err:
        parse_vg_name(name)
    assert name in str(err.value)


def test_vg_folder_lists_positions(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    for name in (PITTSBURGH, '@584300.00@4477362.14@17@T@@@.jpg'):
        cv2.imwrite(str(tmp_path / name), image)
    first, second = read_vg_folder(tmp_path)
    assert (first.lat, first.lon) == (40.44441, -79.99584)
    expected = utm_to_wgs84(17, True, 584300.0, 4477362.14)
    assert (second.lat, second.lon) == pytest.approx(tuple(float(v) for v in expected))


def test_read_image_file_gives_rgb(tmp_path):
    bgr = np.zeros((6, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    cv2.imwrite(str(tmp_path / 'blue.png'), bgr)
    cv2.imwrite(str(tmp_path / 'grey.png'), np.full((6, 8), 77, np.uint8))
    rgb = read_image_file(tmp_path / 'blue.png')
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert rgb[0, 0].tolist() == [0, 0, 255]
    assert read_image_file(str(tmp_path / 'grey.png'))[0, 0].tolist() == [77, 77, 77]
    # Non-ASCII names: the bytes are read by numpy, not by OpenCV's file reader.
    accented = tmp_path / 'Straße_ü.png'
    accented.write_bytes((tmp_path / 'blue.png').read_bytes())
    np.testing.assert_array_equal(read_image_file(accented), rgb)


def test_read_image_file_names_the_problem(tmp_path):
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    (tmp_path / 'empty.png').write_bytes(b'')
    for name in ('broken.jpg', 'empty.png'):
        with pytest.raises(ImageError, match=f'{name} cannot be decoded'):
            read_image_file(tmp_path / name)
    with pytest.raises(ImageError, match='missing.png cannot be read'):
        read_image_file(tmp_path / 'missing.png')
