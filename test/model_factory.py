"""Small seeded R2Former models for fast tests (same code path as the official 480x640 model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from official_format import save_official_format
import torch

from r2former_ros.core.model.checkpoint import model_from_state_dict
from r2former_ros.core.model.config import R2FormerConfig
from r2former_ros.core.model.r2former_net import R2Former
from r2former_ros.core.model.seeded import seeded_state_dict, shapes_of

# 64x96 input -> 4x6 = 24 patches; 12 local tokens. Seconds instead of minutes on 2 cores.
TINY_CONFIG = R2FormerConfig(input_hw=(64, 96), num_local=12)


def seeded_model(config: R2FormerConfig = TINY_CONFIG, seed_base: int = 20230618) -> R2Former:
    """An R2Former of `config` with the parity recipe's seeded weights."""
    shapes = shapes_of(R2Former(config))
    model, _ = model_from_state_dict(seeded_state_dict(shapes, seed_base), config)
    return model


def write_official_checkpoint(path: Path, config: R2FormerConfig = TINY_CONFIG) -> Path:
    """Save a seeded model the way the reference training script does (`module.` keys)."""
    save_official_format(seeded_model(config), path)
    return path


def random_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Seeded uint8 RGB images (N, H, W, 3) with block structure, so attention is not uniform."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(count, height // 8 + 1, width // 8 + 1, 3))
    images = blocks.repeat(8, axis=1).repeat(8, axis=2)[:, :height, :width]
    return images.astype(np.uint8)


def torch_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# 128x160 input -> 8x10 = 80 patches; 48 local tokens. Enough structure for the route world.
SMALL_CONFIG = R2FormerConfig(input_hw=(128, 160), num_local=48)


def small_place_model(config: R2FormerConfig = SMALL_CONFIG, mode: str = 'fast'):
    """A PlaceModel (seeded R2Former) for map/localizer/node tests."""
    from r2former_ros.core.places.r2former import R2FormerPlaceModel, seeded_r2former

    model, sha = seeded_r2former(config)
    return R2FormerPlaceModel(model, sha, None, torch.device('cpu'), mode=mode)
