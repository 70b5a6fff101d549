"""
Retrieval and confidence metrics: recall@N, precision-recall, average precision, ROC AUC, latency.

Convention (the field's): a query is correct at N if any of its first N places is a true match.
The expected calibration error lives with the calibration it judges
(:func:`r2former_ros.core.calibration.self_calibration.expected_calibration_error`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError

RECALL_NS = (1, 5, 10, 20)


def recall_at_n(correct: NDArray[np.bool_], ns: Sequence[int] = RECALL_NS) -> dict[str, float]:
    """
    Recall@N from per-rank correctness: a query counts if any of its first N is correct.

    Args:
        correct: (Q, R) bool, True where the candidate at rank r is a true match; rows
            shorter than N (small maps) simply have fewer chances.
        ns: the N values.
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ConfigError(f'correct must be (queries, ranks), got shape {correct.shape}')
    if correct.shape[0] == 0:
        return {str(n): 0.0 for n in ns}
    return {str(n): float(np.mean(correct[:, :n].any(axis=1))) for n in ns}


def precision_recall_curve(scores: NDArray[np.floating],
                           labels: NDArray[np.bool_]) -> dict[str, list[float]]:
    """
    Precision and recall of "accept when score >= t" for every distinct threshold t.

    Returns:
        thresholds (descending), precision, recall (lists of equal length).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    order = np.argsort(-s, kind='stable')
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.zeros(0, int)
    positives = max(int(y.sum()), 1)
    precision = tp[last] / np.maximum(tp[last] + fp[last], 1)
    recall = tp[last] / positives
    return {'thresholds': s[last].tolist(), 'precision': precision.tolist(),
            'recall': recall.tolist()}


def average_precision(scores: NDArray[np.floating], labels: NDArray[np.bool_]) -> float | None:
    """Area under the precision-recall curve (step-wise, as sklearn's average_precision)."""
    y = np.asarray(labels, dtype=bool)
    if not y.any():
        return None
    curve = precision_recall_curve(scores, y)
    recall = np.r_[0.0, curve['recall']]
    return float(np.sum(np.diff(recall) * np.asarray(curve['precision'])))


def roc_auc(scores: NDArray[np.floating], labels: NDArray[np.bool_]) -> float | None:
    """ROC AUC by the rank-sum statistic (ties count half); None without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind='mergesort')
    ranks = np.empty(s.size)
    sorted_s = s[order]
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def latency_stats(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Mean, median and 90th percentile (ms) of each stage."""
    out = {}
    for stage, values in samples.items():
        if values:
            arr = np.asarray(values)
            out[stage] = {'mean_ms': float(arr.mean()), 'median_ms': float(np.median(arr)),
                          'p90_ms': float(np.percentile(arr, 90)), 'count': int(arr.size)}
    return out
