"""
Benchmark: the faithful and the fast path on the same inputs, in one process; prints/writes JSON.

    python -m r2former_ros.bench --device cpu|cuda --candidates N --json OUT

Everything is self-contained (seeded weights unless --checkpoint, synthetic block images like the
parity fixture's), so the numbers are comparable across machines. Faithful = fp32, TF32 off,
explicit attention, the reference's operations. Fast = top-k correspondences, SDPA, cls-only last
blocks, and (opt-in, reported separately) bf16.

Every timing is taken after one warm-up call and repeated at least 5 times; the headline number
(e.g. `rerank_ms_fast`) is the median, and `timings` holds the median, the min and every repeat.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import json
import os
from pathlib import Path
import platform
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

from r2former_ros.core.threads import PASSIVE_WAIT, THREADS_HELP, apply_threads

os.environ.setdefault(*PASSIVE_WAIT)  # before torch loads OpenMP, like every tool (core.threads)

import numpy as np
import torch

from r2former_ros.core.device import resolve_device, strict_fp32_math
from r2former_ros.core.features import ImageFeatures
from r2former_ros.core.geo.coords import place_position
from r2former_ros.core.mapdb import MapDatabase, MapWriter, PlaceRecord
from r2former_ros.core.mapdb import index as retrieval
from r2former_ros.core.model.checkpoint import load_checkpoint
from r2former_ros.core.model.config import R2FormerConfig
from r2former_ros.core.model.fast_rerank import fast_rerank_scores
from r2former_ros.core.model.r2former_net import R2Former
from r2former_ros.core.places.preprocessing import preprocess
from r2former_ros.core.places.r2former import R2FormerPlaceModel, seeded_r2former


def synthetic_images(count: int, height: int = 480, width: int = 640,
                     seed: int = 1234) -> np.ndarray:
    """Block canvases with a fine texture (the parity fixture's recipe), cropped at shifts."""
    rng = np.random.default_rng(seed)
    canvases = max(1, (count + 3) // 4)
    blocks = rng.integers(0, 256, size=(canvases, height // 8 + 8, width // 8 + 8, 3))
    canvas = blocks.repeat(8, axis=1).repeat(8, axis=2)
    y, x, c = np.meshgrid(np.arange(canvas.shape[1]), np.arange(canvas.shape[2]), np.arange(3),
                          indexing='ij')
    canvas = np.clip(canvas + ((y * 5 + x * 3 + c * 7) % 11) * 6, 0, 255).astype(np.uint8)
    images = []
    for index in range(count):
        shift = 16 * (index % 4)  # 0-3 patches: neighbours of the same canvas overlap
        images.append(canvas[index // 4, shift:shift + height, shift:shift + width])
    return np.stack(images)


MIN_REPEATS = 5


def timed(fn: Callable[[], Any], device: torch.device, repeats: int,
          per: int = 1) -> dict[str, Any]:
    """
    Wall time of `fn` in ms after one warm-up call: median, min and every repeat.

    Args:
        fn: the work to time.
        device: synchronised around each call on CUDA, so queued kernels are counted.
        repeats: timed calls (at least MIN_REPEATS).
        per: divide every time by this (e.g. images in a batch, queries in a loop).
    """
    if repeats < MIN_REPEATS:
        raise ValueError(f'repeats={repeats}: a timing needs at least {MIN_REPEATS}')
    fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3 / per)
    return {'median_ms': statistics.median(times), 'min_ms': min(times), 'repeats_ms': times}


class Timings:
    """Collects timings: the median goes into the result under `key`, the details under timings."""

    def __init__(self, result: dict[str, Any], device: torch.device, repeats: int) -> None:
        self.result = result
        self.device = device
        self.repeats = repeats
        result['timings'] = {}

    def __call__(self, key: str, fn: Callable[[], Any], per: int = 1,
                 repeats: int | None = None) -> float:
        start = time.perf_counter()
        timing = timed(fn, self.device, repeats or self.repeats, per)
        # progress on stderr, so a slow run shows where it is; stdout stays pure JSON
        print(f'bench: {key} median {timing["median_ms"]:.2f} ms ({len(timing["repeats_ms"])} '
              f'repeats, {time.perf_counter() - start:.0f} s)', file=sys.stderr, flush=True)
        self.result['timings'][key] = timing
        self.result[key] = timing['median_ms']
        return timing['median_ms']


def top10(scores: np.ndarray) -> list[int]:
    return np.argsort(-scores, kind='stable')[:10].tolist()


def candidate_features(features: ImageFeatures, count: int, seed: int = 0) -> np.ndarray:
    """`count` candidate local sets: the encoded images, then noisy copies of them."""
    rng = np.random.default_rng(seed)
    pool = features.local_feats[1:]
    picks = [pool[i % len(pool)].copy() for i in range(count)]
    for index in range(len(pool), count):
        noise = rng.normal(0.0, 0.3, size=picks[index][:, 3:].shape).astype(np.float32)
        picks[index][:, 3:] += noise * np.abs(picks[index][:, 3:]).mean()
    return np.stack(picks).astype(np.float32)


def map_storage(features: ImageFeatures, db_local: np.ndarray, model_identity: dict[str, Any],
                local_format: str) -> tuple[float, np.ndarray]:
    """Write the candidates as a map; return bytes per place and the locals read back."""
    count = db_local.shape[0]
    index = np.arange(count) % (len(features) - 1) + 1
    stored = ImageFeatures(features.global_desc[index], db_local, features.token_index[index])
    origin = (35.0, 139.0, 0.0)
    records = [PlaceRecord(i, place_position(35.0 + i * 1e-5, 139.0, 0.0, origin), 0, i)
               for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'map'
        with MapWriter(path, model_identity, local_format=local_format,
                       origin={'lat': origin[0], 'lon': origin[1], 'alt': origin[2]}) as writer:
            writer.add(stored, records)
        database = MapDatabase.open(path)
        return database.bytes_per_place(), database.local_features(np.arange(count))


def retrieval_figures(measure: Timings, index_size: int, dim: int = 256, queries: int = 200,
                      seed: int = 0) -> dict[str, Any]:
    """Exact and approximate faiss search on a synthetic map of `index_size` unit vectors."""
    rng = np.random.default_rng(seed)
    # low intrinsic dimension, like real descriptors
    basis = rng.normal(size=(32, dim)).astype(np.float32)
    vectors = rng.normal(size=(index_size, 32)).astype(np.float32) @ basis
    vectors += 0.1 * rng.normal(size=vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = vectors[rng.choice(index_size, queries, replace=False)]
    query = query + 0.05 * rng.normal(size=query.shape).astype(np.float32)
    out: dict[str, Any] = {'retrieval_index_size': index_size}
    exact = retrieval.build_index(vectors, 'exact')

    def search_all(index: Any) -> None:
        for row in query:
            retrieval.search(index, row[None], 100)

    measure('retrieval_ms_per_query', lambda: search_all(exact), per=queries)
    if index_size >= 10_000:
        approx = retrieval.build_index(vectors, 'hnsw')
        measure('retrieval_ms_per_query_hnsw', lambda: search_all(approx), per=queries)
        out['retrieval_recall_at_100_hnsw_vs_exact'] = float(
            retrieval.recall_vs_exact(approx, exact, query, 100))
    return out


def load_model(checkpoint: str | None) -> R2Former:
    config = R2FormerConfig()
    if checkpoint:
        return load_checkpoint(checkpoint, config).model
    return seeded_r2former(config)[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    strict_fp32_math()
    device = resolve_device(args.device)
    apply_threads(args.threads)
    model = load_model(args.checkpoint).to(device)
    config = model.config
    repeats = args.repeats
    distinct = min(args.candidates + 1, 33 if device.type == 'cuda' else 9)
    images = synthetic_images(max(distinct, args.extract_batch))
    batch = preprocess(images, config.input_hw, config.mean, config.std, device)
    result: dict[str, Any] = {
        'device': device.type,
        'gpu_name': torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
        'cpu': platform.processor() or platform.machine(),
        'torch_threads': torch.get_num_threads(),
        'torch': torch.__version__,
        'candidates': args.candidates,
        'weights': args.checkpoint or 'seeded-random',
        'repeats': repeats,
        'timing': 'median (and min) of the repeats after one warm-up call, in ms',
        # other processes on the machine slow every figure down; say how busy it was
        'load_average_1m_at_start': os.getloadavg()[0],
    }
    measure = Timings(result, device, repeats)

    # Extraction: faithful fp32 vs fast (SDPA) vs fast + reduced precision on GPU.
    one = batch[:1]
    full = batch[:args.extract_batch]
    measure('extract_ms_batch1', lambda: model.encode(one))
    measure('extract_ms_per_image_batch32', lambda: model.encode(full), per=full.shape[0],
            repeats=args.batch_repeats)
    result['extract_batch'] = int(full.shape[0])
    measure('extract_ms_batch1_fast', lambda: model.encode(one, fast=True))
    measure('extract_ms_per_image_batch32_fast', lambda: model.encode(full, fast=True),
            per=full.shape[0], repeats=args.batch_repeats)
    faithful = model.encode(batch[:distinct])
    fast = model.encode(batch[:distinct], fast=True)
    result['extract_fast_token_sets_identical'] = bool(all(
        set(a) == set(b) for a, b in zip(faithful.token_index, fast.token_index, strict=True)))
    if device.type == 'cuda':
        bf16 = model.encode(batch[:distinct], fast=True, autocast_dtype=torch.bfloat16)
        measure('extract_ms_per_image_batch32_fast_bf16',
                lambda: model.encode(full, fast=True, autocast_dtype=torch.bfloat16),
                per=full.shape[0], repeats=args.batch_repeats)
        result['extract_bf16_token_sets_identical'] = bool(all(
            set(a) == set(b) for a, b in zip(faithful.token_index, bf16.token_index, strict=True)))

    # Reranking one query against N candidates.
    query_local = torch.from_numpy(faithful.local_feats[0])
    db_np = candidate_features(faithful, args.candidates)
    db_local = torch.from_numpy(db_np)

    def faithful_scores() -> torch.Tensor:
        return model.rerank_scores(query_local.unsqueeze(0).expand(db_local.shape[0], -1, -1),
                                   db_local)

    def fast_scores() -> torch.Tensor:
        return fast_rerank_scores(model.Reranker, query_local, db_local)

    measure('rerank_ms_faithful', faithful_scores)
    measure('rerank_ms_fast', fast_scores)
    result['rerank_speedup'] = result['rerank_ms_faithful'] / result['rerank_ms_fast']
    score_faithful = faithful_scores().float().cpu().numpy()
    score_fast = fast_scores().float().cpu().numpy()
    result['rerank_top10_identical'] = top10(score_faithful) == top10(score_fast)
    result['rerank_max_abs_score_diff'] = float(np.abs(score_faithful - score_fast).max())
    # With random weights candidate scores crowd into a narrow band; the smallest gap between
    # neighbours in the top 11 says how much error any lossy step may add before the order flips.
    ranked = np.sort(score_faithful)[::-1][:11]
    result['rerank_top10_min_gap'] = float(np.min(ranked[:-1] - ranked[1:]))
    if device.type == 'cuda':
        def bf16_scores() -> torch.Tensor:
            return fast_rerank_scores(model.Reranker, query_local, db_local,
                                      dtype=torch.bfloat16)
        measure('rerank_ms_fast_bf16', bf16_scores)
        score_bf16 = bf16_scores().float().cpu().numpy()
        result['rerank_bf16_top10_identical'] = top10(score_faithful) == top10(score_bf16)
        result['rerank_bf16_max_abs_score_diff'] = float(np.abs(score_faithful - score_bf16).max())
        result['rerank_peak_mem_mb_fast'] = peak_cuda_mb(fast_scores, device)
        result['rerank_peak_mem_mb_faithful'] = peak_cuda_mb(faithful_scores, device)

    # Compact storage: bytes per place, and reranking from the stored form.
    identity = R2FormerPlaceModel(model, 'bench', args.checkpoint, device).identity()
    for local_format in ('int8', 'fp16'):
        size, stored = map_storage(faithful, db_np, identity, local_format)
        result[f'bytes_per_place_{local_format}'] = size
        scores = fast_rerank_scores(model.Reranker, query_local,
                                    torch.from_numpy(stored)).float().cpu().numpy()
        result[f'rerank_top10_identical_{local_format}'] = top10(score_fast) == top10(scores)
        result[f'rerank_max_abs_score_diff_{local_format}'] = float(
            np.abs(score_fast - scores).max())
    result['bytes_per_place'] = result['bytes_per_place_int8']

    # Whole loop (image in, place out) with the fast path; retrieval measured separately below.
    result.update(retrieval_figures(measure, args.index_size))
    loop_ms = (result['extract_ms_batch1_fast'] + result['rerank_ms_fast']
               + result['retrieval_ms_per_query'])
    result['loop_ms_estimate'] = loop_ms
    result['loop_hz_estimate'] = 1e3 / loop_ms
    result['max_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result['load_average_1m_at_end'] = os.getloadavg()[0]
    result['cpu_count'] = os.cpu_count()
    return result


def peak_cuda_mb(fn: Callable[[], Any], device: torch.device) -> float:
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m r2former_ros.bench', description=__doc__)
    parser.add_argument('--device', default='auto', help='cpu, cuda, cuda:N or auto')
    parser.add_argument('--candidates', type=int, default=100, help='rerank candidates per query')
    parser.add_argument('--json', type=Path, help='write the JSON here too')
    parser.add_argument('--checkpoint',
                        help='official checkpoint (default: seeded random weights)')
    parser.add_argument('--extract-batch', type=int, default=32, help='batch for the per-image '
                        'extraction figure (default 32)')
    parser.add_argument('--index-size', type=int, default=100_000,
                        help='places in the synthetic retrieval index (default 100000)')
    parser.add_argument('--repeats', type=int, default=MIN_REPEATS,
                        help=f'timed repeats after a warm-up call (default and minimum '
                             f'{MIN_REPEATS}; the median and min are reported)')
    parser.add_argument('--batch-repeats', type=int, default=MIN_REPEATS,
                        help='timed repeats of the (slow) batch extraction (default and minimum '
                             f'{MIN_REPEATS})')
    parser.add_argument('--threads', type=int, default=0, metavar='N',
                        help=THREADS_HELP + '; the committed CPU table used --threads 2')
    args = parser.parse_args(argv)
    if args.candidates < 10:
        parser.error('--candidates must be at least 10 (the top-10 order is compared)')
    if min(args.repeats, args.batch_repeats) < MIN_REPEATS:
        parser.error(f'--repeats and --batch-repeats must be at least {MIN_REPEATS}')
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + '\n')
    return 0


if __name__ == '__main__':
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    sys.exit(main())
