"""The per-frame decision (Localizer.step) pinned; every tool publishes what the node would."""

from map_factory import write_route_map
from model_factory import small_place_model
import numpy as np
import pytest
from route_world import write_drive_bag

from r2former_ros.core.calibration.drive import drive_frame, fit_drive_calibration
from r2former_ros.core.evaluation import EvalQuery, EvalSettings, evaluate_map
from r2former_ros.core.io.result_messages import NO_PLACE, place_recognition_fields
from r2former_ros.core.localize.confidence import confidence_features
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.localize.settings import LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase, write_calibration

# Random weights: the reranker is meaningless, the global descriptor matches nearby windows.
SINGLE = LocalizerConfig(rerank_top_n=0, filter='none')
FILTERED = LocalizerConfig(rerank_top_n=0, filter='hmm', max_speed_mps=15.0)


@pytest.fixture(scope='module')
def route(tmp_path_factory):
    """A 14-place route map calibrated (single frame and filter) on the world's own queries."""
    model = small_place_model()
    path, world = write_route_map(tmp_path_factory.mktemp('localizer') / 'map', model,
                                  num_places=14)
    database = MapDatabase.open(path)
    features = model.encode_rgb(world.query_images)
    single = Localizer(model, database, SINGLE, ranking_only=True)
    frames = [drive_frame(single.step(features.global_desc[i], features.local_feats[i]),
                          float(world.query_east[i]), 0.0, float(i))
              for i in range(len(world.query_images))]
    block, _ = fit_drive_calibration(frames, database.places['east'], database.places['north'],
                                     model.name, FILTERED, 'route queries')
    write_calibration(path, block)
    return model, path, world, features


def test_single_frame_publishes_the_top_candidate_with_its_calibrated_confidence(route):
    model, path, world, features = route
    localizer = Localizer(model, MapDatabase.open(path), SINGLE)
    assert localizer.calibrated
    places = localizer.database.places
    for i in range(4):
        result = localizer.step(features.global_desc[i], features.local_feats[i])
        ranking, decision = result.ranking, result.decision
        ids = ranking.scored_ids
        assert result.place_id == decision.place_id == int(ranking.ids[0])
        assert result.best is result.candidates[0] and result.filtered_best is None
        # The features and the confidence, derived independently of the step.
        expected = confidence_features(ranking.scores, places['east'][ids],
                                       places['north'][ids], SINGLE.threshold_m)
        np.testing.assert_allclose(decision.features, expected)
        assert result.confidence == pytest.approx(localizer.calibration.single.predict(expected))
        assert decision.single_confidence == result.confidence
        assert decision.raw_confidence == pytest.approx(min(max(ranking.scores[0], 0.0), 1.0))
        assert result.matched == (result.confidence >= localizer.decider.threshold)
        assert decision.estimate is None and result.outside_prob is None


def test_the_threshold_is_the_calibrated_operating_point_unless_set(route):
    model, path, _, _ = route
    database = MapDatabase.open(path)
    point = database.manifest['calibration']['operating_points']['none']
    assert point['target_precision'] == 0.95 and point['threshold'] is not None
    calibrated = Localizer(model, database, SINGLE)
    assert calibrated.decider.threshold == point['threshold']
    assert calibrated.threshold_source.startswith('calibrated for precision 0.95')
    chosen = Localizer(model, database, LocalizerConfig(rerank_top_n=0, filter='none',
                                                        confidence_threshold=0.3))
    assert chosen.decider.threshold == 0.3 and chosen.threshold_source == 'set'
    # A calibration that does not apply (another threshold_m) gives no operating point.
    other = Localizer(model, database, LocalizerConfig(rerank_top_n=0, filter='none',
                                                       threshold_m=10.0), ranking_only=True)
    assert other.decider.threshold == 0.5 and other.threshold_source == 'default'


def test_auto_runs_the_filter_the_map_was_calibrated_for(route):
    model, path, _, _ = route
    database = MapDatabase.open(path)
    assert Localizer(model, database, LocalizerConfig(rerank_top_n=0)).filter is not None
    assert Localizer(model, database, LocalizerConfig(rerank_top_n=0, filter='none')).filter \
        is None


def test_matched_is_exactly_confidence_at_or_above_the_threshold(route):
    model, path, _, features = route
    probe = Localizer(model, MapDatabase.open(path), SINGLE)
    confidence = probe.step(features.global_desc[0], features.local_feats[0]).confidence
    at = Localizer(model, MapDatabase.open(path),
                   LocalizerConfig(rerank_top_n=0, filter='none',
                                   confidence_threshold=confidence))
    above = Localizer(model, MapDatabase.open(path),
                      LocalizerConfig(rerank_top_n=0, filter='none',
                                      confidence_threshold=min(1.0, confidence + 1e-6)))
    assert at.step(features.global_desc[0], features.local_feats[0]).matched
    assert not above.step(features.global_desc[0], features.local_feats[0]).matched


def test_the_filter_publishes_its_place_and_its_platt_scaled_mass(route):
    model, path, _, features = route
    localizer = Localizer(model, MapDatabase.open(path), FILTERED)
    assert localizer.calibrated and localizer.calibration.filtered is not None
    for i in range(6):
        result = localizer.step(features.global_desc[i], features.local_feats[i],
                                stamp_s=float(i))
        decision = result.decision
        estimate = decision.estimate
        assert estimate is not None and result.outside_prob == estimate.outside_prob
        assert result.place_id == decision.place_id == estimate.place_id
        assert result.filtered_best is not None and result.best is result.filtered_best
        assert result.confidence == pytest.approx(
            localizer.calibration.filtered.predict(estimate.confidence))
        # The single-frame figures ride along, and the candidates keep single-frame order.
        assert decision.single_confidence == pytest.approx(
            localizer.calibration.single.predict(decision.features))
        assert [c.place_id for c in result.candidates] == \
            result.ranking.ids[:len(result.candidates)].tolist()


@pytest.mark.parametrize('config', [SINGLE, FILTERED], ids=['single', 'filter'])
def test_a_frame_with_no_candidates_publishes_no_place(route, config):
    model, path, _, features = route
    localizer = Localizer(model, MapDatabase.open(path), config)
    localizer.step(features.global_desc[0], features.local_feats[0], stamp_s=0.0)
    everything = np.ones(localizer.database.num_places, dtype=bool)
    result = localizer.step(features.global_desc[1], features.local_feats[1], stamp_s=1.0,
                            exclude=everything)
    assert result.ranking.size == 0 and not result.candidates
    assert result.place_id == NO_PLACE and result.best is None
    assert not result.matched and result.confidence == 0.0
    fields = place_recognition_fields(result, stamp_ns=1, frame_id='camera', map_frame_id='map',
                                      backbone=model.name)
    assert fields['place_id'] == NO_PLACE and not fields['matched']
    if config.filter == 'hmm':
        # Time passes for the filter even without candidates: the frame moved it.
        assert result.decision.estimate is not None
        assert result.decision.estimate.reach_m > 0.0


def _no_candidates_on(database: MapDatabase, calls: set[int]) -> MapDatabase:
    """Make the map's search return nothing on the given calls (0-based), as faiss does."""
    real = database.search
    count = [0]

    def search(queries, k):
        call = count[0]
        count[0] += 1
        scores, ids = real(queries, k)
        if call in calls:
            return np.full_like(scores, -np.inf), np.full_like(ids, -1)
        return scores, ids

    database.search = search
    return database


@pytest.mark.slow
def test_eval_publishes_what_the_node_publishes(route, tmp_path):
    """Filter on, a drive that leaves the map, a frame with no candidates: eval == the node."""
    model, path, world, _ = route
    far_away = 4
    images = list(world.query_images) + list(world.query_images[:far_away])
    east = list(world.query_east) + [10_000.0 + 10 * k for k in range(far_away)]
    empty_frame = 3
    # The node's path: the image step and the message builder of conversions.to_place_recognition.
    node = Localizer(model, _no_candidates_on(MapDatabase.open(path), {empty_frame}), FILTERED)
    published = []
    for i, rgb in enumerate(images):
        result, _ = node.localize_image(rgb, token_pairs=False, stamp_s=float(i))
        published.append(place_recognition_fields(
            result, stamp_ns=i * 10**9, frame_id='camera', map_frame_id='map',
            backbone=model.name))
    queries = [EvalQuery(f'q{i}', lambda im=rgb: im, float(east[i]), 0.0, stamp_s=float(i))
               for i, rgb in enumerate(images)]
    summary = evaluate_map(model, _no_candidates_on(MapDatabase.open(path), {empty_frame}),
                           queries, EvalSettings(FILTERED, calibrate=False)).summary
    track = summary['track']
    assert track['published'] == [f['place_id'] for f in published]
    assert track['matched'] == [f['matched'] for f in published]
    assert track['confidence'] == pytest.approx([f['confidence'] for f in published], abs=1e-6)
    assert track['published'][empty_frame] == NO_PLACE and not track['right'][empty_frame]
    # The frames past the map's end are out of the map, never right, and counted as such.
    assert summary['outside_map']['num_queries'] == far_away
    assert not any(track['right'][-far_away:])
    # The replay tool (localize-bag, the demo) publishes the same too.
    from r2former_ros.core.evaluation.replay import replay_bag

    bag = write_drive_bag(tmp_path / 'drive', world, far_away=far_away)
    replayed = []
    replay_bag(Localizer(model, _no_candidates_on(MapDatabase.open(path), {empty_frame}),
                         FILTERED),
               bag, '/camera/image_raw', tmp_path / 'result', progress=False,
               on_result=lambda record, result, *_: replayed.append(result.place_id))
    assert replayed == track['published']


class _Relabelled:
    """The same model reporting one identity field differently."""

    def __init__(self, model, field, value):
        self._model, self._field, self._value = model, field, value

    def identity(self):
        return {**self._model.identity(), self._field: self._value}

    def __getattr__(self, name):
        return getattr(self._model, name)


@pytest.mark.parametrize(('field', 'value'), [
    ('patch_size', 14), ('preprocessing', {'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}),
    ('checkpoint_sha256', 'f' * 64), ('num_local', 7)])
def test_the_localizer_refuses_a_model_other_than_the_maps(route, field, value):
    from r2former_ros.core.errors import MapError

    model, path, _, _ = route
    with pytest.raises(MapError, match=field):
        Localizer(_Relabelled(model, field, value), MapDatabase.open(path), SINGLE)


def test_the_filter_follows_the_odometry_where_its_speed_bound_cannot(route):
    """The robot drives a place a second, then three in one: odometry takes the filter there."""
    from r2former_ros.core.localize.odometry import OdometryTrack

    model, path, world, _ = route
    config = LocalizerConfig(rerank_top_n=0, filter='hmm')  # speed bound 20 m/s: 2 places

    def east(t):
        return 10.0 * t if t <= 4.0 else 40.0 + 30.0 * (t - 4.0)

    track = OdometryTrack()
    for k in range(61):
        track.add(k / 10, east(k / 10), 0.0, 0.0)
    published = {}
    for odometry in (track, None):
        localizer = Localizer(model, MapDatabase.open(path), config, odometry=odometry)
        for k in range(1, 5):
            result, _ = localizer.localize_image(world.map_images[k], stamp_s=float(k))
            assert result.place_id == k
        result, _ = localizer.localize_image(world.map_images[7], stamp_s=5.0)
        published[odometry is not None] = (result.place_id, result.decision.estimate.motion)
    assert published[True] == (7, 'odometry')
    assert published[False][0] < 7 and published[False][1] != 'odometry'
