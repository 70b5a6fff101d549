"""
Faiss index helpers for global-descriptor retrieval.

Global descriptors are unit L2 vectors, so the inner product is the cosine
similarity and every index here uses the inner-product metric.

Index types:

* ``exact``: ``IndexFlatIP``, brute force, always correct; a copy of the
  descriptors, so maps rebuild it at load time instead of storing it.
* ``ivf``: ``IndexIVFFlat``; ``nlist`` is about ``4 * sqrt(N)`` coarse cells,
  trained on a seeded sample, ``nprobe`` cells scanned per query.
* ``hnsw``: ``IndexHNSWFlat`` with ``M = 32`` links per node, ``efSearch``
  candidates explored per query.

``choose_index_type('auto', n)`` keeps the exact index below
:data:`AUTO_EXACT_MAX_PLACES` places (a flat scan of 300k x 256 floats is a few
milliseconds per query) and switches to IVF-Flat above, which stores no extra
graph memory per vector unlike HNSW.

Nothing here changes the faiss thread count on import; use
:func:`faiss_threads` or :func:`set_num_threads` explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import math
from pathlib import Path
from typing import IO, cast

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros.core.errors import ConfigError, MapError

INDEX_TYPES = ('exact', 'ivf', 'hnsw')
_TYPES_TEXT = ', '.join(INDEX_TYPES)
AUTO_EXACT_MAX_PLACES = 300_000
DEFAULT_NPROBE = 64
DEFAULT_EF_SEARCH = 128
DEFAULT_EF_CONSTRUCTION = 80
HNSW_M = 32
# faiss k-means wants at least 39 points per centroid; fewer gives poor cells and a warning.
_MIN_POINTS_PER_CELL = 39
# Training on 64 points per cell is plenty for k-means and bounds the training cost.
_TRAIN_POINTS_PER_CELL = 64


def normalize_rows(x: ArrayLike) -> NDArray[np.float32]:
    """
    Return float32 rows scaled to unit L2 norm.

    All-zero rows stay zero instead of becoming NaN.
    """
    arr = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return (arr / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


def set_num_threads(num_threads: int) -> None:
    """Set the OpenMP thread count faiss uses from now on (process-wide)."""
    if num_threads < 1:
        raise ConfigError(f'faiss thread count must be >= 1, got {num_threads}')
    faiss.omp_set_num_threads(int(num_threads))


@contextlib.contextmanager
def faiss_threads(num_threads: int | None) -> Iterator[None]:
    """
    Temporarily use ``num_threads`` faiss threads, restoring the previous count.

    ``None`` leaves the current setting alone. Single-query search is usually
    fastest with 1 thread; bulk building and benchmarking want all cores.
    """
    if num_threads is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    set_num_threads(num_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def default_nlist(n: int) -> int:
    """
    Return the IVF cell count for ``n`` vectors: about ``4 * sqrt(n)``.

    It is capped so each cell gets enough training points (39 per cell, the
    faiss k-means minimum), and is at least 1.
    """
    nlist = int(round(4.0 * math.sqrt(max(n, 1))))
    return max(1, min(nlist, n // _MIN_POINTS_PER_CELL))


def choose_index_type(requested: str, n: int, exact_max: int = AUTO_EXACT_MAX_PLACES) -> str:
    """
    Resolve an index type request to one of :data:`INDEX_TYPES`.

    Args:
        requested: ``'auto'``, ``'exact'``, ``'ivf'`` or ``'hnsw'``.
        n: number of vectors the index will hold.
        exact_max: ``'auto'`` picks ``'exact'`` below this many vectors and
            ``'ivf'`` at or above it.

    Returns:
        The concrete index type.
    """
    if requested == 'auto':
        return 'exact' if n < exact_max else 'ivf'
    if requested not in INDEX_TYPES:
        raise ConfigError(
            f"index type must be 'auto' or one of {_TYPES_TEXT}, got {requested!r}")
    return requested


def check_vector_shape(shape: tuple[int, ...]) -> None:
    """Refuse anything but a non-empty (N, G) matrix of vectors to index."""
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise ConfigError(f'index vectors must be a non-empty (N, G) array, got shape {shape}')


def _check_vectors(vectors: ArrayLike) -> NDArray[np.float32]:
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    check_vector_shape(arr.shape)
    return arr


def check_queries(queries: ArrayLike, k: int, d: int,
                  ntotal: int) -> tuple[NDArray[np.float32], int]:
    """
    Validate the arguments of a search over ``ntotal`` vectors of size ``d``.

    Returns:
        the queries as (Q, d) float32 rows (one (d,) vector becomes one row) and ``k`` clipped
        to ``ntotal``.

    Raises:
        ConfigError: ``k`` < 1 or the queries are not (Q, d).
    """
    if k < 1:
        raise ConfigError(f'k must be >= 1, got {k}')
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != d:
        raise ConfigError(f'queries must be (Q, {d}), got shape {q.shape}')
    return q, min(int(k), int(ntotal))


def _training_sample(vectors: NDArray[np.float32], nlist: int, seed: int) -> NDArray[np.float32]:
    size = min(vectors.shape[0], nlist * _TRAIN_POINTS_PER_CELL)
    if size == vectors.shape[0]:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(vectors.shape[0], size, replace=False))
    return np.ascontiguousarray(vectors[rows])


def build_index(
    vectors: ArrayLike,
    index_type: str = 'exact',
    *,
    nlist: int | None = None,
    nprobe: int = DEFAULT_NPROBE,
    ef_search: int = DEFAULT_EF_SEARCH,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    seed: int = 0,
) -> faiss.Index:
    """
    Build an inner-product index over (N, G) unit vectors.

    Args:
        vectors: (N, G) float32 rows, unit L2 norm.
        index_type: ``'exact'``, ``'ivf'`` or ``'hnsw'`` (resolve ``'auto'``
            with :func:`choose_index_type` first).
        nlist: IVF cell count; default :func:`default_nlist`.
        nprobe: IVF cells scanned per query.
        ef_search: HNSW candidate list size at query time.
        ef_construction: HNSW candidate list size while inserting.
        seed: seed of the IVF training sample.

    Returns:
        A filled faiss index whose ``search`` returns inner products.
    """
    arr = _check_vectors(vectors)
    n, dim = arr.shape
    index: faiss.Index
    if index_type == 'exact':
        index = faiss.IndexFlatIP(dim)
    elif index_type == 'ivf':
        cells = default_nlist(n) if nlist is None else max(1, min(int(nlist), n))
        # The factory owns the coarse quantizer, so no Python reference must outlive it.
        index = faiss.index_factory(dim, f'IVF{cells},Flat', faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(arr, cells, seed))
    elif index_type == 'hnsw':
        hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = int(ef_construction)
        index = hnsw
    else:
        raise ConfigError(f'index type must be one of {_TYPES_TEXT}, got {index_type!r}')
    index.add(arr)
    set_search_params(index, nprobe=nprobe, ef_search=ef_search)
    return index


def index_type_of(index: faiss.Index) -> str:
    """Return ``'exact'``, ``'ivf'`` or ``'hnsw'`` for an index built here."""
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexHNSW):
        return 'hnsw'
    if isinstance(concrete, faiss.IndexIVF):
        return 'ivf'
    if isinstance(concrete, faiss.IndexFlat):
        return 'exact'
    raise ConfigError(f'unsupported faiss index class {type(concrete).__name__}')


def set_search_params(
    index: faiss.Index, nprobe: int | None = None, ef_search: int | None = None
) -> None:
    """
    Set the query-time accuracy knobs of an IVF or HNSW index.

    Parameters that do not apply to the index type are ignored, so callers can
    pass both without checking the type.
    """
    kind = index_type_of(index)
    if kind == 'ivf' and nprobe is not None:
        if nprobe < 1:
            raise ConfigError(f'nprobe must be >= 1, got {nprobe}')
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(int(nprobe), ivf.nlist)
    if kind == 'hnsw' and ef_search is not None:
        if ef_search < 1:
            raise ConfigError(f'efSearch must be >= 1, got {ef_search}')
        cast('faiss.IndexHNSWFlat', faiss.downcast_index(index)).hnsw.efSearch = int(ef_search)


def search_params(index: faiss.Index) -> dict[str, int]:
    """Return the index's tuning parameters (nlist/nprobe or M/efSearch) for manifests."""
    kind = index_type_of(index)
    if kind == 'ivf':
        ivf = faiss.extract_index_ivf(index)
        return {'nlist': int(ivf.nlist), 'nprobe': int(ivf.nprobe)}
    if kind == 'hnsw':
        hnsw = cast('faiss.IndexHNSWFlat', faiss.downcast_index(index)).hnsw
        return {'hnsw_m': HNSW_M, 'ef_search': int(hnsw.efSearch),
                'ef_construction': int(hnsw.efConstruction)}
    return {}


def search(
    index: faiss.Index, queries: ArrayLike, k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """
    Return the ``k`` most similar indexed vectors of each query.

    Queries are L2-normalised first, so scores are cosine similarities when the
    indexed vectors are unit norm. ``k`` is clipped to the index size.
    Approximate indexes may leave slots unfilled: id -1, score -inf.

    Args:
        index: an index from :func:`build_index` or :func:`load_index`.
        queries: (Q, G) or (G,) float32.
        k: number of neighbours, >= 1.

    Returns:
        scores (Q, k) float32, best first, and ids (Q, k) int64.
    """
    q, kk = check_queries(queries, k, index.d, index.ntotal)
    if kk == 0 or q.shape[0] == 0:
        return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
    scores, ids = index.search(np.ascontiguousarray(normalize_rows(q)), kk)
    scores = scores.astype(np.float32, copy=False)
    ids = ids.astype(np.int64, copy=False)
    # faiss pads missing results with a huge negative float; -inf is clearer to callers.
    scores[ids < 0] = -np.inf
    return scores, ids


def save_index(index: faiss.Index, path: str | Path) -> None:
    """Write an index with ``faiss.write_index`` (faiss's own binary format)."""
    faiss.write_index(index, str(path))


def load_index(path: str | Path) -> faiss.Index:
    """
    Read an index written by :func:`save_index`.

    Raises:
        MapError: the file is missing or not a readable faiss index.
    """
    p = Path(path)
    if not p.is_file():
        raise MapError(f'{p}: faiss index file is missing')
    with open(p, 'rb') as handle:
        return read_index_from(handle, p)


def read_index_from(handle: IO[bytes], where: str | Path) -> faiss.Index:
    """
    Read an index from an open binary file (from its current position).

    Raises:
        MapError: the content is not a readable faiss index (``where`` names the file).
    """
    try:
        # Streamed: no second in-memory copy of a large IVF/HNSW file.
        reader = faiss.PyCallbackIOReader(handle.read)  # type: ignore[attr-defined]
        return faiss.read_index(reader)
    except RuntimeError as exc:
        raise MapError(f'{where}: cannot read faiss index ({exc})') from exc


def recall_vs_exact(
    index: faiss.Index, exact_index: faiss.Index, queries: ArrayLike, k: int
) -> float:
    """
    Return the mean fraction of the exact top-``k`` ids that ``index`` also returns.

    This is the usual "k-recall@k" of approximate search; 1.0 means identical
    neighbour sets (order ignored).
    """
    _, approx = search(index, queries, k)
    _, exact = search(exact_index, queries, k)
    return recall_of_ids(approx, exact)


def recall_of_ids(approx: NDArray[np.int64], exact: NDArray[np.int64]) -> float:
    """
    Return the mean fraction of each row's true ids (``exact``) that ``approx`` also holds.

    Order is ignored, and so are unfilled slots (id -1) on either side; rows without any true
    id are left out, and with none left the recall is 1.0.
    """
    hits = []
    for a, e in zip(approx, exact, strict=True):
        truth = set(e[e >= 0].tolist())
        if truth:
            hits.append(len(truth & set(a[a >= 0].tolist())) / len(truth))
    return float(np.mean(hits)) if hits else 1.0
