import pytest

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.places.factory import load_place_model, map_model_settings

MAP_MODEL = {'backbone': 'r2former', 'checkpoint': '', 'input_hw': [128, 160], 'num_local': 48}


def test_unset_settings_come_from_the_map(tmp_path):
    weights = tmp_path / 'CVPR23_DeitS_Rerank.pth'
    weights.write_bytes(b'x')
    recorded = dict(MAP_MODEL, checkpoint=str(weights))
    settings = map_model_settings(recorded)
    assert (settings.backbone, settings.checkpoint, settings.input_hw, settings.num_local) == (
        'r2former', str(weights), (128, 160), 48)
    # an explicit checkpoint wins (its weights hash is checked when the map opens)
    assert map_model_settings(recorded, checkpoint='other.pth', input_hw=(128, 160),
                              num_local=48).checkpoint == 'other.pth'


@pytest.mark.parametrize('recorded', ['seeded-random', '/nonexistent/ckpt.pth', ''])
def test_recorded_checkpoint_is_used_only_while_the_file_exists(recorded):
    settings = map_model_settings(dict(MAP_MODEL, checkpoint=recorded), checkpoint='',
                                  num_local=0)
    assert settings.checkpoint is None


def test_factory_names_bad_choices():
    with pytest.raises(ConfigError, match="backbone 'vgg' is not one of r2former, dinov2-s14"):
        load_place_model('vgg')
    with pytest.raises(ConfigError, match="mode 'quick' must be 'fast' or 'faithful'"):
        load_place_model('r2former', device='cpu', input_hw=(64, 96), num_local=12, mode='quick')
