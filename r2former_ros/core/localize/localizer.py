"""
Image in, place out: extract, retrieve, rerank, score confidence. No ROS, no I/O besides the map.

The node, the bag replay tool, evaluation and the demo all call `Localizer`, so they agree by
construction.
"""

from __future__ import annotations

from dataclasses import dataclass
import time

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError, MapError
from r2former_ros.core.localize.confidence import ConfidenceModel, confidence_features
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.types import Candidate, LocalizationResult

MATCH_LINES = 20  # token pairs drawn in the match image, like the paper's figure


@dataclass(frozen=True)
class LocalizerConfig:
    """Retrieval and decision settings (validated by the node and the CLI alike)."""

    retrieval_top_k: int = 100  # candidates from the global index
    rerank_top_n: int = 100  # of those, how many the reranker reorders (0 = global only)
    result_top_k: int = 10  # candidates reported in a result
    confidence_threshold: float = 0.5  # below it the result says "no match"
    threshold_m: float = 25.0  # distance that counts as the same place (confidence target)

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
        return self


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
                 config: LocalizerConfig | None = None) -> None:
        self.model = model
        self.database = database
        self.config = (config or LocalizerConfig()).validate()
        check_map_matches_model(database, model)
        if self.config.rerank_top_n and not model.has_reranker:
            raise ConfigError('the model has no trained reranker (global-only checkpoint); '
                              'set rerank_top_n to 0')
        self.confidence = ConfidenceModel.from_dict(database.manifest.get('calibration'),
                                                    self.config.threshold_m)
        places = database.places
        self._east = np.asarray(places['east'], dtype=np.float64)
        self._north = np.asarray(places['north'], dtype=np.float64)

    def localize(self, rgb: NDArray[np.uint8], token_pairs: bool = True) -> LocalizationResult:
        """Localize one HxWx3 uint8 RGB image."""
        return self.localize_image(rgb, token_pairs)[0]

    def localize_image(self, rgb: NDArray[np.uint8], token_pairs: bool = True
                       ) -> tuple[LocalizationResult, NDArray[np.float32]]:
        """
        Localize one image and also return its (K, C) local rows (for drawing the match image).

        Args:
            rgb: HxWx3 uint8 RGB.
            token_pairs: find the strongest token pairs with the best place (only worth it when
                someone draws them).
        """
        start = time.perf_counter()
        features = self.model.encode_rgb([rgb])
        extract_ms = (time.perf_counter() - start) * 1e3
        query_local = features.local_feats[0]
        result = self.localize_features(features.global_desc[0], query_local,
                                        token_pairs=token_pairs)
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

    def localize_features(self, query_global: NDArray[np.float32],
                          query_local: NDArray[np.float32],
                          exclude: NDArray[np.bool_] | None = None,
                          token_pairs: bool = True) -> LocalizationResult:
        """Localize precomputed query features (used by evaluation and calibration too)."""
        ids, global_scores, rerank_scores, timings, best_local = self._rank(
            query_global, query_local, exclude)
        if ids.size == 0:
            timings['total'] = sum(timings.values())
            return LocalizationResult(False, 0.0, [], timings)
        ranking_scores = rerank_scores if rerank_scores is not None else global_scores
        features = confidence_features(ranking_scores, self._east[ids[:len(ranking_scores)]],
                                       self._north[ids[:len(ranking_scores)]],
                                       self.config.threshold_m)
        confidence = self.confidence.predict(features)
        count = min(self.config.result_top_k, ids.size)
        candidates = [Candidate(int(ids[i]), self.database.position(int(ids[i])),
                                float(global_scores[i]),
                                None if rerank_scores is None or i >= rerank_scores.size
                                else float(rerank_scores[i]))
                      for i in range(count)]
        pairs = []
        if token_pairs:
            if best_local is None:  # not reranked: the best place's rows were not read yet
                best_local = self.database.local_features(ids[:1])[0]
            pairs = strongest_token_pairs(query_local, best_local)
        timings['total'] = sum(timings.values())
        return LocalizationResult(confidence >= self.config.confidence_threshold, confidence,
                                  candidates, timings, pairs)
