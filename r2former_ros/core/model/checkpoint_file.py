"""
Read a checkpoint file safely, and say in one line what is wrong when it is not a checkpoint.

`torch.load(weights_only=True)` never runs code from the file. The authors' training scripts saved
`recalls` (a numpy float64 array) and `best_r5` (a numpy float64 scalar) next to the weights, with
numpy 1.x, so their pickles name `numpy.core.multiarray._reconstruct`, `numpy.ndarray`,
`numpy.dtype` and `numpy.core.multiarray.scalar`. Exactly those (in the numpy 1.x and the numpy 2
`numpy._core` spelling) are allowed while loading; nothing else is, and there is no fallback to
unsafe loading.

A failed download leaves an HTML page, an empty file or a truncated archive behind; those get a
message naming what the file is and what to do, never torch's own advice (which suggests
`weights_only=False`, the unsafe option).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
import pickle
import re
from typing import Any
import zipfile

import numpy as np
import torch

from r2former_ros.core.errors import CheckpointError

try:  # numpy >= 1.26 has the numpy 2 module name (an alias in 1.26, the real module in 2.x)
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

# What to do about a file that is not the checkpoint (shared by every message below).
FETCH_HINT = ('get it again: `r2former weights fetch r2former` (or msls-deits), or download it '
              "by hand from the authors' Google Drive link in bytedance/R2Former's README")

_FLOAT64_DTYPE_CLASS = type(np.dtype(np.float64))


# What torch.serialization.safe_globals accepts: objects, or (object, dotted name) pairs.
SafeGlobals = list[Callable[..., Any] | tuple[Callable[..., Any], str]]


def numpy_safe_globals() -> SafeGlobals:
    """
    List the numpy globals a reference checkpoint needs, under both of their module spellings.

    `torch.load` matches pickle globals by their dotted name, so every object is registered under
    the name the file uses: numpy 1.x wrote `numpy.core.multiarray.*`, numpy 2 writes
    `numpy._core.multiarray.*`. The float64 dtype class is listed because rebuilding the array's
    dtype ends with a BUILD step that torch only allows on allow-listed types; it is the only
    dtype the reference saves (`np.zeros(...)`).
    """
    allowed: SafeGlobals = [(np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype'),
                            (_FLOAT64_DTYPE_CLASS, 'numpy.dtypes.Float64DType')]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed.append((_multiarray._reconstruct, f'{module}._reconstruct'))
        allowed.append((_multiarray.scalar, f'{module}.scalar'))
    return allowed


@contextmanager
def _numpy_globals_allowed() -> Iterator[None]:
    with torch.serialization.safe_globals(numpy_safe_globals()):
        yield


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        # the sample may end inside a multi-byte character
        try:
            text = head[:-3].decode('utf-8')
        except UnicodeDecodeError:
            return False
    return all(char.isprintable() or char in '\t\r\n\f' for char in text.lstrip('\ufeff'))


def diagnose_file(path: Path) -> str | None:
    """
    Say what a file that cannot be a checkpoint is, or None when it may be one.

    Looks at the size and the first 4 kB only: a zip archive (torch >= 1.6) must have its
    central directory, a legacy torch file starts with the pickle PROTO opcode; an HTML page,
    other text, other binary data and an empty file are named as such.
    """
    size = path.stat().st_size
    if size == 0:
        return 'is empty (0 bytes; a failed or interrupted download?)'
    with path.open('rb') as handle:
        head = handle.read(4096)
    if head.startswith(b'PK\x03\x04'):
        if not zipfile.is_zipfile(path):
            return (f'is truncated: a zip archive of {size:,} bytes without its end (an '
                    'interrupted download?)')
        return None
    lowered = head.lstrip(b'\xef\xbb\xbf \t\r\n').lower()
    if lowered.startswith((b'<!doctype html', b'<html', b'<head', b'<body')) or \
            b'<html' in lowered[:1024]:
        return 'is an HTML page, not a checkpoint (a failed download?)'
    if _looks_like_text(head):
        first = head.decode('utf-8', errors='replace').strip().splitlines()
        sample = first[0][:60] if first else ''
        return f'is text, not a checkpoint (it starts with {sample!r})'
    if not head.startswith(b'\x80'):
        return (f'is not a torch checkpoint: neither a zip archive nor a pickle (it starts with '
                f'bytes {head[:4].hex(" ")})')
    return None


def _unsafe_globals(path: Path, err: Exception) -> str:
    """Name the globals a refused pickle would have called (for the message, not torch's)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - a legacy (non-zip) file: read the name from the error
        names = re.findall(r'GLOBAL (\S+)', str(err))
        if not names:
            found = re.search(r'unrecognized function (.+?)(?: which|$)', str(err), re.MULTILINE)
            names = [found.group(1)] if found else []
    allowed = {item[1] for item in numpy_safe_globals() if isinstance(item, tuple)}
    names = sorted({name for name in names if name not in allowed})
    return ', '.join(names[:5]) if names else 'an object that is not a tensor'


def read_checkpoint(path: str | Path, hint: str = FETCH_HINT) -> Any:
    """
    Read a checkpoint file without ever executing code from it.

    Args:
        path: the file.
        hint: what to do about a bad file, ending each message (default: R2Former's weights).

    Raises:
        CheckpointError: one line naming the file and the problem (missing, empty, an HTML page,
            text, truncated, not a torch file, or a pickle that would run code) and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist or is not a file')
    problem = diagnose_file(path)
    if problem:
        raise CheckpointError(f'checkpoint {path} {problem}; {hint}')
    try:
        with _numpy_globals_allowed():
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if 'truncated' in str(err):
            raise CheckpointError(f'checkpoint {path} is truncated (its pickle ends early); '
                                  f'{hint}') from err
        raise CheckpointError(
            f'refusing to load {path}: unpickling it would call {_unsafe_globals(path, err)}, '
            f'code that a weights file never needs; nothing from it was run; {hint}') from None
    except EOFError as err:
        raise CheckpointError(f'checkpoint {path} is truncated (it ends early); '
                              f'{hint}') from err
    except (RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as err:
        # torch's messages run to several lines of advice; keep the first only
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        if 'unexpected EOF' in reason:
            raise CheckpointError(f'checkpoint {path} is truncated ({reason}); '
                                  f'{hint}') from err
        raise CheckpointError(f'checkpoint {path} is not a readable torch checkpoint ({reason}); '
                              f'{hint}') from err
