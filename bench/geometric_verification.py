"""
Experiment (issue 20, item 3): can geometric verification tell a right top-1 from a wrong one.

Not part of the product: it measures whether RANSAC inliers of the reranker's own local
correspondences would be worth adding to the confidence, so the decision can be made on numbers.

For each drive of ``bench/trust_drives.py`` (the bundled corridor; ``--drive DIR`` adds a drive
folder), a map is built with ``build_map`` (DINOv2 fallback) and every drive frame goes through
the public per-frame step, single frame (``Localizer.localize_image`` with ``filter='none'``).
For the top ``--top-k`` candidates of its ranking:

- mutual-nearest-neighbour pairs of the local descriptors (query rows from the step, map rows
  from ``MapDatabase.local_features``), at their patch centres (x, y are patch centres divided
  by max(H, W); scaled back to model-input pixels here);
- RANSAC inliers of a fundamental matrix (``cv2.findFundamentalMat``, 7 px = half a patch, and
  3 px) and of a homography (``cv2.findHomography``, 14 px = one patch).

A candidate is right when its place lies within ``threshold_m`` of the frame's true position
(frames past the map's end have no right candidate). Reported per drive, on the calibration
part (the first ``calibration_frames`` frames) and on the rest (the test part):

- ROC AUC separating right from wrong top-1 candidates of: the published single-frame
  confidence, the rerank score, the MNN count, the F and H inlier counts, the F inlier ratio
  (inliers / MNN pairs); and of a logistic
  combination (confidence + log(1 + F inliers)) fitted on the calibration part only;
- R@1 when the top-K are reordered by inliers instead of by the
  reranker;
- the cost per candidate (ms: MNN + both RANSACs), with the machine's load.

    .venv/bin/python bench/geometric_verification.py [--drive DIR] [--top-k 5] [--out OUT]

Prints one JSON summary and writes it to bench/geometric_verification.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import tempfile
import time
from typing import Any

import cv2
from drive_tools import ROOT, code_state
import numpy as np
from numpy.typing import NDArray
from trust_drives import Drive, DriveBench, corridor_drive, folder_drive

from r2former_ros.core.calibration.fitting import fit_logistic, predict_logistic
from r2former_ros.core.evaluation.metrics import roc_auc
from r2former_ros.core.io.images import read_image_file
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.localize.settings import LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.places.factory import load_model_for_map

F_THRESHOLD_PX = 7.0  # half a 14 px patch: the patch centres are quantised to the patch grid
F_STRICT_PX = 3.0  # a stricter epipolar distance (quantisation makes it drop some right pairs)
H_THRESHOLD_PX = 14.0  # one patch
RANSAC_CONFIDENCE = 0.999
RANSAC_ITERATIONS = 2000
MIN_PAIRS = 8  # the fundamental matrix needs 8 points


def mutual_pairs(query_local: NDArray[np.float32], map_local: NDArray[np.float32]
                 ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(M, 2) x, y of the mutual-nearest descriptor pairs in the query and the map image."""
    query = query_local[:, 3:] / (np.linalg.norm(query_local[:, 3:], axis=1, keepdims=True)
                                  + 1e-12)
    mapped = map_local[:, 3:] / (np.linalg.norm(map_local[:, 3:], axis=1, keepdims=True) + 1e-12)
    similarity = query @ mapped.T
    best_map = similarity.argmax(axis=1)
    best_query = similarity.argmax(axis=0)
    mutual = np.flatnonzero(best_query[best_map] == np.arange(best_map.size))
    return query_local[mutual, :2], map_local[best_map[mutual], :2]


def inliers(query_xy: NDArray[np.float32], map_xy: NDArray[np.float32],
            scale_px: float) -> tuple[int, int, int]:
    """RANSAC inliers of a fundamental matrix (7 px, 3 px) and of a homography."""
    if query_xy.shape[0] < MIN_PAIRS:
        return 0, 0, 0
    a = (query_xy * scale_px).astype(np.float64)
    b = (map_xy * scale_px).astype(np.float64)
    counts = []
    for threshold in (F_THRESHOLD_PX, F_STRICT_PX):
        _, mask = cv2.findFundamentalMat(a, b, cv2.FM_RANSAC, threshold, RANSAC_CONFIDENCE,
                                         RANSAC_ITERATIONS)
        counts.append(int(mask.sum()) if mask is not None else 0)
    _, h_mask = cv2.findHomography(a, b, cv2.RANSAC, H_THRESHOLD_PX,
                                   maxIters=RANSAC_ITERATIONS, confidence=RANSAC_CONFIDENCE)
    return counts[0], counts[1], int(h_mask.sum()) if h_mask is not None else 0


def verify_drive(drive: Drive, out: Path, top_k: int) -> dict[str, Any]:
    """Every frame of the drive through the step; the top-K candidates verified."""
    log: list[dict[str, Any]] = []
    map_dir = DriveBench(drive, out, log).build_map('map', drive.map_frames)
    database = MapDatabase.open(map_dir)
    model = load_model_for_map(database.manifest['model'], device='cpu')
    localizer = Localizer(model, database, LocalizerConfig(filter='none',
                                                           threshold_m=drive.threshold_m))
    scale_px = float(max(model.input_hw))
    east = np.asarray(database.places['east'], dtype=np.float64)
    place_along = east - east[0]  # place 0 is map frame 0, at 0 m on the synthetic track
    frames: list[dict[str, Any]] = []
    cost_ms: list[float] = []
    for index, path in enumerate(drive.drive_images):
        result, query_local = localizer.localize_image(read_image_file(path), token_pairs=False)
        ranking = result.ranking
        assert ranking is not None and ranking.rerank_scores is not None
        ids = ranking.ids[:top_k]
        candidates = []
        for rank, place in enumerate(ids.tolist()):
            start = time.perf_counter()
            map_local = database.local_features([place])[0]
            query_xy, map_xy = mutual_pairs(query_local, map_local)
            f_inliers, f_strict, h_inliers = inliers(query_xy, map_xy, scale_px)
            cost_ms.append((time.perf_counter() - start) * 1e3)
            right = abs(place_along[place] - index * drive.spacing_m) <= drive.threshold_m
            candidates.append({'place': place, 'right': bool(right),
                               'rerank': float(ranking.rerank_scores[rank]),
                               'mnn': int(query_xy.shape[0]), 'f_inliers': f_inliers,
                               'f_inliers_3px': f_strict, 'h_inliers': h_inliers})
        decision = result.decision
        frames.append({'frame': index,
                       'calibration_part': index < drive.calibration_frames,
                       'in_map': bool(np.any(np.abs(place_along - index * drive.spacing_m)
                                             <= drive.threshold_m)),
                       'confidence': float(decision.single_confidence if decision is not None
                                           else result.confidence),
                       'candidates': candidates})
    load = os.getloadavg()
    return {'drive': drive.name, 'top_k': top_k, 'frames': len(frames),
            'calibration_frames': f'0-{drive.calibration_frames - 1}',
            'test_frames': f'{drive.calibration_frames}-{len(frames) - 1}',
            'map_frames': f'0-{drive.map_frames - 1}',
            'cost_per_candidate_ms': {'median': float(np.median(cost_ms)),
                                      'p90': float(np.percentile(cost_ms, 90)),
                                      'load_1min': round(load[0], 2)},
            **separation(frames)}


def top1_features(frames: list[dict[str, Any]]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """(N, 6) confidence, rerank, mnn, F, H, F 3 px inliers of each top-1; its rightness."""
    rows = [[f['confidence'], f['candidates'][0]['rerank'], f['candidates'][0]['mnn'],
             f['candidates'][0]['f_inliers'], f['candidates'][0]['h_inliers'],
             f['candidates'][0]['f_inliers_3px']] for f in frames]
    right = [f['candidates'][0]['right'] for f in frames]
    return np.asarray(rows, dtype=np.float64), np.asarray(right, dtype=bool)


def combined(features: NDArray[np.float64]) -> NDArray[np.float64]:
    """Make the combination's inputs: logit of the confidence and log(1 + F inliers)."""
    p = np.clip(features[:, 0], 1e-4, 1 - 1e-4)
    return np.column_stack([np.log(p / (1 - p)), np.log1p(features[:, 3])])


def auc(scores: NDArray[np.float64], right: NDArray[np.bool_]) -> float | None:
    value = roc_auc(scores, right)
    return None if value is None else round(float(value), 4)


def separation(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """AUCs on both parts, the combination fitted on the calibration part, reordered R@1."""
    calibration = [f for f in frames if f['calibration_part']]
    test = [f for f in frames if not f['calibration_part']]
    fit_x, fit_y = top1_features(calibration)
    weights, bias = fit_logistic(combined(fit_x), fit_y)
    report: dict[str, Any] = {'combination': {'inputs': ['logit(confidence)',
                                                         'log(1 + F inliers)'],
                                              'weights': [round(float(w), 4) for w in weights],
                                              'bias': round(float(bias), 4),
                                              'fitted_on': 'calibration part'}}
    for name, part in (('calibration_part', calibration), ('test_part', test)):
        x, right = top1_features(part)
        in_map = np.asarray([f['in_map'] for f in part], dtype=bool)
        report[name] = {
            'frames': len(part), 'top1_right': int(right.sum()),
            'frames_past_the_map': int((~in_map).sum()),
            'auc_top1': {'confidence': auc(x[:, 0], right), 'rerank_score': auc(x[:, 1], right),
                         'mnn_pairs': auc(x[:, 2], right), 'f_inliers': auc(x[:, 3], right),
                         'h_inliers': auc(x[:, 4], right),
                         'f_inliers_3px': auc(x[:, 5], right),
                         'f_inlier_ratio': auc(x[:, 3] / np.maximum(x[:, 2], 1), right),
                         'confidence_plus_f_inliers': auc(
                             predict_logistic(weights, bias, combined(x)), right)},
            'median_f_inliers': {'right': median_of(x[right, 3]),
                                 'wrong': median_of(x[~right, 3])},
            'R@1_in_map': reordered_recall(part, in_map),
        }
    return report


def median_of(values: NDArray[np.float64]) -> float | None:
    return float(np.median(values)) if values.size else None


def reordered_recall(frames: list[dict[str, Any]], in_map: NDArray[np.bool_]) -> dict[str, Any]:
    """R@1 over in-map frames with the top-K ordered by the reranker, F inliers, H inliers."""
    picks: dict[str, list[bool]] = {'reranker': [], 'f_inliers': [], 'f_inliers_3px': [],
                                    'h_inliers': []}
    for frame in (f for f, inside in zip(frames, in_map, strict=True) if inside):
        candidates = frame['candidates']
        picks['reranker'].append(candidates[0]['right'])
        for key in ('f_inliers', 'f_inliers_3px', 'h_inliers'):
            # ties keep the reranker's order (argmax returns the first of equal counts)
            best = int(np.argmax([candidate[key] for candidate in candidates]))
            picks[key].append(candidates[best]['right'])
    return {key: (round(float(np.mean(v)), 4) if v else None) for key, v in picks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--drive', type=Path, help='second drive folder (see trust_drives.py)')
    parser.add_argument('--top-k', type=int, default=5, help='candidates verified per frame')
    parser.add_argument('--out', type=Path, help='where maps go (default: a temporary dir)')
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix='geometric_verification-'))
    drives = [corridor_drive()] + ([folder_drive(args.drive)] if args.drive else [])
    start = time.perf_counter()
    reports = []
    for index, drive in enumerate(drives):
        folder = out / f'drive_{index}'
        folder.mkdir(parents=True, exist_ok=True)
        reports.append(verify_drive(drive, folder, args.top_k))
    report = {'what': "geometric verification of the DINOv2 fallback's MNN correspondences "
                      '(experiment, not in the product), single-frame step on CPU',
              'thresholds_px': {'fundamental': F_THRESHOLD_PX, 'fundamental_strict': F_STRICT_PX,
                                'homography': H_THRESHOLD_PX},
              'machine': {'cpus': os.cpu_count(),
                          'seconds': round(time.perf_counter() - start, 1)},
              'code': code_state(), 'drives': reports}
    text = json.dumps(report, indent=2) + '\n'
    (ROOT / 'bench' / 'geometric_verification.json').write_text(text, encoding='utf-8')
    print(text)


if __name__ == '__main__':
    main()
