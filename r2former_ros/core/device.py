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
# CPU flags (Linux /proc/cpuinfo names) that run bf16 matrix products natively; without them
# oneDNN emulates bf16 and it is slower than fp32.
BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_flags() -> set[str]:
    """Return the CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU has native bf16 instructions (AVX512_BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


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
    opt-in reduced precisions the parts kept in fp32 on purpose (the last backbone block, token
    selection) stay true fp32 too. What each opt-in means:
    - 'bf16': autocast on CUDA, and on CPUs with native bf16 (AVX512_BF16 / AMX); refused on
      other CPUs, where emulated bf16 is slower than fp32. On the CPU it covers extraction
      only (:func:`rerank_dtype`);
    - 'fp16': CUDA only (refused on CPU).
    int8 (dynamic quantization of the linear layers) was measured and is not offered: on the
    corridor it lost recall and was slower than bf16 (bench/cpu_precision.json).

    Raises:
        ConfigError: an unknown precision, or one this device cannot run (one line saying which
            would work instead).
    """
    if precision not in PRECISION_DTYPES:
        raise ConfigError(f"precision '{precision}' must be one of "
                          f"{', '.join(PRECISION_DTYPES)}")
    strict_fp32_math()
    if device.type == 'cuda':
        return PRECISION_DTYPES[precision]
    if precision == 'fp16':
        raise ConfigError("precision 'fp16' runs on CUDA only; on the CPU use fp32, or bf16 on "
                          'a CPU with AVX512_BF16/AMX')
    if precision == 'bf16' and not cpu_has_bf16():
        raise ConfigError("precision 'bf16' on the CPU needs native bf16 instructions "
                          '(AVX512_BF16 or AMX), which this CPU lacks (it would be slower than '
                          'fp32); use fp32')
    return PRECISION_DTYPES[precision]


def rerank_dtype(autocast_dtype: torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """
    Return the autocast dtype reranking runs with: the extraction's on CUDA, fp32 on the CPU.

    On the CPU bf16 made reranking no faster (0.95-0.99x on an AMX CPU, small matrices:
    bench/cpu_precision.json) while it can reorder nearly tied candidates, so it stays fp32.
    """
    return autocast_dtype if device.type == 'cuda' else None
