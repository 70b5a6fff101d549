import os
import pickle

from model_factory import TINY_CONFIG, seeded_model, torch_state_equal, write_official_checkpoint
import pytest
import torch

from r2former_ros.core.errors import CheckpointError
from r2former_ros.core.model.checkpoint import LAYOUT_FULL, LAYOUT_GLOBAL_ONLY, load_checkpoint
from r2former_ros.core.model.config import R2FormerConfig


@pytest.fixture(scope='module')
def reference_state():
    return seeded_model().state_dict()


def test_official_training_checkpoint(tmp_path, reference_state):
    path = write_official_checkpoint(tmp_path / 'CVPR23_DeitS_Rerank.pth')
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {'epoch_num', 'model_state_dict', 'optimizer_state_dict'}
    assert all(k.startswith('module.') for k in raw['model_state_dict'])
    loaded = load_checkpoint(path, TINY_CONFIG)
    assert loaded.layout == LAYOUT_FULL and loaded.model.has_reranker
    assert torch_state_equal(loaded.model.state_dict(), reference_state)
    assert len(loaded.sha256) == 64


@pytest.mark.parametrize('prefix', ['', 'module.'])
def test_bare_state_dict_with_or_without_module_prefix(tmp_path, reference_state, prefix):
    path = tmp_path / 'bare.pth'
    torch.save({prefix + k: v for k, v in reference_state.items()}, path)
    loaded = load_checkpoint(path, TINY_CONFIG)
    assert loaded.layout == LAYOUT_FULL
    assert torch_state_equal(loaded.model.state_dict(), reference_state)


def test_global_only_msls_layout_loads_backbone_and_disables_reranking(tmp_path, reference_state,
                                                                       caplog):
    deit = {'module.' + k[len('backbone.'):]: v for k, v in reference_state.items()
            if k.startswith('backbone.')}
    path = tmp_path / 'msls_v2_deits.pth'
    torch.save({'model_state_dict': deit, 'epoch_num': 3}, path)
    loaded = load_checkpoint(path, TINY_CONFIG)
    assert loaded.layout == LAYOUT_GLOBAL_ONLY
    assert not loaded.model.has_reranker
    assert 'reranking is unavailable' in caplog.text
    for key, value in loaded.model.backbone.state_dict().items():
        assert torch.equal(value, reference_state['backbone.' + key])


def test_missing_and_unexpected_keys_are_named(tmp_path, reference_state):
    state = dict(reference_state)
    del state['Reranker.decoder_pred.bias']
    state['Reranker.extra_head.weight'] = torch.zeros(2)
    path = tmp_path / 'broken.pth'
    torch.save({'model_state_dict': state}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, TINY_CONFIG)
    text = str(info.value)
    assert '1 missing key(s): Reranker.decoder_pred.bias' in text
    assert '1 unexpected key(s): Reranker.extra_head.weight' in text


def test_wrong_shape_is_named(tmp_path, reference_state):
    state = dict(reference_state)
    state['local_head.weight'] = torch.zeros(64, 384)
    path = tmp_path / 'shape.pth'
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r'local_head.weight \(64, 384\) != \(128, 384\)'):
        load_checkpoint(path, TINY_CONFIG)


def test_input_size_must_fit_the_position_grid(tmp_path):
    path = write_official_checkpoint(tmp_path / 'tiny.pth')
    with pytest.raises(CheckpointError, match='24 patch positions but input size 480x640'):
        load_checkpoint(path, R2FormerConfig())


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_malicious_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'model_state_dict': {'x': _Exploit(marker)}}, path)
    with pytest.raises(CheckpointError, match='refusing to load'):
        load_checkpoint(path, TINY_CONFIG)
    assert not marker.exists()
    # a plain pickle (not a torch zip) carrying the same payload is refused too
    plain = tmp_path / 'evil.pkl'
    plain.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain, TINY_CONFIG)
    assert not marker.exists()


@pytest.mark.parametrize('content, message', [
    (None, 'does not exist'),
    (b'not a checkpoint at all', 'not a readable torch checkpoint|refusing'),
])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / 'ckpt.pth'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, TINY_CONFIG)


def test_unknown_layout(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'encoder.weight': torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match='unrecognised checkpoint layout'):
        load_checkpoint(path, TINY_CONFIG)
