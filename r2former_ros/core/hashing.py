"""Content hashes that identify weights and map files."""

from __future__ import annotations

from collections.abc import Mapping
import hashlib
import os
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # torch stays optional for readers of maps (`r2former map info` starts fast)
    import torch


def stream_sha256(handle: BinaryIO, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of what is left to read in an open binary file, streamed."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(chunk_bytes), b''):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    with open(path, 'rb') as handle:
        return stream_sha256(handle, chunk_bytes)


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """
    Hash a state dict's content: sorted keys, dtypes, shapes and raw bytes.

    Independent of the pickle container, so it identifies the weights themselves (for weights that
    have no file of their own, like seeded test weights or converted ones).
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f'{key}|{tensor.dtype}|{tuple(tensor.shape)}|'.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()
