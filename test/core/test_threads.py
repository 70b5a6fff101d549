"""The thread count and OpenMP wait policy every entry point applies before torch computes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from r2former_ros.core import threads
from r2former_ros.core.errors import ConfigError


@pytest.fixture
def torch_threads():
    """Restore torch's thread count after a test changes it (it is process-wide)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize('cpus, expected', [(1, 1), (2, 1), (3, 1), (8, 4), (64, 32)])
def test_default_is_half_the_usable_cpus(monkeypatch, cpus, expected):
    monkeypatch.setattr(threads, 'usable_cpus', lambda: cpus)
    assert threads.resolve_threads(0, environ={}) == expected
    assert threads.resolve_threads(None, environ={}) == expected


def test_default_follows_omp_num_threads_and_an_explicit_value_wins():
    assert threads.resolve_threads(0, environ={'OMP_NUM_THREADS': '3'}) == 3
    assert threads.resolve_threads(5, environ={'OMP_NUM_THREADS': '3'}) == 5
    # a value OpenMP itself would not take leaves the rule to the cores
    assert threads.resolve_threads(0, environ={'OMP_NUM_THREADS': '4,2'}) == \
        threads.resolve_threads(0, environ={})


def test_negative_threads_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r'^threads -1 must be >= 1, or 0 for the default'):
        threads.resolve_threads(-1)


def test_passive_wait_is_set_unless_the_user_chose():
    environ: dict[str, str] = {}
    # torch is loaded in this process, so the value is set but cannot take effect here
    assert threads.prefer_passive_wait(environ) is False
    assert environ == {'OMP_WAIT_POLICY': 'PASSIVE'}
    users = {'OMP_WAIT_POLICY': 'ACTIVE'}
    assert threads.prefer_passive_wait(users) is False
    assert users == {'OMP_WAIT_POLICY': 'ACTIVE'}


def test_apply_threads_sets_torch_directly_once_it_is_loaded(torch_threads):
    assert threads.apply_threads(1) == 1 and torch.get_num_threads() == 1
    assert threads.apply_threads(2) == 2 and torch.get_num_threads() == 2


def _fresh_python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}
    done = subprocess.run([sys.executable, '-c', code], env={**clean, **env}, check=True,
                          capture_output=True, text=True, timeout=120)
    return done.stdout.strip()


@pytest.mark.slow
def test_entry_points_set_the_policy_and_threads_before_torch_loads():
    # `r2former` and `build_map` parse --threads and apply it before any verb imports torch;
    # torch, loaded afterwards, starts with that count and the passive wait policy.
    probe = """
import os, sys
from r2former_ros.cli import build_map, main
code = main.main(['calibrate', 'no_such_map', '--bag', 'b', '--image-topic', '/c',
                  '--gps-topic', '/g', '--threads', '1'])
seen = [str(code), 'torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY')]
import torch
seen.append(torch.get_num_threads())
code = build_map.main(['--images', 'no_such_dir', '--out', 'o', '--threads', '3'])
seen += [code, torch.get_num_threads()]
print(*seen)
"""
    assert _fresh_python(probe).split() == ['2', 'False', 'PASSIVE', '1', '2', '3']


def test_the_ros_layer_sets_the_policy_before_the_node_loads_torch():
    probe = 'import os, sys, r2former_ros.ros; print(os.environ.get("OMP_WAIT_POLICY"), ' \
            '"torch" in sys.modules)'
    assert _fresh_python(probe) == 'PASSIVE False'
    assert _fresh_python(probe, OMP_WAIT_POLICY='ACTIVE') == 'ACTIVE False'
