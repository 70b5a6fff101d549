"""
Checkpoint loading in timm's layers: read safely, unwrap, clean keys, detect layout, load strictly.

Accepted layouts:
- the official training checkpoint `CVPR23_DeitS_Rerank.pth`: a dict with `model_state_dict` (keys
  prefixed `module.` by DataParallel) plus `epoch_num`, `optimizer_state_dict`, ... (ignored);
- a bare R2Former state dict, with or without `module.`;
- the global-only `msls_v2_deits.pth`: bare DeiT keys under `module.` (`module.cls_token`,
  `module.head.weight`, ...). It has no trained local head or reranker, so reranking is
  unavailable.

Files are read by `checkpoint_file.read_checkpoint`: `torch.load(weights_only=True)` with only the
numpy globals the authors' files need allowed, so a checkpoint whose unpickling would run code is
refused, with no fallback to unsafe loading; a failed download is named as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import logging
from pathlib import Path
from typing import Any

import torch

from r2former_ros.core.errors import CheckpointError
from r2former_ros.core.hashing import file_sha256
from r2former_ros.core.model.checkpoint_file import read_checkpoint
from r2former_ros.core.model.config import R2FormerConfig
from r2former_ros.core.model.r2former_net import R2Former

LOG = logging.getLogger(__name__)

# Containers a training script may wrap the weights in, most specific first.
STATE_DICT_CONTAINERS = ('model_state_dict', 'state_dict', 'model')
STRIP_PREFIXES = ('module.', '_orig_mod.')
LAYOUT_FULL = 'r2former'
LAYOUT_GLOBAL_ONLY = 'global_only'


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model with weights plus what we learned about the file."""

    model: R2Former
    layout: str  # LAYOUT_FULL or LAYOUT_GLOBAL_ONLY
    sha256: str
    path: str


def unwrap_state_dict(obj: Any, source: str = 'checkpoint') -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a checkpoint object (training dict or bare state dict)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{source} holds a {type(obj).__name__}, not a dict of tensors')
    for name in STATE_DICT_CONTAINERS:
        inner = obj.get(name)
        if isinstance(inner, Mapping):
            obj = inner
            break
    tensors = {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f'{source} has no tensors (top-level keys: {sorted(obj)[:8]})')
    return tensors


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DataParallel/torch.compile prefixes from every key."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def detect_layout(state_dict: Mapping[str, torch.Tensor], source: str = 'state dict') -> str:
    """Tell a full R2Former state dict from a global-only bare DeiT one (`source` names it)."""
    if any(key.startswith(('backbone.', 'local_head.', 'Reranker.')) for key in state_dict):
        return LAYOUT_FULL
    if 'cls_token' in state_dict and 'dist_token' in state_dict:
        return LAYOUT_GLOBAL_ONLY
    raise CheckpointError(f'{source}: unrecognised checkpoint layout: expected R2Former keys '
                          '(backbone.*, local_head.*, Reranker.*) or bare DeiT keys (cls_token, '
                          f'dist_token, ...); first keys: {sorted(state_dict)[:5]}')


def config_for_state_dict(state_dict: Mapping[str, torch.Tensor],
                          base: R2FormerConfig) -> R2FormerConfig:
    """
    Check the checkpoint's position-embedding grid against the requested input size.

    The grid is not recoverable from the token count alone (1200 = 30x40 or 40x30), so the input
    size comes from the configuration and must agree with the checkpoint.
    """
    key = 'backbone.pos_embed' if 'backbone.pos_embed' in state_dict else 'pos_embed'
    pos_embed = state_dict.get(key)
    if pos_embed is None:
        return base
    stored = int(pos_embed.shape[1]) - 2
    if stored != base.num_patches:
        raise CheckpointError(
            f'checkpoint pos_embed has {stored} patch positions but input size '
            f'{base.input_hw[0]}x{base.input_hw[1]} needs {base.num_patches} '
            f'({base.grid_hw[0]}x{base.grid_hw[1]}); pass the input size the model was trained at')
    return base


def describe_key_mismatch(missing: list[str], unexpected: list[str], limit: int = 8) -> str:
    """Human-readable summary naming the first missing and unexpected keys."""
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing key(s): {", ".join(missing[:limit])}'
                     + (' ...' if len(missing) > limit else ''))
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected key(s): {", ".join(unexpected[:limit])}'
                     + (' ...' if len(unexpected) > limit else ''))
    return '; '.join(parts)


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                source: str) -> None:
    """`load_state_dict(strict=True)` with a message that names the offending keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f'{source} does not fit the model: '
                              + describe_key_mismatch(missing, unexpected))
    wrong = [f'{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}'
             for key, value in expected.items() if state_dict[key].shape != value.shape]
    if wrong:
        raise CheckpointError(f'{source} has {len(wrong)} tensor(s) of the wrong shape: '
                              + ', '.join(wrong[:5]))
    module.load_state_dict(state_dict, strict=True)


def model_from_state_dict(state_dict: Mapping[str, torch.Tensor],
                          config: R2FormerConfig | None = None,
                          source: str = 'state dict') -> tuple[R2Former, str]:
    """Build an R2Former, load `state_dict` (any accepted layout) strictly; return it + layout."""
    cleaned = clean_state_dict(state_dict)
    layout = detect_layout(cleaned, source)
    if layout == LAYOUT_GLOBAL_ONLY:
        cleaned = {f'backbone.{key}': value for key, value in cleaned.items()}
    model_config = config_for_state_dict(cleaned, config or R2FormerConfig())
    model = R2Former(model_config)
    if layout == LAYOUT_FULL:
        load_strict(model, cleaned, source)
    else:
        backbone = {key[len('backbone.'):]: value for key, value in cleaned.items()}
        load_strict(model.backbone, backbone, source)
        model.has_reranker = False
        LOG.warning('%s is a global-only checkpoint (msls_v2_deits layout): global retrieval '
                    'works, reranking is unavailable because it has no trained local head or '
                    'reranker',
                    source)
    model.eval()
    return model, layout


def load_checkpoint(path: str | Path, config: R2FormerConfig | None = None) -> LoadedCheckpoint:
    """
    Load an R2Former checkpoint file of any accepted layout.

    Args:
        path: `.pth` file.
        config: model shape; defaults to the official 480x640 / 500 tokens.

    Raises:
        CheckpointError: unreadable, unsafe, unrecognised layout, or keys/shapes that do not fit.
    """
    obj = read_checkpoint(path)
    state_dict = unwrap_state_dict(obj, str(path))
    model, layout = model_from_state_dict(state_dict, config, source=str(path))
    return LoadedCheckpoint(model=model, layout=layout, sha256=file_sha256(path), path=str(path))
