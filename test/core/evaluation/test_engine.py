"""The one evaluation engine: each JSON key's meaning, and eval == localize-bag --json."""

import json
from types import SimpleNamespace

from map_factory import write_route_map
from model_factory import small_place_model
import numpy as np
import pytest
from route_world import DRIVE_GPS_TOPIC, DRIVE_IMAGE_TOPIC, write_drive_bag

from r2former_ros.core.calibration.fitting import expected_calibration_error
from r2former_ros.core.evaluation import (
    EvalQuery,
    EvalSettings,
    LocalizedFrame,
    evaluate_map,
    summarize,
)
from r2former_ros.core.localize.settings import LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.types import (
    NO_PLACE,
    Decision,
    FilterEstimate,
    LocalizationResult,
    Ranking,
)


class _Model:
    name = 'r2former'
    input_hw = (64, 96)
    random_weights = True

    def identity(self):
        return {'backbone': 'r2former', 'checkpoint': 'seeded-random'}


def _stub_localizer(filter_name: str):
    """Ten places 10 m apart on a line; what summarize reads of a localizer, nothing more."""
    places = {'east': np.arange(10) * 10.0, 'north': np.zeros(10)}
    return SimpleNamespace(
        config=LocalizerConfig(rerank_top_n=0, threshold_m=5.0, filter=filter_name),
        database=SimpleNamespace(places=places, num_places=10), model=_Model(),
        filter=object() if filter_name == 'hmm' else None, calibrated=True,
        decider=SimpleNamespace(threshold=0.5),
        calibration=SimpleNamespace(info={}, single_calibrated=True))


def _frame(name, east, ids, published, confidence, single_confidence, matched):
    ranking = Ranking(np.asarray(ids, dtype=np.int64),
                      np.linspace(0.9, 0.5, len(ids)).astype(np.float32))
    estimate = FilterEstimate(published, confidence, 0.1, 10.0, 3, 9)
    decision = Decision(published, confidence, matched, True, single_confidence,
                        single_confidence, np.zeros(3), estimate)
    result = LocalizationResult(matched, confidence, [], {'total': 1.0}, ranking=ranking,
                                decision=decision)
    return LocalizedFrame(name, result, east, 0.0)


def test_each_key_has_its_documented_meaning():
    # Truth at places 2, 5, 5, 8 and one frame far outside the map (no place within 5 m).
    frames = [
        _frame('a', 20.0, [2, 3, 1], published=2, confidence=0.9, single_confidence=0.8,
               matched=True),  # single right, published right
        _frame('b', 50.0, [4, 5, 6], published=5, confidence=0.7, single_confidence=0.6,
               matched=True),  # single wrong (4), published right (5)
        _frame('c', 50.0, [7, 1, 5], published=7, confidence=0.2, single_confidence=0.3,
               matched=False),  # both wrong; the true place at rank 3
        _frame('d', 80.0, [], published=NO_PLACE, confidence=0.0, single_confidence=0.0,
               matched=False),  # no candidates: no place, never right
        _frame('out', 500.0, [9, 8], published=9, confidence=0.6, single_confidence=0.6,
               matched=True),  # outside the map, matched anyway
    ]
    summary = summarize(_stub_localizer('hmm'), frames).summary
    assert summary['num_queries'] == 5 and summary['num_queries_in_map'] == 4
    # Recall over the 4 in-map frames: single-frame ranking ...
    assert summary['recall_reranked']['1'] == pytest.approx(1 / 4)
    assert summary['recall_reranked']['5'] == pytest.approx(3 / 4)
    # ... and the published ranking (the filter's place first).
    assert summary['recall_filtered']['1'] == pytest.approx(2 / 4)
    assert summary['recall_filtered']['5'] == pytest.approx(3 / 4)
    # Trust of what is published, over every frame (the outside one included).
    published_right = [True, True, False, False, False]
    assert summary['matched_fraction'] == pytest.approx(3 / 5)
    assert summary['matched_precision'] == pytest.approx(2 / 3)
    assert summary['matched_recall'] == pytest.approx(1.0)
    assert summary['ece'] == pytest.approx(expected_calibration_error(
        [0.9, 0.7, 0.2, 0.0, 0.6], published_right))
    assert summary['outside_map'] == {'num_queries': 1, 'matched_fraction': 1.0}
    # Single frame: the top-1 of the ranking against its own confidence.
    single = summary['single_frame']
    assert single['recall_at_1'] == pytest.approx(1 / 4)
    assert single['ece'] == pytest.approx(expected_calibration_error(
        [0.8, 0.6, 0.3, 0.0, 0.6], [True, False, False, False, False]))
    assert single['matched_fraction'] == pytest.approx(3 / 5)  # 0.8, 0.6, 0.6 >= 0.5
    assert summary['ece_uncalibrated'] == single['ece_uncalibrated']
    track = summary['track']
    assert track['published'] == [2, 5, 7, NO_PLACE, 9]
    assert track['single'] == [2, 4, 7, NO_PLACE, 9]
    assert track['right'] == published_right
    assert track['in_map'] == [True, True, True, True, False]
    assert track['distance_m'] == [0.0, 0.0, 20.0, None, 410.0]
    json.dumps(summary)  # plain JSON, no numpy left
    # Without the filter there is no filtered recall.
    assert summarize(_stub_localizer('none'), frames).summary['recall_filtered'] is None


@pytest.fixture(scope='module')
def route(tmp_path_factory):
    model = small_place_model()
    path, world = write_route_map(tmp_path_factory.mktemp('engine') / 'map', model,
                                  num_places=16)
    return model, path, world


def test_evaluation_with_the_filter_reports_trust(route):
    model, path, world = route
    database = MapDatabase.open(path)
    queries = [EvalQuery(f'q{i}', lambda im=image: im, float(world.query_east[i]), 0.0,
                         stamp_s=float(i)) for i, image in enumerate(world.query_images)]
    queries += [EvalQuery(f'far{k}', lambda im=world.query_images[k]: im, 10_000.0 + k, 0.0,
                          stamp_s=float(len(queries) + k)) for k in range(3)]
    settings = EvalSettings(LocalizerConfig(rerank_top_n=0, filter='hmm'), calibrate=False)
    result = evaluate_map(model, database, queries, settings)
    summary = result.summary
    assert summary['filter'] == 'hmm'
    assert set(summary['recall_filtered']) == {'1', '5', '10', '20'}
    assert summary['outside_map']['num_queries'] == 3
    assert summary['num_queries'] == len(world.query_images) + 3
    assert summary['num_queries_in_map'] == len(world.query_images)
    assert not summary['calibrated']  # no calibration stored, none fitted
    track = summary['track']
    assert len(track['published']) == summary['num_queries']
    assert all(v is not None for v in track['outside_prob'])
    # Outside-map queries are never right.
    assert not result.published_right[-3:].any()


def test_without_the_filter_published_is_the_single_frame(route):
    model, path, world = route
    queries = [EvalQuery(f'q{i}', lambda im=image: im, float(world.query_east[i]), 0.0)
               for i, image in enumerate(world.query_images)]
    result = evaluate_map(model, MapDatabase.open(path), queries,
                          EvalSettings(LocalizerConfig(rerank_top_n=0), calibrate=False))
    summary = result.summary
    assert summary['recall_filtered'] is None and summary['filter'] == 'none'
    assert result.track['published'].tolist() == result.track['single'].tolist()
    assert summary['recall_reranked']['1'] == pytest.approx(float(result.published_right.mean()))
    assert summary['ece'] == pytest.approx(summary['single_frame']['ece'])


@pytest.mark.slow
def test_eval_and_localize_bag_json_agree_on_a_drive_leaving_the_map(route, tmp_path):
    from r2former_ros.cli.main import main

    model, path, world = route
    bag = write_drive_bag(tmp_path / 'drive', world, far_away=3)
    common = ['--rerank-top-n', '0', '--filter', 'hmm', '--max-speed', '15']
    assert main(['eval', '--map', str(path), '--bag', str(bag), '--image-topic',
                 DRIVE_IMAGE_TOPIC, '--gps-topic', DRIVE_GPS_TOPIC, '--no-calibrate',
                 '--json', str(tmp_path / 'eval.json'), *common]) == 0
    assert main(['localize-bag', '--map', str(path), '--bag', str(bag), '--image-topic',
                 DRIVE_IMAGE_TOPIC, '--gps-topic', DRIVE_GPS_TOPIC, '--out',
                 str(tmp_path / 'result'), '--json', str(tmp_path / 'replay.json'),
                 *common]) == 0
    ours = json.loads((tmp_path / 'replay.json').read_text())
    theirs = json.loads((tmp_path / 'eval.json').read_text())
    assert ours['outside_map']['num_queries'] == 3
    for key in ('num_queries', 'num_queries_in_map', 'recall_global', 'recall_reranked',
                'recall_filtered', 'ece', 'matched_fraction', 'matched_precision',
                'outside_map', 'single_frame'):
        assert ours[key] == pytest.approx(theirs[key]), key
    for key in ('published', 'single', 'matched', 'right', 'in_map'):
        assert ours['track'][key] == theirs['track'][key], key
    assert ours['track']['confidence'] == pytest.approx(theirs['track']['confidence'])


def test_summarize_refuses_results_not_from_the_step():
    from r2former_ros.core.errors import ConfigError

    localizer = _stub_localizer('none')
    with pytest.raises(ConfigError, match='no localized frames'):
        summarize(localizer, [])
    bare = LocalizedFrame('q', LocalizationResult(False, 0.0, []), 0.0, 0.0)
    with pytest.raises(ConfigError, match='Localizer.step'):
        summarize(localizer, [bare])
