"""
The drive at a glance: where the localizer put each query versus where the query really was.

Positions are shown "along the drive": every point is projected onto the polyline of the true
query positions and plotted as the distance travelled to its projection, against the query's
index. A perfect localizer draws the diagonal of the truth; a wrong place jumps off it. A second
panel gives each answer's distance to the truth with the threshold that counts as right.
"""

from __future__ import annotations

from pathlib import Path

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


def plot_trajectory(path: str | Path, true_en: ArrayLike, best_en: ArrayLike,
                    right: ArrayLike, published: ArrayLike, threshold_m: float,
                    filtered_en: ArrayLike | None = None, title: str = '') -> Path:
    """
    Write the two-panel PNG (along-the-drive positions; distance to the truth).

    Args:
        path: output PNG.
        true_en: (Q, 2) true query positions (east, north), in travel order.
        best_en: (Q, 2) positions of the single-frame best places (NaN: none).
        right: per query, the best place is within ``threshold_m`` of the truth.
        published: per query, the confidence reached the threshold (a match was published).
        threshold_m: the distance that counts as right.
        filtered_en: (Q, 2) the sequence filter's places, if any.
        title: figure title.
    """
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as err:
        raise ConfigError('plots need matplotlib: pip install matplotlib') from err
    truth = np.asarray(true_en, dtype=np.float64).reshape(-1, 2)
    best = np.asarray(best_en, dtype=np.float64).reshape(-1, 2)
    ok = np.asarray(right, dtype=bool)
    shown = np.asarray(published, dtype=bool)
    index = np.arange(len(truth))
    s_true = along_track(truth, truth)
    s_best = along_track(best, truth)
    dist = np.hypot(*(best - truth).T)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                      gridspec_kw={'height_ratios': [2, 1]})
    top.plot(index, s_true, '-', color='black', lw=1.5, label='truth (query GPS)')
    top.fill_between(index, s_true - threshold_m, s_true + threshold_m, color='grey',
                     alpha=0.15, label=f'within {threshold_m:g} m')
    for mask, colour, label in ((ok, 'tab:green', 'best place, right'),
                                (~ok, 'tab:red', 'best place, wrong')):
        filled = mask & shown
        hollow = mask & ~shown
        top.scatter(index[filled], s_best[filled], color=colour, s=22, label=label, zorder=3)
        top.scatter(index[hollow], s_best[hollow], facecolors='none', edgecolors=colour, s=22,
                    zorder=3, label=f'{label} (below threshold: not published)')
    if filtered_en is not None:
        s_filtered = along_track(np.asarray(filtered_en, dtype=np.float64), truth)
        top.plot(index, s_filtered, '.-', color='tab:blue', lw=0.8, ms=3,
                 label='sequence filter', zorder=2)
    top.set_ylabel('position along the drive (m)')
    top.legend(fontsize=7, loc='upper left')
    top.grid(alpha=0.3)
    bottom.scatter(index[ok], dist[ok], color='tab:green', s=12)
    bottom.scatter(index[~ok], dist[~ok], color='tab:red', s=12)
    bottom.axhline(threshold_m, color='grey', ls='--', lw=1)
    bottom.set_yscale('symlog', linthresh=max(threshold_m, 1.0))
    bottom.set_xlabel('query (travel order)')
    bottom.set_ylabel('best place to truth (m)')
    bottom.grid(alpha=0.3)
    if title:
        top.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
