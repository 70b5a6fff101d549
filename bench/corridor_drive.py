"""
The bundled corridor as a drive: calibrate on one half, evaluate on the other; kidnap; leaving.

Reference traverse = the map (60 places, 10 m apart on a synthetic straight track); query traverse
= the drive (1 m to the side, one frame per second). Runs the real commands (printed as they
run) with the DINOv2 fallback and writes bags, maps, every JSON and the plots into OUT (default
a fresh temporary directory), then prints one JSON summary and stores it as
bench/corridor_drive.json:

1. ``build_map`` from the reference bag (self-calibration at build time, the fallback);
2. ``r2former calibrate`` on the first half of the drive (queries 0-29);
3. ``r2former eval`` on the second half (queries 30-59), ``--filter none`` and ``--filter hmm``;
   and the whole drive (queries 0-59) with both, scored on queries 30-59 only: the robot kept
   driving, so the filter enters the second half with what the first half's images told it
   (never their GPS; the calibration did see those frames, the scored ones it did not);
4. a kidnap: queries 5-24, then the drive jumps to queries 45-59 (stamps keep running);
   frames until the published place is right again;
5. leaving the map: a map of references 0-39 only (calibrated on queries 0-29), and the whole
   drive 0-59 through it: queries 42-59 are farther than 25 m from every place; how many of
   them are published as matched.

    .venv/bin/python bench/corridor_drive.py [OUT]

The kidnap and leaving drives reuse frames of the calibration half (0-29): they measure recovery
and out-of-map behaviour, not accuracy on unseen frames.
"""

from __future__ import annotations

import json
from pathlib import Path
import sys
import tempfile
from typing import Any

from drive_tools import ROOT, VENV, ece_if_calibrated, frames_to_recover, run
import numpy as np

from r2former_ros.core.calibration.fitting import expected_calibration_error
from r2former_ros.core.io.traverse_bag import (
    GPS_TOPIC,
    IMAGE_TOPIC,
    QUERY_OFFSET_M,
    SPACING_M,
    bundled_corridor,
    write_traverse_bag,
)

DATA = bundled_corridor()
THRESHOLD_M = 25.0


def write_bag(path: Path, folder: str, indices: list[int], lateral_m: float) -> Path:
    """Images ``folder/{i:07d}.jpg`` for i in indices, frame k stamped START + k s, at i * 10 m."""
    files = [DATA / folder / f'{index:07d}.jpg' for index in indices]
    return write_traverse_bag(path, files, lateral_m, along=indices)


def eval_drive(out: Path, name: str, map_dir: Path, bag: Path, filt: str,
               log: list[dict[str, Any]], plots: bool = False) -> dict[str, Any]:
    result = out / f'eval_{name}_{filt}.json'
    command = [VENV / 'r2former', 'eval', '--map', map_dir, '--bag', bag, '--image-topic',
               IMAGE_TOPIC, '--gps-topic', GPS_TOPIC, '--threshold-m', THRESHOLD_M,
               '--filter', filt, '--json', result]
    if plots:
        command += ['--plots', out / f'plots_{name}_{filt}']
    run(command, log)
    return json.loads(result.read_text(encoding='utf-8'))


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    recall = summary['recall_filtered'] or summary['recall_reranked']
    confidence = np.asarray(summary['track']['confidence'], dtype=np.float64)
    right = np.asarray(summary['track']['right'], dtype=bool)
    return {'filter': summary['filter'], 'R@1': recall['1'], 'ece': summary['ece'],
            'ece_if_perfectly_calibrated': ece_if_calibrated(confidence),
            'stricter': at_threshold(confidence, right, STRICT_THRESHOLD),
            'matched_precision': summary['matched_precision'],
            'matched_fraction': summary['matched_fraction'], 'calibrated': summary['calibrated'],
            'outside_map': summary['outside_map']}


STRICT_THRESHOLD = 0.9  # a stricter confidence_threshold than the default 0.5


def at_threshold(confidence: np.ndarray, right: np.ndarray, threshold: float) -> dict[str, Any]:
    """Share matched and precision of the matched when "matched" means confidence >= threshold."""
    matched = confidence >= threshold
    return {'threshold': threshold, 'matched_fraction': float(matched.mean()),
            'matched_precision': float(right[matched].mean()) if matched.any() else None}


def scored_from(summary: dict[str, Any], start: int) -> dict[str, Any]:
    """Published-output metrics of frames ``start``.. of a drive, from the eval's track."""
    track = summary['track']
    confidence = np.asarray(track['confidence'][start:], dtype=np.float64)
    right = np.asarray(track['right'][start:], dtype=bool)
    in_map = np.asarray(track['in_map'][start:], dtype=bool)
    matched = confidence >= summary['confidence']['threshold']
    kept = matched & in_map
    return {'filter': summary['filter'], 'frames': f'{start}-{len(track["right"]) - 1}',
            'R@1': float(right[in_map].mean()),
            'ece': expected_calibration_error(confidence[in_map], right[in_map]),
            'ece_if_perfectly_calibrated': ece_if_calibrated(confidence[in_map]),
            'matched_precision': float(right[kept].mean()) if kept.any() else None,
            'matched_fraction': float(matched[in_map].mean()),
            'stricter': at_threshold(confidence[in_map], right[in_map], STRICT_THRESHOLD),
            'calibrated': summary['calibrated']}


def recovery(summary: dict[str, Any]) -> int | None:
    """Frames after the kidnap (after frame 20) until the published place is right again."""
    return frames_to_recover(summary, 20, SPACING_M, THRESHOLD_M)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(tempfile.mkdtemp(prefix='corridor_drive-'))
    bags = out / 'bags'
    bags.mkdir(parents=True, exist_ok=True)
    log: list[dict[str, Any]] = []
    first, second = list(range(30)), list(range(30, 60))
    kidnap = list(range(5, 25)) + list(range(45, 60))
    write_bag(bags / 'map_ref', 'ref', list(range(60)), 0.0)
    write_bag(bags / 'map_ref_0_39', 'ref', list(range(40)), 0.0)
    write_bag(bags / 'drive_first_half', 'query', first, QUERY_OFFSET_M)
    write_bag(bags / 'drive_second_half', 'query', second, QUERY_OFFSET_M)
    write_bag(bags / 'drive_kidnap', 'query', kidnap, QUERY_OFFSET_M)
    write_bag(bags / 'drive_full', 'query', list(range(60)), QUERY_OFFSET_M)
    maps = {}
    for name, bag in (('map60', 'map_ref'), ('map40', 'map_ref_0_39')):
        maps[name] = out / name
        run([VENV / 'build_map', '--bag', bags / bag, '--image-topic', IMAGE_TOPIC,
             '--gps-topic', GPS_TOPIC, '--all-frames', '--backbone', 'dinov2-s14',
             '--out', maps[name], '--overwrite', '--quiet'], log)
    self_calibrated = eval_drive(out, 'second_half_selfcal', maps['map60'],
                                 bags / 'drive_second_half', 'none', log)
    for name in maps:
        run([VENV / 'r2former', 'calibrate', maps[name], '--bag', bags / 'drive_first_half',
             '--image-topic', IMAGE_TOPIC, '--gps-topic', GPS_TOPIC, '--threshold-m',
             THRESHOLD_M, '--filter', 'hmm', '--json', out / f'calibrate_{name}.json'], log)
    results = {filt: eval_drive(out, 'second_half', maps['map60'], bags / 'drive_second_half',
                                filt, log, plots=True) for filt in ('none', 'hmm')}
    continuing = {filt: eval_drive(out, 'full_drive', maps['map60'], bags / 'drive_full', filt,
                                   log) for filt in ('none', 'hmm')}
    kidnapped = {filt: eval_drive(out, 'kidnap', maps['map60'], bags / 'drive_kidnap', filt, log,
                                  plots=filt == 'hmm') for filt in ('none', 'hmm')}
    leaving = {filt: eval_drive(out, 'leaving', maps['map40'], bags / 'drive_full', filt, log,
                                plots=filt == 'hmm') for filt in ('none', 'hmm')}
    calibration = json.loads((out / 'calibrate_map60.json').read_text(encoding='utf-8'))
    report = {
        'what': 'corridor (VPR-Bench, 60 + 60 real images, synthetic GPS 10 m/frame), DINOv2 '
                'fallback on CPU, threshold 25 m, rerank top 100 (MNN)',
        'second_half': {
            'self_calibrated_map_single_frame': brief(self_calibrated),
            'single_frame': brief(results['none']), 'filtered': brief(results['hmm'])},
        'second_half_of_the_whole_drive': {
            'single_frame': scored_from(continuing['none'], 30),
            'filtered': scored_from(continuing['hmm'], 30)},
        'calibration_first_half': {key: calibration[key] for key in
                                   ('num_frames', 'single', 'filtered', 'observation',
                                    'observation_fit')},
        'kidnap': {'jump_after_frame': 20, 'from_place': 24, 'to_place': 45,
                   'frames_until_right_filtered': recovery(kidnapped['hmm']),
                   'frames_until_right_single': recovery(kidnapped['none']),
                   'filtered': brief(kidnapped['hmm']), 'single_frame': brief(kidnapped['none'])},
        'leaving_the_map': {'map_places': 40, 'drive_frames': 60,
                            'filtered': brief(leaving['hmm']),
                            'single_frame': brief(leaving['none'])},
        'commands': log,
    }
    text = json.dumps(report, indent=2) + '\n'
    (out / 'report.json').write_text(text, encoding='utf-8')
    (ROOT / 'bench' / 'corridor_drive.json').write_text(text, encoding='utf-8')
    print(json.dumps(report, indent=2))


if __name__ == '__main__':
    main()
