import os
import pickle
import pickletools
import zipfile

from model_factory import TINY_CONFIG, seeded_model, torch_state_equal, write_official_checkpoint
import numpy as np
from official_format import save_official_format
import pytest
import torch

from r2former_ros.core.errors import CheckpointError
from r2former_ros.core.model.checkpoint import LAYOUT_FULL, LAYOUT_GLOBAL_ONLY, load_checkpoint
from r2former_ros.core.model.checkpoint_file import numpy_safe_globals, read_checkpoint
from r2former_ros.core.model.config import R2FormerConfig

NUMPY1_GLOBALS = {'numpy.core.multiarray _reconstruct', 'numpy ndarray', 'numpy dtype',
                  'numpy.core.multiarray scalar'}


def pickle_globals(path):
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith('/data.pkl')))
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name == 'GLOBAL'}


@pytest.fixture(scope='module')
def reference_state():
    return seeded_model().state_dict()


def test_official_training_checkpoint(tmp_path, reference_state):
    """The authors' layout: numpy recalls/best_r5 and Adam state, pickled under numpy 1.x names."""
    path = write_official_checkpoint(tmp_path / 'CVPR23_DeitS_Rerank.pth')
    names = pickle_globals(path)
    assert NUMPY1_GLOBALS <= names
    assert not any(name.startswith('numpy._core') for name in names)
    # torch's default allow-list refuses such a file: this is what the loader must handle
    with pytest.raises(pickle.UnpicklingError, match='numpy.core.multiarray._reconstruct'):
        torch.load(path, weights_only=True)
    raw = read_checkpoint(path)
    assert set(raw) == {'epoch_num', 'model_state_dict', 'optimizer_state_dict', 'recalls',
                        'best_r5', 'not_improved_num'}
    assert all(k.startswith('module.') for k in raw['model_state_dict'])
    assert isinstance(raw['recalls'], np.ndarray) and raw['recalls'].dtype == np.float64
    assert type(raw['best_r5']) is np.float64 and raw['best_r5'] == raw['recalls'][1]
    group = raw['optimizer_state_dict']['param_groups'][0]
    assert group['betas'] == (0.9, 0.999) and isinstance(group['betas'], tuple)
    assert set(raw['optimizer_state_dict']['state'][0]) == {'step', 'exp_avg', 'exp_avg_sq'}
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
    path = tmp_path / 'msls_v2_deits.pth'
    save_official_format(seeded_model(), path, global_only=True)
    assert NUMPY1_GLOBALS <= pickle_globals(path)
    keys = set(read_checkpoint(path)['model_state_dict'])
    assert {'module.cls_token', 'module.dist_token', 'module.blocks.0.attn.qkv.weight',
            'module.head.weight', 'module.head_dist.bias'} <= keys
    assert not any(key.startswith(('module.backbone.', 'module.Reranker.')) for key in keys)
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
    with pytest.raises(CheckpointError, match='refusing to load') as info:
        load_checkpoint(path, TINY_CONFIG)
    assert not marker.exists()
    assert 'would call posix.system' in str(info.value)
    assert 'weights_only' not in str(info.value) and '\n' not in str(info.value)
    # a plain pickle (not a torch zip) carrying the same payload is refused too
    plain = tmp_path / 'evil.pkl'
    plain.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError, match='refusing to load'):
        load_checkpoint(plain, TINY_CONFIG)
    assert not marker.exists()


def test_only_the_reference_numpy_globals_are_allowed(tmp_path):
    names = {name for _, name in numpy_safe_globals()}
    assert names == {'numpy.ndarray', 'numpy.dtype', 'numpy.dtypes.Float64DType',
                     'numpy.core.multiarray._reconstruct', 'numpy.core.multiarray.scalar',
                     'numpy._core.multiarray._reconstruct', 'numpy._core.multiarray.scalar'}
    # an array of another dtype needs another class: still refused
    path = tmp_path / 'int_recalls.pth'
    torch.save({'model_state_dict': {}, 'recalls': np.zeros(3, dtype=np.int64)}, path)
    with pytest.raises(CheckpointError, match='refusing to load'):
        read_checkpoint(path)


def _legacy_truncated(path):
    torch.save({'w': torch.zeros(500)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:-10])


def _zip_truncated(path):
    write_official_checkpoint(path)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


@pytest.mark.parametrize('make, message', [
    (None, 'does not exist'),
    (lambda p: p.write_bytes(b''), r'is empty \(0 bytes'),
    (lambda p: p.write_text('<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan '
                            'warning</title></head><body>Download anyway</body></html>\n'),
     r'is an HTML page, not a checkpoint \(a failed download\?\)'),
    (lambda p: p.write_text('  <html lang="en"><body>Quota exceeded</body></html>'),
     'is an HTML page'),
    (lambda p: p.write_text('not a checkpoint at all\n'), "is text, not a checkpoint .*'not a"),
    (_zip_truncated, 'is truncated: a zip archive of'),
    (_legacy_truncated, 'is truncated'),
    (lambda p: p.write_bytes(bytes(range(256))), 'neither a zip archive nor a pickle'),
])
def test_unreadable_files_get_one_clear_line(tmp_path, make, message):
    path = tmp_path / 'ckpt.pth'
    if make is not None:
        make(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path, TINY_CONFIG)
    text = str(info.value)
    assert '\n' not in text and 'weights_only' not in text
    if make is not None:
        assert 'r2former weights fetch r2former' in text


def test_unknown_layout(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'encoder.weight': torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match='unrecognised checkpoint layout'):
        load_checkpoint(path, TINY_CONFIG)
