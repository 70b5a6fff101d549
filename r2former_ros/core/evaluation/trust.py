"""
Can a robot trust what we publish? Metrics of the published place and confidence.

"Published" is what the node sends: with the sequence filter, the filter's place and the
posterior mass near it; without, the top candidate and the single-frame confidence.

- ``matched_fraction``: share of queries published as matched (confidence >= threshold);
- ``matched_precision``: share of matched results whose place is within threshold_m (or a
  listed positive) - what "matched" promises;
- ``ece``: expected calibration error of the published confidence against "the published
  place is right", over every query (outside-map ones included: there nothing is right);
- ``outside_map``: queries with no map place within threshold_m (no listed positive): their
  count and how many were matched anyway (should be ~0). They are left out of recall@N, as is
  usual, and counted here instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.evaluation.datasets import EvalQuery
from r2former_ros.core.evaluation.metrics import recall_at_n
from r2former_ros.core.localize.calibration import expected_calibration_error


def query_truth(query: EvalQuery, east: NDArray[np.float64], north: NDArray[np.float64],
                threshold_m: float) -> tuple[int, bool]:
    """
    Return the map place closest to the query's truth and whether any place is a true match.

    The closest place is for plots (-1 when unknown); "covered" means the query lies inside the
    mapped area. One distance pass over the map serves both.
    """
    if query.positives is not None:
        pos = np.asarray(query.positives)
        return (int(round(float(pos.mean()))) if pos.size else -1), bool(pos.size)
    if query.east is None or query.north is None:
        return -1, False
    distance = np.hypot(east - query.east, north - query.north)
    closest = int(np.argmin(distance))
    return closest, bool(distance[closest] <= threshold_m)


def filtered_ranking(place: int, ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Rank the filter's place first, then the single-frame candidates without it."""
    return np.r_[np.int64(place), ids[ids != place]].astype(np.int64)


def trust_summary(confidence: NDArray[np.float64], published_right: NDArray[np.bool_],
                  covered: NDArray[np.bool_], confidence_threshold: float,
                  filtered_correct: NDArray[np.bool_] | None) -> dict[str, Any]:
    """
    Summarise the published output: the trust block of the evaluation JSON.

    Args:
        confidence: (Q,) the published confidence.
        published_right: (Q,) whether the published place is a true match.
        covered: (Q,) whether the query has any true match in the map.
        confidence_threshold: "matched" at or above it.
        filtered_correct: (Q, R) per-rank correctness of the filtered ranking, or None
            without a filter.
    """
    matched = confidence >= confidence_threshold
    outside = ~covered
    recall_filtered = None
    if filtered_correct is not None:
        recall_filtered = recall_at_n(filtered_correct[covered])
    return {
        'recall_filtered': recall_filtered,
        'ece': expected_calibration_error(confidence, published_right),
        'matched_fraction': float(matched.mean()) if matched.size else 0.0,
        'matched_precision': float(published_right[matched].mean()) if matched.any() else None,
        'num_queries_in_map': int(covered.sum()),
        'outside_map': {'num_queries': int(outside.sum()),
                        'matched_fraction': (float(matched[outside].mean())
                                             if outside.any() else None)},
    }
