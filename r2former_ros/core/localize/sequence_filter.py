"""
A discrete Bayes filter (hidden Markov model) over the map's places and a "not in the map" state.

State: the robot is at one of the N map places, or somewhere the map does not cover ("outside").

Motion (from the map's own geometry, ENU metres): between two frames the robot moves at most
``reach = max_speed_mps * dt + slack_m`` (``odom_distance_m + slack_m`` when odometry is given),
in any direction, so a place's probability spreads evenly over the places within ``reach`` of
it. ``dt`` comes from the image stamps: a dropped frame widens the reach. On top of that, each
frame a small share of the in-map mass is re-spread uniformly (``kidnap_prob``: a teleport, so
the filter recovers when it was wrong or the robot was carried elsewhere), a share moves to
"outside" (``leave_prob``) and a share of "outside" comes back uniformly (``enter_prob``).

Observation: the ranked candidates of one frame, K places with scores (rerank scores when
reranked, else cosines). Each place gets a likelihood ratio "the robot is here" vs "the robot is
not in the map" (the outside state's ratio is 1): a log-linear function of its score and its gap
to the top score for the top-K places, and one shared ``floor`` for every place outside the
top-K. :class:`ObservationModel` holds the parameters; calibration fits them on a drive with GPS
(:mod:`~r2former_ros.core.calibration.drive`). When every score looks like nothing
matches, the ratios fall below 1 and the mass flows to "outside"; it flows back when scores
recover. The query's own GPS is never read.

Sparse representation: the belief is a uniform background (``background`` mass spread over all
places) plus explicit extra mass on a few "active" places (at most ``max_active``). The uniform
part stays uniform under motion and under the floor likelihood, so one frame costs
O(active x neighbourhood + K), not O(N^2) or even O(N).

Output per frame (:class:`FilterEstimate`): the place with the most probability, the posterior
mass within ``threshold_m`` of it (the filtered confidence, before calibration) and the
probability of "not in the map".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.place_grid import PlaceGrid
from r2former_ros.core.localize.settings import DEFAULT_MAX_SPEED_MPS
from r2former_ros.core.types import NO_PLACE, FilterEstimate

MAX_LOG_RATIO = 30.0
# Reaches wider than this many grid cells mean the filter has no idea where the robot is after
# the gap: the belief becomes uniform instead of being spread over a large neighbourhood.
MAX_REACH_CELLS = 8


@dataclass(frozen=True)
class FilterConfig:
    """Motion and bookkeeping settings of the sequence filter."""

    max_speed_mps: float = DEFAULT_MAX_SPEED_MPS
    slack_m: float = 5.0  # added to every reach: GPS noise of the map's places
    default_dt_s: float = 1.0  # frame interval assumed when images carry no stamp
    kidnap_prob: float = 0.01  # per frame: in-map mass re-spread uniformly (teleport)
    leave_prob: float = 0.02  # per frame: in the map -> not in the map
    enter_prob: float = 0.1  # per frame: not in the map -> in the map (anywhere)
    start_outside: float = 0.1  # prior of "not in the map" at the start
    threshold_m: float = 25.0  # posterior mass within this of the best place = confidence
    max_active: int = 256  # places carrying explicit mass; the rest is the uniform background
    prune_ratio: float = 1e-7  # explicit mass below this share of the best goes to background

    def validate(self) -> FilterConfig:
        """Raise ConfigError naming the first bad value; return self."""
        if not self.max_speed_mps > 0:
            raise ConfigError(f'max_speed_mps={self.max_speed_mps} must be > 0')
        if self.slack_m < 0 or not self.default_dt_s > 0:
            raise ConfigError(f'slack_m={self.slack_m} must be >= 0 and default_dt_s='
                              f'{self.default_dt_s} > 0')
        for name in ('kidnap_prob', 'leave_prob', 'enter_prob', 'start_outside'):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f'{name}={value} must be in [0, 1)')
        if not self.threshold_m > 0 or self.max_active < 1:
            raise ConfigError(f'threshold_m={self.threshold_m} must be > 0 and max_active='
                              f'{self.max_active} >= 1')
        return self

    @property
    def cell_m(self) -> float:
        """Grid cell: about one frame's reach, so a normal step scans 3x3 cells."""
        return max(self.threshold_m, self.slack_m + self.max_speed_mps * self.default_dt_s)


@dataclass(frozen=True)
class ObservationModel:
    """
    Likelihood ratio of "at this place" vs "not in the map" from a frame's ranked scores.

    ``log LR = tempering * (weight_score * s + weight_gap * (s - s_top) + bias)`` for a top-K
    place with score ``s``, never below the floor; ``floor ** tempering`` for any other place.
    """

    weight_score: float = 0.0
    weight_gap: float = 20.0
    bias: float = 2.0
    floor: float = 0.05
    tempering: float = 1.0
    fitted: bool = False  # False: the defaults above, not fitted on any data

    def ratios(self, scores: ArrayLike) -> tuple[NDArray[np.float64], float]:
        """(K,) likelihood ratios of the top-K places and the floor of the rest."""
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        log_floor = self.tempering * math.log(max(self.floor, 1e-12))
        if s.size == 0:
            return np.zeros(0), math.exp(log_floor)
        log_lr = self.tempering * (self.weight_score * s + self.weight_gap * (s - s[0])
                                   + self.bias)
        log_lr = np.clip(np.maximum(log_lr, log_floor), -MAX_LOG_RATIO, MAX_LOG_RATIO)
        return np.exp(log_lr), math.exp(log_floor)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ObservationModel:
        if not data:
            return cls()
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class SequenceFilter:
    """Forward filter over one map's places; feed it one ranked frame at a time."""

    def __init__(self, east: ArrayLike, north: ArrayLike, config: FilterConfig | None = None,
                 observation: ObservationModel | None = None) -> None:
        self.config = (config or FilterConfig()).validate()
        self.observation = observation or ObservationModel()
        self.grid = PlaceGrid(east, north, self.config.cell_m)
        self.num_places = self.grid.num_places
        if self.num_places == 0:
            raise ConfigError('the sequence filter needs a map with at least one place')
        self.reset()

    def reset(self) -> None:
        """Forget everything: uniform over the places, start_outside on "not in the map"."""
        self._ids = np.zeros(0, dtype=np.int64)
        self._mass = np.zeros(0, dtype=np.float64)
        self._background = 1.0 - self.config.start_outside
        self._outside = self.config.start_outside
        self._last_stamp: float | None = None
        self._started = False

    # ------------------------------------------------------------------------ the steps

    def reach_m(self, stamp_s: float | None, odom_distance_m: float | None) -> float:
        """Motion radius since the previous frame (odometry wins over the speed bound)."""
        cfg = self.config
        if odom_distance_m is not None:
            if not odom_distance_m >= 0:
                raise ConfigError(f'odom_distance_m={odom_distance_m} must be >= 0')
            return float(odom_distance_m) + cfg.slack_m
        if stamp_s is not None and self._last_stamp is not None:
            dt = max(0.0, float(stamp_s) - self._last_stamp)  # stamps going back: stand still
        else:
            dt = cfg.default_dt_s
        return cfg.max_speed_mps * dt + cfg.slack_m

    def _predict(self, reach: float) -> int:
        """Spread the explicit mass over each place's neighbourhood; return the edges visited."""
        if self._ids.size == 0:
            return 0
        if self.grid.cells_for(reach) > MAX_REACH_CELLS:
            # After a long gap the robot could be anywhere near: treat it as lost.
            self._background += float(self._mass.sum())
            self._ids, self._mass = np.zeros(0, dtype=np.int64), np.zeros(0)
            return 0
        rows, targets = self.grid.pairs_within(self._ids, reach)
        degree = np.bincount(rows, minlength=self._ids.size)
        share = self._mass[rows] / degree[rows]
        ids, where = np.unique(targets, return_inverse=True)
        self._ids = ids
        mass = np.bincount(where, weights=share, minlength=ids.size)
        self._mass = mass.astype(np.float64, copy=False)
        return int(rows.size)

    def _mix(self) -> None:
        """Teleport, leave and enter: the transitions that do not follow the map's geometry."""
        cfg = self.config
        explicit = float(self._mass.sum())
        inside = self._background + explicit
        stay = 1.0 - cfg.leave_prob
        entering = self._outside * cfg.enter_prob
        self._outside = self._outside * (1.0 - cfg.enter_prob) + inside * cfg.leave_prob
        self._mass *= (1.0 - cfg.kidnap_prob) * stay
        self._background = (self._background + explicit * cfg.kidnap_prob) * stay + entering

    def _observe(self, ids: NDArray[np.int64], scores: NDArray[np.float64]) -> None:
        ratios, floor = self.observation.ratios(scores)
        all_ids = np.concatenate((self._ids, ids))
        union, where = np.unique(all_ids, return_inverse=True)
        mass = np.zeros(union.size)
        mass[where[:self._ids.size]] = self._mass
        ratio = np.full(union.size, floor)
        ratio[where[self._ids.size:]] = ratios
        # The background's share of each top-K place gains (ratio - floor) over the rest.
        mass = mass * ratio + (self._background / self.num_places) * (ratio - floor)
        self._background *= floor
        total = self._background + float(mass.sum()) + self._outside
        self._ids = union
        self._mass = mass / total
        self._background /= total
        self._outside /= total

    def _prune(self) -> None:
        cfg = self.config
        if self._ids.size == 0:
            return
        keep = self._mass >= cfg.prune_ratio * float(self._mass.max())
        if keep.sum() > cfg.max_active:
            keep = np.zeros(self._ids.size, dtype=bool)
            keep[np.argpartition(-self._mass, cfg.max_active - 1)[:cfg.max_active]] = True
        # Dropped mass joins the uniform background, so the total stays 1.
        self._background += float(self._mass[~keep].sum())
        self._ids, self._mass = self._ids[keep], self._mass[keep]

    def update(self, ids: ArrayLike, scores: ArrayLike, stamp_s: float | None = None,
               odom_distance_m: float | None = None) -> FilterEstimate:
        """
        Advance one frame.

        Args:
            ids: (K,) ranked place ids, best first (places without a score are left out).
            scores: (K,) their scores, same order (rerank scores when reranked, else cosines).
            stamp_s: the image's stamp in seconds (None: ``default_dt_s`` after the last frame).
            odom_distance_m: distance travelled since the last frame, from odometry (optional).
        """
        id_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        score_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
        if id_arr.size != score_arr.size:
            raise ConfigError(f'{id_arr.size} place ids for {score_arr.size} scores')
        if id_arr.size and (id_arr.min() < 0 or id_arr.max() >= self.num_places):
            raise ConfigError(f'place ids must be in [0, {self.num_places})')
        reach = 0.0
        edges = 0
        if self._started:
            reach = self.reach_m(stamp_s, odom_distance_m)
            edges = self._predict(reach)
            self._mix()
        self._started = True
        if stamp_s is not None:
            self._last_stamp = float(stamp_s)
        if id_arr.size:
            self._observe(id_arr, score_arr)
        self._prune()
        place, confidence = self._best(id_arr)
        return FilterEstimate(place, confidence, float(self._outside), reach,
                              int(self._ids.size), edges)

    # ------------------------------------------------------------------------ the answer

    def _best(self, fallback: NDArray[np.int64]) -> tuple[int, float]:
        """Most probable place and the posterior mass within threshold_m of it."""
        per_place_background = self._background / self.num_places
        if self._ids.size:
            place = int(self._ids[int(np.argmax(self._mass))])
        elif fallback.size:
            place = int(fallback[0])
        else:  # a uniform belief and nothing retrieved: no place stands out
            return NO_PLACE, 0.0
        radius = self.config.threshold_m
        near = self.grid.count_within(place, radius)
        d_e = self.grid.east[self._ids] - self.grid.east[place]
        d_n = self.grid.north[self._ids] - self.grid.north[place]
        explicit = float(self._mass[d_e * d_e + d_n * d_n <= radius * radius].sum())
        return place, min(1.0, explicit + per_place_background * near)

    @property
    def outside_prob(self) -> float:
        return float(self._outside)

    def posterior(self) -> NDArray[np.float64]:
        """Return the dense (N,) posterior over places (O(N): for tests and plots only)."""
        dense = np.full(self.num_places, self._background / self.num_places)
        dense[self._ids] += self._mass
        return dense
