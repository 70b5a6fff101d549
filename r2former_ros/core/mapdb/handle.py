"""
One map directory read through a handle on the directory itself: :class:`MapDirectory`.

A map is rebuilt or swapped at its path by exchanging whole directories (see
:mod:`r2former_ros.core.mapdb.atomic`). A reader that opened files by path one after the other
could meet the old manifest and the new arrays, or the old arrays and the new thumbnails. Reading
every file relative to a descriptor of the directory that was opened (``openat``) makes all of
them come from that one directory, whatever happens at the path meanwhile; the arrays are
memory-mapped from the files so opened, so they stay the opened map's even after its directory
is deleted.

On platforms without ``dir_fd`` support (Windows) the files are opened by path: the same reads,
without that guarantee.
"""

from __future__ import annotations

import os
from pathlib import Path
import stat
from types import TracebackType
from typing import BinaryIO

import numpy as np

from r2former_ros.core.errors import MapError
from r2former_ros.core.hashing import stream_sha256

# openat(2) and a directory-only open: POSIX (Linux, macOS), not Windows.
HANDLES_SUPPORTED = os.open in os.supports_dir_fd and hasattr(os, 'O_DIRECTORY')


class MapDirectory:
    """
    A map directory opened once: every read goes to it, not to whatever the path names later.

    Use as a context manager or call :meth:`close`. File names are relative to the map
    directory (``'manifest.json'``, ``'thumbnails/00000003.jpg'``).
    """

    def __init__(self, path: str | Path) -> None:
        """
        Open the directory.

        Raises:
            MapError: ``path`` is not an existing directory.
        """
        self.path = Path(path)
        self._fd: int | None = None
        if not HANDLES_SUPPORTED:
            if not self.path.is_dir():
                raise MapError(f'{self.path}: map directory does not exist')
            return
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise MapError(f'{self.path}: map directory does not exist') from exc
        except OSError as exc:
            raise MapError(f'{self.path}: cannot open the map directory ({exc.strerror})') from exc

    def __enter__(self) -> MapDirectory:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the directory handle (files and memory maps opened from it stay valid)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (always False without handle support)."""
        return HANDLES_SUPPORTED and self._fd is None

    def shown(self, name: str) -> Path:
        """Return the path to name in messages (the directory's path as opened, plus ``name``)."""
        return self.path / name

    # -- reads

    def open(self, name: str) -> BinaryIO:
        """
        Open a file of the map for reading (binary).

        Raises:
            FileNotFoundError: no such file in the opened directory.
            IsADirectoryError: ``name`` is a directory.
        """
        if self._fd is None:
            if self.closed:
                raise ValueError(f'{self.path}: map directory handle is closed')
            return open(self.path / name, 'rb')  # noqa: SIM115 - the caller closes it
        fd = os.open(name, os.O_RDONLY, dir_fd=self._fd)
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise IsADirectoryError(f'{self.shown(name)} is a directory')
            return os.fdopen(fd, 'rb')
        except BaseException:
            os.close(fd)
            raise

    def read_bytes(self, name: str) -> bytes:
        """Return a file's whole content."""
        with self.open(name) as handle:
            return handle.read()

    def size(self, name: str) -> int | None:
        """Size of a regular file in bytes; None when it is missing or not a regular file."""
        try:
            info = (os.stat(self.path / name) if self._fd is None
                    else os.stat(name, dir_fd=self._fd))
        except OSError:
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def sha256(self, name: str) -> str:
        """Hex sha256 of a file, streamed."""
        with self.open(name) as handle:
            return stream_sha256(handle)

    def list(self, subdir: str) -> list[str]:
        """Sorted entry names of a subdirectory; empty when it does not exist."""
        if self._fd is None:
            folder = self.path / subdir
            return sorted(os.listdir(folder)) if folder.is_dir() else []
        try:
            fd = os.open(subdir, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self._fd)
        except (FileNotFoundError, NotADirectoryError):
            return []
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def memmap_npy(self, name: str) -> np.ndarray:
        """
        Memory-map a ``.npy`` file read-only, as ``np.load(..., mmap_mode='r')`` does.

        Raises:
            OSError, ValueError, EOFError: the file is missing or not a readable ``.npy`` array.
        """
        with self.open(name) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f'.npy format version {version} is not supported')
            if dtype.hasobject:
                raise ValueError('object arrays cannot be memory-mapped')
            offset = handle.tell()
            # The map keeps its own reference to the file, so closing the handle is fine.
            return np.memmap(handle, dtype=dtype, mode='r', shape=shape,
                             order='F' if fortran else 'C', offset=offset)

