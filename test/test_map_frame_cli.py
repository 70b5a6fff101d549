"""
A robot without GPS (issue 23): the corridor driven with poses in a rotated, offset `map` frame.

The same images are written twice: once with NavSatFix only, once with PoseStamped in frame
`map` only (the true track turned by 0.7 rad and shifted). `build_map --pose-topic` builds a
map in frame `map`; `eval`, `calibrate` and `localize-bag` take the drive's truth from its
poses (`--pose-topic`) and give what the GPS map gives on the same images. Refusals: GPS truth
on a pose map and the reverse, a pose topic of another type, a pose map appended with GPS.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
import re

import numpy as np
import pytest

from r2former_ros.cli import build_map
from r2former_ros.cli.main import main
from r2former_ros.core.io.traverse_bag import (
    GPS_TOPIC,
    IMAGE_TOPIC,
    POSE_TOPIC,
    MapFramePoses,
    bundled_corridor,
    write_traverse_bag,
)
from r2former_ros.core.mapdb import MapDatabase

pytestmark = pytest.mark.slow

FRAMES = 10  # the drive calibration needs 8 frames
TINY = ['--input-size', '64x96', '--num-local', '12', '--device', 'cpu', '--no-calibrate',
        '--all-frames', '--quiet']


@pytest.fixture(scope='module')
def corridor(tmp_path_factory):
    """Map and query bags of the corridor (GPS, poses, both) and the GPS and pose maps."""
    root = tmp_path_factory.mktemp('map_frame')
    cache = pytest.MonkeyPatch()
    cache.setenv('R2FORMER_CACHE', str(root / 'empty-cache'))  # seeded weights, whatever is cached
    cache.delenv('R2FORMER_CHECKPOINT', raising=False)
    data = bundled_corridor()
    refs = sorted((data / 'ref').glob('*.jpg'))[:FRAMES]
    queries = sorted((data / 'query').glob('*.jpg'))[:FRAMES]
    poses = MapFramePoses()
    bags = {
        'map_gps': write_traverse_bag(root / 'map_gps', refs),
        'map_pose': write_traverse_bag(root / 'map_pose', refs, poses=poses, gps=False),
        'query_gps': write_traverse_bag(root / 'query_gps', queries, lateral_m=1.0),
        'query_pose': write_traverse_bag(root / 'query_pose', queries, lateral_m=1.0,
                                         poses=poses, gps=False),
        'query_both': write_traverse_bag(root / 'query_both', queries, lateral_m=1.0,
                                         poses=poses),
    }
    assert build_map.main(['--bag', str(bags['map_gps']), '--image-topic', IMAGE_TOPIC,
                           '--gps-topic', GPS_TOPIC, '--out', str(root / 'gps'), *TINY]) == 0
    assert build_map.main(['--bag', str(bags['map_pose']), '--image-topic', IMAGE_TOPIC,
                           '--pose-topic', POSE_TOPIC, '--out', str(root / 'pose'), *TINY]) == 0
    yield root, bags
    cache.undo()


def eval_json(root: Path, map_name: str, bag: Path, truth: list[str], out: str) -> dict:
    assert main(['eval', '--map', str(root / map_name), '--bag', str(bag), '--image-topic',
                 IMAGE_TOPIC, *truth, '--rerank-top', '3', '--no-calibrate', '--json',
                 str(root / out)]) == 0
    return json.loads((root / out).read_text())


def test_the_pose_map_is_in_frame_map_and_map_info_says_so(corridor, capsys):
    root, _ = corridor
    gps, pose = MapDatabase.open(root / 'gps'), MapDatabase.open(root / 'pose')
    assert pose.position_frame == 'map' and gps.position_frame == 'wgs84'
    assert np.isnan(pose.places['lat']).all() and (pose.places['utm_zone'] == 0).all()
    # The same places, turned and shifted: every distance between them is the GPS map's.
    def distances(db):
        xy = np.stack([db.places['east'], db.places['north']], axis=1)
        return np.linalg.norm(xy[:, None] - xy[None], axis=-1)

    np.testing.assert_allclose(distances(pose), distances(gps), atol=1e-3)
    assert not np.allclose(pose.places['east'], gps.places['east'], atol=1.0)
    np.testing.assert_allclose(pose.places['heading'], MapFramePoses().rotation_rad)
    capsys.readouterr()
    assert main(['map', 'info', str(root / 'pose'), '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['position_frame'] == 'map' and info['origin']['lat'] is None
    assert main(['map', 'info', str(root / 'pose')]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^positions +map \(x, y, z of poses in frame 'map'", text, re.M)
    assert re.search(r'^origin +none$', text, re.M)
    assert main(['map', 'info', str(root / 'gps'), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['position_frame'] == 'wgs84'


def test_eval_with_poses_gives_the_gps_maps_recall(corridor):
    root, bags = corridor
    by_gps = eval_json(root, 'gps', bags['query_gps'], ['--gps-topic', GPS_TOPIC], 'gps.json')
    by_pose = eval_json(root, 'pose', bags['query_pose'], ['--pose-topic', POSE_TOPIC],
                        'pose.json')
    assert by_pose['num_queries'] == by_gps['num_queries'] == FRAMES
    for key in ('recall_global', 'recall_reranked', 'num_queries_in_map', 'matched_fraction'):
        assert by_pose[key] == by_gps[key], key
    for key in ('true', 'single', 'published', 'right', 'distance_m', 'confidence'):
        np.testing.assert_allclose(np.asarray(by_pose['track'][key], dtype=float),
                                   np.asarray(by_gps['track'][key], dtype=float), atol=1e-3)
    assert by_pose['bag_images'] == {'images': FRAMES, 'skipped_no_pose': 0,
                                      'usable_poses': 2 * FRAMES}
    assert by_pose['position_frame'] == 'map' and by_pose['pose_topic'] == POSE_TOPIC


def test_localize_bag_publishes_poses_in_frame_map_and_no_fix(corridor, capsys):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    root, bags = corridor
    out = root / 'result_bag'
    assert main(['localize-bag', '--map', str(root / 'pose'), '--bag', str(bags['query_pose']),
                 '--image-topic', IMAGE_TOPIC, '--out', str(out), '--pose-topic', POSE_TOPIC,
                 '--json', str(root / 'replay.json'), '--rerank-top', '3',
                 '--confidence-threshold', '0']) == 0
    frames, results = [], []
    with AnyReader([out], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        assert {c.topic for c in reader.connections} == {'/place_recognition', '/pose'}
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == '/pose':
                frames.append(msg.header.frame_id)
            else:
                results.append(msg)
    assert frames == ['map'] * FRAMES
    assert all(r.map_frame_id == 'map' and math.isnan(r.latitude) for r in results)
    summary = json.loads((root / 'replay.json').read_text())
    assert summary['position_frame'] == 'map' and summary['num_images_without_pose'] == 0
    assert summary['pose_consistency']['num_published'] == FRAMES
    assert math.isfinite(summary['pose_consistency']['median_error_m'])
    # The same frames scored the same way as eval of the GPS map.
    by_gps = json.loads((root / 'gps.json').read_text()) if (root / 'gps.json').exists() \
        else eval_json(root, 'gps', bags['query_gps'], ['--gps-topic', GPS_TOPIC], 'gps.json')
    assert summary['recall_reranked'] == by_gps['recall_reranked']
    # A GPS-map name for the frame is refused on a pose map (its poses are in 'map').
    assert main(['localize-bag', '--map', str(root / 'pose'), '--bag', str(bags['query_pose']),
                 '--image-topic', IMAGE_TOPIC, '--out', str(root / 'x'),
                 '--map-frame-id', 'enu']) == 2
    assert "positions in frame 'map'" in capsys.readouterr().err


def test_calibrate_with_poses(corridor, capsys):
    root, bags = corridor
    assert main(['calibrate', str(root / 'pose'), '--bag', str(bags['query_pose']),
                 '--image-topic', IMAGE_TOPIC, '--pose-topic', POSE_TOPIC, '--rerank-top', '0',
                 '--filter', 'none', '--dry-run', '--json', str(root / 'cal.json')]) == 0
    report = json.loads((root / 'cal.json').read_text())
    assert report['num_frames'] == FRAMES and report['bag_images']['skipped_no_pose'] == 0
    assert f'{FRAMES} frames with a true position' in capsys.readouterr().out


def test_truth_of_the_wrong_kind_is_refused_before_the_model_loads(corridor, capsys,
                                                                    monkeypatch):
    from r2former_ros.core.places import factory

    def no_model(*args, **kwargs):
        raise AssertionError('the model must not load for a refused truth')

    monkeypatch.setattr(factory, 'load_place_model', no_model)
    root, bags = corridor
    pose_map, gps_map, both = str(root / 'pose'), str(root / 'gps'), str(bags['query_both'])
    cases = [
        # GPS truth on a pose-frame map (every tool), and a pose map with --gps-topic only
        (['eval', '--map', pose_map, '--bag', both, '--image-topic', IMAGE_TOPIC,
          '--gps-topic', GPS_TOPIC], "frame 'map' (built from poses, no GPS)"),
        (['calibrate', pose_map, '--bag', both, '--image-topic', IMAGE_TOPIC,
          '--gps-topic', GPS_TOPIC], "frame 'map' (built from poses, no GPS)"),
        (['localize-bag', '--map', pose_map, '--bag', both, '--image-topic', IMAGE_TOPIC,
          '--out', str(root / 'refused'), '--gps-topic', GPS_TOPIC, '--json',
          str(root / 'refused.json')], "frame 'map' (built from poses, no GPS)"),
        # pose truth on a GPS map
        (['eval', '--map', gps_map, '--bag', both, '--image-topic', IMAGE_TOPIC,
          '--pose-topic', POSE_TOPIC], 'holds GPS positions (WGS84)'),
        (['calibrate', gps_map, '--bag', both, '--image-topic', IMAGE_TOPIC,
          '--pose-topic', POSE_TOPIC], 'holds GPS positions (WGS84)'),
        # a pose topic of another type
        (['eval', '--map', pose_map, '--bag', both, '--image-topic', IMAGE_TOPIC,
          '--pose-topic', GPS_TOPIC], 'NavSatFix, expected a pose type'),
        # both truths at once
        (['eval', '--map', pose_map, '--bag', both, '--image-topic', IMAGE_TOPIC,
          '--pose-topic', POSE_TOPIC, '--gps-topic', GPS_TOPIC], 'not both'),
    ]
    capsys.readouterr()
    for command, message in cases:
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert message in err and '\n' not in err, (command, err)
    assert not (root / 'refused').exists() and not (root / 'refused.json').exists()


def test_build_map_refuses_mixing_gps_and_pose_places(corridor, capsys):
    root, bags = corridor
    manifest = (root / 'pose' / 'manifest.json').read_bytes()
    code = build_map.main(['--bag', str(bags['map_gps']), '--image-topic', IMAGE_TOPIC,
                           '--gps-topic', GPS_TOPIC, '--out', str(root / 'pose'), '--append',
                           *TINY])
    assert code == 2
    assert "frame 'map' (built from poses, no GPS)" in capsys.readouterr().err
    assert (root / 'pose' / 'manifest.json').read_bytes() == manifest
    code = build_map.main(['--bag', str(bags['map_pose']), '--image-topic', IMAGE_TOPIC,
                           '--pose-topic', POSE_TOPIC, '--out', str(root / 'gps'), '--append',
                           *TINY])
    assert code == 2 and 'holds GPS positions (WGS84)' in capsys.readouterr().err
    code = build_map.main(['--bag', str(bags['query_both']), '--image-topic', IMAGE_TOPIC,
                           '--pose-topic', GPS_TOPIC, '--out', str(root / 'typed'), *TINY])
    assert code == 2 and 'NavSatFix, expected a pose type' in capsys.readouterr().err
    assert not (root / 'typed').exists()
    # Appending poses of the same frame works, and keeps the map in it.
    assert build_map.main(['--bag', str(bags['query_pose']), '--image-topic', IMAGE_TOPIC,
                           '--pose-topic', POSE_TOPIC, '--out', str(root / 'pose'), '--append',
                           *TINY]) == 0
    grown = MapDatabase.open(root / 'pose')
    assert grown.num_places == 2 * FRAMES and grown.position_frame == 'map'
