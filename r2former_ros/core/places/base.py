"""
The place-model interface every backbone implements, and the names shared by all of them.

A place model encodes RGB images into global + local features, reranks candidates by their local
rows, and reports an identity. That identity goes into a map's manifest, and a map is only ever
queried by a model with the same identity. Backends import this module only; the factory
(`places.factory`) is the one place that knows every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.features import ImageFeatures

if TYPE_CHECKING:  # torch is imported by the backends; the interface itself stays light
    import torch

BACKBONES = ('r2former', 'dinov2-s14')
# Names only: what each means and where it runs is core.device.apply_precision.
PRECISIONS = ('fp32', 'bf16', 'fp16')
CHECKPOINT_NAME = 'CVPR23_DeitS_Rerank.pth'


CACHE_ENV = 'R2FORMER_CACHE'
DEFAULT_CACHE = Path('~/.cache/r2former_ros')


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache directory: the argument, else ``$R2FORMER_CACHE``, else the default."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_CACHE.expanduser()



def model_identity(backbone: str, checkpoint: str, weights_sha256: str, input_hw: Sequence[int],
                   num_local: int, global_dim: int, local_dim: int, patch_size: int,
                   mean: Sequence[float], std: Sequence[float],
                   **extra: Any) -> dict[str, Any]:
    """Build the manifest `model` block every backend reports (maps compare these fields)."""
    return {
        'backbone': backbone,
        'checkpoint': checkpoint,
        'checkpoint_sha256': weights_sha256,
        'input_hw': [int(input_hw[0]), int(input_hw[1])],
        'num_local': int(num_local),
        'global_dim': int(global_dim),
        'local_dim': int(local_dim),
        'patch_size': int(patch_size),
        'preprocessing': {'mean': list(mean), 'std': list(std),
                          'resize': 'bilinear stretch of the normalised image, no crop'},
        **extra,
    }


class PlaceModel(ABC):
    """A place-recognition model: global + local features and a candidate reranker."""

    name: str
    input_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    has_reranker: bool
    random_weights: bool

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Manifest `model` block: backbone, weights identity (sha256), input size, dims."""

    @abstractmethod
    def encode_batch(self, batch: torch.Tensor) -> ImageFeatures:
        """Encode a normalised (N, 3, H, W) batch."""

    @abstractmethod
    def rerank(self, query_local: NDArray[np.float32],
               db_local: NDArray[np.float32]) -> NDArray[np.float32]:
        """Score one query's local rows (K, C) against N candidates (N, K, C); higher = better."""

    def encode_rgb(self, images: Sequence[NDArray[np.uint8]]) -> ImageFeatures:
        """Preprocess RGB uint8 images of any size and encode them."""
        # Imported here: preprocessing needs torch, which only a model that encodes has loaded.
        from r2former_ros.core.places.preprocessing import preprocess  # noqa: PLC0415

        batch = preprocess(images, self.input_hw, self.mean, self.std, self.device)
        return self.encode_batch(batch)
