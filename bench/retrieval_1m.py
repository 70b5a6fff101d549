"""
Retrieval at city scale on this machine: a synthetic 1M-place map (see README, City-scale maps).

    .venv/bin/python bench/retrieval_1m.py [--places 1000000] [--json OUT]

Prints JSON:
* exact (IndexFlatIP) ms per query;
* the old fixed IVF (nprobe 64) and the self-tuned IVF (core.mapdb.tuning: nprobe chosen on
  the map's own descriptors for recall@100 >= 0.99): build+tune time, recall@100 vs exact on
  separate noisy queries, ms per query with one faiss thread and with all;
* exact torch search (the GPU path) on the CPU, and on CUDA when there is one;
* process RSS, and how it changes when a memory-mapped map is opened and queried (local
  features are not loaded into memory).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import resource
import tempfile
import time

from bench_report import emit, rss_mb
import numpy as np

from r2former_ros.core.features import ImageFeatures
from r2former_ros.core.geo.coords import place_position
from r2former_ros.core.mapdb import MapDatabase, MapWriter, PlaceRecord
from r2former_ros.core.mapdb import index as retrieval
from r2former_ros.core.mapdb.torch_index import TorchExactIndex
from r2former_ros.core.mapdb.tuning import TuneSettings, tune_index


def synthetic_unit_vectors(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    basis = rng.normal(size=(32, dim)).astype(np.float32)
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):  # chunks keep the temporary copies small
        stop = min(count, start + 100_000)
        block = rng.normal(size=(stop - start, 32)).astype(np.float32) @ basis
        block += 0.1 * rng.normal(size=block.shape).astype(np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def time_search(index, queries: np.ndarray, k: int, threads: int | None = None) -> float:
    """Mean ms per single query (the localizer's pattern); ``threads`` faiss threads."""
    with retrieval.faiss_threads(threads):
        start = time.perf_counter()
        for row in queries:
            index.search(row[None], k) if isinstance(index, TorchExactIndex) else \
                retrieval.search(index, row[None], k)
        return (time.perf_counter() - start) * 1e3 / len(queries)


def torch_exact(vectors: np.ndarray, exact, queries: np.ndarray, device: str,
                precision: str) -> dict[str, float]:
    """Exact torch search (the GPU path): ms per query and recall@100 vs faiss exact."""
    index = TorchExactIndex(vectors, device, precision)
    index.search(queries[:2], 100)  # warm-up: kernels, allocator
    if device.startswith('cuda'):
        import torch
        torch.cuda.synchronize()
    ms = time_search(index, queries, 100)
    _, ids = index.search(queries, 100)
    _, truth = retrieval.search(exact, queries, 100)
    recall = retrieval.recall_of_ids(ids, truth)
    return {'ms_per_query_top100': ms, 'recall_at_100_vs_exact': recall,
            'device_mb': index.nbytes / 2**20}


def tuned_ivf(vectors: np.ndarray, exact, queries: np.ndarray) -> dict[str, object]:
    """Build and self-tune IVF like build_map does; check it on the separate noisy queries."""
    start = time.perf_counter()
    tuned = tune_index(vectors, 'ivf', TuneSettings(top_k=100, target_recall=0.99))
    out: dict[str, object] = {'build_and_tune_s': time.perf_counter() - start,
                              'tuning': tuned.block}
    if tuned.index is None:
        out['fell_back_to_exact'] = True
        return out
    out['params'] = retrieval.search_params(tuned.index)
    out['recall_at_100_vs_exact_noisy_queries'] = float(retrieval.recall_vs_exact(
        tuned.index, exact, queries, 100))
    out['ms_per_query_top100_1_thread'] = time_search(tuned.index, queries, 100, threads=1)
    out['ms_per_query_top100_all_threads'] = time_search(tuned.index, queries, 100)
    out['rss_with_exact_and_tuned_ivf_mb'] = rss_mb()
    return out


def mmap_check(places: int, rng: np.random.Generator) -> dict[str, float]:
    """Write a map of `places` with full-size int8 locals; RSS when opened and queried."""
    k, d = 500, 128
    identity = {'backbone': 'r2former', 'checkpoint': 'synthetic', 'checkpoint_sha256': '0' * 64,
                'input_hw': [480, 640], 'num_local': k, 'global_dim': 256, 'local_dim': d,
                'patch_size': 16}
    origin = (35.0, 139.0, 0.0)
    token_index = np.stack([rng.permutation(1200)[:k] for _ in range(64)]).astype(np.int64)
    cols = 40
    xy = np.stack(((token_index % cols) * 16 + 8, (token_index // cols) * 16 + 8), -1) / 640.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'map'
        with MapWriter(path, identity, origin={'lat': 35.0, 'lon': 139.0, 'alt': 0.0}) as writer:
            for start in range(0, places, 64):
                n = min(64, places - start)
                local = np.concatenate((xy[:n], np.ones((n, k, 1)),
                                        rng.normal(size=(n, k, d))), -1).astype(np.float32)
                glob = rng.normal(size=(n, 256)).astype(np.float32)
                records = [PlaceRecord(i, place_position(35.0 + i * 1e-6, 139.0, 0.0, origin))
                           for i in range(start, start + n)]
                writer.add(ImageFeatures(glob, local, token_index[:n]), records)
        before = rss_mb()
        database = MapDatabase.open(path)
        opened = rss_mb()
        for _ in range(20):
            ids = rng.choice(places, 100, replace=False)
            database.local_features(ids)
        queried = rss_mb()
        return {'mmap_map_places': places,
                'mmap_map_local_bytes': (path / 'local_desc.npy').stat().st_size,
                'mmap_rss_delta_open_mb': opened - before,
                'mmap_rss_delta_after_2000_reads_mb': queried - before}


def load_text() -> str:
    """Machine load while running: this CPU is shared, so the timings depend on it."""
    return Path('/proc/loadavg').read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--places', type=int, default=1_000_000)
    parser.add_argument('--mmap-places', type=int, default=5000)
    parser.add_argument('--json', type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    result: dict[str, object] = {'places': args.places, 'rss_start_mb': rss_mb(),
                                 'cpu_count': os.cpu_count(), 'loadavg_start': load_text()}
    vectors = synthetic_unit_vectors(args.places, 256, rng)
    queries = vectors[rng.choice(args.places, 100, replace=False)]
    queries = queries + 0.05 * rng.normal(size=queries.shape).astype(np.float32)
    start = time.perf_counter()
    exact = retrieval.build_index(vectors, 'exact')
    result['exact_build_s'] = time.perf_counter() - start
    result['exact_ms_per_query_top100'] = time_search(exact, queries, 100)
    result['exact_ms_per_query_top100_1_thread'] = time_search(exact, queries, 100, threads=1)
    result['rss_with_exact_index_mb'] = rss_mb()
    start = time.perf_counter()
    ivf = retrieval.build_index(vectors, 'ivf')
    result['ivf_fixed_build_s'] = time.perf_counter() - start
    result['ivf_fixed_params'] = retrieval.search_params(ivf)
    result['ivf_fixed_ms_per_query_top100'] = time_search(ivf, queries, 100)
    result['ivf_fixed_recall_at_100_vs_exact'] = float(retrieval.recall_vs_exact(
        ivf, exact, queries, 100))
    del ivf
    result['ivf_tuned'] = tuned_ivf(vectors, exact, queries)
    result['torch_exact_cpu_fp32'] = torch_exact(vectors, exact, queries, 'cpu', 'fp32')
    import torch
    if torch.cuda.is_available():
        for precision in ('fp16', 'fp32'):
            result[f'torch_exact_cuda_{precision}'] = torch_exact(vectors, exact, queries,
                                                                  'cuda', precision)
        result['gpu'] = torch.cuda.get_device_name(0)
    else:
        result['gpu'] = 'none: no CUDA device in this session, GPU numbers not measured'
    result['rss_peak_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del vectors, exact
    result.update(mmap_check(args.mmap_places, rng))
    result['loadavg_end'] = load_text()
    emit(result, args.json)


if __name__ == '__main__':
    main()
