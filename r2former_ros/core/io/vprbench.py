"""
Datasets in the VPR-Bench layout, and recall@K.

A VPR-Bench dataset directory holds ``ref/`` (the reference images, i.e. the map),
``query/`` (the query images) and ``ground_truth_new.npy``: an object array of shape (Q, 2)
whose row i is ``[query_index, [correct reference indices]]``. Indices count the images of
each folder in sorted file-name order.

The ground truth is a pickled object array. It is read with a restricted unpickler that
only rebuilds plain numpy arrays, ints and lists, so a hostile file cannot run code (plain
``np.load(..., allow_pickle=True)`` would run whatever the pickle asks for).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
import importlib
import os
from pathlib import Path
import pickle
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.io.folders import image_files
from r2former_ros.core.io.images import read_image_file

GROUND_TRUTH_FILE = 'ground_truth_new.npy'

# The only globals a VPR-Bench ground-truth pickle may reference.
_ALLOWED_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}')
        if module.startswith('numpy.core'):
            module = 'numpy._core' + module[len('numpy.core'):]
        return getattr(importlib.import_module(module), name)


def _load_object_npy(path: Path) -> np.ndarray:
    with path.open('rb') as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ConfigError(f'{path}: unsupported .npy version {version}')
        if not dtype.hasobject:
            return np.fromfile(f, dtype=dtype).reshape(shape, order='F' if fortran else 'C')
        array = _SafeUnpickler(f).load()
    if not isinstance(array, np.ndarray):
        raise ConfigError(f'{path}: the pickle does not hold an array')
    return array


def load_ground_truth(path: str | os.PathLike[str], num_queries: int,
                      num_refs: int) -> list[NDArray[np.int64]]:
    """
    Read ``ground_truth_new.npy``: per query (by index), the sorted correct reference indices.

    Raises:
        ConfigError: the file is missing, malformed, or names images that do not exist.
    """
    path = Path(path)
    try:
        table = _load_object_npy(path)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ConfigError(f'cannot read ground truth {path}: {exc}') from exc
    if table.ndim != 2 or table.shape[1] != 2:
        raise ConfigError(f'{path}: expected (Q, 2) rows [query_index, [ref indices]], got shape '
                          f'{table.shape}')
    positives: list[NDArray[np.int64] | None] = [None] * num_queries
    for query, refs in table:
        q = int(query)
        if not 0 <= q < num_queries:
            raise ConfigError(f'{path}: query index {q} outside 0..{num_queries - 1}')
        if positives[q] is not None:
            raise ConfigError(f'{path}: query {q} listed twice')
        r = np.unique(np.asarray(list(np.ravel(refs)), dtype=np.int64))
        if r.size and (r[0] < 0 or r[-1] >= num_refs):
            raise ConfigError(f'{path}: query {q} names a reference outside 0..{num_refs - 1}')
        positives[q] = r
    missing = [i for i, p in enumerate(positives) if p is None]
    if missing:
        raise ConfigError(f'{path}: no ground truth for queries {missing[:5]}'
                          f'{"..." if len(missing) > 5 else ""}')
    return [p for p in positives if p is not None]


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConfigError(f'{folder} is not a directory (VPR-Bench layout needs ref/ and query/)')
    return image_files(folder)


@dataclass(frozen=True)
class VprBenchDataset:
    """A dataset in the VPR-Bench layout: reference and query images plus ground truth."""

    root: Path
    ref_files: list[Path]
    query_files: list[Path]
    positives: list[NDArray[np.int64]]  # per query: correct reference indices, sorted

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def num_refs(self) -> int:
        return len(self.ref_files)

    @property
    def num_queries(self) -> int:
        return len(self.query_files)

    def iter_rgb(self, which: str) -> Iterator[NDArray[np.uint8]]:
        """Yield the 'ref' or 'query' images as RGB uint8, in index order."""
        if which not in ('ref', 'query'):
            raise ConfigError(f"which must be 'ref' or 'query', got {which!r}")
        for path in self.ref_files if which == 'ref' else self.query_files:
            yield read_image_file(path)


def load_vprbench(root: str | os.PathLike[str]) -> VprBenchDataset:
    """
    Open a VPR-Bench dataset directory (``ref/``, ``query/``, ``ground_truth_new.npy``).

    Raises:
        ConfigError: a part is missing or inconsistent.
    """
    root = Path(root).expanduser()
    refs = _list_images(root / 'ref')
    queries = _list_images(root / 'query')
    positives = load_ground_truth(root / GROUND_TRUTH_FILE, len(queries), len(refs))
    return VprBenchDataset(root, refs, queries, positives)
