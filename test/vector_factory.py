"""Synthetic global descriptors for the retrieval tests."""

from __future__ import annotations

import numpy as np

from r2former_ros.core.mapdb import index as retrieval


def clustered(n: int, dim: int, seed: int, clusters: int = 200,
              spread: float = 0.35) -> np.ndarray:
    """Unit vectors around ``clusters`` centres: neighbours crowd, as in a city map."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    rows = centres[rng.integers(0, clusters, n)]
    rows += spread * rng.normal(size=(n, dim)).astype(np.float32)
    return retrieval.normalize_rows(rows)
