"""The runtime requirements file covers what setup.py installs, and keeps apt ROS's numpy."""

from __future__ import annotations

import ast
from pathlib import Path
import re

ROOT = Path(__file__).resolve().parents[1]


def _names(lines: list[str]) -> dict[str, str]:
    """Requirement name (normalised) -> its specifier text."""
    found = {}
    for line in lines:
        line = line.split('#', 1)[0].strip()
        if line:
            name = re.match(r'[A-Za-z0-9_.-]+', line).group(0)
            found[re.sub(r'[-_.]+', '-', name).lower()] = line[len(name):]
    return found


def _install_requires() -> list[str]:
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'install_requires':
            return [ast.literal_eval(item) for item in node.value.elts]
    raise AssertionError('setup.py has no install_requires')


def test_runtime_requirements_cover_the_package_and_keep_numpy_1():
    runtime = _names((ROOT / 'requirements.txt').read_text().splitlines())
    assert set(_names(_install_requires())) <= set(runtime)
    assert '<2' in runtime['numpy']  # apt's ROS 2 extensions are built against numpy 1.26
    # CI's file pins test tools; the runtime file must not
    assert not {'pytest', 'ruff', 'mypy'} & set(runtime)
