"""Per-image features shared by the model, the map store and the localizer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

# Column layout of a local feature row: x, y and attention, then the descriptor.
LOCAL_XY_ATT_COLUMNS = 3

_Indices = TypeVar('_Indices')  # an integer numpy array or torch tensor


def patch_centre_xy(token_index: _Indices, input_hw: Sequence[int],
                    patch_size: int) -> tuple[_Indices, _Indices]:
    """
    Return the x, y columns of local rows: patch centres of raster patch indices / max(H, W).

    ``x = ((p mod grid_w) * patch + patch / 2) / max(H, W)`` and
    ``y = ((p div grid_w) * patch + patch / 2) / max(H, W)`` with ``grid_w = W // patch``.
    Dividing both axes by the longer side (not by W and H separately) keeps the aspect ratio,
    like the reference, so y stays below 1 (at most 472/640 for 480x640). The model computes
    the columns with it (torch tensors) and the map recomputes them from the stored token index
    (numpy arrays) instead of storing them; plain arithmetic, so it works on either.

    Args:
        token_index: non-negative integer patch indices, any shape (numpy or torch).
        input_hw: model input size (H, W).
        patch_size: patch side in pixels.

    Returns:
        (x, y), floating arrays of the index's shape and kind.
    """
    grid_w = int(input_hw[1]) // patch_size
    scale = float(max(int(input_hw[0]), int(input_hw[1])))
    half = patch_size / 2.0
    p: Any = token_index
    return ((p % grid_w) * patch_size + half) / scale, ((p // grid_w) * patch_size + half) / scale


@dataclass(frozen=True)
class ImageFeatures:
    """
    Features of a batch of N images, as numpy arrays on the host.

    Attributes:
        global_desc: (N, G) float32, unit L2 norm (G = 256 for R2Former).
        local_feats: (N, K, 3 + D) float32, columns [x, y, att,
            descriptor]; rows in descending attention.
        token_index: (N, K) int64 patch index in raster order of the patch grid.
    """

    global_desc: NDArray[np.float32]
    local_feats: NDArray[np.float32]
    token_index: NDArray[np.int64]

    def __post_init__(self) -> None:
        n = self.global_desc.shape[0]
        if self.local_feats.shape[0] != n or self.token_index.shape[0] != n:
            raise ValueError('global_desc, local_feats and token_index disagree on the batch size')

    def __len__(self) -> int:
        return int(self.global_desc.shape[0])

    def slice(self, start: int, stop: int) -> ImageFeatures:
        """Return the features of images [start, stop)."""
        return ImageFeatures(self.global_desc[start:stop], self.local_feats[start:stop],
                             self.token_index[start:stop])
