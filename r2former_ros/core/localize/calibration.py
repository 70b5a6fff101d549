"""
Calibrate the confidence on the map itself: what a true and a false match look like on this route.

Method (run at the end of a map build, or later with :func:`calibrate_map`):

1. Every map image (or an even subsample of ``max_queries``) is used as a query against the map.
   Its features are already stored (global descriptor, local features), so nothing is
   re-encoded and calibration costs one retrieval + rerank per place.
2. The query's own neighbourhood is hidden: the place itself and every place within
   ``exclude_radius_m``. Without this, each image finds itself (or the frame recorded a fraction
   of a second later) with a score no real revisit ever reaches, and the calibration would learn
   that "high score = right" at a level live queries never see. By default the radius is half the
   threshold distance, so the "true" matches left are map places between ``threshold_m / 2`` and
   ``threshold_m`` away, i.e. views of the same place from a clearly different spot, which is what
   a revisit on another day looks like; places farther than the threshold are false matches.
   When the map is sparser than the radius only the image itself is hidden.
3. For each query the confidence features of :mod:`~r2former_ros.core.localize.confidence` are
   recorded (top score, margin to the runner-up, spatial agreement of the top places) with the
   label "the best remaining place lies within ``threshold_m`` of the query".
4. A logistic model is fitted with Newton's method (IRLS) and a small L2 penalty on standardised
   features, then stored in the manifest (``calibration``) as weights on the raw features.

The expected calibration error (ECE) of the uncalibrated confidence (the clipped top score) and
of the calibrated one is reported, in-sample and by k-fold cross-validation. Maps that cannot
be calibrated (too few places, or every label the same: all true on a tiny dense map, all false
when nothing matches) keep the uncalibrated confidence, and the stored info says why.
"""

from __future__ import annotations

from dataclasses import replace
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros.core import mapdb
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.confidence import (
    FEATURE_NAMES,
    ConfidenceModel,
    confidence_features,
)
from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.places.base import PlaceModel

LOG = logging.getLogger(__name__)

MIN_SAMPLES = 8  # fewer usable map queries than this: keep the uncalibrated confidence
MIN_PER_CLASS = 2  # each label (true/false match) must occur at least this often
L2_PENALTY = 1e-2  # on standardised weights (not on the bias)
CV_FOLDS = 5


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


def _predict(weights: NDArray[np.float64], bias: float,
             features: NDArray[np.float64]) -> NDArray[np.float64]:
    return _sigmoid(features @ weights + bias)


def _cross_validated_probs(features: NDArray[np.float64], labels: NDArray[np.float64],
                           folds: int = CV_FOLDS) -> NDArray[np.float64] | None:
    """Out-of-fold probabilities (interleaved folds, so each fold spans the whole route)."""
    n = labels.size
    if n < 2 * folds:
        return None
    out = np.empty(n)
    fold_of = np.arange(n) % folds
    for k in range(folds):
        test = fold_of == k
        train = ~test
        y_train = labels[train]
        if y_train.min() == y_train.max():
            return None
        w, b = fit_logistic(features[train], y_train)
        out[test] = _predict(w, b, features[test])
    return out


def default_exclude_radius(threshold_m: float) -> float:
    """Half the threshold: true matches left are places threshold/2 .. threshold away."""
    return 0.5 * threshold_m


def collect_map_samples(database: MapDatabase, place_model: PlaceModel, threshold_m: float,
                        exclude_radius_m: float, max_queries: int | None = None,
                        localizer_config: LocalizerConfig | None = None
                        ) -> tuple[NDArray[np.float64], NDArray[np.bool_], dict[str, Any]]:
    """
    Query the map with its own images (neighbourhood hidden); return features, labels and stats.

    Returns:
        features (M, F), labels (M,) True when the best remaining place is within
        ``threshold_m``, and counts (queries used, skipped for want of candidates).
    """
    config = replace(localizer_config or LocalizerConfig(), threshold_m=threshold_m)
    if config.rerank_top_n and not place_model.has_reranker:
        config = replace(config, rerank_top_n=0)
    localizer = Localizer(place_model, database, config)
    places = database.places
    east = np.asarray(places['east'], dtype=np.float64)
    north = np.asarray(places['north'], dtype=np.float64)
    n = database.num_places
    queries = np.arange(n)
    if max_queries is not None and max_queries < n:
        if max_queries < 1:
            raise ConfigError(f'max_queries={max_queries} must be >= 1')
        queries = np.unique(np.linspace(0, n - 1, max_queries).round().astype(np.int64))
    rows, labels = [], []
    skipped = 0
    for q in queries:
        dist = np.hypot(east - east[q], north - north[q])
        exclude = dist <= exclude_radius_m
        exclude[q] = True
        ids, global_scores, rerank_scores, _ = localizer.rank(
            np.asarray(database.global_desc[q], dtype=np.float32),
            database.local_features([q])[0], exclude)
        if ids.size == 0:
            skipped += 1
            continue
        scores = rerank_scores if rerank_scores is not None else global_scores
        top = ids[:len(scores)]
        rows.append(confidence_features(scores, east[top], north[top], threshold_m))
        labels.append(bool(dist[ids[0]] <= threshold_m))
    features = np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))
    stats = {'num_queries': int(queries.size), 'num_skipped_no_candidates': skipped,
             'ranking': 'rerank' if config.rerank_top_n else 'global',
             'rerank_top_n': int(config.rerank_top_n),
             'retrieval_top_k': int(config.retrieval_top_k)}
    return features, np.asarray(labels, dtype=bool), stats


def fit_confidence(features: NDArray[np.float64], labels: NDArray[np.bool_],
                   threshold_m: float, info: dict[str, Any] | None = None) -> ConfidenceModel:
    """
    Fit the logistic confidence model, or return an uncalibrated one with the reason in its info.

    The info holds the sample counts, the fitted weights and the ECE before/after (in-sample
    and cross-validated where there are enough samples).
    """
    info = dict(info or {})
    y = labels.astype(np.float64)
    n_true = int(labels.sum())
    n_false = int(labels.size - n_true)
    uncal = ConfidenceModel(threshold_m=threshold_m)
    raw = np.array([uncal.predict(row) for row in features]) if labels.size else np.zeros(0)
    info.update({'num_samples': int(labels.size), 'num_true': n_true, 'num_false': n_false,
                 'ece_uncalibrated': expected_calibration_error(raw, y),
                 'ece_calibrated': None, 'ece_calibrated_cv': None})
    reason = None
    if labels.size < MIN_SAMPLES:
        reason = (f'only {labels.size} usable map queries (need {MIN_SAMPLES}); the map is too '
                  'small to learn what a false match looks like')
    elif n_false == 0:
        reason = (f'every map query found a place within {threshold_m} m (no false matches to '
                  'learn from: a short or very dense map)')
    elif n_true == 0:
        reason = (f'no map query found a place within {threshold_m} m outside its own '
                  'neighbourhood (sparse map, or the model cannot match this route)')
    elif min(n_true, n_false) < MIN_PER_CLASS:
        reason = (f'{n_true} true and {n_false} false matches: need at least {MIN_PER_CLASS} '
                  'of each')
    if reason is not None:
        info['calibrated'] = False
        info['reason'] = reason
        LOG.warning('confidence left uncalibrated: %s', reason)
        return ConfidenceModel(threshold_m=threshold_m, info=info)
    weights, bias = fit_logistic(features, y)
    probs = _predict(weights, bias, features)
    info['ece_calibrated'] = expected_calibration_error(probs, y)
    cv = _cross_validated_probs(features, y)
    if cv is not None:
        info['ece_calibrated_cv'] = expected_calibration_error(cv, y)
    info['calibrated'] = True
    info['reason'] = None
    return ConfidenceModel(threshold_m=threshold_m, weights=[float(v) for v in weights],
                           bias=float(bias), info=info)


def fit_map_calibration(database: MapDatabase, place_model: PlaceModel,
                        threshold_m: float = 25.0, exclude_radius_m: float | None = None,
                        max_queries: int | None = None,
                        localizer_config: LocalizerConfig | None = None) -> ConfidenceModel:
    """Calibrate on an open map without writing anything (evaluation uses this in memory)."""
    if threshold_m <= 0:
        raise ConfigError(f'threshold_m={threshold_m} must be > 0')
    radius = default_exclude_radius(threshold_m) if exclude_radius_m is None \
        else float(exclude_radius_m)
    if radius < 0:
        raise ConfigError(f'exclude_radius_m={radius} must be >= 0')
    features, labels, stats = collect_map_samples(database, place_model, threshold_m, radius,
                                                  max_queries, localizer_config)
    info = {'method': 'map self-queries, own neighbourhood excluded', 'threshold_m': threshold_m,
            'exclude_radius_m': radius, 'backbone': place_model.name, **stats}
    return fit_confidence(features, labels, threshold_m, info)


def calibrate_map(map_dir: str | Path, place_model: PlaceModel, threshold_m: float = 25.0,
                  exclude_radius_m: float | None = None, max_queries: int | None = None,
                  localizer_config: LocalizerConfig | None = None) -> dict[str, Any]:
    """
    Calibrate a map's confidence on its own images and store the result in its manifest.

    Args:
        map_dir: the map directory (only manifest.json is rewritten, atomically).
        place_model: the model the map was built with (checked against the manifest).
        threshold_m: distance that counts as the same place.
        exclude_radius_m: hide places closer than this to each query (the query itself is
            always hidden), inclusive; None = threshold_m / 2, see the module docstring.
        max_queries: use at most this many map images (evenly spread) as queries.
        localizer_config: retrieval/rerank settings; rerank_top_n should match the node's,
            because the top score is a rerank score when reranking and a cosine otherwise.

    Returns:
        The calibration info: calibrated (bool), reason (why not, or None), sample counts,
        ece_uncalibrated, ece_calibrated, ece_calibrated_cv, exclude_radius_m, weights, bias.
    """
    database = MapDatabase.open(map_dir)
    model = fit_map_calibration(database, place_model, threshold_m, exclude_radius_m,
                                max_queries, localizer_config)
    del database
    mapdb.write_calibration(map_dir, model.to_dict())
    return {**model.info, 'weights': model.weights, 'bias': model.bias,
            'feature_names': list(model.feature_names)}
