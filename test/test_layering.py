"""The ROS-free core must import neither rclpy, launch nor any message package."""

import ast
from pathlib import Path
import subprocess
import sys

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'r2former_ros'
ROS_FREE = [PACKAGE / 'core', PACKAGE / 'cli', PACKAGE / '__init__.py', PACKAGE / 'parity.py',
            PACKAGE / 'bench.py']
FORBIDDEN_ROOTS = ('rclpy', 'launch', 'launch_ros', 'launch_testing', 'rosidl_runtime_py',
                   'builtin_interfaces', 'cv_bridge')


def python_files():
    for path in ROS_FREE:
        if path.is_dir():
            yield from sorted(path.rglob('*.py'))
        elif path.exists():
            yield path


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def is_forbidden(module):
    root = module.split('.')[0]
    return (root in FORBIDDEN_ROOTS or root.endswith('_msgs')
            or module.startswith(('r2former_ros.ros', 'r2former_ros.msg')))


def test_forbidden_detector_catches_ros_imports():
    assert is_forbidden('rclpy.node') and is_forbidden('sensor_msgs.msg')
    assert is_forbidden('r2former_ros.msg') and is_forbidden('launch_ros.actions')
    assert not is_forbidden('rosbags.typesys') and not is_forbidden('torch')


@pytest.mark.parametrize('path', list(python_files()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_file_imports_no_ros(path):
    bad = [module for module in imported_modules(path) if is_forbidden(module)]
    assert not bad, f'{path} imports {bad}'


@pytest.mark.slow
def test_core_imports_with_ros_blocked():
    """Import every core module in a fresh interpreter where ROS packages cannot be found."""
    modules = sorted('r2former_ros.' + '.'.join(p.relative_to(PACKAGE).with_suffix('').parts)
                     for p in python_files() if p.name != '__init__.py')
    code = (
        'import sys, importlib, importlib.abc\n'
        'class Block(importlib.abc.MetaPathFinder):\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        '        root = name.split(".")[0]\n'
        f'        if root in {FORBIDDEN_ROOTS!r} or root.endswith("_msgs"):\n'
        '            raise ImportError("blocked " + name)\n'
        'sys.meta_path.insert(0, Block())\n'
        f'for m in {modules!r}:\n'
        '    importlib.import_module(m)\n'
        'print("imported", len(sys.modules))\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


ARCHITECTURE = PACKAGE.parent / 'docs' / 'ARCHITECTURE.md'
CORE = PACKAGE / 'core'


def documented_layers() -> dict[str, int]:
    """The layer table of docs/ARCHITECTURE.md: {sub-package: layer}."""
    text = ARCHITECTURE.read_text(encoding='utf-8')
    table = text.split('<!-- layers: begin -->')[1].split('<!-- layers: end -->')[0]
    layers = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if len(cells) == 2 and cells[0].isdigit():
            layers.update({name.strip(): int(cells[0]) for name in cells[1].split(',')})
    return layers


def core_imports(path: Path) -> set[str]:
    """The core sub-packages and top-level modules one file imports (its own excluded)."""
    targets = set()
    for module in imported_modules(path):
        parts = module.split('.')
        if parts[:2] == ['r2former_ros', 'core'] and len(parts) > 2:
            targets.add(parts[2])
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):  # from r2former_ros.core import mapdb
        if isinstance(node, ast.ImportFrom) and node.module == 'r2former_ros.core':
            targets.update(alias.name for alias in node.names)
    return targets


def test_every_core_sub_package_has_a_layer():
    packages = {p.name for p in CORE.iterdir() if p.is_dir() and (p / '__init__.py').exists()}
    assert packages == set(documented_layers()), 'docs/ARCHITECTURE.md layer table is stale'


@pytest.mark.parametrize('path', sorted(CORE.rglob('*.py')),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_dependencies_point_down(path):
    layers = documented_layers()
    relative = path.relative_to(CORE)
    own = relative.parts[0] if len(relative.parts) > 1 else None
    for target in core_imports(path) - {own}:
        if target not in layers:  # a top-level module (errors, types, ...): always allowed
            assert (CORE / f'{target}.py').is_file(), f'{path} imports unknown core.{target}'
            continue
        assert own is not None, f'top-level module {path.name} imports the sub-package {target}'
        assert layers[target] < layers[own], \
            f'{relative} (layer {layers[own]}) imports core.{target} (layer {layers[target]})'


def test_the_rule_catches_an_upward_import(tmp_path):
    layers = documented_layers()
    assert layers['mapdb'] < layers['localize'] < layers['evaluation']
    bad = tmp_path / 'reader.py'
    bad.write_text('from r2former_ros.core.localize.localizer import Localizer\n')
    assert core_imports(bad) == {'localize'}
