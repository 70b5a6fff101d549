"""`r2former calibrate` on a second drive, then eval and map info under matching settings."""

import json
from pathlib import Path

from bag_factory import START_NS, BagMessage, image_msg, navsat_msg, write_rosbag2
import pytest

from r2former_ros.cli.main import main
from r2former_ros.core.mapdb import MapDatabase, map_info

IMAGE_TOPIC = '/camera/image_raw'
GPS_TOPIC = '/gps/fix'

@pytest.fixture(scope='module')
def route(tmp_path_factory):
    from map_factory import write_route_map
    from model_factory import small_place_model

    model = small_place_model()
    map_path, world = write_route_map(tmp_path_factory.mktemp('map') / 'route', model,
                                      num_places=12)
    return map_path, world


def drive_bag(path: Path, world, frames: range) -> Path:
    """The route's query images (between the map's windows) at 1 s, each with a GPS fix."""
    messages = []
    for k, i in enumerate(frames):
        stamp = START_NS + k * 1_000_000_000
        messages.append(BagMessage(IMAGE_TOPIC, 'sensor_msgs/msg/Image', stamp + 1000,
                                   image_msg(world.query_images[i], stamp)))
        for offset in (-200_000_000, 200_000_000):
            messages.append(BagMessage(GPS_TOPIC, 'sensor_msgs/msg/NavSatFix', stamp + offset,
                                       navsat_msg(stamp + offset, *world.query_latlon[i])))
    messages.sort(key=lambda m: m.receive_ns)
    return write_rosbag2(path, messages, storage='sqlite3')


@pytest.mark.slow
def test_calibrate_then_eval(route, tmp_path, capsys):
    map_path, world = route
    drive = drive_bag(tmp_path / 'drive', world, range(len(world.query_images)))
    report_path = tmp_path / 'calibrate.json'
    code = main(['calibrate', str(map_path), '--bag', str(drive), '--image-topic', IMAGE_TOPIC,
                 '--gps-topic', GPS_TOPIC, '--rerank-top', '0', '--filter', 'hmm',
                 '--max-speed', '15', '--json', str(report_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert 'stored in' in out and 'filtered (hmm' in out
    report = json.loads(report_path.read_text())
    assert report['num_frames'] == len(world.query_images)
    block = MapDatabase.open(map_path).manifest['calibration']
    assert block['source'] == {'kind': 'drive', 'drive': 'drive'}
    assert block['settings']['ranking'] == 'global'
    assert block['settings']['max_speed_mps'] == 15.0
    info = map_info(map_path)
    assert 'drive drive' in info['calibration']['source']
    # The same settings: calibrated; the JSON carries the trust block.
    result = tmp_path / 'eval.json'
    assert main(['eval', '--map', str(map_path), '--bag', str(drive), '--image-topic',
                 IMAGE_TOPIC, '--gps-topic', GPS_TOPIC, '--rerank-top', '0', '--filter', 'hmm',
                 '--max-speed', '15', '--json', str(result)]) == 0
    summary = json.loads(result.read_text())
    assert summary['calibrated'] and summary['filter'] == 'hmm'
    assert summary['recall_filtered'] is not None and 'matched_precision' in summary
    # The drive that calibrated the map: its figures are in-sample, and eval says so.
    assert 'in-sample' in summary['in_sample_warning']
    assert 'in-sample' in capsys.readouterr().err
    # Another threshold: the stored calibration does not apply; eval says so.
    other = tmp_path / 'eval_other.json'
    assert main(['eval', '--map', str(map_path), '--bag', str(drive), '--image-topic',
                 IMAGE_TOPIC, '--gps-topic', GPS_TOPIC, '--rerank-top', '0', '--filter', 'hmm',
                 '--threshold-m', '40', '--no-calibrate', '--json', str(other)]) == 0
    assert not json.loads(other.read_text())['calibrated']


def test_calibrate_refuses_bad_input(route, tmp_path, capsys):
    map_path, _ = route
    assert main(['calibrate', str(map_path), '--bag', str(tmp_path / 'missing'),
                 '--image-topic', IMAGE_TOPIC, '--gps-topic', GPS_TOPIC]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert main(['calibrate', str(tmp_path), '--bag', str(tmp_path), '--image-topic',
                 IMAGE_TOPIC, '--gps-topic', GPS_TOPIC]) == 2
    assert 'not a map directory' in capsys.readouterr().err
    assert main(['calibrate', str(map_path), '--bag', str(tmp_path), '--image-topic',
                 IMAGE_TOPIC, '--gps-topic', GPS_TOPIC, '--max-speed', '0']) == 2


@pytest.mark.slow
def test_operating_point_map_info_and_a_stale_calibration_after_append(tmp_path, capsys):
    from map_factory import write_route_map
    from model_factory import small_place_model

    from r2former_ros.cli import build_map

    map_path, world = write_route_map(tmp_path / 'route', small_place_model(), num_places=12)
    drive = drive_bag(tmp_path / 'drive', world, range(len(world.query_images)))
    assert main(['calibrate', str(map_path), '--bag', str(drive), '--image-topic', IMAGE_TOPIC,
                 '--gps-topic', GPS_TOPIC, '--rerank-top-n', '0', '--filter', 'hmm',
                 '--target-precision', '0.8']) == 0
    out = capsys.readouterr().out
    assert 'operating point' in out
    points = MapDatabase.open(map_path).manifest['calibration']['operating_points']
    assert set(points) == {'none', 'hmm'} and points['hmm']['target_precision'] == 0.8
    assert main(['map', 'info', str(map_path)]) == 0
    assert 'matches at confidence >=' in capsys.readouterr().out
    # Appending places the drive never saw: the drive calibration is kept but marked stale,
    # not silently replaced by a self-calibration.
    model = MapDatabase.open(map_path).manifest['model']
    assert build_map.main(['--bag', str(drive), '--image-topic', IMAGE_TOPIC, '--gps-topic',
                           GPS_TOPIC, '--out', str(map_path), '--append', '--all-frames',
                           '--backbone', 'r2former', '--input-size',
                           'x'.join(str(v) for v in model['input_hw']), '--num-local',
                           str(model['num_local']), '--quiet']) == 0
    block = MapDatabase.open(map_path).manifest['calibration']
    assert block['source']['kind'] == 'drive' and block['stale']['places_added'] > 0
    info = map_info(map_path)
    assert not info['calibrated'] and info['calibration']['reason'].startswith('stale')
    assert main(['map', 'info', str(map_path)]) == 0
    assert 'stale' in capsys.readouterr().out
