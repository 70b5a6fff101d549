"""A tiny image in a folder (a 1x1 PNG, a broken thumbnail) is skipped with a word, not mapped."""

import logging

import cv2
from model_factory import TINY_CONFIG, small_place_model
import numpy as np
import pytest

from r2former_ros.core import mapping
from r2former_ros.core.errors import ImageError
from r2former_ros.core.mapdb import MapDatabase


@pytest.fixture(scope='module')
def model():
    return small_place_model(TINY_CONFIG)


def _photos(folder, sizes):
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ['file,lat,lon']
    for i, (height, width) in enumerate(sizes):
        rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f'p{i}.png'), rgb)
        rows.append(f'p{i}.png,48.{1000 + i},11.5')
    table = folder / 'positions.csv'
    table.write_text('\n'.join(rows) + '\n')
    return table


def test_tiny_images_are_skipped_and_named(tmp_path, model, caplog):
    table = _photos(tmp_path / 'photos', [(48, 64), (1, 1), (31, 200), (32, 32)])
    with caplog.at_level(logging.WARNING):
        report = mapping.build_map(mapping.BuildOptions(
            out=tmp_path / 'map', images_dir=tmp_path / 'photos', csv_file=table,
            calibrate=False, progress=False), model)
    assert MapDatabase.open(report.path).places['msg_index'].tolist() == [0, 3]
    messages = [r.getMessage() for r in caplog.records]
    assert any('p1.png: 1x1 px is smaller than the 32x32 minimum' in m for m in messages)
    assert any('p2.png: 200x31 px' in m for m in messages)
    assert any('2 of 4 selected images were skipped' in m for m in messages)


def test_only_tiny_images_fail_the_build_without_a_map(tmp_path, model):
    table = _photos(tmp_path / 'photos', [(1, 1)])
    with pytest.raises(ImageError, match='none of the 1 selected images could be decoded and '
                                          'used.*1x1 px'):
        mapping.build_map(mapping.BuildOptions(
            out=tmp_path / 'map', images_dir=tmp_path / 'photos', csv_file=table,
            calibrate=False, progress=False), model)
    assert not (tmp_path / 'map').exists()
