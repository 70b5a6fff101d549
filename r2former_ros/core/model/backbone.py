"""
DeiT-S/16 distilled backbone: global descriptor plus the selected local tokens.

The parameters live in timm's `VisionTransformerDistilled` (so state-dict keys are timm's and the
official checkpoint loads as is); the forward pass is ours because R2Former needs three things
timm's forward does not give: the output of block 11, the last block's attention of the cls/dist
rows, and the head applied to both prefix tokens.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import timm
import torch
import torch.nn.functional as F  # noqa: N812

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.model.blocks import (
    leading_rows_of_block,
    pin_explicit_attention,
    run_block,
    timm_blocks,
)
from r2former_ros.core.model.config import R2FormerConfig

if TYPE_CHECKING:
    from timm.models.deit import VisionTransformerDistilled

NUM_PREFIX_TOKENS = 2  # cls and dist


@dataclass
class BackboneOutput:
    """What one backbone pass produces (tensors on the model's device)."""

    global_desc: torch.Tensor  # (B, G) unit norm
    last_block_input: torch.Tensor  # (B, 2 + P, C): output of block 11, not normalised
    # (B, P) last block attention of the cls+dist rows, summed over heads and rows
    selection_score: torch.Tensor


def build_deit(config: R2FormerConfig) -> VisionTransformerDistilled:
    """Create the (randomly initialised) timm DeiT-S distilled module for `config`."""
    deit = cast('VisionTransformerDistilled', timm.create_model(
        'deit_small_distilled_patch16_224', pretrained=False, img_size=config.input_hw,
        num_classes=config.global_dim, embed_dim=config.embed_dim, depth=config.depth,
        num_heads=config.num_heads))
    pin_explicit_attention(timm_blocks(deit.blocks))
    return deit


def embed_tokens(deit: VisionTransformerDistilled, images: torch.Tensor) -> torch.Tensor:
    """Patch-embed `images` (B, 3, H, W) and add the stored position embedding: (B, 2 + P, C)."""
    cls_token, pos_embed = deit.cls_token, deit.pos_embed
    if cls_token is None or pos_embed is None:  # timm makes both optional; DeiT has both
        raise ConfigError('the DeiT backbone lacks its class token or position embedding')
    patches = deit.patch_embed(images)  # (B, P, C)
    batch = patches.shape[0]
    tokens = torch.cat((cls_token.expand(batch, -1, -1),
                        deit.dist_token.expand(batch, -1, -1), patches), dim=1)
    return tokens + pos_embed


def run_backbone(deit: VisionTransformerDistilled, images: torch.Tensor,
                 autocast_dtype: torch.dtype | None = None,
                 fused: bool = False) -> BackboneOutput:
    """
    Full backbone pass for R2Former.

    Args:
        deit: the timm module from `build_deit` (with its weights).
        images: normalised (B, 3, H, W) at the configured input size.
        autocast_dtype: None for fp32 (faithful); bf16/fp16 runs blocks 0-10 under autocast
            (opt-in). The last block, the heads and token selection always run in fp32, so
            near-ties in the selection score are not decided by reduced-precision rounding of the
            scores themselves.
        fused: torch SDPA attention in blocks 0-10 (the fast path); False keeps the reference's
            explicit softmax attention. An argument, not module state, so concurrent callers with
            different modes cannot interfere.

    Returns:
        The global descriptor, block 11's output and the selection score per patch.
    """
    context: AbstractContextManager[Any]
    if autocast_dtype is None:
        context = nullcontext()
    else:
        context = torch.autocast(device_type=images.device.type, dtype=autocast_dtype)
    with context:
        tokens = embed_tokens(deit, images)
        blocks = timm_blocks(deit.blocks)
        for block in blocks[:-1]:
            tokens = run_block(block, tokens, fused)
    tokens = tokens.float()
    prefix, attn = leading_rows_of_block(blocks[-1], tokens, NUM_PREFIX_TOKENS)
    prefix = deit.norm(prefix)
    global_desc = (deit.head(prefix[:, 0]) + deit.head_dist(prefix[:, 1])) / 2
    global_desc = F.normalize(global_desc, p=2, dim=-1)
    # (B, heads, 2, N) -> sum over heads and both rows, patch columns only: (B, P)
    selection_score = attn[..., NUM_PREFIX_TOKENS:].sum(dim=(1, 2))
    return BackboneOutput(global_desc, tokens, selection_score)
