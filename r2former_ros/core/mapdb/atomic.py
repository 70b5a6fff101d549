"""
Durable, atomic file-system steps for map directories.

A map is built in a temporary sibling directory and swapped in at the end, so a crash leaves
the old map or the new one at the target path, never a half-written map:

* the temporary directory is created like any ``mkdir`` (mode 0777 less the umask, so 0755
  normally), not with the owner-only 0700 of ``tempfile.mkdtemp``: a node running as another
  user must be able to read the finished map;
* before the swap every file of the map and its directories are fsync'ed one by one (not a
  machine-wide ``sync``, which would wait for every other disk write on the host);
* on Linux the swap is one ``renameat2(RENAME_EXCHANGE)`` call, so there is no instant at which
  the target path is missing; elsewhere (or on a file system without it) the old map is renamed
  aside first and the new one renamed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
import ctypes
import errno
import json
import os
from pathlib import Path
import secrets
import shutil
import sys
from typing import Any

import numpy as np

# renameat2(2): path arguments relative to the working directory, and "swap the two paths".
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# errno values meaning "this kernel / file system cannot exchange": fall back to two renames.
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
# Parallel fsyncs of many small files share journal commits on ext4/xfs: about 2x faster.
_FSYNC_THREADS = 4
_DIR_MODE = 0o777  # less the umask, as mkdir(1) does


def _load_renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith('linux'):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28 or a libc without the wrapper
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()


def exchange_paths(first: Path, second: Path) -> bool:
    """
    Atomically swap two existing paths (each name then points at the other's entry).

    Returns:
        True when swapped; False when this platform or file system cannot exchange, in which
        case nothing changed.

    Raises:
        OSError: the exchange itself failed (e.g. a path is missing).
    """
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                  _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def fsync_path(path: Path) -> None:
    """Flush one file or directory to disk (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_files(paths: Iterable[Path]) -> None:
    """Flush many files to disk: the map's thumbnails, which are written without syncs."""
    with ThreadPoolExecutor(_FSYNC_THREADS) as pool:
        for _ in pool.map(fsync_path, paths):
            pass


def _json_default(value: Any) -> Any:
    # Builders hand over numpy scalars in sources/calibration; JSON wants Python types.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def write_json_synced(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON and fsync it."""
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default)
    with open(path, 'w', encoding='utf-8') as fh:
        fh.write(text + '\n')
        fh.flush()
        os.fsync(fh.fileno())


def unique_sibling(target: Path, tag: str) -> Path:
    """Return a path ``.{name}.{tag}-XXXXXXXX`` next to ``target`` that does not exist yet."""
    while True:
        candidate = target.parent / f'.{target.name}.{tag}-{secrets.token_hex(4)}'
        if not candidate.exists():
            return candidate


def make_sibling_dir(target: Path, tag: str) -> Path:
    """Create an empty directory next to ``target`` with mkdir's usual (umask-based) mode."""
    while True:
        candidate = unique_sibling(target, tag)
        try:
            os.mkdir(candidate, _DIR_MODE)
        except FileExistsError:  # another writer picked the same name in between
            continue
        return candidate


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def swap_into_place(new: Path, target: Path) -> None:
    """
    Put the finished directory ``new`` at ``target`` atomically; delete what was there.

    The parent directory is fsync'ed after the swap, so the new name survives a power cut.
    """
    if not target.exists() and not target.is_symlink():
        os.rename(new, target)  # nothing to replace: a single rename is atomic
        fsync_path(target.parent)
        return
    if exchange_paths(new, target):
        old = new  # after the exchange this name holds the previous map
    else:
        old = unique_sibling(target, 'old')
        os.rename(target, old)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)
            raise
    fsync_path(target.parent)
    _remove(old)
