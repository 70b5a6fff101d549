"""
The localizer's settings: the one dataclass behind node parameters, CLI flags and evaluation.

Every entry point builds a :class:`LocalizerConfig` (the node from its parameters, the CLI from
its flags, evaluation embeds one), so a setting has one name, one default and one check. This
module imports nothing heavy: ``--help`` reads its defaults without loading numpy or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from r2former_ros.core.errors import ConfigError

FILTERS = ('none', 'hmm', 'auto')  # auto: 'hmm' when the map holds a filtered drive calibration
DEFAULT_MAX_SPEED_MPS = 20.0  # a car in town or any ground robot; see README for why
# "matched" at or above this confidence when neither the user nor the map's calibration chose one
DEFAULT_CONFIDENCE_THRESHOLD = 0.5
# The precision "matched" keeps at the operating point a drive calibration stores by default.
DEFAULT_TARGET_PRECISION = 0.95


@dataclass(frozen=True)
class LocalizerConfig:
    """Retrieval and decision settings (validated by the node and the CLI alike)."""

    retrieval_top_k: int = 100  # candidates from the global index
    rerank_top_n: int = 100  # of those, how many the reranker reorders (0 = global only)
    result_top_k: int = 10  # candidates reported in a result
    # Below it the result says "no match"; None: the operating point the map's calibration
    # chose for a stated precision (`r2former calibrate --target-precision`), else 0.5.
    confidence_threshold: float | None = None
    threshold_m: float = 25.0  # distance that counts as the same place (confidence target)
    # 'hmm': sequence filter over the map's places; 'none': single frame; 'auto': 'hmm' when
    # the map holds a drive calibration of the filter, else 'none'.
    filter: str = 'auto'
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
        if self.confidence_threshold is not None and \
                not 0.0 <= self.confidence_threshold <= 1.0:
            raise ConfigError(f'confidence_threshold={self.confidence_threshold} must be in '
                              '[0, 1] (or unset: the calibrated operating point)')
        if not self.threshold_m > 0:
            raise ConfigError(f'threshold_m={self.threshold_m} must be > 0')
        if self.filter not in FILTERS:
            raise ConfigError(f"filter='{self.filter}' must be one of {', '.join(FILTERS)}")
        if not self.max_speed_mps > 0:
            raise ConfigError(f'max_speed_mps={self.max_speed_mps} must be > 0')
        return self
