"""
Cost of one sequence-filter frame at 1k and 100k places (CPU), printed as JSON.

Each run goes once without odometry (the filter's velocity estimate predicts the motion once it
has one) and once with an odometry distance every frame. The "decision step" runs time the whole
per-frame decision the localizer makes (`Decider.decide`: single-frame confidence, filter update,
filtered confidence), which the node and the tools report as their `filter` stage.

The map is a synthetic street grid (places every 5 m along streets 100 m apart); a drive runs
along it at 10 m/s, 2 frames per second, and every frame brings K=100 ranked candidates (the true
place and its neighbours on top, the rest random). The filter's motion bound is 20 m/s. The
"ambiguous" runs give every candidate the same score, so the belief stays spread over the most
places the filter keeps (max_active): the worst case per frame.

    .venv/bin/python bench/sequence_filter.py > bench/sequence_filter.json
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

from r2former_ros.core.localize.calibration_store import AppliedCalibration
from r2former_ros.core.localize.confidence import ConfidenceModel
from r2former_ros.core.localize.decision import Decider
from r2former_ros.core.localize.sequence_filter import (
    FilterConfig,
    ObservationModel,
    SequenceFilter,
)
from r2former_ros.core.localize.settings import LocalizerConfig
from r2former_ros.core.types import Ranking

SPACING_M = 5.0
BLOCK_M = 100.0
TOP_K = 100
FRAMES = 400
FPS = 2.0
SPEED_MPS = 10.0


def street_grid(num_places: int) -> tuple[np.ndarray, np.ndarray]:
    """Places every SPACING_M along east-west streets BLOCK_M apart, filling a square."""
    per_street = max(2, int(np.sqrt(num_places * BLOCK_M / SPACING_M)))
    index = np.arange(num_places)
    east = (index % per_street) * SPACING_M
    north = (index // per_street) * BLOCK_M
    return east.astype(float), north.astype(float)


OBSERVATION = ObservationModel(weight_score=12.0, weight_gap=10.0, bias=-7.0, floor=0.05,
                               fitted=True)


def decider_for(east: np.ndarray, north: np.ndarray) -> Decider:
    """Build the localizer's decision with the filter on (uncalibrated single-frame confidence)."""
    config = LocalizerConfig(filter='hmm', max_speed_mps=20.0, confidence_threshold=0.5)
    applied = AppliedCalibration(ConfidenceModel(threshold_m=config.threshold_m), None,
                                 OBSERVATION, False)
    return Decider(east, north, config, applied)


def run(num_places: int, ambiguous: bool = False, seed: int = 0, odometry: bool = False,
        whole_step: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    east, north = street_grid(num_places)
    filt = SequenceFilter(east, north, FilterConfig(max_speed_mps=20.0), OBSERVATION)
    decider = decider_for(east, north) if whole_step else None
    step = int(round(SPEED_MPS / FPS / SPACING_M))
    start = num_places // 3
    frames = []
    for t in range(FRAMES):
        truth = start + t * step
        near = truth + np.arange(-2, 3)
        far = rng.choice(num_places, TOP_K - near.size, replace=False)
        ids = np.r_[near, far]
        scores = np.r_[[0.75, 0.8, 0.85, 0.8, 0.75], 0.3 + 0.05 * rng.random(far.size)]
        if ambiguous:  # every candidate looks alike: the belief stays spread (worst case)
            scores = 0.6 + 0.01 * rng.random(ids.size)
        order = np.argsort(-scores)
        frames.append((ids[order], scores[order], truth))
    times, actives, edges, right = [], [], [], []
    for t, (ids, scores, truth) in enumerate(frames):
        odom_distance_m = SPEED_MPS / FPS if odometry and t else None
        if decider is not None:
            ranking = Ranking(ids, scores.astype(np.float32), scores.astype(np.float32))
            begin = time.perf_counter()
            decision = decider.decide(ranking, stamp_s=t / FPS, odom_distance_m=odom_distance_m)
            times.append((time.perf_counter() - begin) * 1e3)
            assert decision.estimate is not None
            est = decision.estimate
        else:
            begin = time.perf_counter()
            est = filt.update(ids, scores, stamp_s=t / FPS, odom_distance_m=odom_distance_m)
            times.append((time.perf_counter() - begin) * 1e3)
        actives.append(est.num_active)
        edges.append(est.num_edges)
        right.append(abs(est.place_id - truth) <= 2)
    ms = np.asarray(times[10:])  # skip the first frames (caches, start-up)
    return {'timed': 'decision step' if whole_step else 'filter update',
            'num_places': num_places, 'scores': 'ambiguous (flat)' if ambiguous else 'normal',
            'odometry': odometry, 'motion_last_frame': est.motion,
            'top_k': TOP_K, 'frames': FRAMES,
            'ms_per_frame_mean': float(ms.mean()), 'ms_per_frame_median': float(np.median(ms)),
            'ms_per_frame_p99': float(np.percentile(ms, 99)),
            'active_places_max': int(max(actives)), 'edges_per_frame_max': int(max(edges)),
            'filtered_top1_right': float(np.mean(right))}


def main() -> None:
    out = {'what': 'sequence filter, one frame (predict + observe + prune + estimate); decision '
                   'step: the whole Decider.decide (confidence + filter)',
           'machine': f'{platform.machine()} {platform.processor() or ""}'.strip(),
           'python': platform.python_version(), 'numpy': np.__version__,
           'note': 'shared 2-core CPU, no GPU involved (the filter is numpy on the CPU)',
           'load_average_1min': os.getloadavg()[0],
           'results': [run(n, ambiguous, odometry=odometry) for odometry in (False, True)
                       for ambiguous in (False, True) for n in (1_000, 100_000)]
           + [run(100_000, ambiguous, odometry=odometry, whole_step=True)
              for odometry in (False, True) for ambiguous in (False, True)]}
    print(json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
