"""Result types of localization, shared by the node, the replay tool and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    @property
    def best(self) -> Candidate | None:
        """The filter's place when filtering, else the top candidate (None: no candidates)."""
        if self.filtered_best is not None:
            return self.filtered_best
        return self.candidates[0] if self.candidates else None
