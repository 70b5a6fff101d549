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
