"""
Training-free reranking by mutual nearest neighbours of local descriptors.

Used with backbones that have no trained reranker (the DINOv2 fallback). For a query and a
candidate, every query token's nearest candidate token (cosine) and every candidate token's
nearest query token are found; a pair that picks each other is a mutual nearest neighbour.
The score is the sum of the cosine similarities of the mutual pairs (negative ones count as
zero) divided by min(K_query, K_candidate), so it lies in [0, 1]; two identical sets of
distinct descriptors score 1. It does not depend on the order of the rows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.features import LOCAL_XY_ATT_COLUMNS

# Candidates scored per batched matrix product: bounds memory to about
# CHUNK * K * K * 4 bytes (64 MB at K = 500).
CHUNK = 64


def _as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to('cpu', torch.float32)
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def rerank_scores(query_local: np.ndarray | torch.Tensor,
                  db_local: np.ndarray | torch.Tensor,
                  descriptor_start: int = LOCAL_XY_ATT_COLUMNS) -> np.ndarray:
    """
    Score N candidates against one query; higher is better.

    Args:
        query_local: (K, C) local rows of the query, as in ``ImageFeatures.local_feats``.
        db_local: (N, K', C) local rows of the candidates.
        descriptor_start: first descriptor column (the x, y, att columns come before).

    Returns:
        (N,) float32 scores in [0, 1].
    """
    q = _as_tensor(query_local)
    d = _as_tensor(db_local)
    if q.ndim != 2 or d.ndim != 3 or q.shape[1] != d.shape[2]:
        raise ConfigError(f'expected query (K, C) and candidates (N, K, C), got '
                          f'{tuple(q.shape)} and {tuple(d.shape)}')
    if q.shape[1] <= descriptor_start:
        raise ConfigError(f'local rows have {q.shape[1]} columns, no descriptor after column '
                          f'{descriptor_start}')
    n, kd = d.shape[0], d.shape[1]
    kq = q.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if kq == 0 or kd == 0:
        return np.zeros(n, dtype=np.float32)
    qn = F.normalize(q[:, descriptor_start:], dim=-1)
    out = torch.empty(n, dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, n, CHUNK):
            dn = F.normalize(d[start:start + CHUNK, :, descriptor_start:], dim=-1)
            sim = torch.matmul(dn, qn.T).transpose(1, 2)  # (n, Kq, Kd)
            best_sim, q_to_d = sim.max(dim=2)  # (n, Kq)
            d_to_q = sim.argmax(dim=1)  # (n, Kd)
            back = torch.gather(d_to_q, 1, q_to_d)  # (n, Kq): query token reached back
            mutual = back == torch.arange(kq).unsqueeze(0)
            out[start:start + CHUNK] = (best_sim.clamp_min(0) * mutual).sum(dim=1)
    return (out / min(kq, kd)).numpy().astype(np.float32, copy=False)
