"""Where the match image draws a token pair: the patch its descriptor came from."""

import numpy as np
import pytest

from r2former_ros.core.drawing.match_image import (
    GAP_PX,
    R2FORMER_DESCRIPTOR_OFFSET,
    descriptor_xy,
    match_image,
)

INPUT_HW = (64, 96)  # 4 x 6 patches of 16 px
COLS = 6
PATCH = 16


def token_xy(index):
    """Local feature columns x, y of patch `index` (centre / max(H, W)), as the model writes."""
    index = np.asarray(index)
    return np.stack(((index % COLS) * PATCH + 8, (index // COLS) * PATCH + 8), axis=1) / 96.0


def cell_centre(index):
    """Pixel (column, row) of patch `index`'s centre in a 64x96 image (drawn at height 64)."""
    return (index % COLS) * PATCH + 8, (index // COLS) * PATCH + 8


@pytest.mark.parametrize('token, source', [(2, 0), (9, 7), (14, 12), (COLS, COLS - 2),
                                           (COLS + 1, COLS - 1), (23, 21)])
def test_descriptor_xy_is_the_centre_of_patch_p_minus_2(token, source):
    np.testing.assert_allclose(descriptor_xy(token_xy([token]), INPUT_HW), token_xy([source]),
                               atol=1e-12)


def test_descriptor_xy_of_the_first_two_patches_is_a_prefix_token():
    """p = 0 and 1 read the cls and dist tokens: no place in the image."""
    out = descriptor_xy(token_xy([0, 1, 2]), INPUT_HW)
    assert np.isnan(out[:2]).all() and not np.isnan(out[2]).any()


def test_descriptor_xy_without_offset_is_the_input():
    xy = token_xy([0, 5, 9])
    np.testing.assert_array_equal(descriptor_xy(xy, INPUT_HW, offset=0), xy)


def _draw(query_token, map_token, **kwargs):
    black = np.zeros((*INPUT_HW, 3), dtype=np.uint8)
    return match_image(black, black, token_xy([query_token]), token_xy([map_token]), [(0, 0)],
                       INPUT_HW, height=INPUT_HW[0], **kwargs)


def _lit(canvas, column, row):
    return canvas[row, column].max() > 100


def test_pair_is_drawn_at_the_descriptor_patch_not_the_scored_patch():
    query_token, map_token = 9, 20  # both far from the image border
    canvas = _draw(query_token, map_token)
    offset = INPUT_HW[1] + GAP_PX
    q_col, q_row = cell_centre(query_token - R2FORMER_DESCRIPTOR_OFFSET)
    m_col, m_row = cell_centre(map_token - R2FORMER_DESCRIPTOR_OFFSET)
    assert _lit(canvas, q_col, q_row) and _lit(canvas, m_col + offset, m_row)
    # nothing at the scored patches' own centres (the end dots are 3 px wide)
    s_col, s_row = cell_centre(query_token)
    assert not _lit(canvas, s_col, s_row)
    s_col, s_row = cell_centre(map_token)
    assert not _lit(canvas, s_col + offset, s_row)


def test_pair_at_a_row_start_wraps_to_the_previous_row_end():
    canvas = _draw(COLS, 14)  # query token 6 = row 1, col 0 -> patch 4 = row 0, col 4
    q_col, q_row = cell_centre(COLS - 2)
    assert (q_col, q_row) == (4 * PATCH + 8, 8)
    assert _lit(canvas, q_col, q_row)


@pytest.mark.parametrize('prefix_token', [0, 1])
def test_pairs_with_a_cls_or_dist_descriptor_are_not_drawn(prefix_token):
    canvas = _draw(prefix_token, 14)
    assert canvas[:, :INPUT_HW[1]].max() == 0 and canvas[:, INPUT_HW[1] + GAP_PX:].max() == 0


def test_offset_zero_draws_at_the_scored_patch():
    canvas = _draw(9, 20, descriptor_offset=0)
    col, row = cell_centre(9)
    assert _lit(canvas, col, row)
