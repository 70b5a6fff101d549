"""
``build_map --ray`` on a local Ray (2 CPUs) against the plain build, on the same bags.

    .venv/bin/python bench/ray_vs_plain.py [--images-per-bag 150] [--json OUT]

Two 640x480 JPEG bags (bench/decode_throughput.py's frames), every image a place, a small
seeded R2Former (64x96 input, 12 local tokens) on the CPU. Prints JSON: whether the places are
identical, the largest descriptor differences, whether the manifests agree apart from times and
checksums, and the wall times (Ray start-up separately). Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import tempfile
import time
from typing import Any

import numpy as np
import ray

from r2former_ros.core import mapping
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.mapping.build import build_map
from r2former_ros.core.mapping.ray_build import build_map_ray

sys.path.insert(0, str(Path(__file__).parent))
from bench_report import emit, load_average  # noqa: E402
import decode_throughput as frames_and_bags  # noqa: E402


def options(out: Path, bags: list[Path]) -> mapping.BuildOptions:
    return mapping.BuildOptions(
        out=out, bags=bags, image_topic=frames_and_bags.CAMERA, gps_topic=frames_and_bags.GPS,
        all_frames=True, calibrate=False, progress=False, batch_size=16, device='cpu',
        input_hw=(64, 96), num_local=12, index_type='exact')


def manifest_without_times(path: Path) -> dict[str, Any]:
    manifest = json.loads((path / 'manifest.json').read_text())
    manifest.pop('created')
    manifest.pop('modified')
    # Checksums of float arrays follow the last bit; the sizes must agree.
    manifest['files'] = {name: entry['bytes'] for name, entry in manifest['files'].items()}
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--images-per-bag', type=int, default=150)
    parser.add_argument('--json', type=Path)
    args = parser.parse_args()
    result: dict[str, Any] = {'bags': 2, 'images_per_bag': args.images_per_bag,
                              'frame': '640x480 JPEG', 'model': 'seeded R2Former 64x96, 12 local',
                              'loadavg_before': load_average()}
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        frames = frames_and_bags.camera_frames(12)
        bags = []
        for number in range(2):
            bag = tmp / f'drive{number}'
            frames_and_bags.write_bag(bag, frames[number:] + frames[:number],
                                      args.images_per_bag, True)
            bags.append(bag)
        start = time.perf_counter()
        plain = build_map(options(tmp / 'plain', bags))
        result['plain_wall_s'] = time.perf_counter() - start
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False)
        result['ray_init_s'] = time.perf_counter() - start
        try:
            start = time.perf_counter()
            distributed = build_map_ray(options(tmp / 'ray', bags))
            result['ray_build_wall_s'] = time.perf_counter() - start
        finally:
            ray.shutdown()
        a, b = MapDatabase.open(plain.path), MapDatabase.open(distributed.path)
        every = range(a.num_places)
        result.update({
            'places_plain': a.num_places, 'places_ray': b.num_places,
            'places_identical': bool(np.array_equal(a.places, b.places)),
            'max_abs_global_diff': float(np.abs(np.asarray(a.global_desc)
                                                - np.asarray(b.global_desc)).max()),
            'token_index_identical': bool(np.array_equal(a.token_index(every),
                                                         b.token_index(every))),
            'max_abs_local_diff_int8_stored': float(np.abs(a.local_features(every)
                                                           - b.local_features(every)).max()),
            'manifest_equal_except_times_and_checksums':
                manifest_without_times(plain.path) == manifest_without_times(distributed.path),
        })
    result['loadavg_after'] = load_average()
    emit(result, args.json)


if __name__ == '__main__':
    main()
