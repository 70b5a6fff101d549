"""Model configuration: the numbers that define an R2Former network and its preprocessing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from r2former_ros.core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class R2FormerConfig:
    """
    Shape of an R2Former model (DeiT-S/16 distilled backbone + local head + reranker).

    The defaults are the official model's (`CVPR23_DeitS_Rerank.pth`, `test.sh` settings). Smaller
    `input_hw` and `num_local` give fast test models with the same code path.
    """

    input_hw: tuple[int, int] = (480, 640)  # (H, W) the backbone's pos_embed grid is stored for
    num_local: int = 500  # local tokens kept per image
    patch_size: int = 16
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    global_dim: int = 256
    local_dim: int = 128
    rerank_dim: int = 32
    rerank_depth: int = 6
    rerank_pair_depth: int = 2
    rerank_heads: int = 4
    rerank_num_corr: int = 5  # top-k correspondences per token on each side
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        height, width = self.input_hw
        if height <= 0 or width <= 0 or height % self.patch_size or width % self.patch_size:
            raise ConfigError(f'input size {height}x{width} must be positive multiples of the '
                              f'patch size {self.patch_size}')
        if not 1 <= self.num_local <= self.num_patches:
            raise ConfigError(f'num_local={self.num_local} must be in [1, {self.num_patches}] '
                              f'(patches at {height}x{width})')
        if self.rerank_num_corr > self.num_local:
            raise ConfigError(f'rerank_num_corr={self.rerank_num_corr} exceeds num_local')

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Patch grid (rows, cols)."""
        return self.input_hw[0] // self.patch_size, self.input_hw[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_hw
        return rows * cols

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (tuples become lists) for manifests."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}
