"""Local token selection and the (x, y, attention, descriptor) rows the reranker consumes."""

from __future__ import annotations

import torch
from torch import nn

from r2former_ros.core.features import patch_centre_xy
from r2former_ros.core.model.config import R2FormerConfig


def patch_xy(token_index: torch.Tensor,
             config: R2FormerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Return the patch-centre x, y of raster patch indices, divided by max(H, W) like the reference.

    The formula lives in :func:`r2former_ros.core.features.patch_centre_xy`, shared with the map,
    which recomputes these columns from stored token indices instead of storing them.
    """
    return patch_centre_xy(token_index, config.input_hw, config.patch_size)


def select_local_tokens(last_block_input: torch.Tensor, selection_score: torch.Tensor,
                        local_head: nn.Module,
                        config: R2FormerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Pick the top `num_local` patches by attention and build their feature rows.

    Args:
        last_block_input: (B, 2 + P, C) output of block 11.
        selection_score: (B, P) summed cls/dist attention of the last block.
        local_head: Linear(C -> local_dim).
        config: model configuration.

    Returns:
        local_feats: (B, K, 3 + local_dim) rows [x, y, att, descriptor] in descending attention.
        token_index: (B, K) int64 patch indices.
    """
    num_local = config.num_local
    # topk(sorted=True) gives the same set and descending order as the reference's full argsort;
    # ties (measure zero with real attention) may order differently, which the reranker ignores.
    top_score, token_index = selection_score.topk(num_local, dim=-1, largest=True, sorted=True)
    # Quirk kept on purpose: the reference gathers the feature at *sequence* position p, not p + 2,
    # i.e. two tokens before the scored patch (cls/dist for p in {0, 1}). The released weights were
    # trained with this offset; "fixing" it changes descriptors by up to ~15.
    gather_index = token_index.unsqueeze(-1).expand(-1, -1, last_block_input.shape[-1])
    gathered = torch.gather(last_block_input, 1, gather_index)  # (B, K, C)
    descriptors = local_head(gathered)  # (B, K, local_dim), not normalised
    x, y = patch_xy(token_index, config)
    # The first row holds the maximum, so this is "attention / max" per image.
    attention = top_score / top_score[:, :1]
    xy_att = torch.stack((x.to(descriptors.dtype), y.to(descriptors.dtype),
                          attention.to(descriptors.dtype)), dim=-1)
    return torch.cat((xy_att, descriptors), dim=-1), token_index
