"""Transformer block helpers shared by the backbone and the reranker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
import torch.nn.functional as F  # noqa: N812

if TYPE_CHECKING:
    from timm.layers import Attention
    from timm.models.vision_transformer import Block


def leading_rows_of_block(block: Block, tokens: torch.Tensor,
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
    attention = _attention(block)
    num_heads = attention.num_heads
    head_dim = channels // num_heads
    normed = block.norm1(tokens)
    qkv_weight = attention.qkv.weight  # (3C, C): rows [q; k; v]
    qkv_bias = attention.qkv.bias
    query = F.linear(normed[:, :num_rows], qkv_weight[:channels], qkv_bias[:channels])
    key_value = F.linear(normed, qkv_weight[channels:], qkv_bias[channels:])  # (B, N, 2C)
    query = query.view(batch, num_rows, num_heads, head_dim).transpose(1, 2)
    key_value = key_value.view(batch, length, 2, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    key, value = key_value[0], key_value[1]  # (B, heads, N, hd)
    # Scaling q before the product, as timm does; for head_dim 64 the scale is a power of two, so
    # this is bit-identical to scaling the logits as the reference does.
    attn = (query * attention.scale) @ key.transpose(-2, -1)
    attn = attn.softmax(dim=-1)  # (B, heads, rows, N)
    mixed = (attn @ value).transpose(1, 2).reshape(batch, num_rows, channels)
    rows_out = tokens[:, :num_rows] + attention.proj(mixed)
    rows_out = rows_out + block.mlp(block.norm2(rows_out))
    return rows_out, attn


def fused_block(block: Block, tokens: torch.Tensor) -> torch.Tensor:
    """
    Compute a timm pre-norm `Block` with torch SDPA instead of its explicit softmax attention.

    Same weights and the same operations in the same order, so results differ from `block(tokens)`
    by float rounding only. The block's own `attn.fused_attn` flag is neither read nor written:
    the attention mode is an argument of the call, never state shared by concurrent callers.
    """
    attn = _attention(block)
    batch, length, _ = tokens.shape
    qkv = attn.qkv(block.norm1(tokens))
    qkv = qkv.reshape(batch, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    query, key, value = qkv.unbind(0)
    query, key = attn.q_norm(query), attn.k_norm(key)
    mixed = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
    mixed = mixed.transpose(1, 2).reshape(batch, length, -1)
    # Newer timm versions add an optional norm after attention (Identity for DeiT).
    mixed = getattr(attn, 'norm', nn.Identity())(mixed)
    tokens = tokens + block.drop_path1(block.ls1(attn.proj(mixed)))
    return tokens + block.drop_path2(block.ls2(block.mlp(block.norm2(tokens))))


def run_block(block: Block, tokens: torch.Tensor, fused: bool) -> torch.Tensor:
    """
    Apply a timm `Block` with explicit attention (the reference's math) or, if `fused`, SDPA.

    The modules are built with `attn.fused_attn = False` and never switched, so `block(tokens)` is
    the faithful path for every caller at any time.
    """
    return fused_block(block, tokens) if fused else block(tokens)


def pin_explicit_attention(blocks: Iterable[Block]) -> None:
    """Make timm's own forward use explicit softmax attention (done once, at construction)."""
    for block in blocks:
        # timm declares the flag Final (for TorchScript); it is set once here, before any use.
        setattr(_attention(block), 'fused_attn', False)  # noqa: B010


def timm_blocks(container: nn.Module) -> list[Block]:
    """Return the children of a `blocks` container (Sequential/ModuleList) as timm Blocks."""
    return [cast('Block', block) for block in container.children()]


def _attention(block: Block) -> Attention:
    # timm types `Block.attn` as any Module (the layer is configurable); ViT/DeiT blocks and our
    # reranker's use timm's standard Attention, whose fields the helpers above read.
    return cast('Attention', block.attn)
