"""
Fast reranking of one query against N candidates, same weights and same math as the faithful path.

What the faithful path spends its time and memory on, and what this path does instead:
- it materialises the dense (N, K, K, 7) pair tensor and fully argsorts (N, K, K) twice to keep 5
  entries per row; here `topk` picks the 5 and only those entries are assembled from (K, 3) tables;
- it repeats the query's normalisation per pair; here the query is normalised once;
- it runs the 1001-token level-2 attention explicitly; here torch SDPA (fused, no 1001^2 matrix per
  head when a fused kernel is available) does it, and candidates go through in chunks to bound
  memory;
- it computes every row of each level's last block although only the cls row is read; here only the
  cls row is computed (exact: keys and values still come from every token).
In fp32 the scores agree with the faithful path to float rounding (the fixture's top-10 order is
identical); reduced precision (bf16/fp16) is opt-in because it can reorder nearly tied candidates.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F  # noqa: N812

from r2former_ros.core.model.reranker import Reranker, split_local


def correspondence_rows_topk(query_local: torch.Tensor, db_local: torch.Tensor,
                             num_corr: int) -> torch.Tensor:
    """
    Build the reranker's (N, 2K, num_corr, 7) rows from top-k only.

    Args:
        query_local: (K, 3 + D) the query's local rows (one query shared by all candidates).
        db_local: (N, K, 3 + D) candidate rows.
        num_corr: entries per row (5).

    Returns:
        Rows identical in value to `Reranker.correspondence_rows` (entry order may differ only
        between exactly tied correlations).
    """
    query_xyz, query_desc = split_local(query_local)  # (Kq, 3), (Kq, D)
    db_xyz, db_desc = split_local(db_local)  # (N, Kd, 3), (N, Kd, D)
    num_db_images, num_db_tokens, _ = db_xyz.shape
    num_query_tokens = query_xyz.shape[0]
    corr = torch.matmul(query_desc, db_desc.transpose(1, 2))  # (N, Kq, Kd)

    # Query side: for query token i, its best database tokens j.
    q_corr, q_pick = corr.topk(num_corr, dim=2)  # (N, Kq, c)
    q_side_db = torch.gather(db_xyz.unsqueeze(1).expand(-1, num_query_tokens, -1, -1), 2,
                             q_pick.unsqueeze(-1).expand(-1, -1, -1, 3))  # (N, Kq, c, 3)
    q_side_query = query_xyz.view(1, num_query_tokens, 1, 3).expand(
        num_db_images, -1, num_corr, -1)
    query_side = torch.cat((q_side_query, q_side_db, q_corr.unsqueeze(-1)), dim=-1)

    # Database side: for database token j, its best query tokens i; channels stay [q, d, corr].
    d_corr, d_pick = corr.topk(num_corr, dim=1)  # (N, c, Kd)
    d_corr, d_pick = d_corr.transpose(1, 2), d_pick.transpose(1, 2)  # (N, Kd, c)
    d_side_query = query_xyz[d_pick]  # (N, Kd, c, 3)
    d_side_db = db_xyz.unsqueeze(2).expand(-1, -1, num_corr, -1)
    db_side = torch.cat((d_side_query, d_side_db, d_corr.unsqueeze(-1)), dim=-1)
    rows = torch.cat((query_side, db_side), dim=1)
    return rows  # (N, Kq + Kd, c, PAIR_CHANNELS)


def autocast_for(device: torch.device, dtype: torch.dtype | None):  # noqa: ANN201
    """Autocast context for reduced precision, or a no-op for fp32."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def fast_rerank_logits(reranker: Reranker, query_local: torch.Tensor, db_local: torch.Tensor,
                       chunk: int = 64, dtype: torch.dtype | None = None) -> torch.Tensor:
    """
    Logits (N, 2) of one query against N candidates.

    Args:
        reranker: the model's `Reranker` (weights unchanged).
        query_local: (K, 3 + D) or (1, K, 3 + D).
        db_local: (N, K, 3 + D).
        chunk: candidates per pass; bounds peak memory (level 1 holds chunk * 2K * 6 tokens).
        dtype: None/float32 for exact, torch.bfloat16 or torch.float16 for autocast (opt-in).
    """
    if query_local.dim() == 3:
        query_local = query_local[0]
    device = reranker.decoder_pred.weight.device
    query_local = query_local.to(device, torch.float32)
    outputs = []
    with autocast_for(device, dtype):
        for start in range(0, db_local.shape[0], chunk):
            db_chunk = db_local[start:start + chunk].to(device, torch.float32)
            rows = correspondence_rows_topk(query_local, db_chunk, reranker.num_corr)
            outputs.append(reranker.score_rows(rows, cls_only_last=True, fused=True).float())
    return torch.cat(outputs) if outputs else torch.empty((0, 2), device=device)


def fast_rerank_scores(reranker: Reranker, query_local: torch.Tensor, db_local: torch.Tensor,
                       chunk: int = 64, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Return softmax(logits)[:, 1] of `fast_rerank_logits`, shape (N,)."""
    logits = fast_rerank_logits(reranker, query_local, db_local, chunk, dtype)
    return F.softmax(logits, dim=-1)[:, 1]
