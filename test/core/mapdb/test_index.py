"""Faiss helpers against brute-force numpy on seeded synthetic descriptors."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from r2former_ros.core.errors import ConfigError, MapError
from r2former_ros.core.mapdb import index as retrieval


def synthetic(n: int, dim: int, seed: int, intrinsic: int = 8) -> np.ndarray:
    """Unit vectors with low intrinsic dimension (like faiss.contrib's SyntheticDataset)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, intrinsic))
    mixed = np.sin(latent @ rng.normal(size=(intrinsic, dim)))
    return retrieval.normalize_rows(mixed)


def queries_near(base: np.ndarray, count: int, seed: int, noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.choice(base.shape[0], count, replace=False)
    return retrieval.normalize_rows(base[rows] + noise * rng.normal(size=(count, base.shape[1])))


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = retrieval.normalize_rows(queries).astype(np.float64) @ base.astype(np.float64).T
    ids = np.argsort(-sims, axis=1, kind='stable')[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


@pytest.fixture(scope='module')
def dataset() -> tuple[np.ndarray, np.ndarray]:
    base = synthetic(6000, 64, seed=1)
    return base, queries_near(base, 200, seed=2)


def test_exact_matches_brute_force(dataset):
    base, queries = dataset
    index = retrieval.build_index(base, 'exact')
    scores, ids = retrieval.search(index, queries, 10)
    ref_scores, ref_ids = brute_force(base, queries, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape == (200, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_scores_are_cosine_for_unnormalised_queries(dataset):
    base, queries = dataset
    index = retrieval.build_index(base, 'exact')
    scores, ids = retrieval.search(index, 7.5 * queries[:5], 3)
    expected = np.einsum('qd,qkd->qk', queries[:5], base[ids])
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.all(scores <= 1.0 + 1e-5)


def test_single_query_and_k_clipped_to_size():
    base = synthetic(5, 16, seed=3)
    index = retrieval.build_index(base, 'exact')
    scores, ids = retrieval.search(index, base[2], 10)
    assert scores.shape == ids.shape == (1, 5)
    assert ids[0, 0] == 2
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert sorted(ids[0].tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(('kind', 'floor', 'params'), [
    # Measured 0.89 and 0.995 with these seeds; the floors leave room for faiss version drift.
    ('ivf', 0.8, {'nprobe': 32}),
    ('hnsw', 0.95, {'ef_search': 64}),
])
def test_approximate_recall_above_floor(dataset, kind, floor, params, record_property, capsys):
    base, queries = dataset
    exact = retrieval.build_index(base, 'exact')
    approx = retrieval.build_index(base, kind, **params)
    assert retrieval.index_type_of(approx) == kind
    recall = retrieval.recall_vs_exact(approx, exact, queries, 10)
    record_property(f'{kind}_recall_at_10', recall)
    with capsys.disabled():
        print(f'\n{kind} {params} 10-recall@10 on 6000x64 synthetic: {recall:.3f}')
    assert recall >= floor


def test_ivf_params_and_nlist_rule():
    base = synthetic(4000, 32, seed=4)
    index = retrieval.build_index(base, 'ivf', nprobe=8)
    params = retrieval.search_params(index)
    # 4 * sqrt(4000) = 253, capped at 4000 // 39 = 102 so every cell has enough training points.
    assert params == {'nlist': 102, 'nprobe': 8}
    assert retrieval.default_nlist(1_000_000) == 4000
    assert retrieval.default_nlist(10) == 1
    retrieval.set_search_params(index, nprobe=1000, ef_search=5)  # ef_search ignored for IVF
    assert retrieval.search_params(index)['nprobe'] == 102  # clipped to nlist


def test_ivf_with_all_cells_probed_is_exact():
    base = synthetic(2000, 32, seed=5)
    queries = queries_near(base, 50, seed=6)
    index = retrieval.build_index(base, 'ivf', nprobe=10_000)
    _, ids = retrieval.search(index, queries, 5)
    _, ref_ids = brute_force(base, queries, 5)
    np.testing.assert_array_equal(ids, ref_ids)


def test_hnsw_params():
    base = synthetic(500, 16, seed=7)
    index = retrieval.build_index(base, 'hnsw', ef_search=40)
    assert retrieval.search_params(index) == {'hnsw_m': 32, 'ef_search': 40,
                                              'ef_construction': 80}
    retrieval.set_search_params(index, ef_search=100)
    assert faiss.downcast_index(index).hnsw.efSearch == 100


@pytest.mark.parametrize('kind', ['exact', 'ivf', 'hnsw'])
def test_save_load_round_trip(tmp_path, kind):
    base = synthetic(1000, 24, seed=8)
    queries = queries_near(base, 20, seed=9)
    index = retrieval.build_index(base, kind)
    retrieval.save_index(index, tmp_path / 'index.faiss')
    loaded = retrieval.load_index(tmp_path / 'index.faiss')
    assert retrieval.index_type_of(loaded) == kind
    assert retrieval.search_params(loaded) == retrieval.search_params(index)
    for a, b in zip(retrieval.search(index, queries, 5), retrieval.search(loaded, queries, 5),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_index_errors_name_the_file(tmp_path):
    with pytest.raises(MapError, match='missing'):
        retrieval.load_index(tmp_path / 'nope.faiss')
    bad = tmp_path / 'bad.faiss'
    bad.write_bytes(b'not an index at all')
    with pytest.raises(MapError, match='bad.faiss'):
        retrieval.load_index(bad)


def test_choose_index_type_rule():
    assert retrieval.choose_index_type('auto', 1000) == 'exact'
    assert retrieval.choose_index_type('auto', 299_999) == 'exact'
    assert retrieval.choose_index_type('auto', 300_000) == 'ivf'
    assert retrieval.choose_index_type('auto', 50, exact_max=10) == 'ivf'
    assert retrieval.choose_index_type('hnsw', 10) == 'hnsw'
    with pytest.raises(ConfigError, match='flat'):
        retrieval.choose_index_type('flat', 10)


def test_bad_inputs_raise_config_error():
    index = retrieval.build_index(synthetic(10, 8, seed=10), 'exact')
    with pytest.raises(ConfigError, match='k must be'):
        retrieval.search(index, np.zeros(8, np.float32), 0)
    with pytest.raises(ConfigError, match=r'\(Q, 8\)'):
        retrieval.search(index, np.zeros((2, 9), np.float32), 1)
    with pytest.raises(ConfigError, match='non-empty'):
        retrieval.build_index(np.zeros((0, 8), np.float32))
    with pytest.raises(ConfigError, match='index type'):
        retrieval.build_index(synthetic(10, 8, seed=11), 'lsh')


def test_normalize_rows_keeps_zero_rows_finite():
    out = retrieval.normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_faiss_threads_restores_previous_setting():
    before = faiss.omp_get_max_threads()
    with retrieval.faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with retrieval.faiss_threads(None):
        assert faiss.omp_get_max_threads() == before
    with pytest.raises(ConfigError):
        retrieval.set_num_threads(0)
