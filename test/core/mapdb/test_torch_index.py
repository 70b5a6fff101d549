"""Exact torch retrieval (the GPU path) checked on the CPU against faiss's exact index."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from vector_factory import clustered

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.mapdb import index as retrieval
from r2former_ros.core.mapdb.reader import follow_model_device
from r2former_ros.core.mapdb.torch_index import TorchExactIndex


@pytest.fixture(scope='module')
def data() -> tuple[np.ndarray, np.ndarray]:
    base = clustered(5000, 64, 0, clusters=50, spread=0.3)
    rng = np.random.default_rng(1)
    queries = base[rng.choice(5000, 40, replace=False)] + 0.05 * rng.normal(
        size=(40, 64)).astype(np.float32)
    return base, queries


def same_up_to_ties(ids_a, scores_a, ids_b, scores_b, tol: float) -> None:
    """Ids agree except where two scores are within ``tol`` (then either order is right)."""
    np.testing.assert_allclose(scores_a, scores_b, atol=tol)
    for row in range(ids_a.shape[0]):
        differ = ids_a[row] != ids_b[row]
        if differ.any():
            # A swap is only acceptable between (near-)equal scores.
            first = int(np.flatnonzero(differ)[0])
            assert abs(scores_b[row, first] - scores_b[row, min(first + 1, len(differ) - 1)]) \
                <= tol or abs(scores_b[row, first] - scores_b[row, max(first - 1, 0)]) <= tol


def overlap(ids_a: np.ndarray, ids_b: np.ndarray) -> float:
    """Mean fraction of shared ids per row (recall of a against b, order ignored)."""
    return float(np.mean([len(set(a) & set(b)) / len(b)
                          for a, b in zip(ids_a, ids_b, strict=True)]))


def test_fp32_equals_faiss_exact(data):
    base, queries = data
    exact = retrieval.build_index(base, 'exact')
    f_scores, f_ids = retrieval.search(exact, queries, 100)
    t_scores, t_ids = TorchExactIndex(base, 'cpu', 'fp32').search(queries, 100)
    assert t_ids.shape == (40, 100) and t_ids.dtype == np.int64
    same_up_to_ties(t_ids, t_scores, f_ids, f_scores, 1e-5)
    # Membership of the top 100 is the recall that matters downstream.
    assert overlap(t_ids, f_ids) >= 0.999


def test_fp16_with_host_rescoring_returns_fp32_scores(data):
    base, queries = data
    f_scores, f_ids = retrieval.search(retrieval.build_index(base, 'exact'), queries, 50)
    index = TorchExactIndex(base, 'cpu', 'fp16')
    assert index.nbytes == base.shape[0] * base.shape[1] * 2
    t_scores, t_ids = index.search(queries, 50)
    same_up_to_ties(t_ids, t_scores, f_ids, f_scores, 1e-5)


def test_fp16_without_rescoring_is_close_but_rounded(data):
    base, queries = data
    f_scores, f_ids = retrieval.search(retrieval.build_index(base, 'exact'), queries, 50)
    t_scores, t_ids = TorchExactIndex(base, 'cpu', 'fp16', rescore_host=False).search(queries, 50)
    np.testing.assert_allclose(t_scores, f_scores, atol=5e-3)
    assert overlap(t_ids, f_ids) >= 0.95


def test_unnormalised_queries_single_query_and_k_clipped():
    base = clustered(30, 16, 2, clusters=50, spread=0.3)
    index = TorchExactIndex(base, 'cpu', 'fp32')
    scores, ids = index.search(3.0 * base[4], 100)
    assert ids.shape == (1, 30) and ids[0, 0] == 4
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_many_queries_are_chunked(monkeypatch, data):
    base, queries = data
    import r2former_ros.core.mapdb.torch_index as module
    # Force one query per matmul: results must not depend on the chunking.
    monkeypatch.setattr(module, '_MAX_SCORES_PER_CALL', 1)
    chunked = TorchExactIndex(base, 'cpu', 'fp32').search(queries, 10)
    monkeypatch.undo()
    whole = TorchExactIndex(base, 'cpu', 'fp32').search(queries, 10)
    np.testing.assert_array_equal(chunked[1], whole[1])


def test_bad_inputs():
    with pytest.raises(ConfigError, match='precision'):
        TorchExactIndex(np.ones((3, 4), np.float32), 'cpu', 'int8')
    with pytest.raises(ConfigError, match='non-empty'):
        TorchExactIndex(np.ones((0, 4), np.float32))
    index = TorchExactIndex(np.ones((3, 4), np.float32), 'cpu', 'fp32')
    with pytest.raises(ConfigError, match=r'\(Q, 4\)'):
        index.search(np.ones((1, 5), np.float32), 1)
    with pytest.raises(ConfigError, match='k must be'):
        index.search(np.ones((1, 4), np.float32), 0)


def test_map_database_switches_backend(tmp_path):
    """MapDatabase.use_device routes search through torch and back to faiss."""
    from r2former_ros.core.features import ImageFeatures, patch_centre_xy
    from r2former_ros.core.geo.coords import place_position
    from r2former_ros.core.mapdb import MapDatabase, MapWriter, PlaceRecord

    rng = np.random.default_rng(3)
    n, k, d = 300, 4, 8
    identity = {'backbone': 'r2former', 'checkpoint': 'synthetic',
                'checkpoint_sha256': '0' * 64, 'input_hw': [32, 32], 'num_local': k,
                'global_dim': 16, 'local_dim': d, 'patch_size': 16}
    origin = (35.0, 139.0, 0.0)
    glob = clustered(n, 16, 4, clusters=50, spread=0.3)
    tokens = np.tile(np.arange(k), (n, 1))
    x, y = patch_centre_xy(tokens, (32, 32), 16)
    local = np.concatenate((x[..., None], y[..., None], rng.uniform(0, 1, (n, k, 1)),
                            rng.normal(size=(n, k, d))), -1)
    with MapWriter(tmp_path / 'map', identity, index_type='hnsw',
                   origin={'lat': 35.0, 'lon': 139.0, 'alt': 0.0}) as writer:
        writer.add(ImageFeatures(glob, local.astype(np.float32), tokens),
                   [PlaceRecord(i, place_position(35.0 + i * 1e-5, 139.0, 0.0, origin))
                    for i in range(n)])
    database = MapDatabase.open(tmp_path / 'map')
    assert database.retrieval_backend == 'faiss hnsw'
    database.use_device('cpu', 'fp32')
    assert database.retrieval_backend == 'torch exact cpu fp32'
    scores, ids = database.search(glob[:5], 20)
    f_scores, f_ids = retrieval.search(retrieval.build_index(glob, 'exact'), glob[:5], 20)
    same_up_to_ties(ids, scores, f_ids, f_scores, 1e-5)
    assert database._index is None  # faiss's copy is released while the device answers
    database.use_device(None)
    assert database.retrieval_backend == 'faiss hnsw'
    # Back on faiss: the stored index is reloaded with the same search settings as at open.
    reopened = MapDatabase.open(tmp_path / 'map')
    assert retrieval.search_params(database._faiss_index()) == \
        retrieval.search_params(reopened._faiss_index())
    np.testing.assert_array_equal(database.search(glob[:5], 20)[1],
                                  reopened.search(glob[:5], 20)[1])
    database.set_search_params(ef_search=77)
    database.use_device('cpu', 'fp32')
    database.use_device(None)
    assert retrieval.search_params(database._faiss_index())['ef_search'] == 77


def test_retrieval_follows_a_cuda_model_only():
    """The localizer's rule: retrieval moves to the GPU when the model runs there (a stub map)."""
    calls = []
    database = SimpleNamespace(retrieval_backend='faiss exact',
                               use_device=lambda device: calls.append(device))
    moved = []
    for device, expected in (('cpu', []), ('cuda', [torch.device('cuda')])):
        calls.clear()
        moved.append(follow_model_device(database, torch.device(device)))
        assert calls == expected
    assert moved == [False, True]
