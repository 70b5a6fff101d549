"""Matplotlib figures of an evaluation: recall@N, confidence precision-recall, reliability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r2former_ros.core.drawing import track_plot
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.evaluation.engine import EvalResult
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
    """Precision-recall of "matched when confidence >= t": published, and single-frame raw."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for scores, right, label in (
            (result.confidence, result.published_right, 'published confidence'),
            (result.raw_confidence, result.single_right, 'uncalibrated top score (single frame)')):
        if right.any():
            curve = precision_recall_curve(scores, right)
            ax.step(curve['recall'], curve['precision'], where='post', label=label)
    ax.axhline(float(result.published_right.mean()) if result.published_right.size else 0.0,
               color='grey', ls=':', label='published place right (match all)')
    ax.set_xlabel('recall (right places matched)')
    ax.set_ylabel('precision (matched places right)')
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, result, 'precision-recall of the confidence', path)


def plot_reliability(result: EvalResult, path: Path) -> Path:
    """Reliability diagram of the published confidence (and the single-frame ones)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color='grey', ls=':', label='perfect')
    summary = result.summary
    single = summary['single_frame']
    filtering = summary.get('filter', 'none') != 'none'
    curves = [(summary['confidence']['reliability'],
               f'{"filtered" if filtering else "published"} confidence '
               f'(ECE {summary["ece"]:.3f})', 'o-')]
    if filtering:
        curves.append((single['reliability'], f'single-frame confidence (ECE '
                                              f'{single["ece"]:.3f})', 'd-'))
    curves.append((single['reliability_uncalibrated'],
                   f'uncalibrated top score (ECE {single["ece_uncalibrated"]:.3f})', 's--'))
    for table, label, marker in curves:
        rows = [r for r in table if r['count']]
        ax.plot([r['mean_prob'] for r in rows], [r['frequency'] for r in rows], marker,
                label=label)
    ax.set_xlabel('predicted probability the place is right')
    ax.set_ylabel('observed frequency')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, result, 'reliability', path)


def plot_track(result: EvalResult, path: Path) -> Path | None:
    """Draw the drive: published places (and single-frame top-1s) against the truth."""
    summary = result.summary
    return track_plot.plot_track(path, result.track, summary['threshold_m'],
                                 _title(summary, 'published place along the drive'))


def write_plots(result: EvalResult, out_dir: str | Path) -> list[Path]:
    """Recall curve, confidence precision-recall, reliability, track and failure mosaic."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_recall(result, out / 'recall_at_n.png'),
             plot_precision_recall(result, out / 'confidence_pr.png'),
             plot_reliability(result, out / 'reliability.png')]
    track = plot_track(result, out / 'track.png')
    if track is not None:
        paths.append(track)
    mosaic = failure_mosaic(result, out / 'wrong_top1_mosaic.png')
    if mosaic is not None:
        paths.append(mosaic)
    return paths
