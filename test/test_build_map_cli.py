"""The `build_map` console script and `r2former map info|verify`, run in-process."""

import json
import re

from bag_factory import drive_messages, raw_image_msg, write_drive_bag, write_rosbag2
import numpy as np
import pytest

from r2former_ros.cli import build_map as cli
from r2former_ros.cli import main as umbrella
from r2former_ros.core.mapdb import MapDatabase

CAMERA = '/camera/image_raw'
GPS = '/gps/fix'
TINY = ['--input-size', '64x96', '--num-local', '12', '--device', 'cpu', '--no-calibrate',
        '--quiet']


@pytest.fixture(autouse=True)
def no_cached_weights(tmp_path, monkeypatch):
    # Without --backbone, build_map uses a cached checkpoint or the cached DINOv2 fallback: keep
    # these tests on seeded random R2Former weights whatever the machine has cached.
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path / 'empty-cache'))
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def build_args(bag, out, *extra):
    return ['--bag', bag, '--image-topic', CAMERA, '--gps-topic', GPS, '--out', out,
            '--min-distance', '0.9', *TINY, *extra]


def assert_no_map(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f'.{out.name}.')]


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_build_then_map_info_json(tmp_path, capsys, storage):
    bag = write_drive_bag(tmp_path / 'drive', storage, n_images=11)
    code, _, err = run(capsys, *build_args(bag, tmp_path / 'map'))
    assert code == 0, err
    assert umbrella.main(['map', 'info', str(tmp_path / 'map'), '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    db = MapDatabase.open(tmp_path / 'map')
    assert info['num_places'] == 3 == db.num_places
    assert info['checkpoint_sha256'] == db.manifest['model']['checkpoint_sha256']
    assert info['format_version'] == 1 and info['local_format'] == 'int8'
    assert info['bytes_per_place'] == pytest.approx(db.bytes_per_place())
    assert info['sources'][0]['kept'] == 3 and info['sources'][0]['images_read'] == 11
    assert umbrella.main(['map', 'info', str(tmp_path / 'map')]) == 0
    text = capsys.readouterr().out
    assert 'places        3' in text and 'rosbag' in text


def test_summary_line_and_options_reach_the_map(tmp_path, capsys):
    bag = write_drive_bag(tmp_path / 'drive', 'mcap', n_images=6)
    code, out, err = run(capsys, '--bag', bag, '--image-topic', CAMERA, '--gps-topic', GPS,
                         '--out', tmp_path / 'map', '--all-frames', '--local-format', 'fp16',
                         '--no-thumbnails', '--index', 'exact', '--batch-size', '4',
                         '--pose-topic', '/odom', '--input-size', '64x96', '--num-local', '12',
                         '--device', 'cpu', '--no-calibrate')
    assert code == 0, err
    assert out.startswith(f'wrote {tmp_path / "map"}: 6 new places, 6 in the map')
    db = MapDatabase.open(tmp_path / 'map')
    assert db.local_format == 'fp16' and db.thumbnail(0) is None and db.index_type == 'exact'
    np.testing.assert_allclose(db.places['heading'], np.pi / 4)


def test_list_topics(tmp_path, capsys):
    bag = write_drive_bag(tmp_path / 'drive.bag', 'ros1', n_images=4)
    code, out, _ = run(capsys, '--bag', bag, '--list-topics')
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ['topic', 'type', 'count']
    assert lines[1].split() == [CAMERA, 'sensor_msgs/msg/Image', '4']
    assert [line.split()[0] for line in lines[2:]] == [GPS, '/odom']


def test_help_has_examples_and_argues_the_default_spacing(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(['--help'])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for flag in ('--bag PATH', '--image-topic', '--gps-topic', '--out MAP_DIR', '--checkpoint',
                 '--min-distance METRES', '--min-interval', '--all-frames', '--max-gps-gap',
                 '--pose-topic', '--device', '--batch-size', '--append', '--overwrite',
                 '--local-format', '--index', '--no-thumbnails', '--no-calibrate',
                 '--input-size', '--num-local', '--images', '--csv', '--layout',
                 '--list-topics', '--quiet', '--backbone'):
        assert flag in out
    assert 'examples:' in out and '25 m' in out and '(default 2' in out


def _truncate(bag, suffix):
    (storage_file,) = bag.glob(f'*{suffix}')
    data = storage_file.read_bytes()
    storage_file.write_bytes(data[: len(data) // 2])
    return bag


def _unknown_encoding(tmp_path):
    messages = drive_messages(4, odom_topic=None)
    for m in messages:
        if m.topic == CAMERA:
            m.msg = raw_image_msg(bytes(12), 'weird9', 2, 2, 6, m.receive_ns)
    return write_rosbag2(tmp_path / 'weird', messages)


def _no_fix(tmp_path):
    messages = drive_messages(4, odom_topic=None)
    for m in messages:
        if m.topic == GPS:
            m.msg.status.status = -1
    return write_rosbag2(tmp_path / 'nofix', messages)


BAD_INPUTS = {
    'missing image topic': (
        lambda p: write_drive_bag(p / 'drive', 'sqlite3', n_images=3),
        ['--image-topic', '/front/image'],
        r'/front/image not in .*available: /camera/image_raw \[sensor_msgs/msg/Image\]'),
    'missing gps topic': (
        lambda p: write_drive_bag(p / 'drive', 'mcap', n_images=3),
        ['--gps-topic', '/fix'], r'/fix not in .*available: .*/gps/fix'),
    'truncated db3': (
        lambda p: _truncate(write_drive_bag(p / 'drive', 'sqlite3', n_images=6), '.db3'),
        [], r'bag .*drive.*(truncated|corrupt)'),
    'truncated mcap': (
        lambda p: _truncate(write_drive_bag(p / 'drive', 'mcap', n_images=6), '.mcap'),
        [], r'bag .*drive.*(truncated|corrupt)'),
    'unknown encoding': (_unknown_encoding, ['--all-frames'],
                         r'none of the 4 selected images could be decoded.*weird9'),
    'no usable gps': (_no_fix, [], 'no usable GPS fix on /gps/fix'),
    'bag does not exist': (lambda p: p / 'missing', [], 'missing does not exist'),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_inputs_fail_with_one_line_and_leave_no_map(tmp_path, capsys, case):
    make, extra, pattern = BAD_INPUTS[case]
    bag = make(tmp_path)
    args = build_args(bag, tmp_path / 'map')
    for flag, value in zip(extra[::2], extra[1::2], strict=False):
        args[args.index(flag) + 1] = value
    args += [flag for flag in extra if flag == '--all-frames']
    code, _, err = run(capsys, *args)
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith('build_map: error:')]
    assert re.search(pattern, line), line
    assert_no_map(tmp_path / 'map')


def test_existing_output_and_usage_errors(tmp_path, capsys):
    bag = write_drive_bag(tmp_path / 'drive', 'mcap', n_images=6)
    assert run(capsys, *build_args(bag, tmp_path / 'map'))[0] == 0
    code, _, err = run(capsys, *build_args(bag, tmp_path / 'map'))
    assert code == 2 and 'already exists; pass --overwrite' in err
    with pytest.raises(SystemExit) as info:
        run(capsys, *build_args(bag, tmp_path / 'map', '--append', '--overwrite'))
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        run(capsys, '--bag', bag, '--image-topic', CAMERA, '--gps-topic', GPS)  # no --out
    assert 'required' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(capsys, *build_args(bag, tmp_path / 'm2'), '--input-size', '64by96')
    assert 'HxW' in capsys.readouterr().err


def test_corrupted_map_is_reported_by_verify_and_refused_by_append(tmp_path, capsys):
    bag = write_drive_bag(tmp_path / 'drive', 'sqlite3', n_images=6)
    out = tmp_path / 'map'
    assert run(capsys, *build_args(bag, out))[0] == 0
    assert umbrella.main(['map', 'verify', str(out)]) == 0
    assert 'OK' in capsys.readouterr().out
    local = out / 'local_desc.npy'
    data = bytearray(local.read_bytes())
    data[-1] ^= 0xFF
    local.write_bytes(bytes(data))
    assert umbrella.main(['map', 'verify', str(out)]) == 1
    out_text = capsys.readouterr().out
    assert 'local_desc.npy: SHA-256 differs' in out_text and '1 problem' in out_text
    (out / 'global.npy').write_bytes((out / 'global.npy').read_bytes()[:-8])
    manifest = (out / 'manifest.json').read_bytes()
    code, _, err = run(capsys, *build_args(bag, out, '--append'))
    assert code == 2 and 'global.npy: size is' in err
    assert (out / 'manifest.json').read_bytes() == manifest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.map.')]
    assert umbrella.main(['map', 'verify', str(tmp_path / 'nothing')]) == 1
    assert 'does not exist' in capsys.readouterr().out


def test_append_through_the_cli(tmp_path, capsys):
    one = write_drive_bag(tmp_path / 'one', 'sqlite3', n_images=6)
    two = write_drive_bag(tmp_path / 'two.mcap', 'bare_mcap', n_images=6)
    assert run(capsys, *build_args(one, tmp_path / 'map'))[0] == 0
    code, _, err = run(capsys, *build_args(two, tmp_path / 'map', '--append'))
    assert code == 0, err
    db = MapDatabase.open(tmp_path / 'map')
    assert db.places['id'].tolist() == [0, 1, 2, 3] and len(db.manifest['sources']) == 2
    code, _, err = run(capsys, *build_args(two, tmp_path / 'map', '--append', '--num-local',
                                           '10'))
    assert code == 2 and ('num_local' in err or 'checkpoint_sha256' in err)


def test_calibration_queries_reach_the_self_calibration(tmp_path, capsys):
    from r2former_ros.core.mapping.options import BuildOptions

    # Unset: the calibration sizes itself to half the build's time (see test_self_calibration).
    assert BuildOptions(out='x').calibration_queries is None
    bag = write_drive_bag(tmp_path / 'drive', 'mcap', n_images=9)
    tiny = [arg for arg in TINY if arg != '--no-calibrate']
    code, _, err = run(capsys, '--bag', bag, '--image-topic', CAMERA, '--gps-topic', GPS,
                       '--out', tmp_path / 'map', '--all-frames', '--calibration-queries', '4',
                       *tiny)
    assert code == 0, err
    info = MapDatabase.open(tmp_path / 'map').manifest['calibration']['info']
    assert info['num_queries'] == 4
    code, _, err = run(capsys, *build_args(bag, tmp_path / 'other', '--calibration-queries', '0'))
    assert code == 2 and 'calibration queries must be >= 1, got 0' in err
    assert_no_map(tmp_path / 'other')
