"""The float math in force after each command loads its model, and where each precision runs.

Every command (build_map, eval, localize-bag, demo) and the node load their model through
`load_place_model`, which sets the process-wide flags. Each test first turns TF32 *on* (what a GPU
build may default to, or what another library left behind), runs the command's own model-loading
step, and stops it right after the load to read the flags. On the CPU, bf16 runs extraction where
the CPU has native bf16 (AVX512_BF16/AMX) and is refused elsewhere; fp16 is refused.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from map_factory import write_route_map
from model_factory import small_place_model
import numpy as np
import pytest
from route_world import DRIVE_GPS_TOPIC, DRIVE_IMAGE_TOPIC, write_drive_bag
import torch

import r2former_ros.core.device as device_mod
from r2former_ros.core.device import apply_precision
import r2former_ros.core.places.factory as factory

TINY = ['--input-size', '64x96', '--num-local', '12']


class _Loaded(BaseException):  # noqa: N818 - a signal to stop the command, not an error
    """Raised right after the model is loaded, carrying it (BaseException: nothing catches it)."""

    def __init__(self, model) -> None:
        super().__init__('model loaded')
        self.model = model


def _tf32_on() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision('high')


def _flags() -> dict:
    return {'matmul_tf32': torch.backends.cuda.matmul.allow_tf32,
            'cudnn_tf32': torch.backends.cudnn.allow_tf32,
            'matmul_precision': torch.get_float32_matmul_precision()}


STRICT = {'matmul_tf32': False, 'cudnn_tf32': False, 'matmul_precision': 'highest'}


@pytest.fixture(scope='module')
def route_map(tmp_path_factory):
    root = tmp_path_factory.mktemp('precision')
    path, world = write_route_map(root / 'map', small_place_model(), num_places=3)
    # The commands check their bag's topics before loading a model: give them a real drive.
    write_drive_bag(root / 'drive', world)
    return path


def _drive(route_map: Path) -> str:
    return str(route_map.parent / 'drive')


@pytest.fixture
def stop_after_load(monkeypatch, tmp_path):
    """Make every `load_place_model` raise `_Loaded(model)` once the real load is done."""
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path / 'cache'))
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)
    real = factory.load_place_model

    def load_then_stop(*args, **kwargs):
        raise _Loaded(real(*args, **kwargs))

    # mapping.build calls factory.load_place_model through the module, so this covers it too.
    monkeypatch.setattr(factory, 'load_place_model', load_then_stop)
    return load_then_stop


def _build_map(precision, route_map, tmp_path):
    from r2former_ros.cli.build_map import _options, build_parser
    from r2former_ros.core.mapping.build import _load_model  # the build_map command's model step

    args = build_parser().parse_args([
        '--images', str(tmp_path), '--out', str(tmp_path / 'new_map'), '--backbone', 'r2former',
        '--device', 'cpu', '--precision', precision, *TINY])
    _load_model(_options(args))


def _eval(precision, route_map, tmp_path):
    from r2former_ros.cli.main import main

    main(['eval', '--map', str(route_map), '--bag', _drive(route_map), '--image-topic',
          DRIVE_IMAGE_TOPIC, '--gps-topic', DRIVE_GPS_TOPIC, '--device', 'cpu',
          '--precision', precision])


def _localize_bag(precision, route_map, tmp_path):
    from r2former_ros.cli.main import main

    main(['localize-bag', '--map', str(route_map), '--bag', _drive(route_map), '--image-topic',
          DRIVE_IMAGE_TOPIC, '--out', str(tmp_path / 'out'), '--device', 'cpu',
          '--precision', precision])


def _demo(precision, route_map, tmp_path):
    from r2former_ros.cli.demo import choose_model

    choose_model(argparse.Namespace(backbone='r2former', checkpoint=None, device='cpu',
                                    precision=precision, input_size=(64, 96), num_local=12,
                                    no_fetch=True))


def _node(precision, route_map, tmp_path):
    if importlib.util.find_spec('rclpy') is None:
        pytest.skip('rclpy is not importable here (source _ci/ros_env.sh)')
    from r2former_ros.core.mapdb import MapDatabase
    from r2former_ros.ros import localization_node
    from r2former_ros.ros.parameters import NodeParameters

    params = NodeParameters(map=str(route_map), device='cpu', precision=precision).validate()
    localization_node.load_node_model(params, MapDatabase.open(route_map))


ENTRY_POINTS = {'build_map': _build_map, 'eval': _eval, 'localize-bag': _localize_bag,
                'demo': _demo, 'node': _node}


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    """Report native bf16 on this CPU (the commands only load here; nothing is computed)."""
    monkeypatch.setattr(device_mod, 'cpu_flags', lambda: {'avx2', 'avx512_bf16'})


@pytest.mark.parametrize('precision, autocast', [('fp32', None), ('bf16', torch.bfloat16)])
@pytest.mark.parametrize('command', sorted(ENTRY_POINTS))
def test_each_command_runs_the_precision_it_was_given(command, precision, autocast, route_map,
                                                      tmp_path, stop_after_load, cpu_with_bf16):
    _tf32_on()
    with pytest.raises(_Loaded) as loaded:
        ENTRY_POINTS[command](precision, route_map, tmp_path)
    assert _flags() == STRICT, f'{command} --precision {precision} leaves TF32 on'
    model = loaded.value.model
    assert model.device.type == 'cpu'
    assert model.autocast_dtype is autocast  # extraction
    assert model.rerank_dtype is None  # reranking on the CPU stays fp32


@pytest.mark.parametrize('command', sorted(ENTRY_POINTS))
def test_each_command_refuses_what_the_cpu_cannot_run(command, route_map, tmp_path,
                                                      stop_after_load, monkeypatch, capsys):
    from r2former_ros.core.errors import ConfigError

    monkeypatch.setattr(device_mod, 'cpu_flags', lambda: {'avx2', 'avx512f'})  # no bf16
    for precision, reason in (('bf16', 'needs native bf16 instructions'),
                              ('fp16', 'runs on CUDA only')):
        try:
            ENTRY_POINTS[command](precision, route_map, tmp_path)
        except ConfigError as err:  # the functions that call the loader directly
            message = str(err)
        else:  # the CLI mains (exit code 2): one line on stderr
            message = capsys.readouterr().err.strip()
            assert '\n' not in message
        assert reason in message, (command, precision, message)


def test_apply_precision_per_device(monkeypatch):
    from r2former_ros.core.errors import ConfigError

    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    _tf32_on()
    assert apply_precision('bf16', cuda) is torch.bfloat16
    assert apply_precision('fp16', cuda) is torch.float16
    assert apply_precision('fp32', cuda) is None
    assert device_mod.rerank_dtype(torch.bfloat16, cuda) is torch.bfloat16
    monkeypatch.setattr(device_mod, 'cpu_flags', lambda: {'amx_bf16'})
    assert apply_precision('bf16', cpu) is torch.bfloat16
    assert apply_precision('fp32', cpu) is None
    assert device_mod.rerank_dtype(torch.bfloat16, cpu) is None
    with pytest.raises(ConfigError, match="'fp16' runs on CUDA only"):
        apply_precision('fp16', cpu)
    monkeypatch.setattr(device_mod, 'cpu_flags', lambda: {'avx512f', 'avx512_vnni'})
    with pytest.raises(ConfigError, match="'bf16' on the CPU needs native bf16"):
        apply_precision('bf16', cpu)
    assert _flags() == STRICT


def test_unknown_precision_is_refused():
    from r2former_ros.core.errors import ConfigError

    with pytest.raises(ConfigError,
                       match="precision 'tf32' must be one of fp32, bf16, fp16$"):
        factory.load_place_model('r2former', device='cpu', precision='tf32', input_hw=(64, 96),
                                 num_local=12)


@pytest.mark.skipif(not device_mod.cpu_has_bf16(), reason='this CPU has no native bf16')
def test_bf16_on_a_bf16_cpu_really_computes_in_bf16():
    """Before, --precision bf16 on the CPU was accepted and silently ran fp32."""
    fp32 = small_place_model()
    bf16 = type(fp32)(fp32.model, fp32.weights_sha256, None, torch.device('cpu'),
                      precision='bf16')
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (128, 160, 3), dtype=np.uint8) for _ in range(3)]
    exact, reduced = fp32.encode_rgb(images), bf16.encode_rgb(images)
    difference = np.abs(exact.global_desc - reduced.global_desc).max()
    assert 0 < difference < 0.1  # bf16 rounding: changed, not broken
    # reranking on the CPU stays fp32: same inputs, same scores
    query, db = exact.local_feats[0], exact.local_feats[1:]
    np.testing.assert_array_equal(bf16.rerank(query, db), fp32.rerank(query, db))


def test_entry_points_cover_every_command():
    cli = Path(__file__).parents[1] / 'r2former_ros' / 'cli'
    commands = {'build_map', 'eval', 'localize-bag', 'demo'}
    assert commands | {'node'} == set(ENTRY_POINTS)
    assert all((cli / f'{name.replace("-", "_").replace("eval", "eval_cmd")}.py').is_file()
               for name in commands)


def test_the_factory_gives_the_dinov2_fallback_its_precision(dinov2_cache, monkeypatch):
    """`--precision bf16 --backbone dinov2-s14` must run bf16, not validate and run fp32."""
    from r2former_ros.core.device import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip('this CPU has no native bf16')
    monkeypatch.setenv('R2FORMER_CACHE', str(dinov2_cache))
    model = factory.load_place_model('dinov2-s14', device='cpu', precision='bf16',
                                     input_hw=(56, 56), num_local=8)
    assert model.precision == 'bf16' and model.autocast_dtype == torch.bfloat16
