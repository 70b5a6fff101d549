"""
The per-frame decision: a ranked frame in, what to publish out. Made here and nowhere else.

:class:`Decider` takes one frame's :class:`~r2former_ros.core.types.Ranking` and returns a
:class:`~r2former_ros.core.types.Decision`:

1. the single-frame confidence of the top-1 (features of the ranked list through the stored
   logistic calibration, or the clipped top score when it does not apply);
2. with ``filter='hmm'``, one update of the sequence filter (time passes even for a frame that
   retrieved nothing), whose place and posterior mass near it (through the stored Platt scaling
   when it applies) are published instead;
3. "matched" when the published confidence reaches ``confidence_threshold``. A frame that
   retrieved nothing publishes no place (``NO_PLACE``), with or without the filter.

:class:`~r2former_ros.core.localize.localizer.Localizer` ranks and then calls the decider, so
the node, the bag replay, evaluation and the demo publish the same thing by construction.
Calibration fitting runs candidate models through a decider of its own instead of re-deriving
any of this.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.calibration_store import AppliedCalibration, ErrorModel
from r2former_ros.core.localize.confidence import (
    FEATURE_NAMES,
    ConfidenceModel,
    confidence_features,
)
from r2former_ros.core.localize.odometry import OdometryTrack
from r2former_ros.core.localize.sequence_filter import FilterConfig, SequenceFilter
from r2former_ros.core.localize.settings import LocalizerConfig
from r2former_ros.core.types import NO_PLACE, Decision, Ranking


class Decider:
    """Turn ranked frames, in order, into published decisions for one map."""

    def __init__(self, east: ArrayLike, north: ArrayLike, config: LocalizerConfig,
                 calibration: AppliedCalibration, odometry: OdometryTrack | None = None) -> None:
        """
        Prepare the decision for one map.

        Args:
            east: (N,) the map places' ENU east, metres.
            north: (N,) their north.
            config: the decision settings (threshold_m, confidence_threshold, filter and its
                motion bound).
            calibration: what of the map's calibration applies to ``config``.
            odometry: the robot's odometry, if it has any: the filter's motion step takes the
                distance travelled between two frames' stamps from it (frames it cannot vouch
                for fall back to the velocity estimate or the speed bound, and say why).
        """
        self.config = config.validate()
        if config.filter not in ('none', 'hmm') or config.confidence_threshold is None:
            raise ConfigError("a decider runs a resolved config: filter 'none' or 'hmm' and a "
                              'confidence threshold (Localizer resolves auto and unset ones)')
        self.threshold = float(config.confidence_threshold)
        self.calibration = calibration
        self.error_model = calibration.error_model or ErrorModel.default(config.threshold_m)
        self.east = np.asarray(east, dtype=np.float64)
        self.north = np.asarray(north, dtype=np.float64)
        self._raw = ConfidenceModel(threshold_m=config.threshold_m)
        self.odometry = odometry
        self._previous_stamp: float | None = None
        self.filter: SequenceFilter | None = None
        if config.filter == 'hmm':
            self.filter = SequenceFilter(
                self.east, self.north,
                FilterConfig(max_speed_mps=config.max_speed_mps, threshold_m=config.threshold_m),
                calibration.observation)

    @property
    def calibrated(self) -> bool:
        """True when the published confidence is calibrated for the running settings."""
        return self.calibration.calibrated

    def reset(self) -> None:
        """Forget the sequence so far (a new drive, or the robot was moved); no-op without."""
        self._previous_stamp = None
        if self.filter is not None:
            self.filter.reset()

    def features(self, ranking: Ranking) -> NDArray[np.float64]:
        """Return the single-frame confidence features of a ranked frame (zeros when empty)."""
        scored = ranking.scored_ids
        if scored.size == 0:
            return np.zeros(len(FEATURE_NAMES))
        return confidence_features(ranking.scores, self.east[scored], self.north[scored],
                                   self.config.threshold_m)

    def decide(self, ranking: Ranking, *, stamp_s: float | None = None,
               odom_distance_m: float | None = None) -> Decision:
        """
        Decide what to publish for the next frame of the sequence.

        Args:
            ranking: the frame's retrieved places, best first.
            stamp_s: the image's stamp (seconds); the filter's motion bound uses the time since
                the previous frame (None: one nominal frame interval).
            odom_distance_m: distance travelled since the previous frame from odometry (replays
                of a recorded decision); without it the decider's odometry track, if any, gives
                the distance between the two frames' stamps.
        """
        problem = None
        if odom_distance_m is None and self.odometry is not None:
            if stamp_s is not None and self._previous_stamp is not None:
                step = self.odometry.step(self._previous_stamp, stamp_s)
                odom_distance_m, problem = step.distance_m, step.problem
            elif stamp_s is None:
                problem = 'the image has no stamp'
        if stamp_s is not None:
            self._previous_stamp = float(stamp_s)
        features = self.features(ranking)
        if ranking.size:
            single = self.calibration.single.predict(features)
            raw = self._raw.predict(features)
        else:
            single = raw = 0.0
        estimate = None
        if self.filter is not None:
            estimate = self.filter.update(ranking.scored_ids, ranking.scores, stamp_s,
                                          odom_distance_m)
        if ranking.size == 0:
            place, confidence = NO_PLACE, 0.0
        elif estimate is None:
            place, confidence = int(ranking.ids[0]), single
        else:
            place, confidence = estimate.place_id, estimate.confidence
            filtered = self.calibration.filtered
            if self.calibration.calibrated and filtered is not None:
                confidence = filtered.predict(confidence)
        confidence = float(confidence)
        matched = place != NO_PLACE and confidence >= self.threshold
        return Decision(place_id=place, confidence=confidence, matched=matched,
                        calibrated=self.calibration.calibrated, single_confidence=float(single),
                        raw_confidence=float(raw), features=features, estimate=estimate,
                        odom_distance_m=odom_distance_m, odometry_problem=problem,
                        sigma_m=self.error_model.sigma_m(confidence))
