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


# Opt-in reduced precisions and the autocast dtype each one means (fp32: no autocast).
PRECISION_DTYPES: dict[str, torch.dtype | None] = {
    'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def strict_fp32_math() -> None:
    """
    Make fp32 mean fp32 in this process: no TF32 in matmuls or cuDNN convolutions.

    On Ampere and newer GPUs torch may run fp32 convolutions (the patch embedding is one) in TF32
    by default, and matmuls too under a lower matmul precision. TF32 keeps 10 mantissa bits,
    enough to swap which of two nearly tied patches is among the 500 selected, so the tools would
    no longer match the reference. Process-wide flags; a no-op for CPU arithmetic.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision('highest')


def apply_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """
    Set the float math every entry point runs with, and return the autocast dtype for `device`.

    TF32 is always off (`strict_fp32_math`): with 'fp32' everything is true fp32, and with the
    opt-in 'bf16'/'fp16' the parts kept in fp32 on purpose (the last backbone block, token
    selection) stay true fp32 too. Reduced precision is applied on CUDA only, for extraction and
    reranking alike; on CPU it would be slower, so CPU always runs fp32.

    Raises:
        ConfigError: `precision` is not one of fp32, bf16, fp16.
    """
    if precision not in PRECISION_DTYPES:
        raise ConfigError(f"precision '{precision}' must be one of "
                          f"{', '.join(PRECISION_DTYPES)}")
    strict_fp32_math()
    return PRECISION_DTYPES[precision] if device.type == 'cuda' else None
