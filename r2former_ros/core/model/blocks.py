"""Transformer block helpers shared by the backbone and the reranker."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812


def leading_rows_of_block(block: nn.Module, tokens: torch.Tensor,
                          num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Run a pre-norm transformer block for its first `num_rows` output rows only.

    When a block is the last one and only its leading rows are read (cls/dist of the backbone, the
    cls token of each reranker level), computing queries, projection and MLP for those rows alone
    is exact, not an approximation: keys and values still come from every token.

    Args:
        block: a timm `Block` (pre-norm attention + MLP).
        tokens: (B, N, C) input of the block.
        num_rows: how many leading rows to compute.

    Returns:
        rows_out: (B, num_rows, C) block output for those rows.
        attn: (B, heads, num_rows, N) their softmax attention over all N tokens.
    """
    batch, length, channels = tokens.shape
    num_heads = block.attn.num_heads
    head_dim = channels // num_heads
    normed = block.norm1(tokens)
    qkv_weight = block.attn.qkv.weight  # (3C, C): rows [q; k; v]
    qkv_bias = block.attn.qkv.bias
    query = F.linear(normed[:, :num_rows], qkv_weight[:channels], qkv_bias[:channels])
    key_value = F.linear(normed, qkv_weight[channels:], qkv_bias[channels:])  # (B, N, 2C)
    query = query.view(batch, num_rows, num_heads, head_dim).transpose(1, 2)
    key_value = key_value.view(batch, length, 2, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    key, value = key_value[0], key_value[1]  # (B, heads, N, hd)
    # Scaling q before the product, as timm does; for head_dim 64 the scale is a power of two, so
    # this is bit-identical to scaling the logits as the reference does.
    attn = (query * block.attn.scale) @ key.transpose(-2, -1)
    attn = attn.softmax(dim=-1)  # (B, heads, rows, N)
    mixed = (attn @ value).transpose(1, 2).reshape(batch, num_rows, channels)
    rows_out = tokens[:, :num_rows] + block.attn.proj(mixed)
    rows_out = rows_out + block.mlp(block.norm2(rows_out))
    return rows_out, attn
