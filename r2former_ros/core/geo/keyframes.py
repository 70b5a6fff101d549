"""
Keyframe selection: which geotagged images become map places.

The first image is always kept. A later image is kept when the robot moved at least
``min_distance_m`` (horizontal ENU distance) OR at least ``min_interval_s`` passed since the
last kept image; ``None`` disables a rule. Only east/north count because GNSS altitude noise is
two to three times the horizontal noise and would make a standing robot emit keyframes.
"""

from __future__ import annotations

import numpy as np

from r2former_ros.core.errors import ConfigError


def _check_rules(min_distance_m: float | None, min_interval_s: float | None) -> None:
    """
    Validate the thresholds.

    Raises:
        ConfigError: If a threshold is negative or NaN, or both rules are disabled.

    """
    if min_distance_m is None and min_interval_s is None:
        raise ConfigError(
            'keyframe selection needs min_distance_m or min_interval_s (or all_frames=True)'
        )
    for name, value in (('min_distance_m', min_distance_m), ('min_interval_s', min_interval_s)):
        if value is not None and not value >= 0:
            raise ConfigError(f'{name} must be >= 0, got {value}')


def select_keyframes(
    stamp_ns: np.ndarray,
    east: np.ndarray,
    north: np.ndarray,
    *,
    min_distance_m: float | None = 2.0,
    min_interval_s: float | None = None,
    all_frames: bool = False,
) -> np.ndarray:
    """
    Pick keyframes from images given in chronological order.

    Args:
        stamp_ns: Image stamps (int64 ns), chronological.
        east: East coordinates (m) in a common ENU frame.
        north: North coordinates (m) in the same frame.
        min_distance_m: Keep an image this far from the last kept one; None disables.
        min_interval_s: Keep an image this long after the last kept one; None disables.
        all_frames: Keep every image, ignoring both rules.

    Returns:
        Sorted int64 indices of the kept images.

    Raises:
        ConfigError: If the arrays differ in length or the rules are invalid.

    """
    stamps = np.asarray(stamp_ns, dtype=np.int64).reshape(-1)
    east = np.asarray(east, dtype=np.float64).reshape(-1)
    north = np.asarray(north, dtype=np.float64).reshape(-1)
    if not stamps.size == east.size == north.size:
        raise ConfigError(
            f'stamp_ns, east and north differ in length: {stamps.size}, {east.size}, {north.size}'
        )
    if all_frames:
        return np.arange(stamps.size, dtype=np.int64)
    _check_rules(min_distance_m, min_interval_s)
    if stamps.size == 0:
        return np.zeros(0, dtype=np.int64)
    interval_ns = None if min_interval_s is None else int(round(min_interval_s * 1e9))
    kept = [0]
    for i in range(1, stamps.size):
        last = kept[-1]
        # NaN distances compare False, so images without a position fall back to the time rule.
        moved = min_distance_m is not None and bool(
            np.hypot(east[i] - east[last], north[i] - north[last]) >= min_distance_m
        )
        waited = interval_ns is not None and stamps[i] - stamps[last] >= interval_ns
        if moved or waited:
            kept.append(i)
    return np.asarray(kept, dtype=np.int64)
