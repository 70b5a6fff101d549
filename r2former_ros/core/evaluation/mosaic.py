"""The failure mosaic: one row per wrong top-1, the query beside its top-5 map thumbnails."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.evaluation.engine import MOSAIC_TOP, EvalResult


def _fit_cell(image: NDArray[np.uint8] | None, height: int, width: int,
              border: tuple[int, int, int] | None) -> NDArray[np.uint8]:
    cell = np.full((height, width, 3), 64, dtype=np.uint8)
    if image is not None:
        scale = min(height / image.shape[0], width / image.shape[1])
        h, w = max(1, int(image.shape[0] * scale)), max(1, int(image.shape[1] * scale))
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        top, left = (height - h) // 2, (width - w) // 2
        cell[top:top + h, left:left + w] = small
    if border is not None:
        cell[:4], cell[-4:], cell[:, :4], cell[:, -4:] = border, border, border, border
    return cell


def failure_mosaic(result: EvalResult, path: Path, cell_hw: tuple[int, int] = (120, 160)
                   ) -> Path | None:
    """Rows of query | top-5 (green border = true match, red = false) for wrong top-1s."""
    if not result.failures:
        return None
    height, width = cell_hw
    label_h = 18
    rows = []
    for failure in result.failures:
        cells = [_fit_cell(failure['thumb'], height, width, (255, 255, 255))]
        for thumb, ok in zip(failure['thumbs'], failure['correct'], strict=False):
            cells.append(_fit_cell(thumb, height, width, (0, 200, 0) if ok else (220, 0, 0)))
        while len(cells) < 1 + MOSAIC_TOP:
            cells.append(_fit_cell(None, height, width, None))
        row = np.concatenate(cells, axis=1)
        label = np.full((label_h, row.shape[1], 3), 255, dtype=np.uint8)
        text = (f'query {failure["name"]}  confidence {failure["confidence"]:.2f}  '
                f'top-5 ids {failure["ids"]}')
        cv2.putText(label, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        rows.append(np.concatenate([label, row], axis=0))
    mosaic = np.concatenate(rows, axis=0)
    if not cv2.imwrite(str(path), cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f'cannot write {path}')
    return path
