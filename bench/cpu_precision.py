"""
CPU precision: fp32 against the opt-in bf16 and int8, printed as JSON.

For fp32, the opt-in bf16 (needs AVX512_BF16/AMX; extraction only, CPU reranking stays fp32) and
int8 (dynamic quantization of the linear layers of extraction blocks 0-10, built here only: it is
measured to decide whether to offer it, and is not a tool setting):
- time: `encode_rgb` of one corridor image and the rerank of one query against --candidates
  corridor images, median of --repeats after a warm-up, for the R2Former shape (480x640, seeded
  weights) and the DINOv2 fallback (224x224, cached pretrained weights);
- ranking agreement with fp32: the top-10 after reranking --candidates corridor images for each
  of --queries queries (features and rerank both in the precision), and recall@1/5 of the
  bundled corridor (60 queries against 60 references) with the DINOv2 fallback, as in the
  README's `r2former eval --dataset ... --rerank-top 20`;
- a roofline line: the work counted by torch.utils.flop_counter (fp32 pass; SDPA attention counted
  by hand) over the median time, against the peak of the CPU cores used.

    .venv/bin/python bench/cpu_precision.py    # writes bench/cpu_precision.json (~3 min, 2 cores)

Timings depend on everything else the CPU runs: the load average is recorded at start and end.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import copy
import os
from pathlib import Path
import platform
import statistics
import sys
import time
from typing import Any
import warnings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import emit, load_average  # noqa: E402 - the bench folder is not a package

from r2former_ros.core.threads import PASSIVE_WAIT, apply_threads, default_threads  # noqa: E402

os.environ.setdefault(*PASSIVE_WAIT)  # as every entry point does, before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from r2former_ros.core.device import cpu_flags, cpu_has_bf16  # noqa: E402
from r2former_ros.core.errors import ConfigError  # noqa: E402
from r2former_ros.core.io.images import read_image_file  # noqa: E402
from r2former_ros.core.places.base import PlaceModel  # noqa: E402
from r2former_ros.core.places.preprocessing import preprocess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORRIDOR = ROOT / 'r2former_ros' / 'data' / 'demo' / 'corridor'
TOP = 10

# Peak arithmetic per core and cycle (multiply and add counted as 2), for the roofline line.
# Assumptions: 2 AVX-512 FMA units per core (Xeon server cores); AMX as Intel documents it for
# Sapphire Rapids (1024 bf16 FLOP, 2048 int8 OPS per cycle and core); the clock /proc/cpuinfo
# reports (a VM shows the nominal clock, not turbo).
PEAK_PER_CYCLE = {
    'fp32 AVX-512 FMA': 2 * 16 * 2,
    'bf16 AVX512_BF16 (vdpbf16ps)': 2 * 32 * 2,
    'bf16 AMX-BF16': 1024,
    'int8 AVX512-VNNI (vpdpbusd)': 2 * 64 * 2,
    'int8 AMX-INT8': 2048,
}


def median_ms(run: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Time ``run`` after one warm-up call: median, min and every repeat, ms."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return {'median_ms': round(statistics.median(times), 1), 'min_ms': round(min(times), 1),
            'ms': [round(t, 1) for t in times]}


def _sdpa_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                **kwargs: Any) -> int:
    """FLOPs of scaled dot-product attention from the shapes (the counter has no CPU rule)."""
    batch, heads, length, dim = query
    return 2 * batch * heads * length * key[-2] * (dim + value[-1])


SDPA_RULES = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def counted_flops(run: Callable[[], Any]) -> int:
    """Count the floating-point work of one call (fp32)."""
    with FlopCounterMode(display=False, custom_mapping=SDPA_RULES) as counter:
        run()
    return int(counter.get_total_flops())


def corridor_images() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read the bundled corridor's queries and references (RGB uint8)."""
    queries = [read_image_file(p) for p in sorted((CORRIDOR / 'query').glob('*.jpg'))]
    refs = [read_image_file(p) for p in sorted((CORRIDOR / 'ref').glob('*.jpg'))]
    return queries, refs


def quantize_leading_blocks(blocks: nn.Sequential | nn.ModuleList) -> None:
    """Replace every block but the last by its dynamic-int8 copy (linear layers), in place."""
    from torch.ao.quantization import quantize_dynamic  # noqa: PLC0415 - deprecated upstream

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # its deprecation notices (torchao replaces it)
        for index in range(len(blocks) - 1):
            blocks[index] = quantize_dynamic(blocks[index], {nn.Linear}, dtype=torch.qint8)


def r2former_models() -> dict[str, PlaceModel | str]:
    """R2Former at the official shape, seeded weights, one place model per precision."""
    from r2former_ros.core.model.config import R2FormerConfig  # noqa: PLC0415
    from r2former_ros.core.places.r2former import (  # noqa: PLC0415
        R2FormerPlaceModel,
        seeded_r2former,
    )

    network, sha = seeded_r2former(R2FormerConfig(input_hw=(480, 640)))
    models: dict[str, PlaceModel | str] = {}
    for precision in ('fp32', 'bf16'):
        try:
            models[precision] = R2FormerPlaceModel(network, sha, None, torch.device('cpu'),
                                                   precision=precision)
        except ConfigError as err:
            models[precision] = f'refused: {err}'
    quantized = copy.deepcopy(network)
    quantize_leading_blocks(quantized.backbone.blocks)
    models['int8'] = R2FormerPlaceModel(quantized, sha, None, torch.device('cpu'))
    return models


def dinov2_models() -> dict[str, PlaceModel | str]:
    """Load the DINOv2 fallback at 224x224, one place model per precision (fresh weights)."""
    from r2former_ros.core.places.dinov2 import load_dinov2  # noqa: PLC0415

    models: dict[str, PlaceModel | str] = {}
    for precision in ('fp32', 'bf16'):
        try:
            models[precision] = load_dinov2(None, torch.device('cpu'), (224, 224), None,
                                            precision=precision)
        except ConfigError as err:
            models[precision] = f'refused: {err}'
    quantized = load_dinov2(None, torch.device('cpu'), (224, 224), None)
    quantize_leading_blocks(quantized.backbone.model.blocks)
    models['int8'] = quantized
    return models


def top_order(scores: np.ndarray) -> list[int]:
    """Candidate indices of the best TOP scores, best first (stable for ties)."""
    return [int(i) for i in np.argsort(-scores, kind='stable')[:TOP]]


def agreement(model: PlaceModel, reference: PlaceModel, queries: list[np.ndarray],
              candidates: list[np.ndarray]) -> dict[str, Any]:
    """Top-10 after reranking, in the model's precision against fp32, over several queries."""
    mine_db = model.encode_rgb(candidates).local_feats
    ref_db = reference.encode_rgb(candidates).local_feats
    same_order, overlap, same_top1, score_diff = [], [], [], []
    for image in queries:
        mine = model.rerank(model.encode_rgb([image]).local_feats[0], mine_db)
        ref = reference.rerank(reference.encode_rgb([image]).local_feats[0], ref_db)
        mine_top, ref_top = top_order(mine), top_order(ref)
        same_order.append(mine_top == ref_top)
        overlap.append(len(set(mine_top) & set(ref_top)) / TOP)
        same_top1.append(mine_top[0] == ref_top[0])
        score_diff.append(float(np.abs(mine - ref).max()))
    return {'queries': len(queries), 'candidates': len(candidates),
            'top10_same_order_fraction': float(np.mean(same_order)),
            'top10_overlap_mean': round(float(np.mean(overlap)), 3),
            'top1_same_fraction': float(np.mean(same_top1)),
            'max_abs_score_diff': float(max(score_diff))}


def corridor_recall(model: PlaceModel) -> dict[str, Any]:
    """Recall on the bundled corridor, as `r2former eval --dataset ... --rerank-top 20`."""
    from r2former_ros.core import evaluation  # noqa: PLC0415
    from r2former_ros.core.localize.settings import LocalizerConfig  # noqa: PLC0415

    settings = evaluation.EvalSettings(localizer=LocalizerConfig(rerank_top_n=20),
                                       calibrate=False)
    summary = evaluation.evaluate_dataset(model, CORRIDOR, 'vprbench', settings).summary
    return {'recall_global': summary['recall_global'],
            'recall_reranked': summary['recall_reranked']}


def peaks(threads: int) -> dict[str, Any]:
    """Peak GFLOP/s (GOPS for int8) of the cores used, per instruction kind this CPU has."""
    flags = cpu_flags()
    clock_ghz = _clock_ghz()
    present = {'fp32 AVX-512 FMA': 'avx512f' in flags,
               'bf16 AVX512_BF16 (vdpbf16ps)': 'avx512_bf16' in flags,
               'bf16 AMX-BF16': 'amx_bf16' in flags,
               'int8 AVX512-VNNI (vpdpbusd)': 'avx512_vnni' in flags,
               'int8 AMX-INT8': 'amx_int8' in flags}
    return {'clock_ghz': clock_ghz, 'cores_used': threads,
            'gflops': {kind: round(threads * clock_ghz * per_cycle, 1)
                       for kind, per_cycle in PEAK_PER_CYCLE.items() if present[kind]},
            'assumptions': '2 AVX-512 FMA units per core; AMX per Intel (1024 bf16 FLOP, 2048 '
                           'int8 OPS per cycle and core); clock from /proc/cpuinfo (nominal, '
                           'no turbo); multiply-add = 2 operations'}


def _clock_ghz() -> float:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
        if line.startswith('cpu MHz'):
            return round(float(line.split(':')[1]) / 1000, 2)
    return float('nan')


def roofline(flops: int, timing: dict[str, Any], peak: float) -> dict[str, Any]:
    achieved = flops / (timing['median_ms'] / 1000) / 1e9
    return {'gflop': round(flops / 1e9, 2), 'achieved_gflops': round(achieved, 1),
            'fraction_of_peak': round(achieved / peak, 3)}


def bench_model(name: str, models: dict[str, PlaceModel | str], queries: list[np.ndarray],
                candidates: list[np.ndarray], args: argparse.Namespace,
                peak: dict[str, Any]) -> dict[str, Any]:
    """Time, agreement and roofline of one model shape at every precision."""
    fp32 = models['fp32']
    assert isinstance(fp32, PlaceModel)
    image = queries[0]
    batch = preprocess([image], fp32.input_hw, fp32.mean, fp32.std, fp32.device)
    query_local = fp32.encode_rgb([image]).local_feats[0]
    db_local = fp32.encode_rgb(candidates).local_feats
    work = {'extract': counted_flops(lambda: fp32.encode_batch(batch)),
            'rerank': counted_flops(lambda: fp32.rerank(query_local, db_local))}
    unit_peak = {'fp32': peak['gflops']['fp32 AVX-512 FMA'],
                 'bf16': max((v for k, v in peak['gflops'].items() if k.startswith('bf16')),
                             default=float('nan')),
                 'int8': max((v for k, v in peak['gflops'].items() if k.startswith('int8')),
                             default=float('nan'))}
    out: dict[str, Any] = {'work_gflop': {k: round(v / 1e9, 2) for k, v in work.items()}}
    for precision, model in models.items():
        if isinstance(model, str):
            out[precision] = model
            continue
        local = model.encode_rgb([image]).local_feats[0]
        db = model.encode_rgb(candidates).local_feats
        extract = median_ms(lambda m=model: m.encode_rgb([image]), args.repeats)
        rerank = median_ms(lambda m=model, q=local, d=db: m.rerank(q, d), args.repeats)
        row: dict[str, Any] = {'extract': extract, f'rerank_{len(candidates)}': rerank}
        if precision != 'fp32':
            base = out['fp32']
            row['extract_speedup_vs_fp32'] = round(
                base['extract']['median_ms'] / extract['median_ms'], 2)
            row['rerank_speedup_vs_fp32'] = round(
                base[f'rerank_{len(candidates)}']['median_ms'] / rerank['median_ms'], 2)
            row['agreement_with_fp32'] = agreement(model, fp32, queries[:args.queries],
                                                   candidates)
        row['roofline'] = {
            'extract': {**roofline(work['extract'], extract, unit_peak['fp32']),
                        f'fraction_of_{precision}_unit_peak': round(
                            work['extract'] / (extract['median_ms'] / 1000) / 1e9
                            / unit_peak[precision], 3)},
            'rerank': roofline(work['rerank'], rerank, unit_peak['fp32'])}
        if name.startswith('dinov2'):
            row['corridor'] = corridor_recall(model)
        out[precision] = row
        print(f'{name} {precision}: extract {extract["median_ms"]} ms, rerank '
              f'{rerank["median_ms"]} ms', file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=0,
                        help="torch threads (default 0: the tools' default rule)")
    parser.add_argument('--repeats', type=int, default=5, help='timed repeats (>= 5)')
    parser.add_argument('--candidates', type=int, default=20, help='rerank candidates')
    parser.add_argument('--queries', type=int, default=5, help='queries for the top-10 check')
    parser.add_argument('--json', type=Path, default=ROOT / 'bench' / 'cpu_precision.json')
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error('--repeats must be at least 5')
    threads = apply_threads(args.threads)
    started, load_start = time.time(), load_average()
    queries, refs = corridor_images()
    candidates = refs[:args.candidates]
    peak = peaks(threads)
    results: dict[str, Any] = {
        'r2former@480x640 (seeded weights)': bench_model(
            'r2former', r2former_models(), queries, candidates, args, peak)}
    try:
        dinov2 = dinov2_models()
    except Exception as err:  # noqa: BLE001 - the fallback's weights are not cached
        results['dinov2-s14@224x224'] = f'skipped: {err}'
    else:
        results['dinov2-s14@224x224'] = bench_model('dinov2', dinov2, queries, candidates, args,
                                                     peak)
    emit({
        'what': 'CPU fp32 vs opt-in bf16 / int8: time, ranking agreement with fp32, roofline',
        'precisions': {'bf16': "the tools' opt-in: autocast bf16 for extraction blocks 0-10 "
                               '(last block and token selection fp32); reranking on the CPU '
                               'stays fp32',
                       'int8': 'measured only, not a tool setting: dynamic int8 linear layers '
                               '(torch.ao.quantization.quantize_dynamic) in extraction blocks '
                               '0-10; reranking fp32'},
        'caveat': 'R2Former has seeded random weights here: its rerank scores crowd into a '
                  'narrow band, so its top-10 agreement understates what trained weights keep; '
                  'the DINOv2 rows use the real pretrained weights',
        'threads': threads, 'default_threads_rule_here': default_threads({}),
        'cpu_bf16_native': cpu_has_bf16(),
        'cpu_flags': sorted(f for f in cpu_flags() if f.startswith(('avx512', 'amx', 'avx_vnni'))),
        'peak': peak,
        'load_average_start': load_start, 'load_average_end': load_average(),
        'seconds': round(time.time() - started, 1),
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, no GPU',
        'torch': torch.__version__,
        'results': results,
    }, args.json)


if __name__ == '__main__':
    main()
