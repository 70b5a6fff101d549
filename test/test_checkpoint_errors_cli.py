"""A bad --checkpoint is one line and exit 2 on every backbone's path, never torch's advice."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bag_factory import drive_messages, write_rosbag2
from map_factory import write_route_map
from model_factory import small_place_model
import pytest
import torch

from r2former_ros.cli import build_map
from r2former_ros.cli.main import main

IMAGE_TOPIC, GPS_TOPIC = '/camera/image_raw', '/gps/fix'


class _RunsCode:
    def __reduce__(self):
        return (os.system, ('echo this must never run',))


def _bad_files(root: Path) -> dict[str, Path]:
    """One file per way a checkpoint goes wrong: name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    files = {name: root / f'{name}.pt' for name in
             ('empty', 'html', 'truncated', 'runs_code', 'wrong_keys', 'not_a_dict')}
    files['empty'].write_bytes(b'')
    files['html'].write_text('<!DOCTYPE html><html><body>Quota exceeded</body></html>')
    torch.save({'a': torch.zeros(3)}, files['wrong_keys'])
    files['truncated'].write_bytes(files['wrong_keys'].read_bytes()[:400])
    torch.save({'x': _RunsCode()}, files['runs_code'])
    torch.save([1, 2, 3], files['not_a_dict'])
    return files


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Bad files, a folder of images, an R2Former map, a DINOv2 map and a query bag."""
    root = tmp_path_factory.mktemp('checkpoints')
    r2former_map, world = write_route_map(root / 'r2former_map', small_place_model(),
                                          num_places=3)
    # Only the manifest's model block decides which loader a map's consumers use.
    dinov2_map, _ = write_route_map(root / 'dinov2_map', small_place_model(), num_places=3)
    manifest = json.loads((dinov2_map / 'manifest.json').read_text())
    manifest['model'].update(backbone='dinov2-s14', checkpoint='', input_hw=[112, 112])
    (dinov2_map / 'manifest.json').write_text(json.dumps(manifest))
    bag = write_rosbag2(root / 'query_bag', drive_messages(3, image_topic=IMAGE_TOPIC,
                                                           fix_topic=GPS_TOPIC))
    return {'bad': _bad_files(root / 'bad'), 'r2former_map': r2former_map,
            'dinov2_map': dinov2_map, 'bag': bag, 'root': root}


def _one_clean_line(err: str, path: Path) -> str:
    line = err.strip()
    assert '\n' not in line, line
    assert str(path) in line
    assert 'weights_only' not in line and 'Traceback' not in line
    return line


@pytest.mark.slow
@pytest.mark.parametrize('backbone', ['r2former', 'dinov2-s14'])
def test_build_map_refuses_a_bad_checkpoint_in_one_line(setup, backbone, capsys):
    for name, path in setup['bad'].items():
        out = setup['root'] / f'map_{backbone}_{name}'
        code = build_map.main(['--bag', str(setup['bag']), '--image-topic', IMAGE_TOPIC,
                               '--gps-topic', GPS_TOPIC, '--out', str(out), '--all-frames',
                               '--backbone', backbone, '--checkpoint', str(path),
                               '--device', 'cpu', '--input-size', '112x112', '--num-local', '32',
                               '--quiet'])
        line = _one_clean_line(capsys.readouterr().err, path)
        assert code == 2, (name, line)
        assert line.startswith('build_map: error: ')
        if name == 'runs_code':
            assert 'refusing to load' in line and 'nothing from it was run' in line
        assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize('which', ['r2former_map', 'dinov2_map'])
def test_localize_bag_refuses_a_bad_checkpoint_in_one_line(setup, which, capsys):
    for name, path in setup['bad'].items():
        out = setup['root'] / f'result_{which}_{name}'
        code = main(['localize-bag', '--map', str(setup[which]), '--bag', str(setup['bag']),
                     '--image-topic', IMAGE_TOPIC, '--out', str(out), '--device', 'cpu',
                     '--checkpoint', str(path)])
        line = _one_clean_line(capsys.readouterr().err, path)
        assert code == 2, (name, line)
        assert line.startswith('r2former localize-bag: error: ')
        if which == 'dinov2_map':
            assert 'dinov2-s14' in line  # what to do: the fallback's own weights
        assert not out.exists()
