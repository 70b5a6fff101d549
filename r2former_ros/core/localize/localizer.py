"""
Image in, place out: extract, retrieve, rerank, then the per-frame decision.

No ROS, no I/O besides the map.

:meth:`Localizer.step` is the one per-frame step (rank -> confidence -> filter -> decision, with
timings); :meth:`Localizer.localize_image` encodes an image and calls it. The node, the bag
replay (``r2former localize-bag`` and the demo), evaluation, both calibrations and the benches
all go through it, and read what they need from its result (the full ranking and the decision
with its intermediate values), so they publish and measure the same thing by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
import logging
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.calibration_store import (
    AppliedCalibration,
    CalibrationSettings,
    apply_calibration,
    resolve_filter,
)
from r2former_ros.core.localize.decision import Decider
from r2former_ros.core.localize.odometry import OdometryTrack
from r2former_ros.core.localize.sequence_filter import SequenceFilter
from r2former_ros.core.localize.settings import DEFAULT_CONFIDENCE_THRESHOLD, LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.mapdb.reader import follow_model_device
from r2former_ros.core.mapdb.schema import compare_model
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.types import NO_PLACE, Candidate, LocalizationResult, Ranking

LOG = logging.getLogger(__name__)

MATCH_LINES = 20  # token pairs drawn in the match image, like the paper's figure




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
                 config: LocalizerConfig | None = None, *,
                 calibration: Mapping[str, Any] | None = None,
                 odometry: OdometryTrack | None = None,
                 ranking_only: bool = False) -> None:
        """
        Open a localizer; warn once when the stored calibration does not fit the settings.

        Args:
            model: the place model the map was built with (checked like ``MapDatabase.open``
                checks an expected model: weights, backbone, input size, tokens, dimensions,
                patch size, normalisation).
            database: the map.
            config: retrieval, decision and filter settings.
            calibration: a calibration block to use instead of the map's own (evaluation's
                in-memory self-calibration of an uncalibrated map).
            odometry: the robot's odometry (the node's ``odom`` input, a bag's odometry topic):
                the sequence filter's motion step reads the distance between two frames from
                it. A calibration fitted with odometry holds only with odometry, and without
                only without.
            ranking_only: the caller fits or reports the confidence itself (calibration,
                evaluation): no warning about an uncalibrated confidence.
        """
        self.model = model
        self.database = database
        self.config = (config or LocalizerConfig()).validate()
        compare_model(database.manifest['model'], model.identity(), str(database.path))
        # Exact top-k on the GPU (one matmul over fp16 descriptors) beats any CPU index.
        follow_model_device(database, model.device)
        if self.config.rerank_top_n and not model.has_reranker:
            raise ConfigError('the model has no trained reranker (global-only checkpoint); '
                              'set rerank_top_n to 0')
        stored = database.manifest.get('calibration') if calibration is None else calibration
        block = dict(stored) if stored else None
        # 'auto' becomes the filter the calibration supports; the config says what runs.
        self.config = replace(self.config, filter=resolve_filter(block, self.config.filter))
        running = CalibrationSettings.running(self.config, model.name, odometry is not None)
        applied = apply_calibration(block, running)
        if not applied.calibrated and not ranking_only:
            LOG.warning('confidence is a raw score, not a calibrated probability: %s; run '
                        '`r2former calibrate` with the running settings (%s)', applied.mismatch,
                        running.describe())
        self.threshold_source = self._resolve_threshold(applied)
        places = database.places
        self.decider = Decider(places['east'], places['north'], self.config, applied, odometry)

    def _resolve_threshold(self, applied: AppliedCalibration) -> str:
        """Fix the confidence threshold (asked for, the calibrated operating point, or 0.5)."""
        if self.config.confidence_threshold is not None:
            return 'set'
        point = applied.operating_point or {}
        threshold = point.get('threshold')
        if threshold is None:
            self.config = replace(self.config,
                                  confidence_threshold=DEFAULT_CONFIDENCE_THRESHOLD)
            return 'default'
        self.config = replace(self.config, confidence_threshold=float(threshold))
        return (f'calibrated for precision {point.get("target_precision")} '
                f'(certified {point.get("certified_precision")})')

    @property
    def calibration(self) -> AppliedCalibration:
        """What of the map's calibration applies to the running settings."""
        return self.decider.calibration

    @property
    def calibrated(self) -> bool:
        """True when the published confidence is calibrated for the running settings."""
        return self.decider.calibrated

    @property
    def filter(self) -> SequenceFilter | None:
        """The sequence filter (None with ``filter='none'``)."""
        return self.decider.filter

    def reset_filter(self) -> None:
        """Forget the sequence so far (a new drive, or the robot was moved); no-op without."""
        self.decider.reset()

    def localize_image(self, rgb: NDArray[np.uint8], token_pairs: bool = True, *,
                       stamp_s: float | None = None, odom_distance_m: float | None = None
                       ) -> tuple[LocalizationResult, NDArray[np.float32]]:
        """
        Encode one HxWx3 uint8 RGB image and take the step; also return its (K, C) local rows.

        See :meth:`step` for the arguments.
        """
        start = time.perf_counter()
        features = self.model.encode_rgb([rgb])
        extract_ms = (time.perf_counter() - start) * 1e3
        query_local = features.local_feats[0]
        result = self.step(features.global_desc[0], query_local, token_pairs=token_pairs,
                           stamp_s=stamp_s, odom_distance_m=odom_distance_m)
        result.timings_ms['extract'] = extract_ms
        result.timings_ms['total'] += extract_ms
        return result, query_local

    def step(self, query_global: NDArray[np.float32], query_local: NDArray[np.float32], *,
             token_pairs: bool = False, stamp_s: float | None = None,
             odom_distance_m: float | None = None,
             exclude: NDArray[np.bool_] | None = None) -> LocalizationResult:
        """
        Take the per-frame step: retrieve, rerank, decide (confidence, filter, matched), timed.

        With the sequence filter on, every call is one frame of the sequence.

        Args:
            query_global: (G,) global descriptor.
            query_local: (K, C) local rows.
            token_pairs: find the strongest token pairs with the published place (only worth
                it when someone draws them).
            stamp_s: the image's stamp (seconds); the filter's motion bound uses the time since
                the previous frame (None: one nominal frame interval).
            odom_distance_m: distance travelled since the previous frame from odometry; replaces
                max_speed_mps * dt in the filter when given.
            exclude: optional (num_places,) mask of places that must not be retrieved (map
                self-calibration hides a map image's own neighbourhood with it).

        Returns:
            The result: published place, confidence and matched; ``candidates`` (the first
            result_top_k); ``ranking`` (every retrieved place); ``decision`` (single-frame
            confidence and features, the filter's estimate); ``timings_ms`` (retrieve, rerank,
            filter, total).
        """
        ranking, timings, best_local = self._rank(query_global, query_local, exclude)
        start = time.perf_counter()
        decision = self.decider.decide(ranking, stamp_s=stamp_s,
                                       odom_distance_m=odom_distance_m)
        if self.decider.filter is not None:
            timings['filter'] = (time.perf_counter() - start) * 1e3
        ids, rerank_scores = ranking.ids, ranking.rerank_scores
        count = min(self.config.result_top_k, ranking.size)
        candidates = [Candidate(int(ids[i]), self.database.position(int(ids[i])),
                                float(ranking.global_scores[i]),
                                None if rerank_scores is None or i >= rerank_scores.size
                                else float(rerank_scores[i]))
                      for i in range(count)]
        filtered_best = None
        if decision.estimate is not None and decision.place_id != NO_PLACE:
            filtered_best = self._candidate(decision.place_id, ranking)
        pairs: list[tuple[int, int]] = []
        if token_pairs and decision.place_id != NO_PLACE:
            if best_local is None or decision.place_id != ids[0]:  # rows not read yet
                best_local = self.database.local_features([decision.place_id])[0]
            pairs = strongest_token_pairs(query_local, best_local)
        timings['total'] = sum(timings.values())
        return LocalizationResult(
            decision.matched, decision.confidence, candidates, timings, pairs,
            calibrated=decision.calibrated, filtered_best=filtered_best,
            outside_prob=None if decision.estimate is None else decision.estimate.outside_prob,
            ranking=ranking, decision=decision)

    def _rank(self, query_global: NDArray[np.float32], query_local: NDArray[np.float32],
              exclude: NDArray[np.bool_] | None
              ) -> tuple[Ranking, dict[str, float], NDArray[np.float32] | None]:
        """Retrieve and rerank; also return timings and the top place's local rows if read."""
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
            rerank_scores = np.asarray(scores[order], dtype=np.float32)
            best_local = top_local[order[0]]
            timings['rerank'] = (time.perf_counter() - start) * 1e3
        ranking = Ranking(np.asarray(ids, dtype=np.int64),
                          np.asarray(global_scores, dtype=np.float32), rerank_scores)
        return ranking, timings, best_local

    def _candidate(self, place_id: int, ranking: Ranking) -> Candidate:
        """Return a place as a Candidate (single-frame scores when this frame ranked it)."""
        rank = np.flatnonzero(ranking.ids == place_id)
        if rank.size == 0:  # the filter holds on to a place this frame did not retrieve
            return Candidate(place_id, self.database.position(place_id), float('nan'), None)
        i = int(rank[0])
        rerank = ranking.rerank_scores
        return Candidate(place_id, self.database.position(place_id),
                         float(ranking.global_scores[i]),
                         None if rerank is None or i >= rerank.size else float(rerank[i]))
