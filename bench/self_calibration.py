"""
Time the build-time self-calibration on a 5,000-place map (CPU), printed as JSON.

The map holds synthetic features of the official R2Former shape (256-d global, 500 local tokens
of 128 dims, int8 storage) along a 50 km route, and is queried with the official-size R2Former
(seeded random weights: the reranker's cost does not depend on the weights' values). Self-
calibration uses its default: at most 2,000 queries evenly spread, top-100 reranked.

    BENCH_QUERIES=40 .venv/bin/python bench/self_calibration.py > bench/self_calibration.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import platform
import tempfile
import time

import numpy as np
import torch

from r2former_ros.core.calibration.self_calibration import (
    SELF_CALIBRATION_MAX_QUERIES,
    calibrate_map,
)
from r2former_ros.core.features import ImageFeatures, patch_centre_xy
from r2former_ros.core.geo.coords import place_position
from r2former_ros.core.mapdb import MapWriter, PlaceRecord
from r2former_ros.core.model.config import R2FormerConfig
from r2former_ros.core.places.r2former import R2FormerPlaceModel, seeded_r2former

NUM_PLACES = int(os.environ.get('BENCH_PLACES', '5000'))
# Queries timed; 2,000 is the default, fewer give the per-query cost on a slow machine, and the
# total is then extrapolated (and labelled so).
QUERIES = int(os.environ.get('BENCH_QUERIES', str(SELF_CALIBRATION_MAX_QUERIES)))
SPACING_M = 10.0
ORIGIN = (48.0, 11.0, 500.0)
BATCH = 250


def synthetic_features(rng: np.random.Generator, start: int, count: int, walk: np.ndarray,
                       config: R2FormerConfig) -> ImageFeatures:
    """Route-like features: neighbouring places share most of their global descriptor."""
    global_desc = walk[start:start + count] + 0.3 * rng.standard_normal((count, walk.shape[1]))
    global_desc /= np.linalg.norm(global_desc, axis=1, keepdims=True)
    num_local, patch = config.num_local, config.patch_size
    patches = (config.input_hw[0] // patch) * (config.input_hw[1] // patch)
    desc = rng.standard_normal((count, num_local, 128)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=2, keepdims=True)
    token = np.stack([rng.choice(patches, num_local, replace=False) for _ in range(count)])
    xy = np.stack(patch_centre_xy(token, config.input_hw, patch), axis=-1)
    att = np.sort(rng.random((count, num_local)), axis=1)[:, ::-1, None]
    local = np.concatenate([xy, att / att[:, :1], desc], axis=2).astype(np.float32)
    return ImageFeatures(global_desc.astype(np.float32), local, token.astype(np.int64))


def main() -> None:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    config = R2FormerConfig()
    network, sha = seeded_r2former(config)
    model = R2FormerPlaceModel(network, sha, None, torch.device('cpu'), mode='fast')
    rng = np.random.default_rng(0)
    steps = rng.standard_normal((NUM_PLACES, 256)) * 0.15
    walk = np.cumsum(steps, axis=0) + rng.standard_normal(256)
    with tempfile.TemporaryDirectory(prefix='bench-selfcal-') as tmp:
        path = Path(tmp) / 'map'
        start = time.perf_counter()
        with MapWriter(path, model.identity(), local_format='int8',
                       origin={'lat': ORIGIN[0], 'lon': ORIGIN[1], 'alt': ORIGIN[2]},
                       sources=[{'kind': 'bench', 'name': 'synthetic'}]) as writer:
            for first in range(0, NUM_PLACES, BATCH):
                count = min(BATCH, NUM_PLACES - first)
                feats = synthetic_features(rng, first, count, walk, config)
                lat = ORIGIN[0] + (np.arange(first, first + count) * SPACING_M) / 111_000.0
                records = [PlaceRecord(i * 10**9, place_position(float(la), ORIGIN[1],
                                                                 ORIGIN[2], origin=ORIGIN),
                                       0, i) for i, la in zip(range(first, first + count), lat,
                                                              strict=True)]
                writer.add(feats, records)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        info = calibrate_map(path, model, threshold_m=25.0, max_queries=QUERIES, progress=True)
        calibrate_s = time.perf_counter() - start
    out = {'what': 'self-calibration at build time (map images as queries, top-100 reranked)',
           'num_places': NUM_PLACES, 'max_queries': SELF_CALIBRATION_MAX_QUERIES,
           'queries_used': info['num_queries'], 'rerank_top_n': info['rerank_top_n'],
           'model': 'R2Former official shape (480x640, 500 local tokens), seeded weights',
           'seconds': round(calibrate_s, 1),
           'ms_per_query': round(1e3 * calibrate_s / max(info['num_queries'], 1), 1),
           'seconds_for_default_2000_queries': (
               round(calibrate_s * min(NUM_PLACES, SELF_CALIBRATION_MAX_QUERIES)
                     / max(info['num_queries'], 1), 1)),
           'extrapolated': info['num_queries'] < min(NUM_PLACES, SELF_CALIBRATION_MAX_QUERIES),
           'load_average_1min': round(os.getloadavg()[0], 1),
           'map_write_seconds': round(build_s, 1),
           'machine': f'{platform.machine()}, {os.cpu_count()} CPU cores shared with other '
                      'jobs, no GPU',
           'torch': torch.__version__}
    print(json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
