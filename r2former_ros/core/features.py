"""Per-image features shared by the model, the map store and the localizer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Column layout of a local feature row: x, y and attention, then the descriptor.
LOCAL_XY_ATT_COLUMNS = 3


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
