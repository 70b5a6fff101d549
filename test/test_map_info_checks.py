"""`r2former map info` rounds what it prints and refuses a map with missing or truncated files."""

from __future__ import annotations

import json
import shutil

from map_factory import write_route_map
from model_factory import small_place_model
import pytest

from r2former_ros.cli.main import main


@pytest.fixture(scope='module')
def route_map(tmp_path_factory):
    path, _ = write_route_map(tmp_path_factory.mktemp('info') / 'route', small_place_model(),
                              num_places=3)
    return path


@pytest.fixture
def copy_of(route_map, tmp_path):
    copy = tmp_path / 'map'
    shutil.copytree(route_map, copy)
    return copy


def test_origin_is_printed_to_the_centimetre(copy_of, capsys):
    manifest_path = copy_of / 'manifest.json'
    manifest = json.loads(manifest_path.read_text())
    manifest['origin'].update(lat=35.68123456789012, lon=139.7671234567891,
                              alt=30.000000000931323)  # a float64 ENU round trip
    manifest_path.write_text(json.dumps(manifest))
    assert main(['map', 'info', str(copy_of)]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('origin')]
    assert line.split(None, 1)[1] == 'lat 35.6812346, lon 139.7671235, alt 30.00'
    # the JSON keeps the stored value
    assert main(['map', 'info', str(copy_of), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['origin']['alt'] == 30.000000000931323


@pytest.mark.parametrize('damage', ['truncate', 'remove'])
def test_a_damaged_map_fails_in_one_line(copy_of, capsys, damage):
    victim = copy_of / 'local_desc.npy'
    if damage == 'truncate':
        victim.write_bytes(victim.read_bytes()[:100])
    else:
        victim.unlink()
    assert main(['map', 'info', str(copy_of)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == '' and '\n' not in err
    assert err.startswith('r2former map: error: ') and str(victim) in err
    assert ('truncated' if damage == 'truncate' else 'missing') in err
    assert 'r2former map verify' in err
