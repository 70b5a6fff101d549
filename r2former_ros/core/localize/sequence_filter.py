"""
A discrete Bayes filter (hidden Markov model) over the map's places and a "not in the map" state.

State: the robot is at one of the N map places, or somewhere the map does not cover ("outside").

Motion (from the map's own geometry, ENU metres). A robot keeps moving, so the filter predicts a
displacement and moves each place's probability there (a Gaussian kernel over the places around
the predicted point, ``sigma = slack_m + a share of the step``):

* with odometry, the distance travelled between the two image stamps (``odom_distance_m``) along
  the direction the filter saw the robot move (its velocity estimate); before that direction is
  known, a ring of that radius around the place;
* without odometry, the filter's velocity estimate times ``dt``: a regression of its best
  place's position over its last confident frames (frames where the best place lies at the map's
  edge in the direction of travel do not count: there the map cannot show the robot moving on);
* with neither (the first frames), as before: anywhere within ``max_speed_mps * dt + slack_m``.

``dt`` comes from the image stamps: a dropped frame widens the step. Where the predicted point
lies beyond the mapped area, the kernel finds fewer places than the map's own spacing would put
there; that share of the mass goes to "not in the map" (``coverage``). This is how a robot that
drives past the map's end leaves it within a few frames instead of parking on the last place.
On top of that, each frame a small share of the in-map mass is re-spread uniformly
(``kidnap_prob``: a teleport, so the filter recovers when it was wrong or the robot was carried
elsewhere), a share moves to "outside" (``leave_prob``) and a share of "outside" comes back
uniformly (``enter_prob``).

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

from collections import deque
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
    odometry_sigma: float = 0.1  # odometry's error, a share of the distance (plus slack_m)
    velocity_sigma: float = 0.5  # a velocity estimate's error, a share of the step (plus slack)
    velocity_frames: int = 4  # confident frames the velocity estimate regresses over
    velocity_confidence: float = 0.5  # posterior mass near the best place for a frame to count
    velocity_doubt: float = 0.1  # share of the mass still spread within the speed bound

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
        if not 0.0 <= self.velocity_doubt <= 1.0:
            raise ConfigError(f'velocity_doubt={self.velocity_doubt} must be in [0, 1]')
        if self.odometry_sigma < 0 or self.velocity_sigma < 0 or self.velocity_frames < 2:
            raise ConfigError(f'odometry_sigma={self.odometry_sigma} and velocity_sigma='
                              f'{self.velocity_sigma} must be >= 0 and velocity_frames='
                              f'{self.velocity_frames} >= 2')
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


@dataclass(frozen=True)
class Motion:
    """One frame's predicted motion (see the module docstring)."""

    kind: str  # 'odometry', 'odometry ring', 'velocity' or 'speed bound'
    displacement: NDArray[np.float64] | None  # (east, north) metres; None: no direction
    ring_m: float  # without a direction: the distance travelled (odometry), else 0
    sigma_m: float  # the kernel's width
    bound_m: float = 0.0  # the speed bound's radius (max_speed_mps * dt + slack_m)
    doubt: float = 0.0  # share of the mass spread evenly within bound_m instead (1: no kernel)

    @property
    def kernel_reach_m(self) -> float:
        """Radius the kernel reaches (0 without a kernel)."""
        if self.doubt >= 1.0:
            return 0.0
        shift = float(np.hypot(*self.displacement)) if self.displacement is not None \
            else self.ring_m
        return shift + 3.0 * self.sigma_m

    @property
    def reach_m(self) -> float:
        """Radius of the places the prediction reaches from each place."""
        return max(self.kernel_reach_m, self.bound_m if self.doubt > 0.0 else 0.0)


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
        self._spacing_m = self._map_spacing()
        self.reset()

    def reset(self) -> None:
        """Forget everything: uniform over the places, start_outside on "not in the map"."""
        self._ids = np.zeros(0, dtype=np.int64)
        self._mass = np.zeros(0, dtype=np.float64)
        self._background = 1.0 - self.config.start_outside
        self._outside = self.config.start_outside
        self._last_stamp: float | None = None
        self._clock = 0.0  # seconds since the first frame (stamps, else nominal intervals)
        self._started = False
        self._track: deque[tuple[float, float, float]] = deque(
            maxlen=self.config.velocity_frames)
        self._velocity: NDArray[np.float64] | None = None  # ENU m/s, None until estimated

    @property
    def velocity_mps(self) -> NDArray[np.float64] | None:
        """The robot's velocity along the map (east, north) as the filter estimates it."""
        return None if self._velocity is None else self._velocity.copy()

    # ------------------------------------------------------------------------ the steps

    def _dt(self, stamp_s: float | None) -> float:
        """Seconds since the previous frame (stamps going back: stand still)."""
        if stamp_s is not None and self._last_stamp is not None:
            return max(0.0, float(stamp_s) - self._last_stamp)
        return self.config.default_dt_s

    def motion(self, stamp_s: float | None, odom_distance_m: float | None) -> Motion:
        """How the next frame's prediction will move the belief (see the module docstring)."""
        cfg = self.config
        dt = self._dt(stamp_s)
        if odom_distance_m is not None:
            if not odom_distance_m >= 0:
                raise ConfigError(f'odom_distance_m={odom_distance_m} must be >= 0')
            distance = float(odom_distance_m)
            sigma = cfg.slack_m + cfg.odometry_sigma * distance
            speed = 0.0 if self._velocity is None else float(np.hypot(*self._velocity))
            if self._velocity is not None and speed > 0.0:
                return Motion('odometry', self._velocity / speed * distance, 0.0, sigma)
            return Motion('odometry ring', None, distance, sigma)
        bound = cfg.max_speed_mps * dt + cfg.slack_m
        if self._velocity is not None:
            # A velocity estimate is a guess: the robot may have stopped, turned or sped up
            # (as far as the speed bound allows), so a share of the mass keeps the old model.
            step = self._velocity * dt
            sigma = cfg.slack_m + cfg.velocity_sigma * float(np.hypot(*step))
            return Motion('velocity', step, 0.0, sigma, bound, cfg.velocity_doubt)
        return Motion('speed bound', None, 0.0, 0.0, bound, 1.0)

    def _lose_track(self) -> None:
        """After a long gap the robot could be anywhere near: the belief becomes uniform."""
        self._background += float(self._mass.sum())
        self._ids, self._mass = np.zeros(0, dtype=np.int64), np.zeros(0)

    def _predict(self, motion: Motion) -> int:
        """Move the explicit mass as ``motion`` says; return the edges visited."""
        if self._ids.size == 0:
            return 0
        if self.grid.cells_for(motion.reach_m) > MAX_REACH_CELLS:
            self._lose_track()
            return 0
        rows, targets = self.grid.pairs_within(self._ids, motion.reach_m)
        share = np.zeros(rows.size)
        if motion.doubt > 0.0:  # spread evenly within the speed bound (no direction known)
            reach = motion.bound_m
            d_e = self.grid.east[targets] - self.grid.east[self._ids[rows]]
            d_n = self.grid.north[targets] - self.grid.north[self._ids[rows]]
            within = d_e * d_e + d_n * d_n <= reach * reach
            degree = np.bincount(rows[within], minlength=self._ids.size)
            share[within] = motion.doubt * self._mass[rows[within]] / degree[rows[within]]
        if motion.doubt < 1.0:
            weights = self._kernel(self._ids[rows], targets, motion)
            total = np.bincount(rows, weights=weights, minlength=self._ids.size)
            coverage = np.minimum(1.0, total / self._kernel_reference(motion))
            moved = (1.0 - motion.doubt) * self._mass
            # The share of each place's mass the map has no place for leaves the map.
            self._outside += float(np.sum(moved * (1.0 - coverage)))
            share += (moved * coverage)[rows] * weights / np.maximum(total[rows], 1e-300)
        ids, where = np.unique(targets, return_inverse=True)
        self._ids = ids
        self._mass = np.bincount(where, weights=share, minlength=ids.size).astype(np.float64)
        return int(rows.size)

    def _kernel(self, sources: NDArray[np.int64], targets: NDArray[np.int64],
                motion: Motion) -> NDArray[np.float64]:
        """Transition weight of each (source, target) pair under a displacement or a ring."""
        d_e = self.grid.east[targets] - self.grid.east[sources]
        d_n = self.grid.north[targets] - self.grid.north[sources]
        if motion.displacement is not None:
            miss2 = (d_e - motion.displacement[0]) ** 2 + (d_n - motion.displacement[1]) ** 2
        else:
            miss2 = (np.hypot(d_e, d_n) - motion.ring_m) ** 2
        return np.exp(-0.5 * miss2 / (motion.sigma_m * motion.sigma_m))

    def _kernel_reference(self, motion: Motion) -> float:
        """
        Return the kernel weight a place finds where the map goes on.

        That is places along a route at the map's median spacing (a ring meets the route
        twice); coverage is measured against it.
        """
        line = motion.sigma_m * math.sqrt(2.0 * math.pi) / self._spacing_m
        ring = motion.displacement is None and motion.ring_m > motion.sigma_m
        return max(1.0, (2.0 if ring else 1.0) * line)

    def _map_spacing(self) -> float:
        """Median distance from a place to its nearest other place (a sample of the map)."""
        count = self.num_places
        if count < 2:
            return math.inf
        sample = np.unique(np.linspace(0, count - 1, min(count, 512)).astype(np.int64))
        radius = self.grid.cell_m
        rows, ids = self.grid.pairs_within(sample, radius)
        other = ids != sample[rows]
        if not other.any():
            return radius
        gap = np.hypot(self.grid.east[ids] - self.grid.east[sample[rows]],
                       self.grid.north[ids] - self.grid.north[sample[rows]])
        nearest = np.full(sample.size, np.inf)
        np.minimum.at(nearest, rows[other], gap[other])
        found = nearest[np.isfinite(nearest)]
        return float(max(np.median(found), 1e-3)) if found.size else radius

    def _track_velocity(self, place: int, confidence: float, dt: float) -> None:
        """Fold a confident frame's best place into the velocity estimate."""
        cfg = self.config
        if place == NO_PLACE or confidence < cfg.velocity_confidence:
            if confidence < 0.5 * cfg.velocity_confidence:  # lost: what it knew is stale
                self._track.clear()
                self._velocity = None
            return
        if self._velocity is not None:
            step = self._velocity * max(dt, 1e-3)
            ahead = Motion('velocity', step, 0.0,
                           cfg.slack_m + cfg.velocity_sigma * float(np.hypot(*step)))
            _, targets = self.grid.pairs_within(np.array([place]), ahead.reach_m)
            seen = float(self._kernel(np.full(targets.size, place), targets, ahead).sum())
            if seen < 0.9 * self._kernel_reference(ahead):
                # At the map's edge the best place cannot move on with the robot: its standing
                # still says nothing about the robot's speed.
                return
        self._track.append((self._clock, float(self.grid.east[place]),
                            float(self.grid.north[place])))
        if len(self._track) < 3:
            return
        times = np.array([t for t, _, _ in self._track])
        if np.ptp(times) <= 0:
            return
        centred = times - times.mean()
        positions = np.array([(e, n) for _, e, n in self._track])
        slope = centred @ (positions - positions.mean(axis=0)) / float(centred @ centred)
        speed = float(np.hypot(*slope))
        if speed > cfg.max_speed_mps:  # faster than the robot can go: a jump, not a velocity
            slope *= cfg.max_speed_mps / speed
        self._velocity = slope

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
        kind = 'start'
        dt = self._dt(stamp_s)
        if self._started:
            motion = self.motion(stamp_s, odom_distance_m)
            reach, kind = motion.reach_m, motion.kind
            edges = self._predict(motion)
            self._mix()
            self._clock += dt
        self._started = True
        if stamp_s is not None:
            self._last_stamp = float(stamp_s)
        if id_arr.size:
            self._observe(id_arr, score_arr)
        self._prune()
        place, confidence = self._best(id_arr)
        self._track_velocity(place, confidence, dt)
        return FilterEstimate(place, confidence, float(self._outside), reach,
                              int(self._ids.size), edges, kind)

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
