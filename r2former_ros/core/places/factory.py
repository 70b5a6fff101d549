"""
`load_place_model`: the single factory the CLI, the node, evaluation and the demo use.

It is the one module that knows every backend, so the same flags mean the same thing everywhere
and the backends themselves only depend on `places.base`.
"""

from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path
from typing import Any

from r2former_ros.core.device import resolve_device
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.places.base import BACKBONES, CHECKPOINT_NAME, PlaceModel
from r2former_ros.core.places.dinov2 import load_dinov2
from r2former_ros.core.places.r2former import load_r2former
from r2former_ros.core.places.weights import cache_root


def cache_dir() -> Path:
    """Where downloaded/converted weights live: $R2FORMER_CACHE or ~/.cache/r2former_ros."""
    return cache_root()


def default_checkpoint() -> Path | None:
    """Find the official checkpoint in $R2FORMER_CHECKPOINT or the cache directory."""
    env = os.environ.get('R2FORMER_CHECKPOINT')
    candidates = [Path(env)] if env else []
    candidates.append(cache_dir() / CHECKPOINT_NAME)
    return next((path for path in candidates if path.is_file()), None)


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
        path = Path(checkpoint) if checkpoint else default_checkpoint()
        return load_r2former(path, torch_device, input_hw, num_local, mode,
                             precision, allow_random)
    return load_dinov2(str(checkpoint) if checkpoint else None, torch_device, input_hw,
                       num_local)
