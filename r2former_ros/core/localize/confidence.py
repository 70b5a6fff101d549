"""
Confidence that the best place is right: features of a ranked result and a logistic calibration.

Features (all cheap, computed per query):
- `top_score`: the best candidate's score (rerank score when reranked, else global cosine);
- `margin`: top score minus the runner-up's;
- `spatial_agreement`: fraction of the top-k places within the threshold distance of the best one
  (true revisits pull their neighbours up with them; a lucky false match stands alone).
The calibrated model is p = sigmoid(w . features + b), fitted on the map itself (see
`core.calibration.self_calibration`); without a calibration the confidence is the plain top score,
clipped to [0, 1], and is labelled uncalibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

FEATURE_NAMES = ('top_score', 'margin', 'spatial_agreement')
AGREEMENT_TOP_K = 5


def confidence_features(scores: NDArray[np.floating], east: NDArray[np.floating],
                        north: NDArray[np.floating], threshold_m: float) -> NDArray[np.float64]:
    """
    Features of one ranked result.

    Args:
        scores: (M,) candidate scores, best first (M >= 1).
        east: (M,) ENU east of each candidate place, metres.
        north: (M,) ENU north.
        threshold_m: the distance that counts as "the same place".
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return np.zeros(len(FEATURE_NAMES))
    margin = scores[0] - scores[1] if scores.size > 1 else scores[0]
    top = min(AGREEMENT_TOP_K, scores.size)
    if top > 1:
        dist = np.hypot(np.asarray(east[1:top]) - east[0], np.asarray(north[1:top]) - north[0])
        agreement = float(np.mean(dist <= threshold_m))
    else:
        agreement = 0.0
    return np.array([scores[0], margin, agreement], dtype=np.float64)


@dataclass
class ConfidenceModel:
    """Logistic map: features -> P(best place within threshold); uncalibrated without weights."""

    threshold_m: float = 25.0
    weights: list[float] | None = None
    bias: float = 0.0
    feature_names: tuple[str, ...] = FEATURE_NAMES
    info: dict[str, Any] = field(default_factory=dict)  # how it was fitted (counts, ECE, ...)

    @property
    def calibrated(self) -> bool:
        return self.weights is not None

    def predict(self, features: NDArray[np.floating]) -> float:
        """Probability in [0, 1] for one feature vector."""
        if self.weights is None:
            return float(np.clip(features[0], 0.0, 1.0))
        logit = float(np.dot(self.weights, features) + self.bias)
        return 1.0 / (1.0 + math.exp(-max(min(logit, 60.0), -60.0)))

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {'method': 'logistic', 'threshold_m': self.threshold_m, 'weights': self.weights,
                'bias': self.bias, 'feature_names': list(self.feature_names), 'info': self.info}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, threshold_m: float = 25.0) -> ConfidenceModel:
        """Read the manifest's calibration block; None gives the uncalibrated model."""
        if not data:
            return cls(threshold_m=threshold_m)
        return cls(threshold_m=float(data.get('threshold_m', threshold_m)),
                   weights=list(data['weights']) if data.get('weights') is not None else None,
                   bias=float(data.get('bias', 0.0)),
                   feature_names=tuple(data.get('feature_names', FEATURE_NAMES)),
                   info=dict(data.get('info', {})))
