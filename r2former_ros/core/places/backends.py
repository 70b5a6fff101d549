"""
Backbones behind one interface: encode RGB images, rerank candidates, say who they are.

`load_place_model` is the single factory the CLI, the node, evaluation and the demo use, so the
same flags mean the same thing everywhere. The identity a model reports goes into a map's manifest,
and a map is only ever queried by a model with the same identity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
import torch

from r2former_ros.core.device import resolve_device
from r2former_ros.core.errors import CheckpointError, ConfigError
from r2former_ros.core.features import ImageFeatures
from r2former_ros.core.hashing import state_dict_sha256
from r2former_ros.core.model.checkpoint import load_checkpoint, model_from_state_dict
from r2former_ros.core.model.config import R2FormerConfig
from r2former_ros.core.model.fast_rerank import fast_rerank_scores
from r2former_ros.core.model.r2former import R2Former
from r2former_ros.core.model.reranker import rerank_score
from r2former_ros.core.model.seeded import DEFAULT_SEED_BASE, seeded_state_dict, shapes_of
from r2former_ros.core.places.preprocessing import preprocess
from r2former_ros.core.places.weights import cache_root

LOG = logging.getLogger(__name__)

BACKBONES = ('r2former', 'dinov2-s14')
CHECKPOINT_NAME = 'CVPR23_DeitS_Rerank.pth'
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
RANDOM_WEIGHTS_WARNING = ('no R2Former checkpoint found: using seeded RANDOM weights, so every '
                          'match and recall number below is meaningless. Pass --checkpoint '
                          f'{CHECKPOINT_NAME} (or put it in {{cache}}) for real results.')


def cache_dir() -> Path:
    """Where downloaded/converted weights live: $R2FORMER_CACHE or ~/.cache/r2former_ros."""
    return cache_root()


def default_checkpoint() -> Path | None:
    """Find the official checkpoint in $R2FORMER_CHECKPOINT or the cache directory."""
    env = os.environ.get('R2FORMER_CHECKPOINT')
    candidates = [Path(env)] if env else []
    candidates.append(cache_dir() / CHECKPOINT_NAME)
    return next((path for path in candidates if path.is_file()), None)


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
        batch = preprocess(images, self.input_hw, self.mean, self.std, self.device)
        return self.encode_batch(batch)


class R2FormerPlaceModel(PlaceModel):
    """R2Former: DeiT-S global descriptor + 500 local tokens, reranked by its transformer."""

    name = 'r2former'

    def __init__(self, model: R2Former, weights_sha256: str, checkpoint: str | None,
                 device: torch.device, mode: str = 'fast', precision: str = 'fp32',
                 random_weights: bool = False) -> None:
        if mode not in ('fast', 'faithful'):
            raise ConfigError(f"mode '{mode}' must be 'fast' or 'faithful'")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision '{precision}' must be one of {sorted(PRECISIONS)}")
        self.model = model.to(device).eval()
        self.config = model.config
        self.device = device
        self.input_hw = model.config.input_hw
        self.mean = model.config.mean
        self.std = model.config.std
        self.has_reranker = model.has_reranker
        self.weights_sha256 = weights_sha256
        self.checkpoint = checkpoint
        self.mode = mode
        self.precision = precision
        self.random_weights = random_weights

    def identity(self) -> dict[str, Any]:
        cfg = self.config
        return model_identity(self.name, self.checkpoint or 'seeded-random', self.weights_sha256,
                              cfg.input_hw, cfg.num_local, cfg.global_dim, cfg.local_dim,
                              cfg.patch_size, cfg.mean, cfg.std)

    def encode_batch(self, batch: torch.Tensor) -> ImageFeatures:
        # Reduced precision only pays (and is only offered) on CUDA; CPU stays fp32.
        dtype = PRECISIONS[self.precision] if self.device.type == 'cuda' else None
        return self.model.encode(batch, fast=self.mode == 'fast', autocast_dtype=dtype)

    def rerank(self, query_local: NDArray[np.float32],
               db_local: NDArray[np.float32]) -> NDArray[np.float32]:
        if not self.has_reranker:
            raise ConfigError('this checkpoint is global-only (no trained reranker); '
                              'set rerank top-N to 0')
        query = torch.from_numpy(np.ascontiguousarray(query_local, dtype=np.float32))
        db = torch.from_numpy(np.ascontiguousarray(db_local, dtype=np.float32))
        if self.mode == 'faithful':
            logits = self.model.rerank_logits(query.unsqueeze(0).expand(db.shape[0], -1, -1), db)
            scores = rerank_score(logits)
        else:
            scores = fast_rerank_scores(self.model.Reranker, query, db,
                                        dtype=PRECISIONS[self.precision])
        return scores.float().cpu().numpy()


def seeded_r2former(config: R2FormerConfig,
                    seed_base: int = DEFAULT_SEED_BASE) -> tuple[R2Former, str]:
    """Build an R2Former with the parity recipe's seeded random weights; return it + hash."""
    state_dict = seeded_state_dict(shapes_of(R2Former(config)), seed_base)
    model, _ = model_from_state_dict(state_dict, config, source='seeded weights')
    return model, state_dict_sha256(state_dict)


def load_r2former(checkpoint: str | Path | None, device: torch.device,
                  input_hw: tuple[int, int] | None, num_local: int | None,
                  mode: str, precision: str, allow_random: bool) -> R2FormerPlaceModel:
    """R2Former from a checkpoint, the cached official file, or seeded random weights."""
    config = R2FormerConfig(input_hw=tuple(input_hw or (480, 640)), num_local=num_local or 500)
    path = Path(checkpoint) if checkpoint else default_checkpoint()
    if path is not None:
        loaded = load_checkpoint(path, config)
        return R2FormerPlaceModel(loaded.model, loaded.sha256, str(path), device, mode,
                                  precision)
    if not allow_random:
        raise CheckpointError(f'no R2Former checkpoint: pass --checkpoint FILE or put '
                              f'{CHECKPOINT_NAME} in {cache_dir()}')
    LOG.warning(RANDOM_WEIGHTS_WARNING.format(cache=cache_dir()))
    model, sha = seeded_r2former(config)
    return R2FormerPlaceModel(model, sha, None, device, mode, precision,
                              random_weights=True)


def model_settings_for_map(map_model: Mapping[str, Any], checkpoint: str | Path | None,
                           input_hw: tuple[int, int] | None, num_local: int | None
                           ) -> tuple[str | None, tuple[int, int], int]:
    """
    Fill unset model settings from a map's manifest `model` block.

    A map records the input size, token count and weights file it was built with; a user who
    only names the map should get that model. The recorded checkpoint is used only while the file
    still exists (random seeded weights record none).

    Returns:
        (checkpoint or None, input_hw, num_local).
    """
    if not checkpoint:
        recorded = str(map_model.get('checkpoint') or '')
        checkpoint = recorded if recorded and Path(recorded).is_file() else None
    hw = tuple(input_hw) if input_hw else tuple(int(v) for v in map_model['input_hw'])
    return (str(checkpoint) if checkpoint else None, (int(hw[0]), int(hw[1])),
            int(num_local or map_model['num_local']))


def load_place_model(backbone: str = 'r2former', checkpoint: str | Path | None = None,
                     device: str = 'auto', input_hw: tuple[int, int] | None = None,
                     num_local: int | None = None, mode: str = 'fast',
                     precision: str = 'fp32', allow_random: bool = True) -> PlaceModel:
    """
    Build the place model every entry point uses.

    Args:
        backbone: 'r2former' or 'dinov2-s14' (the offline pretrained fallback).
        checkpoint: weights file; for r2former, None looks in $R2FORMER_CHECKPOINT and the cache.
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        input_hw: model input (H, W); None = the backbone's default.
        num_local: local tokens per image; None = the backbone's default (500).
        mode: 'fast' (default: fused attention, top-k reranking; same results to float
            rounding) or 'faithful' (the reference's operations, for parity and benchmarks).
        precision: 'fp32' (default), or opt-in 'bf16'/'fp16' on CUDA for extraction blocks 0-10
            and reranking (can reorder near-ties; token selection itself stays fp32).
        allow_random: for r2former without any checkpoint, fall back to seeded random weights
            (with a loud warning) instead of failing.
    """
    if backbone not in BACKBONES:
        raise ConfigError(f"backbone '{backbone}' is not one of {', '.join(BACKBONES)}")
    torch_device = resolve_device(device)
    if backbone == 'r2former':
        return load_r2former(checkpoint, torch_device, input_hw, num_local, mode,
                             precision, allow_random)
    from r2former_ros.core.places.dinov2 import load_dinov2  # noqa: PLC0415 - optional backend

    return load_dinov2(checkpoint, torch_device, input_hw, num_local)
