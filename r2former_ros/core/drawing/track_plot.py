"""
The drive at a glance: what was published for each frame versus where it really was.

The one track plot of ``r2former eval --plots`` and the demo.

Positions are shown "along the drive": every point is projected onto the polyline of the true
query positions and plotted as the distance travelled to its projection, against the query's
index. A perfect localizer draws the diagonal of the truth; a wrong place jumps off it. A second
panel gives each answer's distance to the truth with the threshold that counts as right.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros.core.errors import ConfigError


def along_track(points_en: ArrayLike, path_en: ArrayLike) -> NDArray[np.float64]:
    """
    Distance along ``path_en`` (N, 2) to the projection of each of ``points_en`` (M, 2).

    The projection is the nearest point of the polyline; a one-point path gives 0 for all.
    """
    path = np.asarray(path_en, dtype=np.float64).reshape(-1, 2)
    points = np.asarray(points_en, dtype=np.float64).reshape(-1, 2)
    if len(path) < 2:
        return np.zeros(len(points))
    start, end = path[:-1], path[1:]
    seg = end - start
    length = np.hypot(seg[:, 0], seg[:, 1])
    before = np.concatenate([[0.0], np.cumsum(length)[:-1]])
    safe = np.where(length > 0, length, 1.0)
    # (M, S): position of each point's projection along each segment, clamped to it
    rel = points[:, None, :] - start[None, :, :]
    t = np.clip((rel * seg[None]).sum(axis=2) / safe**2, 0.0, 1.0)
    nearest = start[None] + t[..., None] * seg[None]
    gap = np.hypot(*(points[:, None, :] - nearest).transpose(2, 0, 1))
    best = gap.argmin(axis=1)
    rows = np.arange(len(points))
    return before[best] + t[rows, best] * length[best]


def _en(track: Mapping[str, NDArray[Any]], prefix: str) -> NDArray[np.float64]:
    return np.column_stack([np.asarray(track[f'{prefix}_east'], dtype=np.float64),
                            np.asarray(track[f'{prefix}_north'], dtype=np.float64)])


def plot_track(path: str | Path, track: Mapping[str, NDArray[Any]], threshold_m: float,
               title: str = '') -> Path | None:
    """
    Write the track plot of an evaluation: what was published along the drive vs the truth.

    With true positions, the top panel shows every answer as its position along the drive
    (metres) and the bottom panel its distance to the truth; with index ground truth only
    (VPR-Bench), the top panel shows place ids and there is no bottom panel. Published places
    are green when right, red when wrong, filled when matched and hollow when below the
    threshold; with the sequence filter, the single-frame top-1 is drawn as a grey cross and
    frames the filter holds "not in the map" (P > 0.5) get a square.

    Args:
        path: output PNG.
        track: the evaluation's per-frame arrays (``EvalResult.track``): true, single,
            published (place ids), their positions (true_east/north, single_east/north,
            published_east/north; NaN: none), matched, right, distance_m, outside_prob.
        threshold_m: the distance that counts as right.
        title: figure title.

    Returns:
        The PNG, or None when there is no frame.
    """
    published_ids = np.asarray(track.get('published', []))
    if published_ids.size == 0:
        return None
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as err:
        raise ConfigError('plots need matplotlib: pip install matplotlib') from err
    index = np.arange(published_ids.size)
    right = np.asarray(track['right'], dtype=bool)
    matched = np.asarray(track['matched'], dtype=bool)
    outside = np.nan_to_num(np.asarray(track['outside_prob'], dtype=np.float64)) > 0.5
    filtering = not np.all(np.isnan(np.asarray(track['outside_prob'], dtype=np.float64)))
    truth = _en(track, 'true')
    positions = bool(np.isfinite(truth).all())
    if positions:
        s_true = along_track(truth, truth)
        s_published = along_track(_en(track, 'published'), truth)
        s_single = along_track(_en(track, 'single'), truth)
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                          gridspec_kw={'height_ratios': [2, 1]})
        top.plot(index, s_true, '-', color='black', lw=1.5, label='truth')
        top.fill_between(index, s_true - threshold_m, s_true + threshold_m, color='grey',
                         alpha=0.15, label=f'within {threshold_m:g} m')
        top.set_ylabel('position along the drive (m)')
    else:
        fig, top = plt.subplots(figsize=(8, 4))
        bottom = None
        true_ids = np.asarray(track['true'], dtype=np.float64)
        known = true_ids >= 0
        top.plot(index[known], true_ids[known], '-', color='grey', lw=3, alpha=0.5,
                 label='true place')
        s_published = np.where(published_ids >= 0, published_ids, np.nan)
        s_single = np.asarray(track['single'], dtype=np.float64)
        top.set_ylabel('map place id')
    # Sanitised place ids can still be NaN (no place): those frames draw nothing.
    has_place = np.isfinite(s_published)
    if filtering:
        top.plot(index, s_single, 'x', color='grey', ms=4, label='single-frame top-1')
    for mask, colour, label in ((right, 'tab:green', 'published, right'),
                                (~right, 'tab:red', 'published, wrong')):
        filled = mask & matched & has_place
        hollow = mask & ~matched & has_place
        top.scatter(index[filled], s_published[filled], color=colour, s=22, label=label,
                    zorder=3)
        top.scatter(index[hollow], s_published[hollow], facecolors='none', edgecolors=colour,
                    s=22, zorder=3, label=f'{label} (not matched)')
    if outside.any():
        top.scatter(index[outside], s_published[outside], marker='s', facecolors='none',
                    edgecolors='tab:purple', s=50, zorder=2, label='P(not in map) > 0.5')
    top.legend(fontsize=7, loc='upper left')
    top.grid(alpha=0.3)
    if bottom is not None:
        dist = np.asarray(track['distance_m'], dtype=np.float64)
        bottom.scatter(index[right], dist[right], color='tab:green', s=12)
        bottom.scatter(index[~right], dist[~right], color='tab:red', s=12)
        bottom.axhline(threshold_m, color='grey', ls='--', lw=1)
        bottom.set_yscale('symlog', linthresh=max(threshold_m, 1.0))
        bottom.set_ylabel('published place to truth (m)')
        bottom.grid(alpha=0.3)
    (bottom if bottom is not None else top).set_xlabel('frame (travel order)')
    if title:
        top.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
