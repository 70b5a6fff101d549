"""build_map on a local Ray (2 CPUs) writes the same map as the plain build."""

import json
import sys

from bag_factory import write_drive_bag
import numpy as np
import pytest

from r2former_ros.core import mapping
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.mapdb import MapDatabase
from r2former_ros.core.mapping import ray_build


def options(out, bags, **kwargs):
    values = {'out': out, 'bags': bags, 'image_topic': '/camera/image_raw',
              'gps_topic': '/gps/fix', 'all_frames': True, 'calibrate': False,
              'progress': False, 'batch_size': 4, 'device': 'cpu', 'input_hw': (64, 96),
              'num_local': 12, 'index_type': 'exact'}
    values.update(kwargs)
    return mapping.BuildOptions(**values)


def manifest_without_times(path):
    manifest = json.loads((path / 'manifest.json').read_text())
    for key in ('created', 'modified'):
        manifest.pop(key)
    # Checksums of float arrays change with the last bit; sizes must not.
    manifest['files'] = {name: entry['bytes'] for name, entry in manifest['files'].items()}
    return manifest


@pytest.mark.slow
def test_ray_build_equals_plain_build(tmp_path):
    ray = pytest.importorskip('ray')
    bags = [write_drive_bag(tmp_path / 'jpeg', n_images=14, compressed=True),
            write_drive_bag(tmp_path / 'raw', n_images=11)]
    plain = mapping.build_map(options(tmp_path / 'plain', bags))
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        distributed = ray_build.build_map_ray(options(tmp_path / 'ray', bags))
    finally:
        ray.shutdown()
    assert distributed.num_places == plain.num_places == 25
    a, b = MapDatabase.open(plain.path), MapDatabase.open(distributed.path)
    np.testing.assert_array_equal(a.places, b.places)
    np.testing.assert_allclose(a.global_desc, b.global_desc, atol=1e-5)
    np.testing.assert_array_equal(a.token_index(range(25)), b.token_index(range(25)))
    np.testing.assert_allclose(a.local_features(range(25)), b.local_features(range(25)),
                               atol=1e-2)  # int8 storage: one quantisation step
    assert manifest_without_times(plain.path) == manifest_without_times(distributed.path)
    assert distributed.sources == plain.sources
    assert not list(tmp_path.glob('.ray.*'))  # no temporary directory left behind


def test_missing_ray_is_a_clear_config_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'ray', None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r'r2former_ros\[ray\]'):
        ray_build.build_map_ray(options(tmp_path / 'map', [tmp_path / 'bag']))


def test_cli_ray_flags(monkeypatch, tmp_path, capsys):
    from r2former_ros.cli import build_map as cli

    parser = cli.build_parser()
    assert parser.parse_args(['--out', 'm']).ray is None
    assert parser.parse_args(['--out', 'm', '--ray']).ray == 'local'
    args = parser.parse_args(['--out', 'm', '--ray', 'ray://head:10001', '--ray-cpus', '3'])
    assert (args.ray, args.ray_cpus) == ('ray://head:10001', 3)
    monkeypatch.setitem(sys.modules, 'ray', None)
    code = cli.main(['--images', str(tmp_path), '--layout', 'vg', '--out',
                     str(tmp_path / 'map'), '--ray', '--quiet'])
    assert code == 2
    assert 'build_map --ray needs Ray' in capsys.readouterr().err
    assert not (tmp_path / 'map').exists()


def test_summary_of_a_ray_build_names_its_own_stages(tmp_path):
    from r2former_ros.cli import build_map as cli

    # ray_build.build_map_ray's timing keys: no read_decode_s or model_s, which the plain build has
    seconds = {'plan_s': 0.5, 'ray_s': 12.3, 'commit_s': 0.1, 'calibrate_s': 0.0,
               'total_s': 13.0}
    source = {'kind': 'rosbag', 'bag': 'drive.mcap', 'images_read': 30, 'kept': 20,
              'dropped_gps_gap': 1, 'dropped_outside_fixes': 2, 'not_keyframe': 7,
              'undecodable_skipped': 0}
    report = mapping.BuildReport(tmp_path / 'map', 20, 20, [source], False, seconds)
    text = cli._summary(report)
    assert text.splitlines()[-1] == ('  time: 13.0 s total, 0.5 s planning, '
                                     '12.3 s Ray workers (decoding+model); not calibrated')
