"""
Image in, place out: extract, retrieve, rerank, score confidence. No ROS, no I/O besides the map.

The node, the bag replay tool, evaluation and the demo all call `Localizer`, so they agree by
construction.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
import time

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError, MapError
from r2former_ros.core.localize.calibration_store import (
    CalibrationSettings,
    apply_calibration,
    ranking_name,
)
from r2former_ros.core.localize.confidence import confidence_features
from r2former_ros.core.localize.sequence_filter import (
    DEFAULT_MAX_SPEED_MPS,
    FILTERS,
    FilterConfig,
    FilterEstimate,
    SequenceFilter,
)
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.mapdb.reader import follow_model_device
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.types import Candidate, LocalizationResult

LOG = logging.getLogger(__name__)

MATCH_LINES = 20  # token pairs drawn in the match image, like the paper's figure


@dataclass(frozen=True)
class LocalizerConfig:
    """Retrieval and decision settings (validated by the node and the CLI alike)."""

    retrieval_top_k: int = 100  # candidates from the global index
    rerank_top_n: int = 100  # of those, how many the reranker reorders (0 = global only)
    result_top_k: int = 10  # candidates reported in a result
    confidence_threshold: float = 0.5  # below it the result says "no match"
    threshold_m: float = 25.0  # distance that counts as the same place (confidence target)
    filter: str = 'none'  # 'hmm': sequence filter over the map's places; 'none': single frame
    max_speed_mps: float = DEFAULT_MAX_SPEED_MPS  # the filter's motion bound

    def validate(self) -> LocalizerConfig:
        """Raise ConfigError naming the first bad value; return self for chaining."""
        if self.retrieval_top_k < 1:
            raise ConfigError(f'retrieval_top_k={self.retrieval_top_k} must be >= 1')
        if not 0 <= self.rerank_top_n <= self.retrieval_top_k:
            raise ConfigError(f'rerank_top_n={self.rerank_top_n} must be in '
                              f'[0, retrieval_top_k={self.retrieval_top_k}]')
        if not 1 <= self.result_top_k <= self.retrieval_top_k:
            raise ConfigError(f'result_top_k={self.result_top_k} must be in '
                              f'[1, retrieval_top_k={self.retrieval_top_k}]')
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ConfigError(f'confidence_threshold={self.confidence_threshold} must be in '
                              '[0, 1]')
        if self.threshold_m <= 0:
            raise ConfigError(f'threshold_m={self.threshold_m} must be > 0')
        if self.filter not in FILTERS:
            raise ConfigError(f"filter='{self.filter}' must be one of {', '.join(FILTERS)}")
        if not self.max_speed_mps > 0:
            raise ConfigError(f'max_speed_mps={self.max_speed_mps} must be > 0')
        return self

    def calibration_settings(self, backbone: str) -> CalibrationSettings:
        """Return the settings a stored calibration must have been fitted under to apply."""
        return CalibrationSettings(backbone, ranking_name(self.rerank_top_n), self.filter,
                                   float(self.threshold_m))


def check_map_matches_model(database: MapDatabase, model: PlaceModel) -> None:
    """Refuse to query a map with a model other than the one that built it."""
    built = database.manifest['model']
    ours = model.identity()
    for key in ('backbone', 'checkpoint_sha256', 'input_hw', 'num_local', 'global_dim',
                'local_dim'):
        if built.get(key) != ours.get(key):
            raise MapError(f'map {database.path} was built with {key}={built.get(key)!r} but the '
                           f'model has {key}={ours.get(key)!r}; rebuild the map or pass the '
                           'checkpoint/backbone it was built with')


def strongest_token_pairs(query_local: NDArray[np.float32], db_local: NDArray[np.float32],
                          count: int = MATCH_LINES) -> list[tuple[int, int]]:
    """
    Rows (query, map) of the `count` strongest mutual-nearest descriptor pairs, for drawing.

    Strength is the cosine times both tokens' attention: featureless regions (a black lens
    border, sky) match each other well but draw attention from neither image, so they do not
    crowd out the pairs that show why the images match.
    """
    query_desc = query_local[:, 3:] / (np.linalg.norm(query_local[:, 3:], axis=1, keepdims=True)
                                       + 1e-12)
    db_desc = db_local[:, 3:] / (np.linalg.norm(db_local[:, 3:], axis=1, keepdims=True) + 1e-12)
    corr = query_desc @ db_desc.T
    best_db = corr.argmax(axis=1)
    best_query = corr.argmax(axis=0)
    mutual = np.flatnonzero(best_query[best_db] == np.arange(len(best_db)))
    strength = (corr[mutual, best_db[mutual]] * query_local[mutual, 2]
                * db_local[best_db[mutual], 2])
    keep = mutual[np.argsort(-strength)[:count]]
    return [(int(q), int(best_db[q])) for q in keep]


class Localizer:
    """Localize query images against one map with one place model."""

    def __init__(self, model: PlaceModel, database: MapDatabase,
                 config: LocalizerConfig | None = None, *, ranking_only: bool = False) -> None:
        """
        Open a localizer; warn once when the stored calibration does not fit the settings.

        Args:
            model: the place model the map was built with.
            database: the map.
            config: retrieval, decision and filter settings.
            ranking_only: the caller only ranks, or fits and reports the confidence itself
                (calibration, evaluation): no warning about an uncalibrated confidence.
        """
        self.model = model
        self.database = database
        self.config = (config or LocalizerConfig()).validate()
        check_map_matches_model(database, model)
        # Exact top-k on the GPU (one matmul over fp16 descriptors) beats any CPU index.
        follow_model_device(database, model.device)
        if self.config.rerank_top_n and not model.has_reranker:
            raise ConfigError('the model has no trained reranker (global-only checkpoint); '
                              'set rerank_top_n to 0')
        applied = apply_calibration(database.manifest.get('calibration'),
                                    self.config.calibration_settings(model.name))
        self.calibration = applied
        self.confidence = applied.single
        self.filtered_confidence = applied.filtered
        if not applied.calibrated and not ranking_only:
            LOG.warning('confidence is a raw score, not a calibrated probability: %s; run '
                        '`r2former calibrate` with the running settings (%s)', applied.mismatch,
                        self.config.calibration_settings(model.name).describe())
        places = database.places
        self._east = np.asarray(places['east'], dtype=np.float64)
        self._north = np.asarray(places['north'], dtype=np.float64)
        self.filter: SequenceFilter | None = None
        if self.config.filter == 'hmm':
            self.filter = SequenceFilter(
                self._east, self._north,
                FilterConfig(max_speed_mps=self.config.max_speed_mps,
                             threshold_m=self.config.threshold_m),
                applied.observation)

    @property
    def calibrated(self) -> bool:
        """True when the published confidence is calibrated for the running settings."""
        return self.calibration.calibrated

    def reset_filter(self) -> None:
        """Forget the sequence so far (a new drive, or the robot was moved); no-op without."""
        if self.filter is not None:
            self.filter.reset()

    def localize(self, rgb: NDArray[np.uint8], token_pairs: bool = True) -> LocalizationResult:
        """Localize one HxWx3 uint8 RGB image."""
        return self.localize_image(rgb, token_pairs)[0]

    def localize_image(self, rgb: NDArray[np.uint8], token_pairs: bool = True, *,
                       stamp_s: float | None = None, odom_distance_m: float | None = None
                       ) -> tuple[LocalizationResult, NDArray[np.float32]]:
        """
        Localize one image and also return its (K, C) local rows (for drawing the match image).

        Args:
            rgb: HxWx3 uint8 RGB.
            token_pairs: find the strongest token pairs with the best place (only worth it when
                someone draws them).
            stamp_s: the image's stamp (seconds); the sequence filter's motion bound uses the
                time since the previous frame (None: one nominal frame interval).
            odom_distance_m: distance travelled since the previous frame from odometry; replaces
                max_speed_mps * dt in the filter when given.
        """
        start = time.perf_counter()
        features = self.model.encode_rgb([rgb])
        extract_ms = (time.perf_counter() - start) * 1e3
        query_local = features.local_feats[0]
        result = self.localize_features(features.global_desc[0], query_local,
                                        token_pairs=token_pairs, stamp_s=stamp_s,
                                        odom_distance_m=odom_distance_m)
        result.timings_ms['extract'] = extract_ms
        result.timings_ms['total'] += extract_ms
        return result, query_local

    def rank(self, query_global: NDArray[np.float32], query_local: NDArray[np.float32],
             exclude: NDArray[np.bool_] | None = None
             ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32] | None,
                        dict[str, float]]:
        """
        Retrieve and rerank; return ids, global scores, rerank scores (or None) and timings.

        Args:
            query_global: (G,) descriptor.
            query_local: (K, C) local rows.
            exclude: optional (num_places,) mask of places that must not be returned (calibration
                uses it to hide a map image's own neighbourhood).
        """
        return self._rank(query_global, query_local, exclude)[:4]

    def _rank(self, query_global: NDArray[np.float32], query_local: NDArray[np.float32],
              exclude: NDArray[np.bool_] | None
              ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32] | None,
                         dict[str, float], NDArray[np.float32] | None]:
        """`rank`, plus the best place's local rows when reranking already read them."""
        cfg = self.config
        start = time.perf_counter()
        want = cfg.retrieval_top_k
        if exclude is not None:
            want = min(self.database.num_places, want + int(exclude.sum()))
        global_scores, ids = self.database.search(query_global[None].astype(np.float32), want)
        global_scores, ids = global_scores[0], ids[0]
        valid = ids >= 0
        if exclude is not None:
            valid &= ~exclude[np.clip(ids, 0, None)]
        ids = ids[valid][:cfg.retrieval_top_k]
        global_scores = global_scores[valid][:cfg.retrieval_top_k]
        timings = {'retrieve': (time.perf_counter() - start) * 1e3}
        rerank_scores = None
        best_local = None
        if cfg.rerank_top_n and ids.size:
            start = time.perf_counter()
            top = ids[:cfg.rerank_top_n]
            top_local = self.database.local_features(top)
            scores = self.model.rerank(query_local, top_local)
            # The reference orders the reranked candidates by the rerank score alone; the rest keep
            # their global order behind them.
            order = np.argsort(-scores, kind='stable')
            ids = np.concatenate((top[order], ids[cfg.rerank_top_n:]))
            global_scores = np.concatenate((global_scores[:cfg.rerank_top_n][order],
                                            global_scores[cfg.rerank_top_n:]))
            rerank_scores = scores[order]
            best_local = top_local[order[0]]
            timings['rerank'] = (time.perf_counter() - start) * 1e3
        return ids, global_scores, rerank_scores, timings, best_local

    def filter_step(self, ids: NDArray[np.int64], ranking_scores: NDArray[np.floating],
                    stamp_s: float | None = None, odom_distance_m: float | None = None
                    ) -> tuple[FilterEstimate, float]:
        """
        Feed one ranked frame to the sequence filter; return its estimate and the confidence.

        The confidence is the posterior mass within threshold_m of the filter's place, through
        the stored Platt scaling when the calibration applies, else raw.
        """
        if self.filter is None:
            raise ConfigError("the sequence filter is off (LocalizerConfig.filter='none')")
        scored = np.asarray(ids[:len(ranking_scores)], dtype=np.int64)
        estimate = self.filter.update(scored, ranking_scores, stamp_s, odom_distance_m)
        confidence = estimate.confidence
        if self.calibration.calibrated and self.filtered_confidence is not None:
            confidence = self.filtered_confidence.predict(confidence)
        return estimate, float(confidence)

    def localize_features(self, query_global: NDArray[np.float32],
                          query_local: NDArray[np.float32],
                          exclude: NDArray[np.bool_] | None = None,
                          token_pairs: bool = True, *, stamp_s: float | None = None,
                          odom_distance_m: float | None = None) -> LocalizationResult:
        """
        Localize precomputed query features (used by evaluation and calibration too).

        With the sequence filter on, every call is one frame of the sequence (see
        :meth:`localize_image` for ``stamp_s`` and ``odom_distance_m``).
        """
        ids, global_scores, rerank_scores, timings, best_local = self._rank(
            query_global, query_local, exclude)
        if ids.size == 0:
            if self.filter is not None:  # time passes for the filter even without candidates
                self.filter_step(ids, np.zeros(0), stamp_s, odom_distance_m)
            timings['total'] = sum(timings.values())
            return LocalizationResult(False, 0.0, [], timings, calibrated=self.calibrated)
        ranking_scores = rerank_scores if rerank_scores is not None else global_scores
        filtered_best = None
        outside_prob = None
        if self.filter is None:
            scored = ids[:len(ranking_scores)]
            features = confidence_features(ranking_scores, self._east[scored],
                                           self._north[scored], self.config.threshold_m)
            confidence = self.confidence.predict(features)
        else:  # the published confidence is the filter's; the single-frame one is not needed
            start = time.perf_counter()
            estimate, confidence = self.filter_step(ids, ranking_scores, stamp_s,
                                                    odom_distance_m)
            filtered_best = self._filtered_candidate(estimate.place_id, ids, global_scores,
                                                     rerank_scores)
            outside_prob = estimate.outside_prob
            timings['filter'] = (time.perf_counter() - start) * 1e3
        count = min(self.config.result_top_k, ids.size)
        candidates = [Candidate(int(ids[i]), self.database.position(int(ids[i])),
                                float(global_scores[i]),
                                None if rerank_scores is None or i >= rerank_scores.size
                                else float(rerank_scores[i]))
                      for i in range(count)]
        pairs = []
        if token_pairs:
            shown = ids[0] if filtered_best is None else filtered_best.place_id
            if best_local is None or shown != ids[0]:  # rows of the shown place not read yet
                best_local = self.database.local_features([shown])[0]
            pairs = strongest_token_pairs(query_local, best_local)
        timings['total'] = sum(timings.values())
        return LocalizationResult(confidence >= self.config.confidence_threshold, confidence,
                                  candidates, timings, pairs, calibrated=self.calibrated,
                                  filtered_best=filtered_best, outside_prob=outside_prob)

    def _filtered_candidate(self, place_id: int, ids: NDArray[np.int64],
                            global_scores: NDArray[np.float32],
                            rerank_scores: NDArray[np.float32] | None) -> Candidate:
        """Return the filter's place as a Candidate (single-frame scores when it was ranked)."""
        rank = np.flatnonzero(ids == place_id)
        if rank.size == 0:  # the filter holds on to a place this frame did not retrieve
            return Candidate(place_id, self.database.position(place_id), float('nan'), None)
        i = int(rank[0])
        rerank = None if rerank_scores is None or i >= rerank_scores.size \
            else float(rerank_scores[i])
        return Candidate(place_id, self.database.position(place_id), float(global_scores[i]),
                         rerank)
