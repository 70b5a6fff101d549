import numpy as np
import pytest
import torch

from r2former_ros.core.device import resolve_device
from r2former_ros.core.errors import ConfigError, ImageError
from r2former_ros.core.model.config import IMAGENET_MEAN, IMAGENET_STD
from r2former_ros.core.places.preprocessing import preprocess


def test_normalises_with_imagenet_statistics():
    image = np.zeros((32, 48, 3), np.uint8)
    image[..., 0] = 255
    out = preprocess(image, (32, 48), IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (1, 3, 32, 48) and out.dtype == torch.float32
    assert torch.allclose(out[0, 0], torch.tensor((1 - 0.485) / 0.229))
    assert torch.allclose(out[0, 1], torch.tensor(-0.456 / 0.224))


def test_other_sizes_are_stretched_after_normalising():
    # a left/right split image keeps its split at the same relative column after resizing
    image = np.zeros((48, 128, 3), np.uint8)
    image[:, 64:] = 200
    out = preprocess([image, image[:, :, :]], (32, 48), IMAGENET_MEAN, IMAGENET_STD)
    assert out.shape == (2, 3, 32, 48)
    assert out[0, 0, :, :23].max() < 0 < out[0, 0, :, 25:].min()


@pytest.mark.parametrize('bad, message', [
    (np.zeros((4, 4), np.uint8), 'HxWx3'),
    (np.zeros((4, 4, 3), np.float32), 'uint8'),
    (np.zeros((4, 4, 4), np.uint8), 'HxWx3'),
    ('not an image', 'numpy array'),
])
def test_bad_images_raise_image_error(bad, message):
    with pytest.raises(ImageError, match=message):
        preprocess([bad], (32, 32), IMAGENET_MEAN, IMAGENET_STD)


def test_device_resolution():
    assert resolve_device('cpu').type == 'cpu'
    assert resolve_device('auto').type == ('cuda' if torch.cuda.is_available() else 'cpu')
    with pytest.raises(ConfigError, match='not a device|not supported'):
        resolve_device('gpu0')
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match='CUDA is not available'):
            resolve_device('cuda')
