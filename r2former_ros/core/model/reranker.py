"""
The R2Former reranking transformer, faithful to the reference (`model/R2Former.py`).

Inputs are the local feature rows of a query and a candidate (x, y, att, descriptor). The module is
asymmetric in query/candidate on purpose: the channel order is [query xyatt, db xyatt, corr] on
both sides, level 1 is anchored at the *database* (x, y) of each entry and level 2 at the *query*
(x, y) of each row's best entry, and one `decoder_norm` is shared by both levels.
"""

from __future__ import annotations

from functools import partial
from typing import cast

from timm.models.vision_transformer import Block
import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812

from r2former_ros.core.model.blocks import (
    leading_rows_of_block,
    pin_explicit_attention,
    run_block,
    timm_blocks,
)
from r2former_ros.core.model.config import R2FormerConfig

PAIR_CHANNELS = 7  # q_x, q_y, q_att, d_x, d_y, d_att, correlation


def sincos_embed_2d(x: torch.Tensor, y: torch.Tensor, dim: int) -> torch.Tensor:
    """
    2-D sin-cos embedding of coordinates in [0, 1]: [sin(x w), cos(x w), sin(y w), cos(y w)].

    w_k = 10000^(-k / (dim / 4)) for k in [0, dim / 4), as in MAE's 1-D table, applied to the
    continuous coordinate rather than a grid index.
    """
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    omega = omega.to(device=x.device, dtype=x.dtype)
    x_angle = x.unsqueeze(-1) * omega
    y_angle = y.unsqueeze(-1) * omega
    return torch.cat((x_angle.sin(), x_angle.cos(), y_angle.sin(), y_angle.cos()), dim=-1)


def split_local(local_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamp (x, y, att) to [0, 1] and L2-normalise the descriptor: the reranker's first step."""
    xy_att = local_feats[..., :3].clamp(0.0, 1.0)
    descriptor = F.normalize(local_feats[..., 3:], p=2, dim=-1)
    return xy_att, descriptor


class Reranker(nn.Module):
    """Two-level transformer over top-k local correspondences; returns 2-class logits per pair."""

    def __init__(self, config: R2FormerConfig) -> None:
        super().__init__()
        dim = config.rerank_dim
        self.num_corr = config.rerank_num_corr
        self.dim = dim
        # timm annotates norm_layer as a class; a partial builds the layer the same way.
        norm_layer = cast('type[nn.Module]', partial(nn.LayerNorm, eps=1e-6))
        block = partial(Block, dim=dim, num_heads=config.rerank_heads, mlp_ratio=4.0,
                        qkv_bias=True, norm_layer=norm_layer)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_token_2 = nn.Parameter(torch.zeros(1, 1, dim))
        # Allocated by the reference but never read; kept so official checkpoints load strictly.
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + 2 * config.num_local, dim))
        self.ratio = nn.Parameter(torch.tensor([0.5]))  # only used by final_score
        self.blocks = nn.ModuleList(block() for _ in range(config.rerank_depth))
        self.blocks_2 = nn.ModuleList(block() for _ in range(config.rerank_pair_depth))
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.pair_head = nn.Linear(PAIR_CHANNELS, dim)
        self.pair_head_2 = nn.Linear(dim, dim)
        self.decoder_pred = nn.Linear(dim, 2)
        pin_explicit_attention((*timm_blocks(self.blocks), *timm_blocks(self.blocks_2)))

    def correspondence_rows(self, query_local: torch.Tensor,
                            db_local: torch.Tensor) -> torch.Tensor:
        """
        Build the reference's (B, 2K, num_corr, 7) correspondence rows, the reference way.

        Materialises the dense (B, K, K, 7) pair tensor and fully argsorts the correlation on both
        sides, like the reference code, so this path is the baseline the fast path is measured
        against. Query-side rows come first, then database-side rows.
        """
        query_xyz, query_desc = split_local(query_local)
        db_xyz, db_desc = split_local(db_local)
        batch, num_query, _ = query_xyz.shape
        num_db = db_xyz.shape[1]
        corr = query_desc @ db_desc.transpose(1, 2)  # (B, Kq, Kd) cosine
        pairs = torch.cat((query_xyz.unsqueeze(2).expand(batch, num_query, num_db, 3),
                           db_xyz.unsqueeze(1).expand(batch, num_query, num_db, 3),
                           corr.unsqueeze(-1)), dim=-1)  # (B, Kq, Kd, 7)
        top = self.num_corr
        query_order = corr.argsort(dim=2, descending=True)[:, :, :top]  # (B, Kq, top)
        query_side = torch.gather(
            pairs, 2, query_order.unsqueeze(-1).expand(-1, -1, -1, PAIR_CHANNELS))
        db_order = corr.argsort(dim=1, descending=True)[:, :top, :]  # (B, top, Kd)
        db_side = torch.gather(pairs, 1, db_order.unsqueeze(-1).expand(-1, -1, -1, PAIR_CHANNELS))
        db_side = db_side.transpose(1, 2)  # (B, Kd, top, 7), channel order still [q, d, corr]
        return torch.cat((query_side, db_side), dim=1)

    def score_rows(self, rows: torch.Tensor, cls_only_last: bool = False,
                   fused: bool = False) -> torch.Tensor:
        """
        Run both transformer levels on rows (B, R, num_corr, 7); return (B, 2) logits.

        Args:
            rows: correspondence rows.
            cls_only_last: compute each level's last block for its cls row only (exact; the fast
                path uses it, the faithful path runs every row like the reference).
            fused: torch SDPA attention in the blocks (fast path) instead of the reference's
                explicit softmax; an argument rather than module state, so it is thread-safe.
        """
        batch, num_rows, num_corr, _ = rows.shape
        # Level 1: each row's top-k entries, anchored at the entry's database (x, y).
        entries = self.pair_head(rows) + sincos_embed_2d(rows[..., 3], rows[..., 4], self.dim)
        entries = entries.reshape(batch * num_rows, num_corr, self.dim)
        tokens = torch.cat((self.cls_token_2.expand(entries.shape[0], -1, -1), entries), dim=1)
        row_cls = self.run_blocks(self.blocks_2, tokens, cls_only_last, fused)
        row_embed = self.pair_head_2(self.decoder_norm(row_cls)).view(batch, num_rows, self.dim)
        # Level 2: anchored at the query (x, y) of each row's best entry.
        row_embed = row_embed + sincos_embed_2d(rows[:, :, 0, 0], rows[:, :, 0, 1], self.dim)
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), row_embed), dim=1)
        pair_cls = self.run_blocks(self.blocks, tokens, cls_only_last, fused)
        return self.decoder_pred(self.decoder_norm(pair_cls))

    @staticmethod
    def run_blocks(blocks: nn.ModuleList, tokens: torch.Tensor, cls_only_last: bool,
                   fused: bool = False) -> torch.Tensor:
        """Apply `blocks` (SDPA attention if `fused`); return the cls row (B, C) of the output."""
        layers = timm_blocks(blocks)
        if not cls_only_last:
            for block in layers:
                tokens = run_block(block, tokens, fused)
            return tokens[:, 0]
        for block in layers[:-1]:
            tokens = run_block(block, tokens, fused)
        cls_row, _ = leading_rows_of_block(layers[-1], tokens, 1)
        return cls_row[:, 0]

    def forward(self, query_local: torch.Tensor, db_local: torch.Tensor) -> torch.Tensor:
        """
        Logits (B, 2) for B query/candidate pairs; softmax(logits)[:, 1] is the match score.

        Args:
            query_local: (B, K, 3 + D) query rows [x, y, att, descriptor].
            db_local: (B, K, 3 + D) candidate rows.
        """
        return self.score_rows(self.correspondence_rows(query_local, db_local))

    def final_score(self, logits: torch.Tensor, global_cos: torch.Tensor) -> torch.Tensor:
        """Blend global cosine and rerank score as the reference does (test.py ignores it)."""
        ratio = self.ratio.clamp(0.1, 0.9)
        return global_cos * ratio + logits.softmax(dim=-1)[:, 1] * (1 - ratio)


def rerank_score(logits: torch.Tensor) -> torch.Tensor:
    """Match probability softmax(logits)[:, 1], the reference's ordering key."""
    return logits.softmax(dim=-1)[:, 1]

