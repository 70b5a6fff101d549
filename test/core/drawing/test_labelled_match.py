"""Labelled match pictures: captions, verdict colour, legend, no token lines on black borders."""

import numpy as np
import pytest

from r2former_ros.core.drawing.labelled_match import (
    CAPTION_H,
    FRAME_PX,
    LEGEND_H,
    VERDICT_H,
    MatchLabel,
    labelled_match_image,
    patch_brightness,
    visible_pairs,
)

INPUT_HW = (64, 64)  # model input; 4x4 patches of 16 px
PATCH = 16


def _tokens():
    """Token positions (x, y) at the 16 patch centres, as the model writes them (/ max(H, W))."""
    centres = (np.arange(4) * PATCH + PATCH / 2) / 64
    xs, ys = np.meshgrid(centres, centres)
    return np.column_stack([xs.ravel(), ys.ravel()])


def _half_black(height=128, width=128):
    """Left half black (a lens border), right half bright."""
    rgb = np.full((height, width, 3), 200, np.uint8)
    rgb[:, :width // 2] = 0
    return rgb


def test_patch_brightness_sees_the_black_half():
    light = patch_brightness(_half_black(), _tokens(), INPUT_HW, PATCH)
    columns = np.tile(np.arange(4), 4)
    assert np.all(light[columns < 2] < 1.0) and np.all(light[columns >= 2] > 199.0)


def test_pairs_on_black_patches_are_dropped_in_order():
    xy = _tokens()
    # pairs strongest first: (query token, map token); query tokens 0, 1 (columns 0, 1) are black
    pairs = [(0, 3), (3, 3), (2, 0), (7, 11), (5, 2), (15, 14)]
    bright = np.full((128, 128, 3), 200, np.uint8)
    kept = visible_pairs(pairs, _half_black(), bright, xy, xy, INPUT_HW, PATCH,
                         descriptor_offset=0)
    assert kept == [(3, 3), (2, 0), (7, 11), (15, 14)]
    # the map side is checked as well
    assert visible_pairs([(3, 0), (3, 3)], bright, _half_black(), xy, xy, INPUT_HW, PATCH,
                         descriptor_offset=0) == [(3, 3)]
    assert visible_pairs(pairs, bright, bright, xy, xy, INPUT_HW, PATCH, count=2,
                         descriptor_offset=0) == pairs[:2]


def test_r2former_pairs_are_checked_where_they_are_drawn():
    # R2Former's descriptor of scored patch p comes from patch p - 2, where its line is drawn.
    # Query side (columns 0 and 1 black): tokens 0 and 1 carry cls/dist (no place); 3 -> patch 1
    # and 14 -> patch 12 (column 0) are black; 4 -> 2, 5 -> 3 and 12 -> 10 (column 2) are not.
    xy = _tokens()
    dark = _half_black()
    bright = np.full((128, 128, 3), 200, np.uint8)
    pairs = [(0, 5), (1, 5), (3, 5), (4, 5), (5, 5), (14, 5), (12, 5)]
    assert visible_pairs(pairs, dark, bright, xy, xy, INPUT_HW, PATCH,
                         descriptor_offset=2) == [(4, 5), (5, 5), (12, 5)]
    assert visible_pairs([], bright, None, xy, xy, INPUT_HW, PATCH) == []


@pytest.mark.parametrize(('distance', 'colour'), [(3.0, (0, 160, 0)), (80.0, (200, 0, 0)),
                                                  (None, (110, 110, 110))])
def test_picture_has_bars_and_a_verdict_frame(distance, colour):
    xy = _tokens()
    query = np.full((120, 160, 3), 180, np.uint8)
    place = np.full((60, 80, 3), 90, np.uint8)
    label = MatchLabel('query 3', 17, 0.8, True, distance, 25.0)
    picture = labelled_match_image(query, place, xy, xy, [(5, 5), (6, 9)], INPUT_HW, label,
                                   height=120, descriptor_offset=0, patch_size=PATCH)
    assert picture.dtype == np.uint8
    assert picture.shape[0] == 120 + CAPTION_H + VERDICT_H + LEGEND_H + 2 * FRAME_PX
    assert tuple(picture[0, 0]) == colour and tuple(picture[-1, -1]) == colour
    assert label.correct is (None if distance is None else distance <= 25.0)
    # the caption bar carries text (dark pixels on white)
    caption = picture[FRAME_PX:FRAME_PX + CAPTION_H, FRAME_PX:-FRAME_PX]
    assert (caption.min(axis=2) < 100).any()
