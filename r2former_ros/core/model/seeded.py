"""
Deterministic "seeded" weights: the recipe the parity fixtures were generated with.

Tests and the parity command use these instead of the official checkpoint, which cannot be
downloaded here. The recipe (parity_record.json of a fixture): sort the keys with Python
`sorted()`; key i gets `torch.randn(shape, generator=manual_seed(seed_base + i))` and then the
first matching rule below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math

import torch

DEFAULT_SEED_BASE = 20230618


def seeded_tensor(key: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """One tensor of the recipe (float32 arithmetic throughout)."""
    generator = torch.Generator(device='cpu')
    generator.manual_seed(seed)
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    if key.endswith('.weight') and len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        scale = torch.tensor(fan_in ** -0.5, dtype=torch.float32)
        return noise * scale
    if key.endswith('.weight'):
        return 1.0 + 0.1 * noise
    if key.endswith('.bias'):
        return 0.02 * noise
    if key.endswith('ratio'):
        return 0.5 + 0.1 * noise
    return 0.2 * noise


def seeded_state_dict(shapes: Mapping[str, Sequence[int]],
                      seed_base: int = DEFAULT_SEED_BASE) -> dict[str, torch.Tensor]:
    """
    Regenerate a whole state dict from key -> shape.

    Args:
        shapes: every key of the model with its shape (a fixture's state_dict_manifest.json, or a
            model's own state dict shapes for other input sizes).
        seed_base: the fixture's `seed_base`.
    """
    return {key: seeded_tensor(key, shapes[key], seed_base + index)
            for index, key in enumerate(sorted(shapes))}


def shapes_of(module: torch.nn.Module) -> dict[str, list[int]]:
    """Key -> shape of a module's state dict (the input `seeded_state_dict` needs)."""
    return {key: list(value.shape) for key, value in module.state_dict().items()}
