"""
What `r2former demo` shows: the one console table and the self-contained HTML report.

The numbers come from :func:`r2former_ros.core.evaluation.engine.summarize`
on the demo's single pass over the query traverse; this module only words and draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

MATCH_PICTURES = 6  # labelled match pictures in the report
WRONG_PICTURES = 2  # of which up to this many show wrong answers (the instructive ones)
TABLE_NS = ('1', '5', '10', '20')


@dataclass
class StageTimes:
    """Wall time of each demo stage, in order."""

    seconds: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        return 'stage times: ' + ', '.join(f'{name} {s:.1f} s' for name, s in
                                           self.seconds.items())


def _pct(value: float | None) -> str:
    return '-' if value is None or not math.isfinite(value) else f'{100 * value:.0f}%'


def _confidence_row(label: str, block: dict[str, Any], total: int) -> tuple[str, ...]:
    matched = block['matched_fraction']
    return (label, f'{block["ece"]:.3f}', f'{round(matched * total)}/{total} ({_pct(matched)})',
            _pct(block['matched_precision']))


def table_rows(summary: dict[str, Any]) -> dict[str, list[tuple[str, ...]]]:
    """Build the recall, confidence and latency rows (for the console and the HTML page)."""
    recall = [('global retrieval only',
               *(f'{summary["recall_global"][n]:.3f}' for n in TABLE_NS))]
    if summary['reranked']:
        recall.append(('+ reranking (single frame)',
                       *(f'{summary["recall_reranked"][n]:.3f}' for n in TABLE_NS)))
    filtered = summary.get('recall_filtered')
    if filtered:
        recall.append(('+ sequence filter (published)',
                       *(f'{filtered[n]:.3f}' for n in TABLE_NS)))
    total = summary['num_queries']
    single = summary['single_frame']
    single_source = 'calibrated' if single['calibrated'] else 'raw score'
    confidence = [_confidence_row(f'single frame ({single_source})', single, total)]
    if filtered:
        published = 'calibrated' if summary['calibrated'] else 'raw posterior'
        confidence.append(_confidence_row(f'sequence filter, published ({published})',
                                          summary, total))
    lat = summary['latency_ms']
    latency: list[tuple[str, ...]] = [
        (stage, f'{lat[stage]["mean_ms"]:.1f}', f'{lat[stage]["p90_ms"]:.1f}')
        for stage in ('decode', 'extract', 'retrieve', 'rerank', 'filter', 'total')
        if stage in lat]
    return {'recall': recall, 'confidence': confidence, 'latency': latency}


RECALL_HEADER = ('recall@N (right = within {t:g} m of the query GPS)', 'R@1', 'R@5', 'R@10',
                 'R@20')
CONFIDENCE_HEADER = ('confidence that the best place is right', 'ECE', 'published as match',
                     'right when published')
LATENCY_HEADER = ('latency per frame (ms)', 'mean', 'p90')


def _format(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [f'{row[0]:<{widths[0]}}'] + [f'{v:>{w}}' for v, w in zip(row[1:], widths[1:],
                                                                        strict=True)]
        lines.append('  '.join(cells))
    return lines


def console_table(summary: dict[str, Any]) -> str:
    """Format the demo's result to be read at a glance."""
    rows = table_rows(summary)
    lines = [f'{summary["num_queries"]} query frames vs {summary["num_map_places"]} map places']
    lines += _format(tuple(h.format(t=summary['threshold_m']) for h in RECALL_HEADER),
                     rows['recall'])
    lines.append('')
    lines += _format(CONFIDENCE_HEADER, rows['confidence'])
    lines.append('  (ECE: mean gap between confidence and how often it is right; 0 is ideal)')
    lines.append('')
    lines += _format(LATENCY_HEADER, rows['latency'])
    return '\n'.join(lines)


def pick_pictures(right: NDArray[np.bool_], count: int = MATCH_PICTURES,
                  wrong: int = WRONG_PICTURES) -> list[int]:
    """Choose the queries to draw: a few wrong answers, the rest evenly along the drive."""
    wrong_ids = [int(i) for i in np.flatnonzero(~right)]
    if wrong_ids:
        step = max(1, len(wrong_ids) // wrong)
        chosen = wrong_ids[::step][:wrong]
    else:
        chosen = []
    rest = count - len(chosen)
    for i in np.linspace(0, len(right) - 1, max(rest, 0) + 2)[1:-1]:
        if int(i) not in chosen:
            chosen.append(int(i))
    return sorted(set(chosen))[:count]


def write_report(path: Path, title: str, intro: list[str], summary: dict[str, Any],
                 plots: dict[str, Path], pictures: list[tuple[NDArray[np.uint8], str]],
                 files: list[tuple[str, str]]) -> Any:
    """Write the HTML report; return the report (its ``figures`` list the embedded images)."""
    from r2former_ros.core.drawing.html_report import HtmlReport  # noqa: PLC0415

    report = HtmlReport(title)
    for line in intro:
        report.paragraph(line, note='NOT R2Former' in line or 'random' in line)
    rows = table_rows(summary)
    report.heading('Results')
    report.table([h.format(t=summary['threshold_m']) for h in RECALL_HEADER], rows['recall'])
    report.table(CONFIDENCE_HEADER, rows['confidence'])
    report.paragraph('ECE (expected calibration error): the mean gap between the confidence and '
                     'how often the answer is right; 0 is ideal. "Published as match": the '
                     'confidence reached the threshold, so the node publishes a fix and a pose.')
    report.table(LATENCY_HEADER, rows['latency'])
    report.heading('Plots')
    captions = {
        'track': 'Where each query was placed along the drive (dots: the published place; '
                 'crosses: the single-frame top-1) versus its GPS (black line); bottom: '
                 'distance of the published place to the truth.',
        'recall': 'Recall@N: the share of queries with a right place among the first N.',
        'reliability': 'Reliability diagram: confidence (x) versus how often the best place '
                       'was right (y); on the diagonal means calibrated.',
    }
    for key, caption in captions.items():
        if key in plots:
            report.figure(plots[key], caption, width=620)
    report.heading('Matches')
    report.paragraph('Each picture: the query (left) and the best map place (right), with the '
                     'strongest token pairs that made them match; green frame = right, red = '
                     'wrong. Pairs on black lens borders are left out.')
    for picture, caption in pictures:
        report.figure(picture, caption)
    report.heading('Files')
    report.table(('what', 'where'), files)
    report.write(path)
    return report
