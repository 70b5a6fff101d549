"""Metrics from results the localizer already produced agree with `r2former eval`'s own pass."""

import numpy as np
import pytest

from r2former_ros.core.errors import ConfigError


@pytest.fixture(scope='module')
def route(tmp_path_factory):
    from map_factory import write_route_map
    from model_factory import small_place_model

    model = small_place_model()
    map_path, world = write_route_map(tmp_path_factory.mktemp('map') / 'route', model,
                                      num_places=10)
    return model, map_path, world


def _truth(database, world):
    """Query positions in the map's ENU frame."""
    from r2former_ros.core.geo.coords import wgs84_to_enu

    origin = database.manifest['origin']
    east, north, _ = wgs84_to_enu(world.query_latlon[:, 0], world.query_latlon[:, 1],
                                  world.query_latlon[:, 2], origin['lat'], origin['lon'],
                                  origin['alt'])
    return np.asarray(east), np.asarray(north)


def test_one_pass_metrics_match_the_evaluation_loop(route):
    from r2former_ros.core.evaluation import EvalQuery, EvalSettings, evaluate_map
    from r2former_ros.core.evaluation.replay_metrics import (
        LocalizedQuery,
        evaluate_localized,
        run_filter,
    )
    from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig
    from r2former_ros.core.mapdb import MapDatabase

    model, map_path, world = route
    database = MapDatabase.open(map_path)
    east, north = _truth(database, world)
    settings = EvalSettings(threshold_m=12.0, rerank_top_n=6, retrieval_top_k=100,
                            calibrate=False)
    config = LocalizerConfig(retrieval_top_k=100, result_top_k=100, rerank_top_n=6,
                             threshold_m=12.0)
    localizer = Localizer(model, database, config)
    localized = []
    for i, rgb in enumerate(world.query_images):
        result, _ = localizer.localize_image(rgb, token_pairs=False, stamp_s=float(i))
        localized.append(LocalizedQuery(f'q{i}', i * 10**9, result, float(east[i]),
                                        float(north[i]), decode_ms=1.0))
    filtering = Localizer(model, database, LocalizerConfig(
        retrieval_top_k=100, result_top_k=100, rerank_top_n=6, threshold_m=12.0, filter='hmm'))
    track = run_filter(filtering, localized)
    ours = evaluate_localized(localizer, localized, track).summary
    queries = [EvalQuery(f'q{i}', lambda im=rgb: im, float(east[i]), float(north[i]))
               for i, rgb in enumerate(world.query_images)]
    theirs = evaluate_map(model, database, queries, settings).summary
    assert ours['recall_global'] == theirs['recall_global']
    assert ours['recall_reranked'] == theirs['recall_reranked']
    assert ours['ece'] == pytest.approx(theirs['ece'])
    assert ours['ece_uncalibrated'] == pytest.approx(theirs['ece_uncalibrated'])
    assert ours['num_queries'] == len(world.query_images)
    assert {'decode', 'extract', 'retrieve', 'rerank', 'filter', 'total'} <= \
        set(ours['latency_ms'])
    filtered = ours['filtered']
    right = np.asarray(filtered['distance_m']) <= 12.0
    assert filtered['recall_at_1'] == pytest.approx(right.mean())
    assert len(filtered['best_place']) == len(localized)
    per_query = ours['per_query']
    assert per_query['best_place'] == [q.result.candidates[0].place_id for q in localized]


def test_results_must_carry_every_candidate(route):
    from r2former_ros.core.evaluation.replay_metrics import LocalizedQuery, evaluate_localized
    from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig
    from r2former_ros.core.mapdb import MapDatabase

    model, map_path, world = route
    localizer = Localizer(model, MapDatabase.open(map_path),
                          LocalizerConfig(result_top_k=3, rerank_top_n=0))
    result, _ = localizer.localize_image(world.query_images[0], token_pairs=False)
    with pytest.raises(ConfigError, match='result_top_k'):
        evaluate_localized(localizer, [LocalizedQuery('q', 0, result, 0.0, 0.0)])
    with pytest.raises(ConfigError, match='no localized queries'):
        evaluate_localized(localizer, [])
