from model_factory import TINY_CONFIG, random_images, seeded_model
import numpy as np
import pytest
import torch

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.model.backbone import embed_tokens, leading_rows_of_block
from r2former_ros.core.model.config import R2FormerConfig
from r2former_ros.core.model.local_tokens import patch_xy
from r2former_ros.core.places.preprocessing import preprocess


@pytest.fixture(scope='module')
def model():
    return seeded_model()


@pytest.fixture(scope='module')
def batch(model):
    images = random_images(3, *TINY_CONFIG.input_hw)
    return preprocess(images, TINY_CONFIG.input_hw, TINY_CONFIG.mean, TINY_CONFIG.std)


def test_encode_shapes_and_invariants(model, batch):
    feats = model.encode(batch)
    k = TINY_CONFIG.num_local
    assert feats.global_desc.shape == (3, 256)
    assert feats.local_feats.shape == (3, k, 131)
    assert feats.token_index.shape == (3, k)
    np.testing.assert_allclose(np.linalg.norm(feats.global_desc, axis=1), 1.0, atol=1e-6)
    for row in feats.token_index:
        assert len(set(row.tolist())) == k
        assert row.min() >= 0 and row.max() < TINY_CONFIG.num_patches
    att = feats.local_feats[:, :, 2]
    assert np.all(att[:, 0] == 1.0)
    assert np.all(np.diff(att, axis=1) <= 0), 'rows must come in descending attention'


def test_xy_columns_follow_token_index(model, batch):
    feats = model.encode(batch)
    x, y = patch_xy(torch.from_numpy(feats.token_index), TINY_CONFIG)
    np.testing.assert_allclose(feats.local_feats[:, :, 0], x.numpy(), atol=1e-7)
    np.testing.assert_allclose(feats.local_feats[:, :, 1], y.numpy(), atol=1e-7)
    # divided by max(H, W) = 96: the last row of a 64-px image centres at 56/96
    assert feats.local_feats[:, :, 1].max() <= 56 / 96 + 1e-7


def test_local_descriptor_uses_the_reference_off_by_two_gather(model, batch):
    """Descriptor of patch p comes from sequence position p (two tokens before the patch)."""
    feats = model.encode(batch)
    with torch.inference_mode():
        tokens = embed_tokens(model.backbone, batch)
        for block in model.backbone.blocks[:-1]:
            tokens = block(tokens)
        image, row = 1, 4
        p = int(feats.token_index[image, row])
        quirky = model.local_head(tokens[image, p]).numpy()
        honest = model.local_head(tokens[image, p + 2]).numpy()
    np.testing.assert_allclose(feats.local_feats[image, row, 3:], quirky, atol=1e-5)
    assert np.abs(feats.local_feats[image, row, 3:] - honest).max() > 1e-3


def test_two_row_last_block_equals_full_block(model, batch):
    with torch.inference_mode():
        tokens = embed_tokens(model.backbone, batch)
        for block in model.backbone.blocks[:-1]:
            tokens = block(tokens)
        last = model.backbone.blocks[-1]
        full = last(tokens)[:, :2]
        prefix, attn = leading_rows_of_block(last, tokens, 2)
    torch.testing.assert_close(prefix, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn.sum(-1)))


def test_encode_is_batch_independent(model, batch):
    together = model.encode(batch)
    alone = model.encode(batch[1:2])
    np.testing.assert_allclose(together.global_desc[1], alone.global_desc[0], atol=1e-5)
    np.testing.assert_allclose(together.local_feats[1], alone.local_feats[0], atol=1e-4)


def test_reranker_ignores_row_order_and_is_batch_independent(model, batch):
    feats = model.encode(batch)
    query = torch.from_numpy(feats.local_feats[[0, 0]])
    db = torch.from_numpy(feats.local_feats[[1, 2]])
    logits = model.rerank_logits(query, db)
    perm = torch.randperm(TINY_CONFIG.num_local, generator=torch.Generator().manual_seed(3))
    permuted = model.rerank_logits(query[:, perm], db[:, perm.flip(0)])
    torch.testing.assert_close(logits, permuted, atol=1e-5, rtol=0)
    solo = model.rerank_logits(query[1:], db[1:])
    torch.testing.assert_close(logits[1:], solo, atol=1e-5, rtol=0)
    scores = model.rerank_scores(query, db)
    assert scores.shape == (2,) and torch.all((scores > 0) & (scores < 1))


def test_reranker_is_asymmetric_like_the_reference(model, batch):
    feats = model.encode(batch)
    a = torch.from_numpy(feats.local_feats[[0]])
    b = torch.from_numpy(feats.local_feats[[1]])
    assert not torch.allclose(model.rerank_logits(a, b), model.rerank_logits(b, a), atol=1e-6)


def test_config_rejects_impossible_shapes():
    with pytest.raises(ConfigError, match='multiples of the patch size'):
        R2FormerConfig(input_hw=(100, 96))
    with pytest.raises(ConfigError, match='num_local=500'):
        R2FormerConfig(input_hw=(64, 96), num_local=500)


def test_fast_rerank_matches_faithful(model, batch):
    from r2former_ros.core.model.fast_rerank import correspondence_rows_topk, fast_rerank_logits

    feats = model.encode(batch)
    query = torch.from_numpy(feats.local_feats[0])
    db = torch.from_numpy(feats.local_feats[[0, 1, 2, 1]])
    db[3, :, 3:] += 0.5  # a fourth candidate that differs from the second
    faithful = model.rerank_logits(query.expand(4, -1, -1), db)
    fast = fast_rerank_logits(model.Reranker, query, db, chunk=3)  # two chunks
    torch.testing.assert_close(fast, faithful, atol=2e-5, rtol=0)
    rows_dense = model.Reranker.correspondence_rows(query.expand(4, -1, -1), db)
    rows_topk = correspondence_rows_topk(query, db, TINY_CONFIG.rerank_num_corr)
    torch.testing.assert_close(rows_topk, rows_dense, atol=0, rtol=0)


def test_fast_extraction_selects_the_same_tokens(model, batch):
    faithful = model.encode(batch)
    fast = model.encode(batch, fast=True)
    for a, b in zip(faithful.token_index, fast.token_index, strict=True):
        assert set(a.tolist()) == set(b.tolist())
    np.testing.assert_allclose(fast.global_desc, faithful.global_desc, atol=1e-5)


def test_fused_block_matches_the_timm_block(model, batch):
    from r2former_ros.core.model.blocks import fused_block

    with torch.inference_mode():
        tokens = embed_tokens(model.backbone, batch)
        block = model.backbone.blocks[0]
        torch.testing.assert_close(fused_block(block, tokens), block(tokens), atol=1e-5,
                                   rtol=1e-5)


def test_attention_mode_is_an_argument_not_module_state(model, batch, monkeypatch):
    """Neither path writes any attribute of an attention module (no flag flipped around calls)."""
    from timm.models.vision_transformer import Attention

    from r2former_ros.core.model.fast_rerank import fast_rerank_logits

    writes = []
    original = Attention.__setattr__

    def recording_setattr(self, name, value):
        writes.append(name)
        original(self, name, value)

    monkeypatch.setattr(Attention, '__setattr__', recording_setattr)
    feats = model.encode(batch, fast=True)
    model.encode(batch)
    query = torch.from_numpy(feats.local_feats[0])
    fast_rerank_logits(model.Reranker, query, torch.from_numpy(feats.local_feats[1:]))
    model.rerank_logits(query.expand(2, -1, -1), torch.from_numpy(feats.local_feats[1:]))
    assert writes == []
    blocks = [*model.backbone.blocks, *model.Reranker.blocks, *model.Reranker.blocks_2]
    assert not any(block.attn.fused_attn for block in blocks)


def test_fast_and_faithful_encoders_in_two_threads_give_serial_results(model, batch):
    from concurrent.futures import ThreadPoolExecutor

    serial_fast = model.encode(batch, fast=True)
    serial_faithful = model.encode(batch)
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(model.encode, batch, fast) for fast in (True, False) * 3]
        results = [job.result() for job in jobs]
    for index, result in enumerate(results):
        expected = serial_fast if index % 2 == 0 else serial_faithful
        np.testing.assert_array_equal(result.global_desc, expected.global_desc)
        np.testing.assert_array_equal(result.token_index, expected.token_index)
