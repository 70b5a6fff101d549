"""A map knows its model: unset settings come from it, conflicting ones are refused by name."""

import pytest

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.places import factory
from r2former_ros.core.places.factory import ModelSettings, auto_backbone, map_model_settings

DINO_MAP = {'backbone': 'dinov2-s14', 'checkpoint': '/gone/dinov2.pt', 'input_hw': [224, 224],
            'num_local': 256}


def test_everything_unset_is_the_maps_model():
    assert map_model_settings(DINO_MAP) == ModelSettings('dinov2-s14', None, (224, 224), 256)
    # '' and 0 are "unset" too (the node's parameter defaults)
    assert map_model_settings(DINO_MAP, backbone='', checkpoint='', input_hw=None,
                              num_local=0).backbone == 'dinov2-s14'


def test_same_values_given_explicitly_are_fine():
    settings = map_model_settings(DINO_MAP, backbone='dinov2-s14', input_hw=(224, 224),
                                  num_local=256)
    assert settings.input_hw == (224, 224) and settings.num_local == 256


@pytest.mark.parametrize(('given', 'names'), [
    ({'backbone': 'r2former'}, ('backbone r2former', 'backbone dinov2-s14')),
    ({'input_hw': (480, 640)}, ('input size 480x640', 'input size 224x224')),
    ({'num_local': 500}, ('num_local 500', 'num_local 256')),
])
def test_a_conflicting_value_names_both(given, names):
    with pytest.raises(ConfigError) as err:
        map_model_settings(DINO_MAP, **given)
    message = str(err.value)
    assert all(name in message for name in names), message
    assert '\n' not in message


def test_auto_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path))
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)
    monkeypatch.setattr(factory, 'dinov2_available', lambda: False)
    assert auto_backbone() == ('r2former', None)  # random weights, warned when loaded
    assert auto_backbone('mine.pth') == ('r2former', None)
    monkeypatch.setattr(factory, 'dinov2_available', lambda: True)
    backbone, note = auto_backbone()
    assert backbone == 'dinov2-s14' and 'DINOv2' in note and '--checkpoint' in note
    (tmp_path / 'CVPR23_DeitS_Rerank.pth').write_bytes(b'x')
    assert auto_backbone() == ('r2former', None)  # a cached checkpoint wins


def test_unset_backbone_loads_the_cached_fallback_and_says_so(monkeypatch, caplog,
                                                              dinov2_cache):
    # A cache with the DINOv2 fallback and no R2Former checkpoint (whatever the user has).
    monkeypatch.setenv('R2FORMER_CACHE', str(dinov2_cache))
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)
    with caplog.at_level('WARNING'):
        model = factory.load_place_model(None, device='cpu', input_hw=(56, 56), num_local=8)
    assert model.name == 'dinov2-s14'
    notes = [r.getMessage() for r in caplog.records if 'DINOv2' in r.getMessage()]
    assert len(notes) == 1 and 'NOT R2Former accuracy' in notes[0]
