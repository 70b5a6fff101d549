"""The track plot: positions along the drive, and the PNG with and without true positions."""

import numpy as np
import pytest

from r2former_ros.core.drawing.track_plot import along_track, plot_track


def test_along_track_projects_onto_an_l_shaped_drive():
    path = [(0, 0), (10, 0), (10, 10)]
    points = [(5, 1), (10, 5), (12, 10), (-3, 0), (11, 0.5)]
    assert along_track(points, path) == pytest.approx([5, 15, 20, 0, 10.5])
    assert along_track(points, [(1, 1)]).tolist() == [0, 0, 0, 0, 0]


def _track(positions: bool) -> dict:
    east = np.arange(6) * 10.0
    published = np.array([0, 1, 5, 3, -1, 5])
    where = np.where(published >= 0, published * 10.0, np.nan)
    unknown = np.full(6, np.nan)
    return {'true': np.arange(6), 'single': np.arange(6), 'published': published,
            'matched': np.array([1, 1, 1, 0, 0, 1], dtype=bool),
            'right': np.array([1, 1, 0, 1, 0, 1], dtype=bool),
            'outside_prob': np.array([0.1, 0.1, 0.1, 0.2, 0.9, 0.1]),
            'distance_m': np.abs(where - east),
            'true_east': east if positions else unknown,
            'true_north': np.zeros(6) if positions else unknown,
            'single_east': east, 'single_north': np.zeros(6),
            'published_east': where, 'published_north': np.where(published >= 0, 0.0, np.nan)}


@pytest.mark.parametrize('positions', [True, False], ids=['positions', 'place ids only'])
def test_plot_writes_a_png(tmp_path, positions):
    pytest.importorskip('matplotlib')
    path = plot_track(tmp_path / 't.png', _track(positions), 25.0, title='t')
    assert path is not None and path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    empty = {key: value[:0] for key, value in _track(positions).items()}
    assert plot_track(tmp_path / 'empty.png', empty, 25.0) is None
