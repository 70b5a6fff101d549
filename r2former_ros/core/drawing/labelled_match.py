"""
A match picture that explains itself: which side is which, the verdict, and what the lines mean.

:func:`labelled_match_image` wraps :func:`~r2former_ros.core.drawing.match_image.match_image`
(query | map place with the strongest token pairs) in a caption bar above each panel, a verdict
bar below (distance to the truth, confidence, right or wrong) and a legend for the line colours.
The frame is green for a right answer and red for a wrong one, so a page of them reads at a
glance.

Token pairs on (near-)black pixels are left out: fisheye lenses and letterboxing leave black
borders that match each other perfectly and tell nothing about the place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math

import cv2
import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.drawing.match_image import (
    GAP_PX,
    R2FORMER_DESCRIPTOR_OFFSET,
    descriptor_xy,
    match_image,
    token_pixels,
)

DEFAULT_HEIGHT = 240
MIN_PATCH_BRIGHTNESS = 40.0  # mean grey level (0-255) below which a token's patch counts as black
CAPTION_H = 22
VERDICT_H = 22
LEGEND_H = 20
FRAME_PX = 4
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_SCALE = 0.45
_RIGHT = (0, 160, 0)
_WRONG = (200, 0, 0)
_UNKNOWN = (110, 110, 110)
_INK = (20, 20, 20)
_PAPER = (255, 255, 255)


@dataclass(frozen=True)
class MatchLabel:
    """What the picture says about one query."""

    query_name: str  # e.g. 'query 12 (t = 12.0 s)'
    place_id: int
    confidence: float
    published: bool  # confidence at or above the threshold: the node reports a match
    distance_m: float | None = None  # best place to the query's true position; None: unknown
    threshold_m: float = 25.0  # a place this close counts as right

    @property
    def correct(self) -> bool | None:
        """Right (within the threshold), wrong, or None without ground truth."""
        if self.distance_m is None or not math.isfinite(self.distance_m):
            return None
        return self.distance_m <= self.threshold_m


def patch_brightness(rgb: NDArray[np.uint8], xy: NDArray[np.floating],
                     input_hw: Sequence[int], patch_px: int) -> NDArray[np.float64]:
    """
    Mean grey level of each token's patch in ``rgb``.

    Args:
        rgb: (h, w, 3) uint8 image the tokens are drawn on.
        xy: (K, 2) token columns ``x, y`` of the local features.
        input_hw: the model input (H, W) the features were computed at.
        patch_px: the model's patch size in input pixels.
    """
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float64)
    height, width = grey.shape
    centres = token_pixels(xy, input_hw, (height, width))
    half_w = max(1, round(0.5 * patch_px * width / float(input_hw[1])))
    half_h = max(1, round(0.5 * patch_px * height / float(input_hw[0])))
    # A summed-area table gives every window mean in O(1).
    table = np.pad(grey, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    col = np.clip(np.round(centres[:, 0]).astype(np.int64), 0, width - 1)
    row = np.clip(np.round(centres[:, 1]).astype(np.int64), 0, height - 1)
    left, right = np.clip(col - half_w, 0, width), np.clip(col + half_w, 1, width)
    top, bottom = np.clip(row - half_h, 0, height), np.clip(row + half_h, 1, height)
    total = table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]
    area = np.maximum((bottom - top) * (right - left), 1)
    return total / area


def visible_pairs(pairs: Sequence[tuple[int, int]], query_rgb: NDArray[np.uint8],
                  map_rgb: NDArray[np.uint8] | None, query_xy: NDArray[np.floating],
                  map_xy: NDArray[np.floating], input_hw: Sequence[int], patch_px: int,
                  count: int | None = None,
                  min_brightness: float = MIN_PATCH_BRIGHTNESS, *,
                  descriptor_offset: int = R2FORMER_DESCRIPTOR_OFFSET) -> list[tuple[int, int]]:
    """
    Keep the pairs (strongest first) whose patches are not (near-)black in either image.

    Args:
        pairs: (query row, map row) pairs, strongest first.
        query_rgb: the query image.
        map_rgb: the map place's image (None: only the query side is checked).
        query_xy: (K, 2) token positions in the query.
        map_xy: (K, 2) token positions in the map image.
        input_hw: the model input (H, W).
        patch_px: the model's patch size in input pixels.
        count: keep at most this many (None: all that pass).
        min_brightness: darkest patch mean (0-255) still drawn.
        descriptor_offset: as for :func:`~r2former_ros.core.drawing.match_image.match_image`
            (2 for R2Former, 0 for DINOv2): the patch checked is the one a line is drawn at.
    """
    if not pairs:
        return []
    query_at = descriptor_xy(query_xy, input_hw, patch_px, descriptor_offset)
    map_at = descriptor_xy(map_xy, input_hw, patch_px, descriptor_offset)
    # Prefix tokens (no position: NaN) are never drawn; give them brightness 0 to drop them.
    query_light = np.nan_to_num(patch_brightness(query_rgb, np.nan_to_num(query_at), input_hw,
                                                 patch_px) * np.isfinite(query_at).all(axis=1))
    map_light = (patch_brightness(map_rgb, np.nan_to_num(map_at), input_hw, patch_px)
                 if map_rgb is not None else np.full(len(map_at), 255.0))
    map_light = map_light * np.isfinite(map_at).all(axis=1)
    kept = [(q, m) for q, m in pairs
            if 0 <= q < len(query_light) and 0 <= m < len(map_light)
            and query_light[q] >= min_brightness and map_light[m] >= min_brightness]
    return kept if count is None else kept[:count]


def _bar(width: int, height: int, colour: tuple[int, int, int] = _PAPER) -> NDArray[np.uint8]:
    return np.full((height, width, 3), colour, dtype=np.uint8)


def _text(canvas: NDArray[np.uint8], text: str, x: int, colour: tuple[int, int, int] = _INK,
          bold: bool = False) -> None:
    baseline = canvas.shape[0] - (canvas.shape[0] - 10) // 2 - 1
    cv2.putText(canvas, text, (x, baseline), _FONT, _TEXT_SCALE, colour, 2 if bold else 1,
                cv2.LINE_AA)


def _text_width(text: str) -> int:
    return cv2.getTextSize(text, _FONT, _TEXT_SCALE, 1)[0][0]


def _fit_text(text: str, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    while text and _text_width(text) > width:
        text = text[:-4] + '...' if len(text) > 4 else ''
    return text


def _verdict(label: MatchLabel) -> tuple[str, tuple[int, int, int]]:
    correct = label.correct
    if correct is None:
        return 'no ground truth', _UNKNOWN
    word = 'RIGHT' if correct else 'WRONG'
    return (f'{word}: {label.distance_m:.1f} m from the truth '
            f'({"<=" if correct else ">"} {label.threshold_m:g} m)'), _RIGHT if correct else _WRONG


def _legend(width: int, lines: int) -> NDArray[np.uint8]:
    """Colour ramp of the token lines (strongest green, weaker red) with its meaning."""
    bar = _bar(width, LEGEND_H)
    ramp_w = 60
    x0 = 6
    for i in range(ramp_w):
        t = i / (ramp_w - 1)
        bar[6:LEGEND_H - 6, x0 + i] = (int(round(255 * t)), int(round(255 * (1 - t))), 64)
    text = (f'lines: the {lines} strongest token pairs (mutual nearest neighbours), '
            'green = strongest ... red = weaker')
    _text(bar, _fit_text(text, width - ramp_w - 18), x0 + ramp_w + 6, (60, 60, 60))
    return bar


def labelled_match_image(query_rgb: NDArray[np.uint8], map_rgb: NDArray[np.uint8] | None,
                         query_xy: NDArray[np.floating], map_xy: NDArray[np.floating],
                         pairs: Sequence[tuple[int, int]], input_hw: Sequence[int],
                         label: MatchLabel, height: int = DEFAULT_HEIGHT, *,
                         descriptor_offset: int = R2FORMER_DESCRIPTOR_OFFSET,
                         patch_size: int = 16) -> NDArray[np.uint8]:
    """
    Draw query | map place with captions, the verdict, a legend and a right/wrong frame.

    Args:
        query_rgb: (h, w, 3) uint8 query image.
        map_rgb: the place's map image (thumbnail), or None for a grey panel.
        query_xy: (K, 2) query token positions (local feature columns 0, 1).
        map_xy: (K, 2) map token positions.
        pairs: token pairs to draw, strongest first (filter them with :func:`visible_pairs`).
        input_hw: the model input (H, W).
        label: what to write.
        height: rows of the image panels.
        descriptor_offset: 2 for R2Former, 0 for DINOv2 (see ``match_image``).
        patch_size: the model's patch size in input pixels.

    Returns:
        (H', W', 3) uint8 RGB.
    """
    core = match_image(query_rgb, map_rgb, query_xy, map_xy, pairs, input_hw, height,
                       descriptor_offset=descriptor_offset, patch_size=patch_size)
    width = core.shape[1]
    left_w = max(1, int(round(query_rgb.shape[1] * height / query_rgb.shape[0])))
    captions = _bar(width, CAPTION_H)
    _text(captions, _fit_text(f'QUERY: {label.query_name}', left_w - 8), 4, bold=True)
    published = 'match published' if label.published else 'below threshold: no match published'
    _text(captions, _fit_text(f'MAP place {label.place_id}', width - left_w - GAP_PX - 8),
          left_w + GAP_PX + 4, bold=True)
    verdict_text, colour = _verdict(label)
    verdict = _bar(width, VERDICT_H)
    _text(verdict, _fit_text(f'{verdict_text};  confidence {label.confidence:.2f} '
                             f'({published})', width - 8), 4, colour, bold=True)
    body = np.concatenate([captions, core, verdict, _legend(width, len(pairs))], axis=0)
    framed = np.empty((body.shape[0] + 2 * FRAME_PX, width + 2 * FRAME_PX, 3), dtype=np.uint8)
    framed[:] = colour
    framed[FRAME_PX:-FRAME_PX, FRAME_PX:-FRAME_PX] = body
    return framed
