"""
Calibrate the confidence on the map itself: what a true and a false match look like on this route.

Method (run at the end of a map build, or later with :func:`calibrate_map`):

1. An even subsample of the map images (at most ``max_queries``, default
   :data:`SELF_CALIBRATION_MAX_QUERIES`) is used as queries against the map. Their features are
   already stored (global descriptor, local features), so nothing is re-encoded and calibration
   costs one retrieval + rerank per query; a progress bar shows it.
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
   features, then stored in the manifest (``calibration``) as weights on the raw features,
   with the settings it holds for (backbone, ranking, filter 'none', threshold_m; see
   :mod:`~r2former_ros.core.localize.calibration_store`). The sequence filter's observation
   model is fitted from the same ranked lists (every candidate labelled).

This is the fallback. A map's own images are not a second drive: the true matches left after
hiding the neighbourhood are views from farther away than a revisit's, so a calibration fitted
on another drive of the route (``r2former calibrate``,
:mod:`~r2former_ros.core.calibration.drive`) is the one to trust.

The expected calibration error (ECE) of the uncalibrated confidence (the clipped top score) and
of the calibrated one is reported, in-sample and cross-validated in contiguous blocks of the
route (so no held-out query has its neighbour in the training set). Maps that cannot
be calibrated (too few places, or every label the same: all true on a tiny dense map, all false
when nothing matches) keep the uncalibrated confidence, and the stored info says why.
"""

from __future__ import annotations

from dataclasses import replace
import logging
from pathlib import Path
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core import mapdb
from r2former_ros.core.calibration.fitting import (
    CV_FOLDS,
    contiguous_folds,
    expected_calibration_error,
    fit_logistic,
    fit_observation_model,
    predict_logistic,
)
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.calibration_store import ranking_name
from r2former_ros.core.localize.confidence import FEATURE_NAMES, ConfidenceModel
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.localize.settings import LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.progress import terminal_bar

LOG = logging.getLogger(__name__)

MIN_SAMPLES = 8  # fewer usable map queries than this: keep the uncalibrated confidence
MIN_PER_CLASS = 2  # each label (true/false match) must occur at least this often
SELF_CALIBRATION_MAX_QUERIES = 2000  # map images used as queries (evenly spread) by default
BUDGET_PROBE_QUERIES = 5  # queries timed to size a calibration to its time budget
BUDGET_MIN_QUERIES = 50  # a budgeted calibration uses at least this many (if the map has them)


def cross_validated_probs(features: NDArray[np.float64], labels: NDArray[np.float64],
                          folds: int = CV_FOLDS) -> NDArray[np.float64] | None:
    """
    Out-of-fold probabilities, folds being contiguous blocks of the (time-ordered) samples.

    Consecutive frames of a drive (or neighbouring map places) are near twins; round-robin
    folds would put each held-out sample's twin in the training set and flatter the fit.
    Returns None when there are too few samples or a training split has one class only.
    """
    n = labels.size
    if n < 2 * folds:
        return None
    out = np.empty(n)
    fold_of = contiguous_folds(n, folds)
    for k in range(folds):
        test = fold_of == k
        train = ~test
        y_train = labels[train]
        if y_train.min() == y_train.max():
            return None
        w, b = fit_logistic(features[train], y_train)
        out[test] = predict_logistic(w, b, features[test])
    return out


def default_exclude_radius(threshold_m: float) -> float:
    """Half the threshold: true matches left are places threshold/2 .. threshold away."""
    return 0.5 * threshold_m


def even_subsample(count: int, max_queries: int | None) -> NDArray[np.int64]:
    """At most ``max_queries`` indices of ``range(count)``, evenly spread, in order."""
    if max_queries is None or max_queries >= count:
        return np.arange(count)
    if max_queries < 1:
        raise ConfigError(f'max_queries={max_queries} must be >= 1')
    return np.unique(np.linspace(0, count - 1, max_queries).round().astype(np.int64))


def collect_map_samples(database: MapDatabase, place_model: PlaceModel, threshold_m: float,
                        exclude_radius_m: float,
                        max_queries: int | None = SELF_CALIBRATION_MAX_QUERIES,
                        localizer_config: LocalizerConfig | None = None,
                        progress: bool = False, time_budget_s: float | None = None
                        ) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64],
                                   dict[str, Any]]:
    """
    Query the map with its own images (neighbourhood hidden); return features, labels and stats.

    With ``time_budget_s`` the number of queries is sized to the budget: a few queries are timed
    first, then as many (evenly spread, at least BUDGET_MIN_QUERIES, at most ``max_queries``)
    as fit; the stats say how many and why.

    Returns:
        features (M, F), labels (M,) True when the best remaining place is within
        ``threshold_m``, the uncalibrated confidence of each (M,), and stats: counts (queries
        used, skipped for want of candidates), the ranking, and the sequence filter's
        observation model fitted on the same lists (``observation``, ``observation_fit``).
    """
    config = replace(localizer_config or LocalizerConfig(), threshold_m=threshold_m,
                     filter='none')
    if config.rerank_top_n and not place_model.has_reranker:
        config = replace(config, rerank_top_n=0)
    localizer = Localizer(place_model, database, config, ranking_only=True)
    places = database.places
    east = np.asarray(places['east'], dtype=np.float64)
    north = np.asarray(places['north'], dtype=np.float64)
    queries = even_subsample(database.num_places, max_queries)
    budget: dict[str, Any] = {}
    if time_budget_s is not None and queries.size > BUDGET_MIN_QUERIES:
        probe = even_subsample(database.num_places, BUDGET_PROBE_QUERIES)
        start = time.perf_counter()
        for q in probe:
            localizer.step(np.asarray(database.global_desc[q], dtype=np.float32),
                           database.local_features([q])[0])
        per_query = (time.perf_counter() - start) / probe.size
        fits = int(time_budget_s / max(per_query, 1e-6))
        chosen = min(queries.size, max(BUDGET_MIN_QUERIES, fits))
        queries = even_subsample(database.num_places, chosen)
        budget = {'time_budget_s': float(time_budget_s), 'seconds_per_query': per_query,
                  'queries_within_budget': fits}
    rows, labels, raws = [], [], []
    cand_scores, cand_labels, true_counts = [], [], []
    skipped = 0
    for q in terminal_bar(progress, iterable=queries, desc='calibrating on map images',
                          unit='query', leave=False):
        dist = np.hypot(east - east[q], north - north[q])
        exclude = dist <= exclude_radius_m
        exclude[q] = True
        result = localizer.step(np.asarray(database.global_desc[q], dtype=np.float32),
                                database.local_features([q])[0], exclude=exclude)
        ranking, decision = result.ranking, result.decision
        assert ranking is not None and decision is not None
        if ranking.size == 0:
            skipped += 1
            continue
        top = ranking.scored_ids
        rows.append(decision.features)
        raws.append(decision.raw_confidence)
        labels.append(bool(dist[ranking.ids[0]] <= threshold_m))
        cand_scores.append(np.asarray(ranking.scores, dtype=np.float64))
        cand_labels.append(dist[top] <= threshold_m)
        true_counts.append(int(np.sum((dist <= threshold_m) & ~exclude)))
    features = np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))
    # No "as if outside the map" view here, unlike a drive calibration: a map image queried
    # against its own traverse scores far above what a second drive scores at the same place
    # (corridor, DINOv2: true places 0.49 vs 0.30 mean rerank score, while the best place
    # once the true ones are hidden scores 0.42). "Outside" learned here would reject
    # every real frame (the demo's filter then matched 0 of 60).
    observation, observation_fit = fit_observation_model(
        cand_scores, cand_labels, true_counts, database.num_places)
    stats = {'num_queries': int(queries.size), **budget,
             'num_skipped_no_candidates': skipped,
             'ranking': 'rerank' if config.rerank_top_n else 'global',
             'rerank_top_n': int(config.rerank_top_n),
             'retrieval_top_k': int(config.retrieval_top_k),
             'observation': observation.to_dict(), 'observation_fit': observation_fit}
    return features, np.asarray(labels, dtype=bool), np.asarray(raws, dtype=np.float64), stats


def fit_confidence(features: NDArray[np.float64], labels: NDArray[np.bool_],
                   raw: NDArray[np.float64], threshold_m: float,
                   info: dict[str, Any] | None = None) -> ConfidenceModel:
    """
    Fit the logistic confidence model, or return an uncalibrated one with the reason in its info.

    Args:
        features: (M, F) single-frame confidence features of each sample (from the step).
        labels: (M,) whether the sample's top-1 is right.
        raw: (M,) the uncalibrated confidence the step reported for each sample.
        threshold_m: the distance that counts as right.
        info: merged into the model's info.

    The info holds the sample counts, the fitted weights and the ECE before/after (in-sample
    and cross-validated in contiguous blocks where there are enough samples).
    """
    info = dict(info or {})
    y = labels.astype(np.float64)
    n_true = int(labels.sum())
    n_false = int(labels.size - n_true)
    raw = np.asarray(raw, dtype=np.float64).reshape(-1)
    if raw.size != labels.size:
        raise ConfigError(f'{raw.size} raw confidences for {labels.size} labels')
    info.update({'num_samples': int(labels.size), 'num_true': n_true, 'num_false': n_false,
                 'ece_uncalibrated': expected_calibration_error(raw, y),
                 'ece_calibrated': None, 'ece_calibrated_cv': None,
                 'cv': f'{CV_FOLDS} contiguous blocks'})
    reason = None
    if labels.size < MIN_SAMPLES:
        reason = (f'only {labels.size} usable queries (need {MIN_SAMPLES}); too few to learn '
                  'what a false match looks like')
    elif n_false == 0:
        reason = (f'every query found a place within {threshold_m} m (no false matches to '
                  'learn from: a short or very dense map)')
    elif n_true == 0:
        reason = (f'no query found a place within {threshold_m} m (outside its own '
                  'neighbourhood for map self-queries): sparse map, or the model cannot match '
                  'this route')
    elif min(n_true, n_false) < MIN_PER_CLASS:
        reason = (f'{n_true} true and {n_false} false matches: need at least {MIN_PER_CLASS} '
                  'of each')
    if reason is not None:
        info['calibrated'] = False
        info['reason'] = reason
        LOG.warning('confidence left uncalibrated: %s', reason)
        return ConfidenceModel(threshold_m=threshold_m, info=info)
    weights, bias = fit_logistic(features, y)
    probs = predict_logistic(weights, bias, features)
    info['ece_calibrated'] = expected_calibration_error(probs, y)
    cv = cross_validated_probs(features, y)
    if cv is not None:
        info['ece_calibrated_cv'] = expected_calibration_error(cv, y)
    info['calibrated'] = True
    info['reason'] = None
    return ConfidenceModel(threshold_m=threshold_m, weights=[float(v) for v in weights],
                           bias=float(bias), info=info)


def fit_map_calibration(database: MapDatabase, place_model: PlaceModel,
                        threshold_m: float = 25.0, exclude_radius_m: float | None = None,
                        max_queries: int | None = SELF_CALIBRATION_MAX_QUERIES,
                        localizer_config: LocalizerConfig | None = None,
                        progress: bool = False,
                        time_budget_s: float | None = None) -> ConfidenceModel:
    """Calibrate on an open map without writing anything (evaluation uses this in memory)."""
    if threshold_m <= 0:
        raise ConfigError(f'threshold_m={threshold_m} must be > 0')
    radius = default_exclude_radius(threshold_m) if exclude_radius_m is None \
        else float(exclude_radius_m)
    if radius < 0:
        raise ConfigError(f'exclude_radius_m={radius} must be >= 0')
    features, labels, raw, stats = collect_map_samples(database, place_model, threshold_m,
                                                       radius, max_queries, localizer_config,
                                                       progress, time_budget_s)
    info = {'method': 'map self-queries, own neighbourhood excluded', 'threshold_m': threshold_m,
            'exclude_radius_m': radius, 'backbone': place_model.name, **stats}
    return fit_confidence(features, labels, raw, threshold_m, info)


def map_calibration_block(model: ConfidenceModel) -> dict[str, Any]:
    """Build the manifest block of a self-calibration: the model, its settings and source."""
    info = model.info
    return {**model.to_dict(),
            'settings': {'backbone': info.get('backbone'),
                         'ranking': ranking_name(int(info.get('rerank_top_n') or 0)),
                         'threshold_m': float(model.threshold_m), 'filters': ['none']},
            'source': {'kind': 'map self-queries', 'drive': None},
            'observation': info.get('observation'), 'filtered': None,
            'ece_cv': {'single': info.get('ece_calibrated_cv'), 'filtered': None,
                       'folds': CV_FOLDS, 'split': 'contiguous blocks'}}


def calibrate_map(map_dir: str | Path, place_model: PlaceModel, threshold_m: float = 25.0,
                  exclude_radius_m: float | None = None,
                  max_queries: int | None = SELF_CALIBRATION_MAX_QUERIES,
                  localizer_config: LocalizerConfig | None = None,
                  progress: bool = True, time_budget_s: float | None = None) -> dict[str, Any]:
    """
    Calibrate a map's confidence on its own images and store the result in its manifest.

    Args:
        map_dir: the map directory (only manifest.json is rewritten, atomically).
        place_model: the model the map was built with (checked against the manifest).
        threshold_m: distance that counts as the same place.
        exclude_radius_m: hide places closer than this to each query (the query itself is
            always hidden), inclusive; None = threshold_m / 2, see the module docstring.
        max_queries: use at most this many map images (evenly spread) as queries; None = all.
        localizer_config: retrieval/rerank settings; rerank_top_n should match the node's,
            because the top score is a rerank score when reranking and a cosine otherwise
            (the stored settings say which; other settings get the raw score).
        progress: show a progress bar (tqdm, on stderr, only when it is a terminal).
        time_budget_s: size the number of queries (up to ``max_queries``) to this many
            seconds; see :func:`collect_map_samples`.

    Returns:
        The calibration info: calibrated (bool), reason (why not, or None), sample counts,
        ece_uncalibrated, ece_calibrated, ece_calibrated_cv, exclude_radius_m, weights, bias.
    """
    database = MapDatabase.open(map_dir)
    fitted_on = database.identity.manifest_sha256
    model = fit_map_calibration(database, place_model, threshold_m, exclude_radius_m,
                                max_queries, localizer_config, progress, time_budget_s)
    del database
    # Refused if the map changed (appended, calibrated by another tool) during the fit.
    mapdb.write_calibration(map_dir, map_calibration_block(model),
                            expected_manifest_sha256=fitted_on)
    return {**model.info, 'weights': model.weights, 'bias': model.bias,
            'feature_names': list(model.feature_names)}
