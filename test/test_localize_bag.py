"""``r2former localize-bag`` / ``replay_bag``: a result MCAP that rosbags reads back, and a CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from bag_factory import (
    START_NS,
    BagMessage,
    compressed_msg,
    image_msg,
    navsat_msg,
    write_rosbag2,
)
import numpy as np
import pytest

from r2former_ros.core.io import result_messages as rm

pytestmark = pytest.mark.slow

IMAGE_TOPIC = '/camera/image_raw'
PLACES = (0, 4, 9, 2)


@pytest.fixture(scope='module')
def route(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    from map_factory import write_route_map
    from model_factory import small_place_model

    model = small_place_model()
    map_path, world = write_route_map(tmp_path_factory.mktemp('map') / 'route', model)
    return map_path, world, model


def _input_bag(path: Path, world: Any, compressed: bool = False) -> Path:
    messages = []
    for i, place in enumerate(PLACES):
        stamp = START_NS + i * 100_000_000
        rgb = world.map_images[place]
        msg = compressed_msg(rgb, stamp) if compressed else image_msg(rgb, stamp)
        kind = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
        messages.append(BagMessage(IMAGE_TOPIC, kind, stamp + 1000, msg))
        messages.append(BagMessage('/gps/fix', 'sensor_msgs/msg/NavSatFix', stamp,
                                   navsat_msg(stamp, *world.map_latlon[place])))
    return write_rosbag2(path, messages, storage='sqlite3')


def _read_back(bag: Path) -> dict[str, list[tuple[int, Any]]]:
    """Deserialize every message with types registered from the bag's own msgdefs."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out: dict[str, list[tuple[int, Any]]] = {}
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        for connection, timestamp, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            out.setdefault(connection.topic, []).append((timestamp, msg))
    return out


def test_replay_writes_result_bag_and_csv(route: tuple[Path, Any, Any], tmp_path: Path) -> None:
    from r2former_ros.core.evaluation.replay import replay_bag
    from r2former_ros.core.localize.localizer import Localizer
    from r2former_ros.core.localize.settings import LocalizerConfig
    from r2former_ros.core.mapdb import MapDatabase

    map_path, world, model = route
    database = MapDatabase.open(map_path)
    localizer = Localizer(model, database, LocalizerConfig(rerank_top_n=0, result_top_k=5))
    bag = _input_bag(tmp_path / 'in', world)
    out = tmp_path / 'out'
    summary = replay_bag(localizer, bag, IMAGE_TOPIC, out, tmp_path / 'r.csv', progress=False,
                         match_image=True)
    assert summary['images'] == len(PLACES) and summary['matched'] == len(PLACES)
    assert summary['topics'] == {'/place_recognition': 4, '/fix': 4, '/pose': 4,
                                 '/match_image': 4}
    # The data file carries the bag's own name (never the hidden staging name it was written under)
    assert sorted(p.name for p in out.iterdir()) == ['metadata.yaml', 'out.mcap']

    messages = _read_back(out)
    assert {topic: len(items) for topic, items in messages.items()} == summary['topics']
    stamps = [START_NS + i * 100_000_000 for i in range(len(PLACES))]
    results = messages['/place_recognition']
    assert [t for t, _ in results] == stamps
    for (timestamp, msg), place in zip(results, PLACES, strict=True):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == timestamp
        assert msg.place_id == place and msg.matched
        assert len(msg.candidates) == 5 and msg.candidates[0].place_id == place
        assert math.isnan(msg.rerank_score) and msg.backbone == 'r2former'
        assert msg.map_id == database.map_id
    for (_, fix), place in zip(messages['/fix'], PLACES, strict=True):
        assert (fix.latitude, fix.longitude) == pytest.approx(tuple(world.map_latlon[place][:2]),
                                                              abs=1e-12)
        assert fix.position_covariance_type == 2
    for (_, pose), place in zip(messages['/pose'], PLACES, strict=True):
        assert pose.header.frame_id == 'map'
        assert pose.pose.pose.position.x == pytest.approx(database.position(place).east)
    picture = messages['/match_image'][0][1]
    assert picture.encoding == 'rgb8' and picture.data.size == picture.height * picture.step

    with open(tmp_path / 'r.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r['place_id']) for r in rows] == list(PLACES)
    assert [int(r['stamp_ns']) for r in rows] == stamps
    assert all(r['matched'] == '1' and float(r['total_ms']) > 0 for r in rows)
    assert {r['map_id'] for r in rows} == {database.map_id} == {summary['map_id']}


def test_cli_localize_bag_with_compressed_images(route: tuple[Path, Any, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from r2former_ros.cli.main import main

    map_path, world, _ = route
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path / 'no_cache'))
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)
    bag = _input_bag(tmp_path / 'in', world, compressed=True)
    out = tmp_path / 'result'
    code = main(['localize-bag', '--map', str(map_path), '--bag', str(bag), '--image-topic',
                 IMAGE_TOPIC, '--out', str(out), '--csv', str(tmp_path / 'r.csv'),
                 '--input-size', '128x160', '--num-local', '48', '--device', 'cpu',
                 '--rerank-top-n', '12', '--retrieval-top-k', '12'])
    printed = capsys.readouterr().out
    print(printed)
    assert code == 0
    assert '/place_recognition: 4' in printed
    messages = _read_back(out)
    assert len(messages['/place_recognition']) == 4
    reranked = messages['/place_recognition'][0][1]
    assert not math.isnan(reranked.rerank_score) and reranked.rerank_ms > 0
    assert main(['localize-bag', '--map', str(map_path), '--bag', str(bag), '--image-topic',
                 IMAGE_TOPIC, '--out', str(out), '--input-size', '128x160', '--num-local',
                 '48']) == 2  # existing output is refused


def test_result_messages_roundtrip_and_covariance() -> None:
    from r2former_ros.core.types import Candidate, LocalizationResult, PlacePosition

    store = rm.result_typestore()
    where = PlacePosition(35.0, 139.0, 40.0, 1.0, 2.0, 0.5, 54, True, 3.9e5, 3.9e6, heading=0.5)
    low = LocalizationResult(True, 0.2, [Candidate(3, where, 0.8, None)])
    high = LocalizationResult(True, 0.9, [Candidate(3, where, 0.8, 0.7)])
    fix_low = rm.navsat_fields(low, stamp_ns=5, frame_id='c', threshold_m=10.0)
    fix_high = rm.navsat_fields(high, stamp_ns=5, frame_id='c', threshold_m=10.0)
    assert fix_low['position_covariance'][0] > fix_high['position_covariance'][0] > 0
    assert fix_high['position_covariance'][0] == pytest.approx((10.0 / 0.9) ** 2)
    unmatched = LocalizationResult(False, 0.9, high.candidates)
    assert rm.navsat_fields(unmatched, stamp_ns=5, frame_id='c', threshold_m=10.0) is None
    pose = rm.pose_fields(high, stamp_ns=5, map_frame_id='map', threshold_m=10.0)
    assert pose['pose']['pose']['orientation']['z'] == pytest.approx(math.sin(0.25))
    fields = rm.place_recognition_fields(high, stamp_ns=3 * 10**9 + 7, frame_id='cam',
                                         map_frame_id='map', backbone='r2former')
    msg = rm.to_rosbags(store, rm.PLACE_RECOGNITION_TYPE, fields)
    raw = store.serialize_cdr(msg, rm.PLACE_RECOGNITION_TYPE)
    back = store.deserialize_cdr(raw, rm.PLACE_RECOGNITION_TYPE)
    assert back.header.stamp.sec == 3 and back.header.stamp.nanosec == 7
    assert back.candidates[0].rerank_score == pytest.approx(0.7)
    assert back.place_id == 3 and back.position.x == 1.0 and back.utm_zone == 54
    empty = rm.place_recognition_fields(LocalizationResult(False, 0.0, []), stamp_ns=1,
                                        frame_id='', map_frame_id='map', backbone='r2former')
    assert empty['place_id'] == rm.NO_PLACE and math.isnan(empty['latitude'])
    with pytest.raises(rm.ConfigError):
        rm.to_rosbags(store, rm.NAVSAT_TYPE, {'no_such_field': 1})
    image = rm.to_rosbags(store, rm.IMAGE_TYPE, rm.image_fields(
        np.zeros((2, 3, 3), np.uint8), stamp_ns=1, frame_id='x'))
    assert image.step == 9 and image.data.dtype == np.uint8


@pytest.fixture(scope='module')
def dinov2_map(tmp_path_factory: pytest.TempPathFactory, dinov2_cache: Path) -> tuple[Path, Path]:
    """A tiny DINOv2 map of 3 corridor images and a query bag (the session's fetched weights)."""
    from r2former_ros.core.io.traverse_bag import GPS_TOPIC, bundled_corridor, write_traverse_bag
    from r2former_ros.core.mapping import BuildOptions, build_map
    from r2former_ros.core.places.dinov2_weights import cached_weights_path

    root = tmp_path_factory.mktemp('dino')
    data = bundled_corridor()
    refs = sorted((data / 'ref').glob('*.jpg'))[:3]
    queries = sorted((data / 'query').glob('*.jpg'))[:3]
    map_bag = write_traverse_bag(root / 'map_bag', refs)
    query_bag = write_traverse_bag(root / 'query_bag', queries, lateral_m=1.0)
    build_map(BuildOptions(out=root / 'map', bags=[map_bag], image_topic=IMAGE_TOPIC,
                           gps_topic=GPS_TOPIC, all_frames=True, progress=False,
                           calibrate=False, backbone='dinov2-s14', input_hw=(112, 112),
                           checkpoint=str(cached_weights_path(cache_dir=dinov2_cache)),
                           num_local=32, device='cpu'))
    return root / 'map', query_bag


def test_localize_bag_takes_the_backbone_from_the_map(dinov2_map: tuple[Path, Path],
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from r2former_ros.cli.main import main

    map_path, query_bag = dinov2_map
    common = ['localize-bag', '--map', str(map_path), '--bag', str(query_bag), '--image-topic',
              IMAGE_TOPIC, '--device', 'cpu']
    # No model flag at all: backbone, input size and token count are the map's.
    assert main([*common, '--out', str(tmp_path / 'ok')]) == 0
    assert '/place_recognition: 3' in capsys.readouterr().out
    assert _read_back(tmp_path / 'ok')['/place_recognition'][0][1].backbone == 'dinov2-s14'
    # A flag that contradicts the map is refused in one line naming both values.
    assert main([*common, '--out', str(tmp_path / 'bad'), '--backbone', 'r2former']) == 2
    err = capsys.readouterr().err.strip()
    assert 'backbone r2former' in err and 'backbone dinov2-s14' in err and '\n' not in err
    assert not (tmp_path / 'bad').exists()


def test_an_interrupted_replay_leaves_nothing_and_a_rerun_works(route: tuple[Path, Any, Any],
                                                                tmp_path: Path) -> None:
    from r2former_ros.core.evaluation.replay import replay_bag
    from r2former_ros.core.localize.localizer import Localizer
    from r2former_ros.core.localize.settings import LocalizerConfig
    from r2former_ros.core.mapdb import MapDatabase

    map_path, world, model = route
    localizer = Localizer(model, MapDatabase.open(map_path), LocalizerConfig(rerank_top_n=0))
    bag = _input_bag(tmp_path / 'in', world)
    out, table = tmp_path / 'out', tmp_path / 'r.csv'
    seen = []

    def ctrl_c_at_the_third_image(*_args: Any) -> None:
        seen.append(1)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay_bag(localizer, bag, IMAGE_TOPIC, out, table, progress=False,
                   on_result=ctrl_c_at_the_third_image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in']  # no bag, CSV or partial file
    summary = replay_bag(localizer, bag, IMAGE_TOPIC, out, table, progress=False)
    assert summary['images'] == len(PLACES) and (out / 'metadata.yaml').is_file()
    assert len(table.read_text().splitlines()) == 1 + len(PLACES)
