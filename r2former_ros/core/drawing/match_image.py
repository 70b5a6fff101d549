"""
Pictures of a match (ROS-free; the node, the bag replay, the demo and evaluation use them).

:func:`match_image` puts the query beside the matched map image and draws the strongest local
token pairs as lines, like the interpretability figure of the R2Former paper. Token positions are
the local feature columns ``x, y`` (patch centres divided by ``max(H, W)`` of the model input);
the model sees each image stretched to its input size, so a token's pixel in an image of width
``w`` and height ``h`` is ``(x * max(H, W) * w / W, y * max(H, W) * h / H)``.

Where a line ends: R2Former scores patch p but, like the reference, reads that token's descriptor
at sequence position p, which holds patch p - 2 (the first two positions are the cls and dist
tokens; see `core/model/local_tokens.py`). Pairs are chosen by descriptor similarity, so what
matched is the content of patch p - 2: each end is drawn at the centre of the patch the
descriptor came from (:func:`descriptor_xy`), not at the scored patch two cells further on.
Rows with p in {0, 1} carry the cls or dist descriptor, a summary of the whole image with no
place in it; their pairs are not drawn. Backbones without the quirk (DINOv2) pass
``descriptor_offset=0``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ImageError
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.types import LocalizationResult

DEFAULT_HEIGHT = 240  # rows of the output: small enough to publish per frame
# Sequence positions between a scored R2Former patch and the token its descriptor is read from.
R2FORMER_DESCRIPTOR_OFFSET = 2
R2FORMER_PATCH_PX = 16
GAP_PX = 4
_GAP_COLOUR = (32, 32, 32)
_MISSING_COLOUR = (96, 96, 96)


def token_pixels(xy: NDArray[np.floating], input_hw: Sequence[int],
                 image_hw: Sequence[int]) -> NDArray[np.float64]:
    """Pixel (column, row) of local tokens ``xy`` (K, 2) in an image of size ``image_hw``."""
    in_h, in_w = float(input_hw[0]), float(input_hw[1])
    scale = max(in_h, in_w)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    out = np.empty_like(xy)
    out[:, 0] = xy[:, 0] * scale * image_hw[1] / in_w
    out[:, 1] = xy[:, 1] * scale * image_hw[0] / in_h
    return out


def descriptor_xy(xy: NDArray[np.floating], input_hw: Sequence[int],
                  patch_size: int = R2FORMER_PATCH_PX,
                  offset: int = R2FORMER_DESCRIPTOR_OFFSET) -> NDArray[np.float64]:
    """
    Positions of the patches the descriptors came from, from the scored patches' ``x, y``.

    Args:
        xy: (K, 2) local feature columns 0, 1 (centre of the scored patch p / max(H, W)).
        input_hw: the model input (H, W).
        patch_size: the model's patch size in input pixels.
        offset: sequence positions the descriptor is read before the patch (2 for R2Former).

    Returns:
        (K, 2) centre of patch p - offset in raster order (so it wraps to the end of the previous
        row), in the same units as ``xy``; NaN for rows whose descriptor is a prefix token.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if offset == 0:
        return xy.copy()
    scale = float(max(input_hw))
    cols = int(input_hw[1]) // patch_size
    half = patch_size / 2.0
    col = np.rint((xy[:, 0] * scale - half) / patch_size).astype(np.int64)
    row = np.rint((xy[:, 1] * scale - half) / patch_size).astype(np.int64)
    source = row * cols + col - offset
    out = np.stack(((source % cols) * patch_size + half, (source // cols) * patch_size + half),
                   axis=1) / scale
    out[source < 0] = np.nan
    return out


def _line_colour(rank: int, count: int) -> tuple[int, int, int]:
    """Strongest pair green, weakest red (RGB)."""
    t = 0.0 if count <= 1 else rank / (count - 1)
    return int(round(255 * t)), int(round(255 * (1 - t))), 64


def _fit_height(rgb: NDArray[np.uint8], height: int) -> NDArray[np.uint8]:
    h, w = rgb.shape[:2]
    width = max(1, int(round(w * height / h)))
    interpolation = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=interpolation)
    return np.asarray(small, dtype=np.uint8)


def _check(rgb: NDArray[np.uint8], what: str) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or \
            rgb.shape[2] != 3 or min(rgb.shape[:2]) == 0:
        raise ImageError(f'{what} must be a non-empty (H, W, 3) uint8 RGB array, got '
                         f'{getattr(rgb, "shape", None)} {getattr(rgb, "dtype", type(rgb))}')


def match_image(query_rgb: NDArray[np.uint8], map_rgb: NDArray[np.uint8] | None,
                query_xy: NDArray[np.floating], map_xy: NDArray[np.floating],
                pairs: Sequence[tuple[int, int]], input_hw: Sequence[int],
                height: int = DEFAULT_HEIGHT, *,
                descriptor_offset: int = R2FORMER_DESCRIPTOR_OFFSET,
                patch_size: int = R2FORMER_PATCH_PX) -> NDArray[np.uint8]:
    """
    Draw the query (left) beside the matched map image (right), token pairs as lines.

    Each end sits at the patch the token's descriptor came from (see the module docstring);
    pairs whose descriptor is R2Former's cls or dist token are skipped.

    Args:
        query_rgb: (h, w, 3) uint8 query image as received.
        map_rgb: the matched place's image (its map thumbnail), or None to draw a grey panel.
        query_xy: (K, 2) local feature columns 0, 1 of the query.
        map_xy: (K, 2) local feature columns 0, 1 of the map place.
        pairs: (query row, map row) pairs, strongest first (``LocalizationResult.token_pairs``).
        input_hw: the model input (H, W) the features were computed at.
        height: rows of the output; both panels are scaled to it.
        descriptor_offset: 2 for R2Former (descriptor of patch p read at position p), 0 for
            backbones whose descriptor comes from the scored patch itself.
        patch_size: the model's patch size in input pixels (used when the offset is not 0).

    Returns:
        (height, W, 3) uint8 RGB.
    """
    _check(query_rgb, 'query_rgb')
    if map_rgb is None:
        map_rgb = np.full(query_rgb.shape, _MISSING_COLOUR, dtype=np.uint8)
    _check(map_rgb, 'map_rgb')
    left = _fit_height(query_rgb, height)
    right = _fit_height(map_rgb, height)
    canvas = np.empty((height, left.shape[1] + GAP_PX + right.shape[1], 3), dtype=np.uint8)
    canvas[:, :left.shape[1]] = left
    canvas[:, left.shape[1]:left.shape[1] + GAP_PX] = _GAP_COLOUR
    offset = left.shape[1] + GAP_PX
    canvas[:, offset:] = right
    q_px = token_pixels(descriptor_xy(query_xy, input_hw, patch_size, descriptor_offset),
                        input_hw, left.shape[:2])
    m_px = token_pixels(descriptor_xy(map_xy, input_hw, patch_size, descriptor_offset),
                        input_hw, right.shape[:2])
    count = len(pairs)
    # weakest first, so the strongest lines end up on top
    for rank in reversed(range(count)):
        q_row, m_row = pairs[rank]
        if not (0 <= q_row < len(q_px) and 0 <= m_row < len(m_px)):
            continue
        if np.isnan(q_px[q_row]).any() or np.isnan(m_px[m_row]).any():
            continue  # a cls/dist descriptor: it describes the whole image, no point to draw
        start = (int(round(q_px[q_row, 0])), int(round(q_px[q_row, 1])))
        end = (int(round(m_px[m_row, 0])) + offset, int(round(m_px[m_row, 1])))
        colour = _line_colour(rank, count)
        cv2.line(canvas, start, end, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, start, 3, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, end, 3, colour, -1, cv2.LINE_AA)
    return canvas


def result_match_image(localizer: Localizer, query_rgb: NDArray[np.uint8],
                       query_local: NDArray[np.float32], result: LocalizationResult,
                       height: int = DEFAULT_HEIGHT) -> NDArray[np.uint8] | None:
    """:func:`match_image` of a localizer result and its best place; None without a candidate."""
    best = result.best
    if best is None:
        return None
    database = localizer.database
    map_xy = database.local_features([best.place_id])[0][:, :2]
    model = localizer.model
    r2former = model.name == 'r2former'
    return match_image(query_rgb, database.thumbnail(best.place_id), query_local[:, :2], map_xy,
                       result.token_pairs, model.input_hw, height,
                       descriptor_offset=R2FORMER_DESCRIPTOR_OFFSET if r2former else 0,
                       patch_size=R2FORMER_PATCH_PX)
