"""
Self-tuned approximate index: pick nprobe / efSearch on the map's own descriptors.

An IVF or HNSW index with a fixed search parameter can silently lose true candidates: on a
synthetic 1M-place map IVF with nprobe 64 found 62% of the exact top 100 (bench/retrieval_1m.json,
before tuning). Here the parameter is chosen per map instead:

1. Queries are map descriptors themselves (a seeded sample of places). Each query's own place
   is in the index and would always be found, so it is dropped from both result lists
   (leave-one-out): recall is measured on the *other* neighbours, as a new image of that place
   would see them.
2. The exact top ``k`` of every query comes from a flat inner-product scan.
3. The parameter climbs a doubling ladder (then bisects between the last miss and the first hit)
   until recall@``k`` against exact reaches the target (0.99 by default); each step measures
   recall on all queries and the single-query latency on a subset.
4. When a step is slower than the budget (by default the exact scan's own latency: an
   approximate index slower than exact search has no reason to exist) before the target is
   reached, tuning gives up and the map keeps the exact index, saying why.

The chosen value, the measured recall and latency and every step tried go into the manifest's
``index.tuning`` block, which ``r2former map info`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
import time
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.mapdb import index as retrieval

LOG = logging.getLogger(__name__)

DEFAULT_TARGET_RECALL = 0.99
DEFAULT_TOP_K = 100  # the localizer's retrieval.top_k default
DEFAULT_QUERIES = 1000
# Single-query latency is timed on this many of the queries (the rest only count for recall).
_TIMED_QUERIES = 100
# Bisection steps between the last ladder value that missed and the first that reached the target.
_BISECT_STEPS = 3
_MAX_EF_SEARCH = 8192


@dataclass(frozen=True)
class TuneSettings:
    """How to tune: recall target at ``top_k``, latency budget and how many self-queries."""

    top_k: int = DEFAULT_TOP_K
    target_recall: float = DEFAULT_TARGET_RECALL
    budget_ms: float | None = None  # None: the exact scan's measured ms per query
    queries: int = DEFAULT_QUERIES
    seed: int = 0

    def check(self) -> TuneSettings:
        """Raise ConfigError on out-of-range settings; return self."""
        if self.top_k < 1:
            raise ConfigError(f'tuning top_k must be >= 1, got {self.top_k}')
        if not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f'target recall must be in (0, 1], got {self.target_recall}')
        if self.budget_ms is not None and not self.budget_ms > 0:
            raise ConfigError(f'latency budget must be > 0 ms, got {self.budget_ms}')
        if self.queries < 1:
            raise ConfigError(f'tuning needs >= 1 query, got {self.queries}')
        return self


@dataclass
class TunedIndex:
    """The outcome: the index to store (None: keep exact) and the manifest's tuning block."""

    index: faiss.Index | None
    kind: str
    block: dict[str, Any]


def _drop_self(ids: NDArray[np.int64], self_ids: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    """Remove each query's own id from its result row and keep ``k`` (padding with -1)."""
    out = np.full((ids.shape[0], k), -1, np.int64)
    for row in range(ids.shape[0]):
        others = ids[row][ids[row] != self_ids[row]]
        out[row, :min(k, others.size)] = others[:k]
    return out


def _ms_per_query(index: faiss.Index, queries: NDArray[np.float32], k: int) -> float:
    """
    Median single-query time on one faiss thread: the localizer asks one query at a time.

    One thread, because OpenMP start-up dominates a single small query on a shared CPU and
    would make the comparison of the exact scan with the approximate index meaningless.
    """
    times = []
    with retrieval.faiss_threads(1):
        for row in queries:
            start = time.perf_counter()
            index.search(row[None], k)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


class _Sweep:
    """Recall and latency of one index at each parameter value, memoised."""

    def __init__(self, index: faiss.Index, kind: str, queries: NDArray[np.float32],
                 self_ids: NDArray[np.int64], truth: NDArray[np.int64], k: int) -> None:
        self.index, self.kind, self.queries = index, kind, queries
        self.self_ids, self.truth, self.k = self_ids, truth, k
        self.tried: dict[int, tuple[float, float]] = {}

    def measure(self, value: int) -> tuple[float, float]:
        if value not in self.tried:
            retrieval.set_search_params(self.index, **{self.param: value})
            _, ids = self.index.search(self.queries, self.k + 1)
            recall = retrieval.recall_of_ids(_drop_self(ids, self.self_ids, self.k),
                                              self.truth)
            ms = _ms_per_query(self.index, self.queries[:_TIMED_QUERIES], self.k + 1)
            self.tried[value] = (recall, ms)
            LOG.info('index tuning: %s %d -> recall@%d %.4f, %.3f ms/query',
                     self.param, value, self.k, recall, ms)
        return self.tried[value]

    @property
    def param(self) -> str:
        return 'nprobe' if self.kind == 'ivf' else 'ef_search'


def _ladder(kind: str, index: faiss.Index, k: int, n: int) -> list[int]:
    if kind == 'ivf':
        top = int(faiss.extract_index_ivf(index).nlist)
        start = 1
    else:
        # Fewer than k candidates cannot return k neighbours.
        top, start = min(_MAX_EF_SEARCH, max(k + 1, n)), k + 1
    values = []
    value = start
    while value < top:
        values.append(value)
        value *= 2
    return values + [top]


def tune_index(vectors: NDArray[np.float32], kind: str,
               settings: TuneSettings | None = None) -> TunedIndex:
    """
    Build an ``'ivf'`` or ``'hnsw'`` index over ``vectors`` and tune it; see the module doc.

    Returns:
        The tuned index and its block, or ``index=None`` / ``kind='exact'`` when no value
        reaches the target within the budget (the block says why).
    """
    cfg = (settings or TuneSettings()).check()
    if kind not in ('ivf', 'hnsw'):
        raise ConfigError(f"only 'ivf' and 'hnsw' indexes are tuned, got {kind!r}")
    started = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    k = min(cfg.top_k, n - 1)
    rng = np.random.default_rng(cfg.seed)
    self_ids = np.sort(rng.choice(n, min(cfg.queries, n), replace=False)).astype(np.int64)
    queries = np.ascontiguousarray(vectors[self_ids])
    exact = retrieval.build_index(vectors, 'exact')
    _, exact_ids = exact.search(queries, k + 1)
    truth = _drop_self(exact_ids, self_ids, k)
    exact_ms = _ms_per_query(exact, queries[:_TIMED_QUERIES], k + 1)
    del exact
    budget_ms = cfg.budget_ms if cfg.budget_ms is not None else exact_ms
    build_start = time.perf_counter()
    index = retrieval.build_index(vectors, kind, seed=cfg.seed)
    build_s = time.perf_counter() - build_start
    sweep = _Sweep(index, kind, queries, self_ids, truth, k)
    chosen, reason, previous = None, None, None
    for value in _ladder(kind, index, k, n):
        recall, ms = sweep.measure(value)
        if ms > budget_ms and recall < cfg.target_recall:
            reason = (f'{sweep.param} {value} is at recall@{k} {recall:.4f} and already '
                      f'{ms:.3f} ms per query, over the {budget_ms:.3f} ms budget')
            break
        if recall >= cfg.target_recall:
            chosen = value
            break
        previous = value
    else:
        reason = f'no {sweep.param} reaches recall@{k} {cfg.target_recall}'
    if chosen is not None and previous is not None:
        low, high = previous, chosen
        for _ in range(_BISECT_STEPS):
            if high - low <= 1:
                break
            middle = (low + high) // 2
            if sweep.measure(middle)[0] >= cfg.target_recall:
                high = middle
            else:
                low = middle
        chosen = high
    if chosen is not None and sweep.tried[chosen][1] > budget_ms:
        reason = (f'{sweep.param} {chosen} reaches recall@{k} {sweep.tried[chosen][0]:.4f} '
                  f'but takes {sweep.tried[chosen][1]:.3f} ms per query, over the '
                  f'{budget_ms:.3f} ms budget')
        chosen = None
    block: dict[str, Any] = {
        'requested_type': kind, 'param': sweep.param, 'top_k': k,
        'target_recall': cfg.target_recall, 'queries': int(self_ids.size),
        'method': 'map descriptors as queries, own place left out',
        'budget_ms': budget_ms, 'exact_ms_per_query': exact_ms, 'build_s': build_s,
        'tried': [[value, recall, ms] for value, (recall, ms) in sorted(sweep.tried.items())],
    }
    if chosen is None:
        LOG.warning('index tuning: %s; the map keeps the exact index', reason)
        block.update({'value': None, 'recall': 1.0, 'ms_per_query': exact_ms,
                      'fell_back_to_exact': True, 'reason': reason,
                      'tune_s': time.perf_counter() - started})
        return TunedIndex(None, 'exact', block)
    retrieval.set_search_params(index, **{sweep.param: chosen})
    recall, ms = sweep.tried[chosen]
    block.update({'value': chosen, 'recall': recall, 'ms_per_query': ms,
                  'fell_back_to_exact': False, 'reason': None,
                  'tune_s': time.perf_counter() - started})
    LOG.info('index tuning: %s %s = %d, recall@%d %.4f, %.3f ms/query (exact %.3f ms)', kind,
             sweep.param, chosen, k, recall, ms, exact_ms)
    return TunedIndex(index, kind, block)
