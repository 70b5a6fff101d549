"""Positions along the drive: projection onto the truth's polyline, and the PNG."""

import numpy as np
import pytest

from r2former_ros.core.drawing.trajectory_plot import along_track, plot_trajectory


def test_along_track_projects_onto_an_l_shaped_drive():
    path = [(0, 0), (10, 0), (10, 10)]
    points = [(5, 1), (10, 5), (12, 10), (-3, 0), (11, 0.5)]
    assert along_track(points, path) == pytest.approx([5, 15, 20, 0, 10.5])
    assert along_track(points, [(1, 1)]).tolist() == [0, 0, 0, 0, 0]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip('matplotlib')
    truth = np.column_stack([np.arange(6) * 10.0, np.ones(6)])
    best = truth.copy()
    best[2] = (50.0, 0.0)
    right = np.hypot(*(best - truth).T) <= 25
    path = plot_trajectory(tmp_path / 't.png', truth, best, right, [True] * 6, 25.0,
                           filtered_en=truth, title='t')
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
