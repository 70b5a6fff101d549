"""R2Former behind the PlaceModel interface: DeiT-S global + local tokens, transformer rerank."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
import torch

from r2former_ros.core.device import apply_precision, rerank_dtype
from r2former_ros.core.errors import CheckpointError, ConfigError
from r2former_ros.core.features import ImageFeatures
from r2former_ros.core.hashing import state_dict_sha256
from r2former_ros.core.model.checkpoint import load_checkpoint, model_from_state_dict
from r2former_ros.core.model.config import R2FormerConfig
from r2former_ros.core.model.fast_rerank import fast_rerank_scores
from r2former_ros.core.model.r2former_net import R2Former
from r2former_ros.core.model.reranker import rerank_score
from r2former_ros.core.model.seeded import DEFAULT_SEED_BASE, seeded_state_dict, shapes_of
from r2former_ros.core.places.base import CHECKPOINT_NAME, PlaceModel, cache_root, model_identity

LOG = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = ('no R2Former checkpoint found: using seeded RANDOM weights, so every '
                          'match and recall number below is meaningless. For real results pass '
                          f'--checkpoint {CHECKPOINT_NAME} (or put it in {{cache}}), or use the '
                          'pretrained fallback: `r2former weights fetch dinov2-s14`, then '
                          '--backbone dinov2-s14.')


class R2FormerPlaceModel(PlaceModel):
    """R2Former: DeiT-S global descriptor + 500 local tokens, reranked by its transformer."""

    name = 'r2former'

    def __init__(self, model: R2Former, weights_sha256: str, checkpoint: str | None,
                 device: torch.device, mode: str = 'fast', precision: str = 'fp32',
                 random_weights: bool = False) -> None:
        if mode not in ('fast', 'faithful'):
            raise ConfigError(f"mode '{mode}' must be 'fast' or 'faithful'")
        # TF32 off in any case; bf16 autocast (CUDA, or a CPU with native bf16) or fp16 (CUDA)
        # for extraction, and for reranking on CUDA only (core.device.rerank_dtype)
        self.autocast_dtype = apply_precision(precision, device)
        self.rerank_dtype = rerank_dtype(self.autocast_dtype, device)
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
        return self.model.encode(batch, fast=self.mode == 'fast',
                                 autocast_dtype=self.autocast_dtype)

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
            scores = fast_rerank_scores(self.model.Reranker, query, db, dtype=self.rerank_dtype)
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
    """
    R2Former from a checkpoint file, or seeded random weights when there is none.

    Args:
        checkpoint: the weights file, already resolved by the caller (the factory looks in
            $R2FORMER_CHECKPOINT and the cache); None means no file was found.
        device: where the model runs.
        input_hw: model input (H, W); None = 480x640.
        num_local: local tokens per image; None = 500.
        mode: 'fast' or 'faithful' (see `load_place_model`).
        precision: 'fp32', 'bf16' or 'fp16' (what each means and where it runs:
            `core.device.apply_precision`).
        allow_random: with no file, use seeded random weights (with a loud warning) instead of
            raising CheckpointError.
    """
    height, width = input_hw or (480, 640)
    config = R2FormerConfig(input_hw=(int(height), int(width)), num_local=num_local or 500)
    if checkpoint is not None:
        loaded = load_checkpoint(Path(checkpoint), config)
        return R2FormerPlaceModel(loaded.model, loaded.sha256, str(checkpoint), device, mode,
                                  precision)
    if not allow_random:
        raise CheckpointError(f'no R2Former checkpoint: pass --checkpoint FILE or put '
                              f'{CHECKPOINT_NAME} in {cache_root()}')
    LOG.warning(RANDOM_WEIGHTS_WARNING.format(cache=cache_root()))
    model, sha = seeded_r2former(config)
    return R2FormerPlaceModel(model, sha, None, device, mode, precision,
                              random_weights=True)
