"""Self-tuned approximate index: recall against exact is measured, recorded and reached."""

from __future__ import annotations

import numpy as np
import pytest
from vector_factory import clustered

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.mapdb import index as retrieval
from r2former_ros.core.mapdb.tuning import TuneSettings, _drop_self, tune_index

# Generous budget: these tests check recall and the recorded block, not this busy CPU's speed.
NO_BUDGET_MS = 1e4


@pytest.fixture(scope='module')
def vectors() -> np.ndarray:
    return clustered(20_000, 256, 0)


def independent_recall(index, vectors: np.ndarray, k: int, seed: int) -> float:
    """Recall@k of ``index`` vs exact on queries the tuner did not use (noisy copies)."""
    rng = np.random.default_rng(seed)
    queries = vectors[rng.choice(len(vectors), 200, replace=False)]
    queries = queries + 0.05 * rng.normal(size=queries.shape).astype(np.float32)
    return retrieval.recall_vs_exact(index, retrieval.build_index(vectors, 'exact'), queries, k)


def test_ivf_tuned_to_target_and_recorded(vectors):
    tuned = tune_index(vectors, 'ivf', TuneSettings(budget_ms=NO_BUDGET_MS, queries=500))
    block = tuned.block
    assert tuned.kind == 'ivf' and tuned.index is not None
    assert block['param'] == 'nprobe' and block['top_k'] == 100
    assert block['recall'] >= 0.99 and not block['fell_back_to_exact']
    assert retrieval.search_params(tuned.index)['nprobe'] == block['value']
    # The default nprobe 64 of the old 'auto' is what this replaces; the chosen value is the
    # smallest tried that reaches the target.
    reached = [value for value, recall, _ in block['tried'] if recall >= 0.99]
    assert block['value'] == min(reached)
    assert all(recall < 0.99 for value, recall, _ in block['tried'] if value < block['value'])
    assert block['ms_per_query'] > 0 and block['exact_ms_per_query'] > 0
    # Held-out noisy queries see nearly the same recall (the tuning did not overfit).
    assert independent_recall(tuned.index, vectors, 100, 7) >= 0.98


def test_hnsw_tuned_to_target(vectors):
    subset = vectors[:5000]
    tuned = tune_index(subset, 'hnsw', TuneSettings(budget_ms=NO_BUDGET_MS, queries=300,
                                                    top_k=50))
    assert tuned.kind == 'hnsw'
    assert tuned.block['param'] == 'ef_search' and tuned.block['value'] >= 51
    assert tuned.block['recall'] >= 0.99
    assert retrieval.search_params(tuned.index)['ef_search'] == tuned.block['value']


def test_leave_one_out_drops_the_query_itself():
    """Each query's own place is found trivially; counting it would inflate recall."""
    ids = np.array([[5, 1, 2, 3], [7, 9, 8, 6], [0, 4, 4, 2]], np.int64)
    kept = _drop_self(ids, np.array([5, 8, 9]), 3)
    # Own id removed wherever it ranks; a row without it keeps its first k.
    np.testing.assert_array_equal(kept, [[1, 2, 3], [7, 9, 6], [0, 4, 4]])
    padded = _drop_self(np.array([[3, 1]]), np.array([3]), 2)
    np.testing.assert_array_equal(padded, [[1, -1]])


def test_over_budget_falls_back_to_exact(vectors, caplog):
    tuned = tune_index(vectors[:4000], 'ivf', TuneSettings(budget_ms=1e-6, queries=100))
    assert tuned.index is None and tuned.kind == 'exact'
    assert tuned.block['fell_back_to_exact'] and tuned.block['value'] is None
    assert 'budget' in tuned.block['reason']
    assert tuned.block['recall'] == 1.0
    assert 'keeps the exact index' in caplog.text


def test_bad_settings():
    with pytest.raises(ConfigError, match='target recall'):
        TuneSettings(target_recall=1.5).check()
    with pytest.raises(ConfigError, match='budget'):
        TuneSettings(budget_ms=0).check()
    with pytest.raises(ConfigError, match="only 'ivf' and 'hnsw'"):
        tune_index(np.eye(4, dtype=np.float32), 'exact')


def map_features(glob: np.ndarray):
    from r2former_ros.core.features import ImageFeatures, patch_centre_xy

    n, k = glob.shape[0], 4
    tokens = np.tile(np.arange(k), (n, 1))
    x, y = patch_centre_xy(tokens, (32, 32), 16)
    local = np.concatenate((x[..., None], y[..., None], np.ones((n, k, 1)),
                            np.ones((n, k, 8))), -1).astype(np.float32)
    return ImageFeatures(glob, local, tokens)


IDENTITY = {'backbone': 'r2former', 'checkpoint': 'synthetic', 'checkpoint_sha256': '0' * 64,
            'input_hw': [32, 32], 'num_local': 4, 'global_dim': 256, 'local_dim': 8,
            'patch_size': 16}


@pytest.mark.parametrize('budget_ms', [NO_BUDGET_MS, 1e-6])
def test_writer_records_tuning_in_manifest_and_map_info(tmp_path, vectors, budget_ms):
    from r2former_ros.core.geo.coords import place_position
    from r2former_ros.core.mapdb import MapDatabase, MapWriter, PlaceRecord, map_info

    glob = vectors[:6000]
    origin = (35.0, 139.0, 0.0)
    with MapWriter(tmp_path / 'map', IDENTITY, index_type='ivf',
                   origin={'lat': 35.0, 'lon': 139.0, 'alt': 0.0},
                   tune=TuneSettings(budget_ms=budget_ms, queries=200)) as writer:
        writer.add(map_features(glob), [PlaceRecord(i, place_position(35.0, 139.0, 0.0, origin))
                                        for i in range(len(glob))])
    database = MapDatabase.open(tmp_path / 'map')
    block = database.manifest['index']['tuning']
    info = map_info(tmp_path / 'map')
    assert info['index_tuning'] == block
    from r2former_ros.cli.map_cmd import format_info

    text = format_info(info)
    if budget_ms == NO_BUDGET_MS:
        assert f'ivf, nprobe {block["value"]} tuned on 200 map images: recall@100 ' in text
        assert database.index_type == 'ivf' and block['recall'] >= 0.99
        assert database.manifest['index']['nprobe'] == block['value']
        assert database.retrieval_backend == 'faiss ivf'
    else:
        assert 'exact (ivf not used: nprobe' in text and 'budget' in text
        assert database.index_type == 'exact' and block['fell_back_to_exact']
        assert not (tmp_path / 'map' / 'index.faiss').exists()
