"""
`load_place_model`: the single factory the CLI, the node, evaluation and the demo use.

It is the one module that knows every backend, so the same flags mean the same thing everywhere
and the backends themselves only depend on `places.base`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import logging
import os
from pathlib import Path
from typing import Any

from r2former_ros.core.device import apply_precision, resolve_device
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.places.base import BACKBONES, CHECKPOINT_NAME, PlaceModel, cache_root
from r2former_ros.core.places.dinov2 import dinov2_available, load_dinov2
from r2former_ros.core.places.r2former import load_r2former

LOG = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where downloaded/converted weights live: $R2FORMER_CACHE or ~/.cache/r2former_ros."""
    return cache_root()


def default_checkpoint() -> Path | None:
    """Find the official checkpoint in $R2FORMER_CHECKPOINT or the cache directory."""
    env = os.environ.get('R2FORMER_CHECKPOINT')
    candidates = [Path(env)] if env else []
    candidates.append(cache_dir() / CHECKPOINT_NAME)
    return next((path for path in candidates if path.is_file()), None)


@dataclass(frozen=True)
class ModelSettings:
    """The model a map asks for: what every consumer of the map loads."""

    backbone: str
    checkpoint: str | None  # None: the backbone's default lookup (cache, environment)
    input_hw: tuple[int, int]
    num_local: int


def map_model_settings(map_model: Mapping[str, Any], *, backbone: str | None = None,
                       checkpoint: str | Path | None = None,
                       input_hw: Sequence[int] | None = None,
                       num_local: int | None = None) -> ModelSettings:
    """
    Choose the model for querying a map: unset values come from its manifest `model` block.

    A map records the backbone, input size, token count and weights file it was built with; a
    user who only names the map gets that model (the CLI tools and the node alike). A value that
    is given and differs from the map's is refused here, naming both, instead of failing later
    with a less direct message. The recorded checkpoint is used only while the file still exists
    (random seeded weights record none); a different checkpoint is checked by its weights hash
    when the map is opened.

    Args:
        map_model: the manifest's `model` block.
        backbone: asked-for backbone (None or '': the map's).
        checkpoint: asked-for weights file (None or '': the recorded one if it still exists).
        input_hw: asked-for input size (None: the map's).
        num_local: asked-for token count (None or 0: the map's).

    Raises:
        ConfigError: a given value conflicts with the map.
    """
    built_backbone = str(map_model.get('backbone') or 'r2former')
    built_hw = (int(map_model['input_hw'][0]), int(map_model['input_hw'][1]))
    built_local = int(map_model['num_local'])
    asked = {'backbone': backbone or None,
             'input size': tuple(int(v) for v in input_hw) if input_hw else None,
             'num_local': int(num_local) if num_local else None}
    built = {'backbone': built_backbone, 'input size': built_hw, 'num_local': built_local}
    for name, value in asked.items():
        if value is not None and value != built[name]:
            raise ConfigError(f'{name} {_shown(value)} was asked for, but the map was built with '
                              f"{name} {_shown(built[name])}; leave it unset to use the map's, "
                              'or rebuild the map')
    if not checkpoint:
        recorded = str(map_model.get('checkpoint') or '')
        checkpoint = recorded if recorded and Path(recorded).is_file() else None
    return ModelSettings(built_backbone, str(checkpoint) if checkpoint else None, built_hw,
                         built_local)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return 'x'.join(str(v) for v in value)
    return str(value)


def auto_backbone(checkpoint: str | os.PathLike[str] | None = None) -> tuple[str, str | None]:
    """
    Pick the backbone when none was chosen; also return a line saying so for the fallback.

    R2Former when a checkpoint is given or found ($R2FORMER_CHECKPOINT, the cache); else the
    DINOv2 fallback when its weights are cached; else R2Former (random weights, warned loudly
    when loaded).
    """
    if checkpoint or default_checkpoint() is not None:
        return 'r2former', None
    if dinov2_available():
        return 'dinov2-s14', ('no R2Former checkpoint found: using the cached DINOv2 ViT-S/14 '
                              'fallback (pretrained, NOT R2Former accuracy; pass --checkpoint '
                              f'{CHECKPOINT_NAME} for R2Former)')
    return 'r2former', None


def load_place_model(backbone: str | None = 'r2former',
                     checkpoint: str | os.PathLike[str] | None = None,
                     device: str = 'auto', input_hw: tuple[int, int] | None = None,
                     num_local: int | None = None, mode: str = 'fast',
                     precision: str = 'fp32', allow_random: bool = True) -> PlaceModel:
    """
    Build the place model every entry point uses.

    Args:
        backbone: 'r2former' or 'dinov2-s14' (the offline pretrained fallback); None picks one
            with :func:`auto_backbone` and logs the choice when it is the fallback.
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
    if backbone is None:
        backbone, note = auto_backbone(checkpoint)
        if note:
            LOG.warning(note)
    if backbone not in BACKBONES:
        raise ConfigError(f"backbone '{backbone}' is not one of {', '.join(BACKBONES)}")
    torch_device = resolve_device(device)
    # One place for the float math of every tool and the node: TF32 off (fp32 is true fp32),
    # reduced precision opt-in (and refused where the hardware lacks it); it also rejects an
    # unknown precision early.
    apply_precision(precision, torch_device)
    if backbone == 'r2former':
        path = Path(checkpoint) if checkpoint else default_checkpoint()
        return load_r2former(path, torch_device, input_hw, num_local, mode,
                             precision, allow_random)
    return load_dinov2(str(checkpoint) if checkpoint else None, torch_device, input_hw,
                       num_local, precision=precision)


def load_model_for_map(map_model: Mapping[str, Any], *, backbone: str | None = None,
                       checkpoint: str | Path | None = None,
                       input_hw: Sequence[int] | None = None, num_local: int | None = None,
                       device: str = 'auto', precision: str = 'fp32') -> PlaceModel:
    """
    Load the place model a map was built with: the one function of every tool and the node.

    Values left unset (None, '' or 0) come from the map's manifest ``model`` block (or
    ``map_info``'s summary of it); a given value that contradicts the map is refused by
    :func:`map_model_settings`, naming both. Goes through :func:`load_place_model`, so the
    float math (TF32 off, reduced precision opt-in) is that of every other entry point.
    """
    settings = map_model_settings(map_model, backbone=backbone or None,
                                  checkpoint=checkpoint or None, input_hw=input_hw or None,
                                  num_local=num_local or None)
    return load_place_model(settings.backbone, settings.checkpoint, device, settings.input_hw,
                            settings.num_local, precision=precision)
