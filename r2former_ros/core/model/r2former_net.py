"""
The R2Former network: one module whose state dict matches the reference's bare model.

Keys: `backbone.*` (timm DeiT-S distilled), `local_head.*`, `Reranker.*`. The official checkpoint
(`module.`-prefixed, under `model_state_dict`) loads into it after prefix stripping.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from r2former_ros.core.features import ImageFeatures
from r2former_ros.core.model.backbone import build_deit, run_backbone
from r2former_ros.core.model.config import R2FormerConfig
from r2former_ros.core.model.local_tokens import select_local_tokens
from r2former_ros.core.model.reranker import Reranker, rerank_score


class R2Former(nn.Module):
    """
    R2Former (CVPR 2023) for inference: `encode` images, `rerank` query/candidate pairs.

    The default path is the faithful fp32 one that matches the reference implementation to 1e-5.
    """

    def __init__(self, config: R2FormerConfig | None = None) -> None:
        super().__init__()
        self.config = config or R2FormerConfig()
        self.backbone = build_deit(self.config)
        self.local_head = nn.Linear(self.config.embed_dim, self.config.local_dim)
        self.Reranker = Reranker(self.config)  # noqa: N815 - name fixed by the checkpoint keys
        # False for global-only checkpoints (msls_v2_deits.pth): local_head/Reranker are untrained.
        self.has_reranker = True
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.local_head.weight.device

    def encode_tensors(self, images: torch.Tensor, fast: bool = False,
                       autocast_dtype: torch.dtype | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Encode a normalised batch (B, 3, H, W) into tensors on the model's device.

        Args:
            images: normalised batch at the configured input size.
            fast: fused SDPA attention in blocks 0-10 (same math; float rounding differs slightly).
                Passed down as an argument: no module flag is switched, so threads encoding with
                different modes at once do not disturb each other.
            autocast_dtype: opt-in bf16/fp16 for blocks 0-10 (fast path only).

        Returns:
            global_desc (B, G), local_feats (B, K, 3 + D), token_index (B, K).
        """
        out = run_backbone(self.backbone, images, autocast_dtype if fast else None, fused=fast)
        local_feats, token_index = select_local_tokens(
            out.last_block_input, out.selection_score, self.local_head, self.config)
        return out.global_desc, local_feats, token_index

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, fast: bool = False,
               autocast_dtype: torch.dtype | None = None) -> ImageFeatures:
        """Encode a normalised batch and return host-side float32 numpy features."""
        global_desc, local_feats, token_index = self.encode_tensors(
            images.to(self.device), fast, autocast_dtype)
        return ImageFeatures(global_desc.float().cpu().numpy(),
                             local_feats.float().cpu().numpy(),
                             token_index.cpu().numpy().astype(np.int64))

    @torch.inference_mode()
    def rerank_logits(self, query_local: torch.Tensor, db_local: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2) of B query/candidate pairs with the faithful reranker."""
        return self.Reranker(query_local.to(self.device), db_local.to(self.device))

    @torch.inference_mode()
    def rerank_scores(self, query_local: torch.Tensor, db_local: torch.Tensor) -> torch.Tensor:
        """Match scores softmax(logits)[:, 1], shape (B,)."""
        return rerank_score(self.rerank_logits(query_local, db_local))
