"""
Turn camera images into model input exactly as the reference evaluation does.

The reference (`datasets_ws.py`, test_method `hard_resize`) converts to float in [0, 1], normalises
with the ImageNet mean/std and only then resizes the *normalised* tensor bilinearly to the model
size. We keep that order: resizing before normalising differs by interpolation of the affine map
only at borders, but faithful is the point. Other aspect ratios are stretched to the model's 4:3
input, not cropped, as in the reference; a 16:9 camera therefore sees horizontally squeezed
features, the same way the map images were.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
import torch
import torch.nn.functional as F  # noqa: N812

from r2former_ros.core.errors import ImageError


def check_rgb(image: NDArray[np.uint8]) -> None:
    """Raise ImageError unless `image` is an HxWx3 uint8 array."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f'expected a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise ImageError(f'expected uint8 RGB, got dtype {image.dtype}')
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f'expected an HxWx3 RGB image, got shape {tuple(image.shape)}')


def preprocess(images: Sequence[NDArray[np.uint8]] | NDArray[np.uint8], input_hw: tuple[int, int],
               mean: Sequence[float], std: Sequence[float],
               device: torch.device | str = 'cpu') -> torch.Tensor:
    """
    Convert RGB uint8 images of any size to a normalised (N, 3, H, W) float32 batch.

    Args:
        images: one HxWx3 array, an (N, H, W, 3) array, or a sequence of HxWx3 arrays (sizes may
            differ).
        input_hw: the model's (H, W).
        mean: per-channel mean of [0, 1] RGB.
        std: per-channel standard deviation.
        device: where the batch is built; uploading uint8 first keeps host-to-device copies small.

    Returns:
        float32 tensor (N, 3, H, W) on `device`.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = list(images)
    elif isinstance(images, np.ndarray):
        batch = [images]
    else:
        batch = list(images)
    if not batch:
        raise ImageError('no images to preprocess')
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    out = torch.empty((len(batch), 3, *input_hw), dtype=torch.float32, device=device)
    for row, image in enumerate(batch):
        check_rgb(image)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device)
        tensor = tensor.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        tensor = (tensor - mean_t) / std_t
        if tuple(tensor.shape[-2:]) != tuple(input_hw):
            tensor = F.interpolate(tensor, size=input_hw, mode='bilinear', align_corners=False,
                                   antialias=False)
        out[row] = tensor[0]
    return out
