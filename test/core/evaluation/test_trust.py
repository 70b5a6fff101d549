"""Evaluation reports trust: filtered recall, published ECE, matched precision, outside-map."""

from map_factory import write_route_map
from model_factory import small_place_model
import numpy as np
import pytest

from r2former_ros.core.evaluation import EvalQuery, EvalSettings, evaluate_map
from r2former_ros.core.evaluation.trust import filtered_ranking, trust_summary
from r2former_ros.core.mapdb import MapDatabase


def test_trust_summary_constructed_case():
    confidence = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.6])
    right = np.array([True, False, False, True, False, False])
    covered = np.array([True, True, True, True, False, False])
    filtered = np.zeros((6, 20), dtype=bool)
    filtered[[0, 3], 0] = True
    filtered[1, 4] = True
    out = trust_summary(confidence, right, covered, 0.5, filtered)
    # Matched: 0, 1, 3, 5 -> 2 of 4 right.
    assert out['matched_fraction'] == pytest.approx(4 / 6)
    assert out['matched_precision'] == pytest.approx(0.5)
    # Outside the map: queries 4 and 5, one matched anyway; recall over the 4 covered only.
    assert out['outside_map'] == {'num_queries': 2, 'matched_fraction': 0.5}
    assert out['recall_filtered']['1'] == pytest.approx(0.5)
    assert out['recall_filtered']['5'] == pytest.approx(0.75)
    assert trust_summary(confidence, right, covered, 0.5, None)['recall_filtered'] is None
    assert filtered_ranking(7, np.array([3, 7, 5])).tolist() == [7, 3, 5]


@pytest.fixture(scope='module')
def route(tmp_path_factory):
    model = small_place_model()
    path, world = write_route_map(tmp_path_factory.mktemp('trust') / 'map', model,
                                  num_places=16)
    return model, MapDatabase.open(path), world


def queries(world, far_away: int = 0):
    out = [EvalQuery(f'q{i}', lambda im=image: im, float(world.query_east[i]), 0.0,
                     stamp_s=float(i)) for i, image in enumerate(world.query_images)]
    # Frames beyond the end of the route: no map place within 25 m.
    for k in range(far_away):
        out.append(EvalQuery(f'far{k}', lambda im=world.query_images[k]: im, 10_000.0 + k,
                             0.0, stamp_s=float(len(out))))
    return out


def test_evaluation_with_the_filter_reports_trust(route):
    model, database, world = route
    settings = EvalSettings(rerank_top_n=0, filter='hmm', calibrate=False)
    result = evaluate_map(model, database, queries(world, far_away=3), settings)
    summary = result.summary
    assert summary['filter'] == 'hmm' and set(summary['recall_filtered']) == {'1', '5', '10',
                                                                              '20'}
    assert summary['outside_map']['num_queries'] == 3
    assert summary['num_queries'] == len(world.query_images) + 3
    assert summary['num_queries_in_map'] == len(world.query_images)
    assert not summary['calibrated']  # no calibration stored, none fitted
    assert 0.0 <= summary['matched_fraction'] <= 1.0
    track = summary['track']
    assert len(track['published']) == summary['num_queries']
    assert all(0 <= p < database.num_places for p in track['published'])
    assert all(v is not None for v in track['outside_prob'])
    # Outside-map queries are never right, so they are never in the published top-1 hits.
    assert not result.top1_correct[-3:].any()


def test_evaluation_without_filter_keeps_single_frame_semantics(route):
    model, database, world = route
    settings = EvalSettings(rerank_top_n=0, calibrate=False)
    result = evaluate_map(model, database, queries(world), settings)
    summary = result.summary
    assert summary['recall_filtered'] is None and summary['filter'] == 'none'
    assert result.track['published'].tolist() == result.track['single'].tolist()
    assert summary['recall_reranked']['1'] == pytest.approx(float(result.top1_correct.mean()))
