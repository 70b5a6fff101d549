import pytest

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.places.factory import load_place_model, model_settings_for_map

MAP_MODEL = {'backbone': 'r2former', 'checkpoint': '', 'input_hw': [128, 160], 'num_local': 48}


def test_unset_settings_come_from_the_map(tmp_path):
    weights = tmp_path / 'CVPR23_DeitS_Rerank.pth'
    weights.write_bytes(b'x')
    recorded = dict(MAP_MODEL, checkpoint=str(weights))
    assert model_settings_for_map(recorded, None, None, None) == (str(weights), (128, 160), 48)
    # an explicit checkpoint wins (its weights hash is checked when the map opens)
    assert model_settings_for_map(recorded, 'other.pth', (128, 160), 48) == (
        'other.pth', (128, 160), 48)


@pytest.mark.parametrize('recorded', ['seeded-random', '/nonexistent/ckpt.pth', ''])
def test_recorded_checkpoint_is_used_only_while_the_file_exists(recorded):
    checkpoint, _, _ = model_settings_for_map(dict(MAP_MODEL, checkpoint=recorded), '', None, 0)
    assert checkpoint is None


def test_factory_names_bad_choices():
    with pytest.raises(ConfigError, match="backbone 'vgg' is not one of r2former, dinov2-s14"):
        load_place_model('vgg')
    with pytest.raises(ConfigError, match="mode 'quick' must be 'fast' or 'faithful'"):
        load_place_model('r2former', device='cpu', input_hw=(64, 96), num_local=12, mode='quick')
