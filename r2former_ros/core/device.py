"""Pick the torch device: CUDA when present, else CPU, overridable by the user."""

from __future__ import annotations

import torch

from r2former_ros.core.errors import ConfigError


def resolve_device(spec: str = 'auto') -> torch.device:
    """
    Turn a user's device string into a torch.device.

    Args:
        spec: 'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'.

    Returns:
        The device to run on.

    Raises:
        ConfigError: the string is not a device, or CUDA was asked for and is absent.
    """
    text = spec.strip().lower()
    if text in ('', 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"device '{spec}' is not a device name "
                          '(use auto, cpu, cuda or cuda:N)') from err
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{spec}' was requested but CUDA is not available here; "
                              'use --device cpu or auto')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{spec}' does not exist: {torch.cuda.device_count()} CUDA "
                              'device(s) visible')
    elif device.type != 'cpu':
        raise ConfigError(f"device '{spec}' is not supported (use auto, cpu, cuda or cuda:N)")
    return device
