"""Result types of localization, shared by the node, the replay tool and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

NO_PLACE = -1  # the published place when there is none (PlaceRecognition.NO_PLACE)


@dataclass(frozen=True)
class PlacePosition:
    """Where a map place is: WGS84, the map's local ENU frame and UTM."""

    latitude: float
    longitude: float
    altitude: float
    east: float
    north: float
    up: float
    utm_zone: int
    utm_northern: bool
    utm_easting: float
    utm_northing: float
    heading: float | None = None  # radians, ENU (0 = east, counter-clockwise); None when unknown


@dataclass(frozen=True)
class Candidate:
    """One retrieved map place with its scores."""

    place_id: int
    position: PlacePosition
    global_score: float  # cosine similarity of the global descriptors
    rerank_score: float | None  # softmax(logits)[1] of the reranker; None when not reranked


@dataclass(frozen=True)
class Ranking:
    """One frame's retrieved places, best first: what the confidence and the filter read."""

    ids: NDArray[np.int64]  # every retrieved place, reranked ones first in rerank order
    global_scores: NDArray[np.float32]  # cosine of each id's global descriptor
    # softmax(logits)[1] of the first rerank_scores.size ids; None when nothing was reranked
    rerank_scores: NDArray[np.float32] | None = None

    @classmethod
    def empty(cls) -> Ranking:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))

    @property
    def size(self) -> int:
        return int(self.ids.size)

    @property
    def scores(self) -> NDArray[np.floating]:
        """The ranking scores: rerank scores when reranked, else the global cosines."""
        return self.rerank_scores if self.rerank_scores is not None else self.global_scores

    @property
    def scored_ids(self) -> NDArray[np.int64]:
        """The ids that have a ranking score (the reranked ones when reranked), best first."""
        return self.ids[:self.scores.size]

    def global_order(self) -> NDArray[np.int64]:
        """Return the ids in global-retrieval order (what a global-only localizer ranks)."""
        return self.ids[np.argsort(-self.global_scores, kind='stable')]


@dataclass(frozen=True)
class FilterEstimate:
    """What the sequence filter says after one frame."""

    place_id: int  # the place with the most posterior probability (NO_PLACE: no belief yet)
    confidence: float  # posterior mass within threshold_m of place_id (raw, uncalibrated)
    outside_prob: float  # posterior probability of "not in the map"
    reach_m: float  # motion radius used for this frame (0 on the first frame)
    num_active: int  # places carrying explicit mass after this frame
    num_edges: int  # (place, neighbour) pairs the motion step visited
    # How the motion step predicted this frame: 'odometry', 'odometry ring', 'velocity',
    # 'speed bound' (no odometry, no velocity estimate yet) or 'start' (the first frame).
    motion: str = ''


@dataclass(frozen=True)
class Decision:
    """
    The per-frame decision: what is published, and the intermediate values behind it.

    Made in one place (:class:`~r2former_ros.core.localize.decision.Decider`); the node, the
    bag replay, evaluation and calibration read these fields instead of recomputing them.
    """

    place_id: int  # the published place; NO_PLACE when the frame retrieved nothing
    confidence: float  # the published confidence (the filter's when filtering)
    matched: bool  # confidence >= the threshold and a place to publish
    calibrated: bool  # the published confidence is calibrated for the running settings
    single_confidence: float  # the single-frame confidence of the top-1 (calibrated if it can)
    raw_confidence: float  # the uncalibrated single-frame score (clipped top score)
    features: NDArray[np.float64]  # the single-frame confidence features
    estimate: FilterEstimate | None = None  # the sequence filter's raw output (None: no filter)
    odom_distance_m: float | None = None  # distance the filter's motion step took from odometry
    odometry_problem: str | None = None  # why odometry was not used for this frame (if given)
    sigma_m: float | None = None  # per-axis 1-sigma of the published position's error, metres


@dataclass
class LocalizationResult:
    """Outcome of localizing one query image."""

    matched: bool  # False means "no match": confidence below the threshold
    # calibrated probability that the best place lies within the threshold distance
    confidence: float
    candidates: list[Candidate]  # best first
    timings_ms: dict[str, float] = field(default_factory=dict)  # decode, extract, retrieve, rerank
    # (M, 2) int pairs (query token row, map token row) of the strongest local correspondences
    # with the best candidate, for the match image; empty when unavailable.
    token_pairs: list[tuple[int, int]] = field(default_factory=list)
    # False when the confidence is a raw score: the map has no calibration for the running
    # settings (backbone, ranking, filter, threshold_m).
    calibrated: bool = True
    # The sequence filter's most probable place (None without a filter); `confidence` is then
    # the posterior mass within threshold_m of it, while `candidates` keep single-frame scores.
    filtered_best: Candidate | None = None
    # Posterior probability of "not in the map" (None without a filter).
    outside_prob: float | None = None
    # Every retrieved place with its scores (``candidates`` keep the first result_top_k).
    ranking: Ranking | None = None
    # The decision with its intermediate values (single-frame confidence, filter estimate).
    decision: Decision | None = None

    @property
    def place_id(self) -> int:
        """The published place id, NO_PLACE when there is none."""
        best = self.best
        return NO_PLACE if best is None else best.place_id

    @property
    def best(self) -> Candidate | None:
        """The filter's place when filtering, else the top candidate (None: no candidates)."""
        if self.filtered_best is not None:
            return self.filtered_best
        return self.candidates[0] if self.candidates else None
