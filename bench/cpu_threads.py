"""
Per-frame extraction time against torch CPU threads and busy neighbour processes, printed as JSON.

For each OpenMP wait policy (torch's default: workers spin a while at barriers; PASSIVE: they
sleep) one worker process per model loads the model once, then for 0, 1 and 2 busy neighbours
(`python -c 'while True: pass'` processes, started before and killed after each neighbour count)
and for 1..N threads times `encode_rgb` on one real corridor image: the median of --frames frames
after --warmup frames. Models: the DINOv2 fallback at 224x224 (cached weights, `r2former weights
fetch dinov2-s14`) and R2Former at its official 480x640 shape (seeded random weights: the time
does not depend on the values).

    .venv/bin/python bench/cpu_threads.py    # writes bench/cpu_threads.json (~2 min on 2 cores)

Timings depend on everything else the CPU runs: each cell records the 1-minute load average
before and after it; run it on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import emit, load_average  # noqa: E402 - the bench folder is not a package

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / 'r2former_ros' / 'data' / 'demo' / 'corridor' / 'query' / '0000000.jpg'
MODELS = ('dinov2-s14@224x224', 'r2former@480x640')
# libgomp's documented behaviour when neither variable is set; PASSIVE is what our entry points set
POLICIES = {'spin (torch default)': {}, 'passive': {'OMP_WAIT_POLICY': 'PASSIVE'}}
BUSY_LOOP = 'while True: pass'
NEIGHBOUR_SETTLE_S = 1.0


def load_model(name: str) -> Any:
    """Load one of MODELS on the CPU (fp32, the fast path the tools use)."""
    import torch  # noqa: PLC0415 - only in the worker, after its environment is set

    cpu = torch.device('cpu')
    if name.startswith('dinov2'):
        from r2former_ros.core.places.dinov2 import load_dinov2  # noqa: PLC0415

        return load_dinov2(None, cpu, (224, 224), None)
    from r2former_ros.core.model.config import R2FormerConfig  # noqa: PLC0415
    from r2former_ros.core.places.r2former import R2FormerPlaceModel, seeded_r2former  # noqa: PLC0415

    network, sha = seeded_r2former(R2FormerConfig(input_hw=(480, 640)))
    return R2FormerPlaceModel(network, sha, None, cpu)


def time_cell(model: Any, image: Any, threads: int, frames: int, warmup: int) -> dict[str, Any]:
    """Time `encode_rgb` of one image with `threads` torch threads."""
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)
    load_before = load_average()[0]
    for _ in range(warmup):
        model.encode_rgb([image])
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        model.encode_rgb([image])
        times.append((time.perf_counter() - start) * 1000)
    return {'threads': threads, 'median_ms': round(statistics.median(times), 1),
            'min_ms': round(min(times), 1), 'ms': [round(t, 1) for t in times],
            'load_1min_before': load_before, 'load_1min_after': load_average()[0]}


def run_worker(args: argparse.Namespace) -> None:
    """One model, one wait policy (set by the parent): every neighbours x threads cell."""
    from r2former_ros.core.io.images import read_image_file  # noqa: PLC0415

    model = load_model(args.worker)
    image = read_image_file(IMAGE)
    cells = []
    for neighbours in args.neighbours:
        busy = [subprocess.Popen([sys.executable, '-c', BUSY_LOOP]) for _ in range(neighbours)]
        try:
            time.sleep(NEIGHBOUR_SETTLE_S if busy else 0)
            for threads in args.threads:
                cell = time_cell(model, image, threads, args.frames, args.warmup)
                cells.append({'neighbours': neighbours, **cell})
        finally:
            for process in busy:
                process.kill()
                process.wait()
    print(json.dumps(cells))


def worker_environment(policy: dict[str, str]) -> dict[str, str]:
    """Return the parent's environment without thread or wait settings, plus the policy's."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT',
                        'KMP_BLOCKTIME')}
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    return {**env, **policy}


def summarise(cells: list[dict[str, Any]], default: int) -> dict[str, Any]:
    """Compare the default's median with the best setting and the idle best, per neighbours."""
    idle_best = min(c['median_ms'] for c in cells if c['neighbours'] == 0)
    summary = {}
    for neighbours in sorted({c['neighbours'] for c in cells}):
        row = [c for c in cells if c['neighbours'] == neighbours]
        best = min(row, key=lambda c: c['median_ms'])
        chosen = next((c for c in row if c['threads'] == default), None)
        summary[f'{neighbours}_busy'] = {
            'best_threads': best['threads'], 'best_ms': best['median_ms'],
            'default_ms': chosen['median_ms'] if chosen else None,
            'default_over_best': round(chosen['median_ms'] / best['median_ms'], 2)
            if chosen else None,
            'default_over_idle_best': round(chosen['median_ms'] / idle_best, 2)
            if chosen else None}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=lambda s: [int(v) for v in s.split(',')],
                        default=list(range(1, (os.cpu_count() or 1) + 1)),
                        help='thread counts, comma separated (default 1..cores)')
    parser.add_argument('--neighbours', type=lambda s: [int(v) for v in s.split(',')],
                        default=[0, 1, 2], help='busy neighbour counts (default 0,1,2)')
    parser.add_argument('--frames', type=int, default=7, help='timed frames per cell (>= 5)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed frames first')
    parser.add_argument('--models', type=lambda s: s.split(','), default=list(MODELS))
    parser.add_argument('--json', type=Path, default=ROOT / 'bench' / 'cpu_threads.json')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames < 5:
        parser.error('--frames must be at least 5 (the median of >= 5 frames is reported)')
    if args.worker:
        run_worker(args)
        return

    from r2former_ros.core.threads import default_threads  # noqa: PLC0415

    default = default_threads({})  # what 0 means here when $OMP_NUM_THREADS is not set
    started = time.time()
    load_start = load_average()
    results = []
    for policy, env in POLICIES.items():
        for model in args.models:
            command = [sys.executable, __file__, '--worker', model,
                       '--threads', ','.join(map(str, args.threads)),
                       '--neighbours', ','.join(map(str, args.neighbours)),
                       '--frames', str(args.frames), '--warmup', str(args.warmup)]
            done = subprocess.run(command, env=worker_environment(env), check=True,
                                  capture_output=True, text=True)
            cells = json.loads(done.stdout.strip().splitlines()[-1])
            results.append({'model': model, 'wait_policy': policy, 'cells': cells,
                            'default_threads': default,
                            'summary': summarise(cells, default)})
    emit({
        'what': 'encode_rgb of one corridor image (120x160 JPEG), per frame, CPU fp32',
        'image': str(IMAGE.relative_to(ROOT)),
        'frames_per_cell': args.frames, 'warmup_frames': args.warmup,
        'default_threads_here': default,
        'default_rule': 'threads 0: $OMP_NUM_THREADS if set, else half the usable cores (>= 1); '
                        'OMP_WAIT_POLICY=PASSIVE unless set',
        'busy_neighbour': f"python -c '{BUSY_LOOP}'",
        'load_average_start': load_start, 'load_average_end': load_average(),
        'seconds': round(time.time() - started, 1),
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, no GPU',
        'results': results,
    }, args.json)


if __name__ == '__main__':
    main()
