"""
The manifest's calibration block: what was fitted, under which settings, and whether it applies.

A calibration is only valid for the settings it was fitted under: the backbone (scores of
different models mean different things), the ranking (a rerank probability is not a cosine;
``rerank_top_N`` with N as fitted), the filter (a posterior mass is not a single-frame score)
and ``threshold_m`` (the event whose probability is predicted). Applying one checks all four;
on a mismatch the confidence is the raw score, the result says ``calibrated=False`` and one
warning names the difference.

Block layout (``manifest['calibration']``; the first six keys are the single-frame model as
:class:`~r2former_ros.core.localize.confidence.ConfidenceModel` writes it, so older readers
keep working)::

    method, threshold_m, weights, bias, feature_names, info
    settings     {backbone, ranking, threshold_m, filters: ['none'] or ['none', 'hmm'],
                  max_speed_mps, odometry (the filter's motion step read odometry)}
    source       {kind: 'drive' | 'map self-queries', drive: name or None}
    observation  the sequence filter's ObservationModel (or None)
    filtered     {weights: [a], bias: b, feature_names: ['posterior_logit']} (or None):
                 calibrated filter confidence = sigmoid(a * logit(posterior mass) + b)
    ece_cv       {single, filtered, folds, split: 'contiguous blocks'}
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any

import numpy as np

from r2former_ros.core.localize.confidence import ConfidenceModel
from r2former_ros.core.localize.sequence_filter import ObservationModel
from r2former_ros.core.localize.settings import LocalizerConfig

MASS_CLIP = 1e-6  # posterior masses are clipped to [MASS_CLIP, 1 - MASS_CLIP] before the logit


def ranking_name(rerank_top_n: int) -> str:
    """'global' or 'rerank_top_N': what the top score of a result is."""
    return f'rerank_top_{int(rerank_top_n)}' if rerank_top_n else 'global'


@dataclass(frozen=True)
class CalibrationSettings:
    """The settings a confidence depends on (see the module docstring)."""

    backbone: str
    ranking: str
    filter: str
    threshold_m: float
    max_speed_mps: float | None = None  # the filter's motion bound (None: not compared)
    odometry: bool = False  # the filter's motion step reads odometry

    @classmethod
    def running(cls, config: LocalizerConfig, backbone: str,
                odometry: bool = False) -> CalibrationSettings:
        """Return the settings a localizer with ``config`` and this backbone runs under."""
        return cls(backbone, ranking_name(config.rerank_top_n), config.filter,
                   float(config.threshold_m), float(config.max_speed_mps), odometry)

    def describe(self) -> str:
        motion = ''
        if self.filter == 'hmm':
            motion = (f', {"with" if self.odometry else "without"} odometry'
                      + (f', max speed {self.max_speed_mps:g} m/s'
                         if self.max_speed_mps is not None else ''))
        return (f'backbone {self.backbone}, ranking {self.ranking}, filter {self.filter}, '
                f'threshold {self.threshold_m:g} m{motion}')


def posterior_logit(mass: float) -> float:
    clipped = min(max(float(mass), MASS_CLIP), 1.0 - MASS_CLIP)
    return math.log(clipped / (1.0 - clipped))


@dataclass(frozen=True)
class FilteredConfidence:
    """Platt scaling of the filter's posterior mass within threshold_m."""

    weight: float
    bias: float

    def predict(self, mass: float) -> float:
        z = self.weight * posterior_logit(mass) + self.bias
        return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))

    def to_dict(self) -> dict[str, Any]:
        return {'weights': [self.weight], 'bias': self.bias,
                'feature_names': ['posterior_logit']}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FilteredConfidence | None:
        if not data or not data.get('weights'):
            return None
        return cls(float(data['weights'][0]), float(data.get('bias', 0.0)))


def stored_settings(block: dict[str, Any]) -> dict[str, Any]:
    """Return the block's settings (older blocks without them: read from their info)."""
    if block.get('settings'):
        return dict(block['settings'])
    info = block.get('info') or {}
    return {'backbone': info.get('backbone'),
            'ranking': ranking_name(int(info.get('rerank_top_n') or 0))
            if 'rerank_top_n' in info else None,
            'threshold_m': block.get('threshold_m'), 'filters': ['none']}


@dataclass(frozen=True)
class ErrorModel:
    """
    How far a published place lies from the truth, per axis: a mixture of right and wrong.

    The published position's 1-sigma is the moment-matched spread of that mixture,
    ``sqrt(c * sigma_right**2 + (1 - c) * sigma_wrong**2)`` at confidence ``c``: what a fusing
    filter (robot_localization) needs to weigh the fix. Drive calibration fits both from the
    published matches of its drive; without one, right matches spread over the match distance
    (``threshold_m / 2``) and wrong ones over ``4 * threshold_m``.
    """

    sigma_right_m: float
    sigma_wrong_m: float
    fitted: bool = False

    @classmethod
    def default(cls, threshold_m: float) -> ErrorModel:
        return cls(0.5 * float(threshold_m), 4.0 * float(threshold_m))

    def sigma_m(self, confidence: float) -> float:
        """Per-axis 1-sigma of a published position at this confidence."""
        c = min(max(float(confidence), 0.0), 1.0)
        return math.sqrt(c * self.sigma_right_m ** 2 + (1.0 - c) * self.sigma_wrong_m ** 2)

    def to_dict(self) -> dict[str, Any]:
        return {'sigma_right_m': self.sigma_right_m, 'sigma_wrong_m': self.sigma_wrong_m}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, threshold_m: float) -> ErrorModel:
        if not data:
            return cls.default(threshold_m)
        return cls(float(data['sigma_right_m']), float(data['sigma_wrong_m']), True)


@dataclass
class AppliedCalibration:
    """What the localizer uses: the single-frame model, the filter's models, and the verdict."""

    single: ConfidenceModel  # calibrated when single_calibrated, else the raw score
    filtered: FilteredConfidence | None
    observation: ObservationModel
    calibrated: bool  # the published confidence (single frame or filtered) is calibrated
    mismatch: str | None = None  # why not calibrated (None when calibrated)
    info: dict[str, Any] = field(default_factory=dict)
    # The single-frame confidence is calibrated (backbone, ranking and threshold match), whatever
    # the filter: evaluation reports it under its own name beside a filtered confidence.
    single_calibrated: bool = False
    # The confidence threshold the calibration chose for a stated precision, for the running
    # filter (None: none chosen, or the calibration does not apply).
    operating_point: dict[str, Any] | None = None
    error_model: ErrorModel | None = None  # None: the default for the running threshold_m


def resolve_filter(block: dict[str, Any] | None, requested: str) -> str:
    """
    'auto': 'hmm' when the block holds a current filtered calibration from a drive, else 'none'.

    A self-calibration at build time cannot calibrate a filter (it has no sequence), so
    switching the filter on without a drive calibration would publish a raw posterior.
    """
    if requested != 'auto':
        return requested
    block = block or {}
    settings = stored_settings(block) if block.get('weights') else {}
    drive = (block.get('source') or {}).get('kind') == 'drive'
    usable = drive and not block.get('stale') and 'hmm' in (settings.get('filters') or []) \
        and FilteredConfidence.from_dict(block.get('filtered')) is not None
    return 'hmm' if usable else 'none'


def _mismatch(settings: dict[str, Any], running: CalibrationSettings) -> str | None:
    if settings.get('backbone') not in (None, running.backbone):
        return f'backbone {settings.get("backbone")} (running {running.backbone})'
    if settings.get('ranking') not in (None, running.ranking):
        return f'ranking {settings.get("ranking")} (running {running.ranking})'
    stored_threshold = settings.get('threshold_m')
    if stored_threshold is not None and not np.isclose(float(stored_threshold),
                                                       running.threshold_m):
        return f'threshold_m {stored_threshold} (running {running.threshold_m:g})'
    return None


def _motion_mismatch(settings: dict[str, Any], running: CalibrationSettings,
                     filtered: FilteredConfidence | None) -> str | None:
    """Why a filtered confidence does not hold for the running motion model (None: it does)."""
    if filtered is None:
        return 'no filtered confidence was fitted (calibrate on a drive with --filter hmm)'
    fitted_with = bool(settings.get('odometry', False))
    if fitted_with != running.odometry:
        return (f'calibration fitted {"with" if fitted_with else "without"} odometry (running '
                f'{"with" if running.odometry else "without"})')
    speed = settings.get('max_speed_mps')
    if speed is not None and running.max_speed_mps is not None and \
            not np.isclose(float(speed), running.max_speed_mps):
        return f'calibration fitted for max speed {speed} m/s (running {running.max_speed_mps:g})'
    return None


def apply_calibration(block: dict[str, Any] | None,
                      running: CalibrationSettings) -> AppliedCalibration:
    """
    Decide what of a stored calibration applies to the running settings.

    The observation model of the filter is used whenever backbone and ranking match (it reads
    scores, not the threshold); the single-frame confidence is calibrated when the threshold
    matches too and the block holds a single-frame fit; the published confidence is calibrated
    when, besides, the running filter is one the block was fitted for.
    """
    raw = ConfidenceModel(threshold_m=running.threshold_m)
    if not block or not block.get('weights'):
        return AppliedCalibration(raw, None, ObservationModel(), False,
                                  'the map has no calibration')
    settings = stored_settings(block)
    info = dict(block.get('info') or {})
    stale = block.get('stale')
    mismatch = f'stale: {stale.get("reason")}' if stale else _mismatch(settings, running)
    scores_match = mismatch is None or mismatch.startswith(('threshold_m', 'stale'))
    observation = ObservationModel.from_dict(block.get('observation')) if scores_match \
        else ObservationModel()
    if mismatch is not None:
        return AppliedCalibration(raw, None, observation, False,
                                  f'calibration fitted for {mismatch}', info)
    single = ConfidenceModel.from_dict(block, running.threshold_m)
    filtered = FilteredConfidence.from_dict(block.get('filtered'))
    filters = settings.get('filters') or ['none']
    if running.filter not in filters:
        mismatch = f'calibration fitted for filter {"/".join(filters)} (running {running.filter})'
    elif running.filter == 'hmm':
        mismatch = _motion_mismatch(settings, running, filtered)
    point = (block.get('operating_points') or {}).get(running.filter) if mismatch is None \
        else None
    return AppliedCalibration(single, filtered if mismatch is None else None, observation,
                              mismatch is None, mismatch, info, single_calibrated=True,
                              operating_point=point,
                              error_model=ErrorModel.from_dict(block.get('error_model'),
                                                               running.threshold_m))
