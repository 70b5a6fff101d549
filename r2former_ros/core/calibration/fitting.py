"""
Fitting helpers shared by the confidence calibrations (map self-queries and drives).

- :func:`expected_calibration_error`, :func:`reliability_table`: how well probabilities match
  outcomes.
- :func:`fit_logistic`: L2-regularised logistic regression (the single-frame confidence).
- :func:`fit_platt`: Platt scaling of the filter's posterior mass, shrunk towards the identity
  (the posterior is a probability by construction; the fit only corrects it), with Platt's
  smoothed targets so a drive where every frame was right still gives a finite fit.
- :func:`contiguous_folds`: cross-validation folds as contiguous blocks of a drive, so a
  held-out frame's near twin (the frame before it) is not in the training set.
- :func:`fit_observation_model`: the sequence filter's likelihood ratios from labelled candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.sequence_filter import ObservationModel

L2_PENALTY = 1e-2  # on standardised weights (not on the bias)
CV_FOLDS = 5
PLATT_PRIOR = 1.0  # pull of (weight 1, bias 0), in units of samples
FLOOR_RANGE = (1e-4, 1.0)


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, bins: int = 10) -> float:
    """
    Compute the expected calibration error with equal-width bins over [0, 1].

    ECE = sum over bins of (bin count / total) * |mean label - mean probability|.
    Probability 1.0 falls in the last bin. Returns 0.0 for no samples.

    Args:
        probs: (N,) predicted probabilities in [0, 1].
        labels: (N,) 0/1 (or bool) outcomes.
        bins: number of equal-width bins.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ConfigError(f'{p.size} probabilities for {y.size} labels')
    if bins < 1:
        raise ConfigError(f'bins={bins} must be >= 1')
    if p.size == 0:
        return 0.0
    which = np.clip((np.clip(p, 0.0, 1.0) * bins).astype(np.int64), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(float(y[mask].mean()) - float(p[mask].mean()))
    return total / p.size


def reliability_table(probs: ArrayLike, labels: ArrayLike, bins: int = 10) -> list[dict[str, Any]]:
    """Per equal-width bin: range, count, mean probability and observed frequency (for plots)."""
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), 0.0, 1.0)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    which = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({'low': b / bins, 'high': (b + 1) / bins, 'count': int(mask.sum()),
                     'mean_prob': float(p[mask].mean()) if mask.any() else None,
                     'frequency': float(y[mask].mean()) if mask.any() else None})
    return rows


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def fit_logistic(features: ArrayLike, labels: ArrayLike, l2: float = L2_PENALTY,
                 max_iter: int = 100, tol: float = 1e-10) -> tuple[NDArray[np.float64], float]:
    """
    L2-regularised logistic regression by Newton's method (IRLS); plain numpy.

    Features are standardised inside (constant columns get weight 0); the penalty
    ``l2 * |w|^2 / 2`` acts on the standardised weights, not on the bias, and keeps the fit finite
    when the classes are separable. Returns weights and bias on the raw features.

    Args:
        features: (N, F) feature matrix.
        labels: (N,) 0/1 labels.
        l2: penalty strength (> 0), in units of the mean log-likelihood.
        max_iter: Newton steps at most.
        tol: stop when the largest parameter change is below this.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ConfigError(f'features {x.shape} and labels {y.shape} disagree')
    if l2 <= 0:
        raise ConfigError(f'l2={l2} must be > 0')
    n, f = x.shape
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    constant = std < 1e-12
    std[constant] = 1.0
    z = (x - mean) / std
    z[:, constant] = 0.0
    design = np.hstack([z, np.ones((n, 1))])
    theta = np.zeros(f + 1)
    penalty = np.full(f + 1, l2 * n)
    penalty[-1] = 0.0
    for _ in range(max_iter):
        p = _sigmoid(design @ theta)
        grad = design.T @ (p - y) + penalty * theta
        weight = np.maximum(p * (1.0 - p), 1e-12)
        hessian = design.T @ (design * weight[:, None]) + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, grad)
        theta -= step
        if float(np.max(np.abs(step))) < tol:
            break
    w_std, b_std = theta[:-1], float(theta[-1])
    w_std[constant] = 0.0
    weights = w_std / std
    bias = b_std - float(np.sum(w_std * mean / std))
    return weights, bias


def predict_logistic(weights: NDArray[np.float64], bias: float,
                     features: NDArray[np.float64]) -> NDArray[np.float64]:
    """Probabilities of a fitted logistic model for (N, F) features."""
    return _sigmoid(features @ weights + bias)


def contiguous_folds(count: int, folds: int = CV_FOLDS) -> NDArray[np.int64]:
    """Fold number of each of ``count`` consecutive samples: ``folds`` contiguous blocks."""
    if folds < 2:
        raise ConfigError(f'folds={folds} must be >= 2')
    return (np.arange(count) * folds // max(count, 1)).astype(np.int64)


def fit_platt(logits: ArrayLike, labels: ArrayLike, prior: float = PLATT_PRIOR,
              max_iter: int = 50) -> tuple[float, float]:
    """
    Fit ``p = sigmoid(a * z + b)`` to 0/1 labels, shrunk towards ``a = 1, b = 0``.

    Targets are Platt's smoothed ones, ``(n1 + 1) / (n1 + 2)`` for positives and
    ``1 / (n0 + 2)`` for negatives, so all-right (or all-wrong) drives give a finite, modest fit.

    Args:
        logits: (N,) input log-odds (e.g. the logit of the posterior mass).
        labels: (N,) 0/1 outcomes.
        prior: strength of the pull towards the identity map, in samples.
        max_iter: Newton steps at most.
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if z.shape != y.shape:
        raise ConfigError(f'{z.size} logits for {y.size} labels')
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    target = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    theta = np.array([1.0, 0.0])
    anchor = theta.copy()
    design = np.c_[z, np.ones_like(z)]
    for _ in range(max_iter):
        p = _sigmoid(design @ theta)
        grad = design.T @ (p - target) + prior * (theta - anchor)
        weight = np.maximum(p * (1.0 - p), 1e-12)
        hessian = design.T @ (design * weight[:, None]) + prior * np.eye(2)
        step = np.linalg.solve(hessian, grad)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def fit_observation_model(scores: Sequence[NDArray[np.floating]],
                          labels: Sequence[NDArray[np.bool_]],
                          true_places: ArrayLike, num_places: int,
                          outside_scores: Sequence[NDArray[np.floating]] = (),
                          outside_places: ArrayLike | None = None
                          ) -> tuple[ObservationModel, dict[str, Any]]:
    """
    Fit the filter's likelihood ratios "here" vs "not in the map" from labelled frames.

    For frame f, ``scores[f]`` are its K ranked scores (best first), ``labels[f]`` whether each
    candidate lies within threshold_m of the true position, and ``true_places[f]`` how many map
    places do (in the whole map). A logistic fit on (score, score - top score) over all
    candidates gives the odds of "true" among top-K candidates; with T true and F false
    (frame, place) pairs in all, the likelihood ratio is ``odds * F / T``, and the floor shared
    by places outside the top-K is ``P(outside | true) / P(outside | false)``.

    ``outside_scores`` are ranked lists of frames with no map place within threshold_m: real
    ones, or a frame's own list with the places near its true position taken out (what the
    same frame would have looked like had the map not covered it). Every candidate in them is
    false, including their top one. Without them the false candidates all come from frames
    whose top place was usually right, so a top candidate at the usual score looks true
    whatever the frame: the filter then never believes "not in the map" on real images.
    ``outside_places[f]`` is how many places outside frame f could have ranked (default: all).

    Returns:
        The model (``fitted=False``, defaults, when there is nothing to learn from) and stats.
    """
    true_total = float(np.sum(true_places))
    frames = len(scores)
    outside = [np.asarray(s, dtype=np.float64).reshape(-1) for s in outside_scores]
    reachable = (np.full(len(outside), float(num_places)) if outside_places is None
                 else np.asarray(outside_places, dtype=np.float64).reshape(-1))
    if reachable.size != len(outside):
        raise ConfigError(f'{reachable.size} place counts for {len(outside)} outside frames')
    false_total = frames * float(num_places) - true_total + float(reachable.sum())
    stats: dict[str, Any] = {'frames': frames, 'outside_frames': len(outside),
                             'true_pairs': true_total}
    if frames == 0 or true_total <= 0 or false_total <= 0:
        stats['reason'] = 'no frame has a map place within threshold_m (or every place does)'
        return ObservationModel(), stats
    columns = [np.c_[s, s - s[0]] for s in list(scores) + outside if len(s)]
    x = np.concatenate(columns).astype(np.float64)
    y = np.concatenate([np.asarray(v, dtype=bool) for v in labels if len(v)]
                       + [np.zeros(len(s), dtype=bool) for s in outside if len(s)])
    true_top, false_top = int(y.sum()), int((~y).sum())
    stats.update({'true_in_top_k': true_top, 'false_in_top_k': false_top})
    if true_top < 2 or false_top < 2:
        stats['reason'] = f'{true_top} true and {false_top} false candidates: need 2 of each'
        return ObservationModel(), stats
    weights, bias = fit_logistic(x, y)
    log_ratio = math.log(false_total / true_total)
    missed_true = max(true_total - true_top, 0.0) / true_total
    missed_false = max(false_total - false_top, 0.0) / false_total
    floor = ObservationModel().floor if missed_false <= 0 else missed_true / missed_false
    floor = float(np.clip(floor, *FLOOR_RANGE))
    stats['reason'] = None
    return ObservationModel(weight_score=float(weights[0]), weight_gap=float(weights[1]),
                            bias=float(bias + log_ratio), floor=floor, fitted=True), stats


CERTIFY_Z = 1.645  # one-sided 95%: the precision a threshold certifies holds with that confidence


def precision_lower_bound(right: int, matched: int, z: float = CERTIFY_Z) -> float:
    """
    Wilson score lower bound of a precision measured as ``right`` of ``matched``.

    A threshold picked on a calibration drive of a few dozen frames is picked where that drive
    happened to be lucky; the bound says what the precision is, with 95% confidence, at least.
    """
    if matched <= 0:
        return 0.0
    p = right / matched
    z2 = z * z
    centre = p + z2 / (2 * matched)
    spread = z * math.sqrt(p * (1 - p) / matched + z2 / (4 * matched * matched))
    return max(0.0, (centre - spread) / (1 + z2 / matched))


def choose_operating_point(probs: ArrayLike, right: ArrayLike,
                           target_precision: float) -> dict[str, Any]:
    """
    Pick the lowest confidence threshold whose certified precision reaches the target.

    Args:
        probs: (N,) confidences of a calibration drive's frames (held out from the fit).
        right: (N,) whether each frame's published place is right.
        target_precision: the precision "matched" must keep (e.g. 0.95).

    Returns:
        ``{target_precision, threshold, certified_precision, precision, matched_fraction,
        frames, target_met}``: the lowest threshold whose Wilson lower bound reaches the target;
        when none does (a short or hard drive), the threshold that certifies the most, with
        ``target_met`` false, so the node still uses the most trustworthy point it has.
    """
    if not 0.0 < target_precision < 1.0:
        raise ConfigError(f'target precision {target_precision} must be in (0, 1)')
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(right, dtype=bool).reshape(-1)
    if p.shape != y.shape:
        raise ConfigError(f'{p.size} confidences for {y.size} labels')
    order = np.argsort(-p, kind='stable')
    p, y = p[order], y[order]
    matched = np.arange(1, p.size + 1)
    right_count = np.cumsum(y)
    # Only the last of equal confidences is a threshold that can be set.
    last = np.r_[np.flatnonzero(np.diff(p) != 0), p.size - 1] if p.size else np.zeros(0, int)
    best: dict[str, Any] | None = None
    chosen: dict[str, Any] | None = None
    for i in last.tolist():
        bound = precision_lower_bound(int(right_count[i]), int(matched[i]))
        row: dict[str, Any] = {'threshold': float(p[i]), 'certified_precision': bound,
               'precision': float(right_count[i] / matched[i]),
               'matched_fraction': float(matched[i] / p.size)}
        if best is None or bound > best['certified_precision']:
            best = row
        if bound >= target_precision:
            chosen = row  # thresholds go down as i goes up: keep the lowest that qualifies
    empty: dict[str, Any] = {'threshold': None, 'certified_precision': 0.0, 'precision': None,
                              'matched_fraction': 0.0}
    point = chosen or best or empty
    return {'target_precision': float(target_precision), **point, 'frames': int(p.size),
            'target_met': chosen is not None}
