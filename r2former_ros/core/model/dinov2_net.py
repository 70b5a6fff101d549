"""
DINOv2 ViT-S/14: the offline pretrained fallback backbone.

Same outputs as the R2Former network (``ImageFeatures``), so maps, retrieval and the
localizer do not care which backbone made them; only the sizes differ (384-d global
descriptor, local rows of 3 + 384 columns). Features are never comparable across backbones.

- Global descriptor: the final-LayerNorm CLS token, L2-normalised (384-d).
- Local tokens (imitating R2Former's selection, spec 1.4): patches ranked by the last block's
  CLS attention summed over the 6 heads (only the CLS query row is computed); the top
  ``num_local`` (capped at the patch count) are kept. Their descriptors are the patch tokens
  at the last block's *input* passed through that block's own ``norm1`` (the LayerNorm its
  attention reads), then L2-normalised. The raw residual stream has a few large channels
  shared by all tokens; on the corridor set (111 queries, MNN rerank of the top 20) the
  normed tokens gave R@1 0.667 / 0.649 at 224x224 / 322x434, the raw ones 0.613 / 0.667.
  Unlike R2Former there is no off-by-two quirk: row and coordinates describe the same patch.
- Columns ``[x, y, att, d_0..d_383]``: ``x, y`` = patch centre / max(H, W), ``att`` = score /
  the image's max score; rows in descending attention; ``token_index`` is the raster index on
  the (H/14, W/14) grid.

Position embeddings are stored for a 37x37 grid (518 px) and resized to (H/14, W/14) with
bicubic interpolation, ``align_corners=False`` and no antialiasing, which is what the ONNX
export of the weights does (timm's dynamic-size path antialiases and differs).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
import math
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.features import ImageFeatures, patch_centre_xy
from r2former_ros.core.model.checkpoint import load_strict
from r2former_ros.core.model.mnn_rerank import rerank_scores as _mnn_rerank_scores

BACKBONE_NAME = 'dinov2-s14'
PATCH_SIZE = 14
EMBED_DIM = 384
DEPTH = 12
NUM_HEADS = 6
MLP_RATIO = 4
LN_EPS = 1e-6
POS_GRID = 37  # the stored position grid: 518 x 518 pixels
DEFAULT_NUM_LOCAL = 500
INPUT_HW_DEFAULT = (224, 224)
INPUT_HW_HIGH_RES = (322, 434)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Image preparation for ``encode``: resize to ``input_hw``, scale to [0, 1], normalise."""

    input_hw: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class BackboneOutput(NamedTuple):
    """Raw outputs of one forward pass."""

    cls: torch.Tensor  # (B, C) final-normed CLS token, not L2-normalised
    last_input: torch.Tensor  # (B, 1 + P, C) tokens entering the last block
    cls_attention: torch.Tensor  # (B, P) last block's CLS->patch attention, summed over heads


def resize_pos_grid(grid: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """
    Resize square patch position embeddings (1, G*G, C) to (1, h*w, C).

    Bicubic (a = -0.75), ``align_corners=False``, no antialias: at the stored size this is
    the identity.
    """
    n, c = grid.shape[1], grid.shape[2]
    side = math.isqrt(n)
    if side * side != n:
        raise ConfigError(f'position grid of {n} entries is not square')
    square = grid.reshape(1, side, side, c).permute(0, 3, 1, 2)
    resized = F.interpolate(square.float(), size=grid_hw, mode='bicubic', align_corners=False,
                            antialias=False)
    return resized.to(grid.dtype).permute(0, 2, 3, 1).reshape(1, grid_hw[0] * grid_hw[1], c)


class _PatchEmbed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, EMBED_DIM, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _LayerScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(EMBED_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(EMBED_DIM, 3 * EMBED_DIM)
        self.proj = nn.Linear(EMBED_DIM, EMBED_DIM)
        self.head_dim = EMBED_DIM // NUM_HEADS

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, NUM_HEADS, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each (B, heads, N, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(x.shape))

    def cls_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention of the CLS query over all tokens, (B, heads, N); x is normed."""
        q, k, _ = self._qkv(x)
        logits = (q[:, :, :1] @ k.transpose(-2, -1)) * self.head_dim ** -0.5
        return logits.softmax(dim=-1)[:, :, 0]


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(EMBED_DIM, MLP_RATIO * EMBED_DIM)
        self.fc2 = nn.Linear(MLP_RATIO * EMBED_DIM, EMBED_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(EMBED_DIM, eps=LN_EPS)
        self.attn = _Attention()
        self.ls1 = _LayerScale()
        self.norm2 = nn.LayerNorm(EMBED_DIM, eps=LN_EPS)
        self.mlp = _Mlp()
        self.ls2 = _LayerScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2ViTS14(nn.Module):
    """The ViT-S/14 network; parameter names follow the upstream DINOv2 checkpoints."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = _PatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + POS_GRID * POS_GRID, EMBED_DIM))
        self.blocks = nn.ModuleList(_Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(EMBED_DIM, eps=LN_EPS)

    @staticmethod
    def grid_hw(height: int, width: int) -> tuple[int, int]:
        """Return the patch grid (rows, columns) of an input; sides must be multiples of 14."""
        if height % PATCH_SIZE or width % PATCH_SIZE or height <= 0 or width <= 0:
            raise ConfigError(f'input size {height}x{width} is not a positive multiple of '
                              f'{PATCH_SIZE} on both sides')
        return height // PATCH_SIZE, width // PATCH_SIZE

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch-embed (B, 3, H, W) and add the (resized) position embeddings."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f'expected images of shape (B, 3, H, W), got {tuple(images.shape)}')
        gh, gw = self.grid_hw(int(images.shape[2]), int(images.shape[3]))
        patches = self.patch_embed(images)
        pos = torch.cat([self.pos_embed[:, :1], resize_pos_grid(self.pos_embed[:, 1:], (gh, gw))],
                        dim=1)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1) + pos

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Return all final-normed tokens (B, 1 + P, C), the ONNX graph's backbone output."""
        x = self.embed(images)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, images: torch.Tensor,
                autocast_dtype: torch.dtype | None = None) -> BackboneOutput:
        """
        Run the network; ``autocast_dtype`` (opt-in bf16/fp16) covers blocks 0-10 only.

        The last block, which ranks the patches (token selection) and gives the descriptors,
        always runs in fp32, as R2Former's does.
        """
        context: AbstractContextManager[Any] = nullcontext()
        if autocast_dtype is not None:
            context = torch.autocast(device_type=images.device.type, dtype=autocast_dtype)
        with context:
            x = self.embed(images)
            for block in self.blocks[:-1]:
                x = block(x)
        x = x.float()
        last = cast(_Block, self.blocks[-1])
        last_input = x
        cls_attention = last.attn.cls_attention(last.norm1(x)).sum(dim=1)[:, 1:]
        x = self.norm(last(x))
        return BackboneOutput(x[:, 0], last_input, cls_attention)


class Dinov2Backbone:
    """
    Feature extractor behind the same interface as the R2Former model.

    Build it with ``from_state_dict`` (the place model loads the cached weights);
    ``encode`` takes images prepared as ``preprocessing`` says and returns ``ImageFeatures``
    with 384-d descriptors.
    """

    name = BACKBONE_NAME
    global_dim = EMBED_DIM
    local_dim = EMBED_DIM

    def __init__(self, model: DinoV2ViTS14, input_hw: tuple[int, int] = INPUT_HW_DEFAULT,
                 num_local: int = DEFAULT_NUM_LOCAL) -> None:
        DinoV2ViTS14.grid_hw(*input_hw)
        if num_local < 1:
            raise ConfigError(f'num_local must be >= 1, got {num_local}')
        self.model = model.eval()
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.num_local = int(num_local)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor],
                        input_hw: tuple[int, int] = INPUT_HW_DEFAULT,
                        num_local: int = DEFAULT_NUM_LOCAL,
                        device: str | torch.device = 'cpu',
                        source: str = 'the state dict') -> Dinov2Backbone:
        """Build from a DINOv2 ViT-S/14 state dict (converted or upstream key layout)."""
        model = DinoV2ViTS14()
        state = {k: v for k, v in state_dict.items() if k != 'mask_token'}
        # names the source and the first missing/unexpected keys or wrong shapes in one line
        # (torch's own message lists every key on its own line)
        load_strict(model, state, f'{source} (DINOv2 ViT-S/14 expected)')
        return cls(model.to(device), input_hw, num_local)

    @property
    def device(self) -> torch.device:
        return self.model.cls_token.device

    @property
    def preprocessing(self) -> Preprocessing:
        """Input size (H, W) and ImageNet mean/std the images passed to ``encode`` need."""
        return Preprocessing(self.input_hw)

    def local_count(self, height: int, width: int) -> int:
        """Return K, the local tokens kept for an input of this size."""
        gh, gw = DinoV2ViTS14.grid_hw(height, width)
        return min(self.num_local, gh * gw)

    def encode(self, images: torch.Tensor,
               autocast_dtype: torch.dtype | None = None) -> ImageFeatures:
        """
        Extract global and local features of normalised images (B, 3, H, W).

        H and W must be multiples of 14 (normally ``input_hw``); ``autocast_dtype``: see
        :meth:`DinoV2ViTS14.forward`.
        """
        with torch.inference_mode():
            images = images.to(self.device, torch.float32)
            out = self.model(images, autocast_dtype)
            height, width = int(images.shape[2]), int(images.shape[3])
            k = self.local_count(height, width)
            global_desc = F.normalize(out.cls, dim=-1)
            score, order = torch.topk(out.cls_attention, k, dim=1, largest=True, sorted=True)
            tokens = out.last_input[:, 1:]
            desc = torch.gather(tokens, 1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
            desc = F.normalize(cast(_Block, self.model.blocks[-1]).norm1(desc), dim=-1)
            x, y = patch_centre_xy(order, (height, width), PATCH_SIZE)
            att = score / score[:, :1].clamp_min(torch.finfo(score.dtype).tiny)
            local = torch.cat([x.unsqueeze(-1), y.unsqueeze(-1), att.unsqueeze(-1), desc], dim=-1)
            return ImageFeatures(
                global_desc.float().cpu().numpy().astype(np.float32, copy=False),
                local.float().cpu().numpy().astype(np.float32, copy=False),
                order.cpu().numpy().astype(np.int64, copy=False),
            )

    @staticmethod
    def rerank_scores(query_local: np.ndarray | torch.Tensor,
                      db_local: np.ndarray | torch.Tensor) -> np.ndarray:
        """Score candidates by mutual nearest neighbours of local descriptors (higher = better)."""
        return _mnn_rerank_scores(query_local, db_local)
