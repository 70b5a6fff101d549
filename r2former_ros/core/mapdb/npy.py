"""
Array storage helpers: .npy files grown block by block, and the int8 descriptor code.

int8 error bound: descriptor rows are L2-normalised, so every component lies in ``[-1, 1]`` and
``q = round(127 v)`` never clips. The dequantised ``q / 127`` differs from ``v`` by at most
:data:`INT8_MAX_ABS_ERROR` = 1/254 (about 0.0039) per component, i.e. at most ``sqrt(D) / 254``
in L2 norm (0.045 for D = 128; about 0.026 for typical rounding). The reranker re-normalises the
rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros.core.errors import MapError
from r2former_ros.core.mapdb.index import normalize_rows

INT8_SCALE = 127.0
INT8_MAX_ABS_ERROR = 0.5 / INT8_SCALE

# Copies of existing data move through memory in chunks this big.
_CHUNK_BYTES = 64 * 1024 * 1024
# .npy preamble: magic (6) + version (2) + header length (2).
_NPY_PREAMBLE = 10


def quantize_int8(desc: ArrayLike) -> NDArray[np.int8]:
    """Quantise unit-norm descriptor rows to int8 as ``clip(round(127 v), -127, 127)``."""
    unit = normalize_rows(desc)
    return np.clip(np.rint(unit * INT8_SCALE), -127, 127).astype(np.int8)


def dequantize_int8(q: ArrayLike) -> NDArray[np.float32]:
    """Return ``q / 127`` as float32 (within :data:`INT8_MAX_ABS_ERROR` of the original)."""
    return np.asarray(q, dtype=np.float32) / np.float32(INT8_SCALE)


def npy_header(dtype: np.dtype, shape: tuple[int, ...], total: int | None = None) -> bytes:
    """
    Return a version 1.0 .npy header, padded to ``total`` bytes when given.

    Without ``total`` the header is sized for the largest plausible row count, so a file can be
    grown and its header rewritten in place at the end.
    """
    descr = np.lib.format.dtype_to_descr(dtype)
    if total is None:
        sized = (10 ** 18,) + tuple(shape[1:])
        text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {sized!r}, }}"
        # Round up to 64 bytes so the data starts aligned, which memory mapping likes.
        total = -(-(_NPY_PREAMBLE + len(text) + 1) // 64) * 64
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body_len = total - _NPY_PREAMBLE
    if len(text) + 1 > body_len:
        raise MapError(f'.npy header for shape {shape} does not fit in {total} bytes')
    body = text.ljust(body_len - 1) + '\n'
    return np.lib.format.MAGIC_PREFIX + bytes([1, 0]) + body_len.to_bytes(2, 'little') + \
        body.encode('latin1')


class NpyAppender:
    """
    A .npy file grown row block by row block, finalised with its real shape.

    Only the block being written is in memory, so a map of any size is written with memory
    bounded by one batch.
    """

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._header_len = len(npy_header(self.dtype, (0,) + self.row_shape))
        self._fh = open(path, 'wb')  # noqa: SIM115 - held open across appends, closed below
        self._fh.write(npy_header(self.dtype, (0,) + self.row_shape))

    def append(self, block: ArrayLike) -> None:
        """Write rows (M, *row_shape) at the end of the file."""
        arr = np.ascontiguousarray(block, dtype=self.dtype)
        if arr.shape[1:] != self.row_shape:
            raise MapError(f'{self.path}: block rows have shape {arr.shape[1:]}, '
                           f'expected {self.row_shape}')
        self._fh.write(arr.tobytes())
        self.rows += arr.shape[0]

    def copy_from(self, src: np.ndarray) -> None:
        """Append every row of ``src`` (e.g. a memory-mapped map array) in bounded chunks."""
        row_bytes = max(1, int(np.prod(src.shape[1:], dtype=np.int64)) * src.dtype.itemsize)
        step = max(1, _CHUNK_BYTES // row_bytes)
        for start in range(0, src.shape[0], step):
            self.append(np.asarray(src[start:start + step]))

    def close(self) -> None:
        """Rewrite the header with the final row count and fsync the file."""
        header = npy_header(self.dtype, (self.rows,) + self.row_shape, self._header_len)
        self._fh.seek(0)
        self._fh.write(header)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def abort(self) -> None:
        """Close without finishing (the caller deletes the file)."""
        self._fh.close()
