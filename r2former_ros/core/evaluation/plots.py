"""Matplotlib figures of an evaluation: recall@N, confidence precision-recall, reliability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.evaluation.loop import EvalResult
from r2former_ros.core.evaluation.metrics import precision_recall_curve
from r2former_ros.core.evaluation.mosaic import failure_mosaic


def _pyplot() -> Any:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as err:
        raise ConfigError('plots need matplotlib: pip install "r2former_ros[eval]" '
                          '(or pip install matplotlib)') from err
    return plt


def _title(summary: dict[str, Any], what: str) -> str:
    weights = summary.get('weights', '?')
    note = ' - RANDOM weights, meaningless' if weights == 'random' else \
        (' - fallback, not R2Former' if weights == 'pretrained-fallback' else '')
    return f'{what}: {summary.get("backbone", "?")}{note}\n{summary.get("name", "")} ' \
           f'({summary.get("num_queries", 0)} queries, {summary.get("threshold_m")} m)'


def _finish(fig: Any, ax: Any, result: EvalResult, what: str, path: Path) -> Path:
    """Grid, legend and title every plot shares; save and close the figure."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_title(result.summary, what), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_recall(result: EvalResult, path: Path) -> Path:
    plt = _pyplot()
    curve = result.summary['recall_curve']
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve['n'], curve['global'], 'o-', label='global only')
    if result.summary['reranked']:
        ax.plot(curve['n'], curve['reranked'], 's-', label='reranked')
    ax.set_xlabel('N')
    ax.set_ylabel('recall@N')
    ax.set_ylim(0, 1.02)
    ax.set_xticks([1, 5, 10, 15, 20])
    return _finish(fig, ax, result, 'recall@N', path)


def plot_precision_recall(result: EvalResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for scores, label in ((result.confidence, 'confidence'),
                          (result.confidence_uncalibrated, 'uncalibrated (top score)')):
        if result.top1_correct.any():
            curve = precision_recall_curve(scores, result.top1_correct)
            ax.step(curve['recall'], curve['precision'], where='post', label=label)
    ax.axhline(float(result.top1_correct.mean()) if result.top1_correct.size else 0.0,
               color='grey', ls=':', label='top-1 accuracy (accept all)')
    ax.set_xlabel('recall (correct top-1s accepted)')
    ax.set_ylabel('precision (accepted top-1s correct)')
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, result, 'precision-recall of the confidence', path)


def plot_reliability(result: EvalResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color='grey', ls=':', label='perfect')
    conf = result.summary['confidence']
    published = 'filtered confidence' if result.summary.get('filter', 'none') != 'none' \
        else 'confidence'
    for key, label, marker in (('reliability', f'{published} (ECE {result.summary["ece"]:.3f})',
                                'o-'),
                               ('reliability_uncalibrated',
                                f'uncalibrated (ECE {result.summary["ece_uncalibrated"]:.3f})',
                                's--')):
        rows = [r for r in conf[key] if r['count']]
        ax.plot([r['mean_prob'] for r in rows], [r['frequency'] for r in rows], marker,
                label=label)
    ax.set_xlabel('predicted probability top-1 is right')
    ax.set_ylabel('observed frequency')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, result, 'reliability', path)


def plot_track(result: EvalResult, path: Path) -> Path | None:
    """Place along the drive: the true one, the single-frame top-1 and the published one."""
    track = result.track
    if not track or not len(track.get('published', [])):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    frames = np.arange(len(track['published']))
    known = track['true'] >= 0
    ax.plot(frames[known], track['true'][known], '-', color='grey', lw=3, alpha=0.5,
            label='true (closest map place)')
    ax.plot(frames, track['single'], 'x', color='tab:orange', label='single-frame top-1')
    filtered = result.summary.get('filter', 'none') != 'none'
    if filtered:
        ax.plot(frames, track['published'], '.-', color='tab:blue', lw=1,
                label='sequence filter (published)')
        outside = np.nan_to_num(track['outside_prob']) > 0.5
        if outside.any():
            ax.plot(frames[outside], track['published'][outside], 's', mfc='none',
                    color='tab:red', label='filter: P(not in map) > 0.5')
    ax.set_xlabel('frame (drive order)')
    ax.set_ylabel('map place id')
    return _finish(fig, ax, result, 'place along the drive', path)


def write_plots(result: EvalResult, out_dir: str | Path) -> list[Path]:
    """Recall curve, confidence precision-recall, reliability, track and failure mosaic."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_recall(result, out / 'recall_at_n.png'),
             plot_precision_recall(result, out / 'confidence_pr.png'),
             plot_reliability(result, out / 'reliability.png')]
    track = plot_track(result, out / 'place_track.png')
    if track is not None:
        paths.append(track)
    mosaic = failure_mosaic(result, out / 'wrong_top1_mosaic.png')
    if mosaic is not None:
        paths.append(mosaic)
    return paths
