"""
What the drive benches share: running the real CLI commands, and reading an eval's track.

Imported by ``bench/corridor_drive.py`` and ``bench/trust_drives.py`` (run from the repository
root as ``.venv/bin/python bench/NAME.py``, so this folder is on ``sys.path``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
import subprocess
import sys
import time
from typing import Any

import numpy as np

from r2former_ros.core.calibration.fitting import expected_calibration_error

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / '.venv' / 'bin'


class CommandFailed(RuntimeError):
    """A CLI command exited non-zero (its output is in the log entry)."""


def run(command: list[Any], log: list[dict[str, Any]]) -> None:
    """Run one CLI command (printed), log it, raise CommandFailed if it fails."""
    shown = ' '.join(str(part) for part in command).replace(str(ROOT) + '/', '')
    print(f'$ {shown}', file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run([str(c) for c in command], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    entry = {'command': shown, 'seconds': round(time.perf_counter() - start, 1),
             'stdout_tail': done.stdout.strip().splitlines()[-8:]}
    log.append(entry)
    if done.returncode:
        entry['stderr_tail'] = done.stderr.strip().splitlines()[-8:]
        print(done.stdout, done.stderr, file=sys.stderr)
        raise CommandFailed(f'failed ({done.returncode}): {shown}')


@functools.cache
def cli_has_flag(verb: str, flag: str) -> bool:
    """Whether ``r2former VERB --help`` lists FLAG (benches run today and after a flag lands)."""
    done = subprocess.run([str(VENV / 'r2former'), verb, '--help'], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    return flag in done.stdout


def code_state() -> dict[str, Any]:
    """Say which commit is measured, and which package files changed on top of it."""
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                          text=True, check=False).stdout.strip()
    changed = subprocess.run(['git', 'status', '--porcelain', '--', 'r2former_ros'], cwd=ROOT,
                             capture_output=True, text=True, check=False).stdout.splitlines()
    return {'commit': head, 'uncommitted_package_files': [line[3:] for line in changed]}


def read_json(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding='utf-8'))
    return loaded


def ece_if_calibrated(confidence: np.ndarray) -> dict[str, float]:
    """
    ECE a perfectly calibrated confidence with these same values would show on so few frames.

    Outcomes are drawn as Bernoulli(confidence) (20,000 seeded draws): the ECE of 30 frames is
    mostly binning noise, and this is its size.
    """
    rng = np.random.default_rng(0)
    draws = [expected_calibration_error(confidence, rng.random(confidence.size) < confidence)
             for _ in range(20_000)]
    low, median, high = np.percentile(draws, [5, 50, 95])
    return {'median': float(median), 'p5': float(low), 'p95': float(high)}


def frames_to_recover(summary: dict[str, Any], jump_at: int, spacing_m: float,
                      threshold_m: float) -> int | None:
    """Frames after the jump until the published place is within threshold_m of the truth."""
    track = summary['track']
    for k in range(jump_at, len(track['published'])):
        published, true = track['published'][k], track['true'][k]
        if published is not None and published >= 0 and \
                abs(published - true) * spacing_m <= threshold_m:
            return k - jump_at
    return None


def frames_to_leave(summary: dict[str, Any]) -> dict[str, Any]:
    """
    How long the published output takes to say "not in the map" after the map's end.

    The end is the last frame the ground truth puts in the map; the answer is the first frame
    after it from which ``matched`` stays false to the end of the drive, minus the end (None if
    the drive never settles on "no match", or has no frame after the map's end).
    """
    track = summary['track']
    in_map = np.asarray(track['in_map'], dtype=bool)
    matched = np.asarray(track['matched'], dtype=bool)
    if not in_map.any() or in_map[-1]:
        return {'map_end_frame': None, 'frames_after_end': 0, 'frames_to_no_match': None}
    end = int(np.flatnonzero(in_map)[-1])
    settled = None
    for k in range(matched.size - 1, end, -1):  # walk back while matched stays false
        if matched[k]:
            break
        settled = k
    return {'map_end_frame': end, 'frames_after_end': int(matched.size - 1 - end),
            'frames_to_no_match': None if settled is None else settled - end}
