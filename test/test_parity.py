"""The parity command on the bundled copy of fixture A (reference outputs on seeded weights)."""

from pathlib import Path
import shutil
import zipfile

import numpy as np
from official_format import save_official_format
import pytest
import torch

from r2former_ros.parity import build_model, load_fixture, main

FIXTURE = Path(__file__).parent / 'data' / 'parity_a'


def test_parity_seeded_weights_pass(capsys):
    assert main(['--fixture', str(FIXTURE), '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    assert 'token sets equal: True' in out and out.strip().endswith('PASS')


def test_parity_through_official_checkpoint_file(tmp_path, capsys):
    """The authors' layout: numpy recalls/best_r5 pickled under numpy 1.x names, Adam state."""
    fixture, manifest, _, _ = load_fixture(FIXTURE)
    path = tmp_path / 'CVPR23_DeitS_Rerank.pth'
    save_official_format(build_model(fixture, manifest, None), path)
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read('CVPR23_DeitS_Rerank/data.pkl')
    assert b'cnumpy.core.multiarray\n_reconstruct\n' in pickled
    assert b'cnumpy.core.multiarray\nscalar\n' in pickled and b'numpy._core' not in pickled
    assert main(['--fixture', str(FIXTURE), '--checkpoint', str(path)]) == 0
    out = capsys.readouterr().out
    assert 'token sets equal: True' in out and out.strip().endswith('PASS')


def test_parity_global_only_checkpoint_checks_global_descriptors_only(tmp_path, capsys):
    fixture, manifest, _, _ = load_fixture(FIXTURE)
    model = build_model(fixture, manifest, None)
    path = tmp_path / 'msls_v2_deits.pth'
    save_official_format(model, path, global_only=True)
    assert main(['--fixture', str(FIXTURE), '--checkpoint', str(path)]) == 0
    out = capsys.readouterr().out
    assert 'not checked: the checkpoint is global-only' in out
    assert out.strip().endswith('PASS (global descriptors only)')
    # and a wrong backbone fails even in global-only mode
    with torch.no_grad():
        model.backbone.head.bias.add_(0.05)
    save_official_format(model, path, global_only=True)
    assert main(['--fixture', str(FIXTURE), '--checkpoint', str(path)]) == 1
    assert capsys.readouterr().out.strip().endswith('FAIL')


def test_parity_refuses_an_html_page_as_checkpoint(tmp_path, capsys):
    page = tmp_path / 'CVPR23_DeitS_Rerank.pth'
    page.write_text('<!DOCTYPE html><html><body>Google Drive - quota exceeded</body></html>')
    assert main(['--fixture', str(FIXTURE), '--checkpoint', str(page)]) == 2
    err = capsys.readouterr().err.strip()
    assert 'is an HTML page, not a checkpoint' in err and len(err.splitlines()) == 1


def test_parity_fails_on_perturbed_reference(tmp_path, capsys):
    bad = tmp_path / 'fixture'
    shutil.copytree(FIXTURE, bad)
    with np.load(bad / 'outputs.npz') as data:
        outputs = {key: data[key] for key in data.files}
    outputs['rerank_logits'] = outputs['rerank_logits'] + 1e-4
    np.savez(bad / 'outputs.npz', **outputs)
    assert main(['--fixture', str(bad)]) == 1
    assert capsys.readouterr().out.strip().endswith('FAIL')


def test_parity_names_missing_fixture_files(tmp_path, capsys):
    assert main(['--fixture', str(tmp_path)]) == 2
    assert 'lacks inputs.npz' in capsys.readouterr().err


@pytest.mark.parametrize('name', ['inputs.npz', 'outputs.npz', 'fixture.json',
                                  'state_dict_manifest.json'])
def test_fixture_is_bundled(name):
    assert (FIXTURE / name).is_file()


def test_fast_path_keeps_fixture_order_and_scores():
    import torch

    from r2former_ros.core.model.fast_rerank import fast_rerank_scores
    from r2former_ros.core.places.preprocessing import preprocess

    fixture, manifest, images, reference = load_fixture(FIXTURE)
    model = build_model(fixture, manifest, None)
    batch = preprocess(images, model.config.input_hw, model.config.mean, model.config.std)
    fast = model.encode(batch, fast=True)
    queries, database = fixture['query_images'], fixture['database_images']
    ref_scores = reference['rerank_score'].reshape(len(queries), len(database))
    for row, query in enumerate(queries):
        scores = fast_rerank_scores(model.Reranker, torch.from_numpy(fast.local_feats[query]),
                                    torch.from_numpy(fast.local_feats[database])).numpy()
        np.testing.assert_allclose(scores, ref_scores[row], atol=1e-5)
        assert np.argsort(-scores).tolist() == np.argsort(-ref_scores[row]).tolist()
