"""
How many CPU threads torch runs with, and how its idle OpenMP workers wait: sized for a shared CPU.

A robot's computer runs many processes beside ours. torch's own default - one intra-op thread
per core, OpenMP workers that spin at every barrier - is the fastest on an idle machine and the
slowest as soon as a neighbour holds a core: every parallel region then waits for the worker the
scheduler took away, while the others burn their time slices spinning. On 2 cores with one busy
neighbour a frame took several times longer with 2 threads than with 1 (`bench/cpu_threads.py`,
numbers in `bench/cpu_threads.json` and the README).

Two settings, one meaning in every entry point (the `r2former` verbs, `build_map`, the node's
`threads` parameter, `python -m r2former_ros.parity` / `bench`):

- threads: ``0`` (the default) means $OMP_NUM_THREADS when it is set, else half the cores this
  process may run on (at least 1): room for the neighbours, and on 2 cores exactly the setting
  that stays fast when one of them is busy. Any N >= 1 is used as given.
- wait policy: ``OMP_WAIT_POLICY=PASSIVE`` (idle workers sleep instead of spinning) unless the
  user set ``OMP_WAIT_POLICY`` (libgomp's own ``GOMP_SPINCOUNT``, when set, wins over both). Left
  unset, libgomp spins about 3 ms at every barrier. OpenMP reads it once, when torch loads its
  runtime, so entry points call :func:`prefer_passive_wait` before anything imports torch; later
  it changes nothing (and says so in its return value).

This module must not import torch at module level: its first job runs before torch loads.
"""

from __future__ import annotations

from collections.abc import MutableMapping
import logging
import os
import sys

from r2former_ros.core.errors import ConfigError

LOG = logging.getLogger(__name__)

AUTO_THREADS = 0  # the value that asks for the default
# (variable, value) for os.environ.setdefault: modules that import torch at their top set it
# with `os.environ.setdefault(*PASSIVE_WAIT)`, which linters accept between imports.
PASSIVE_WAIT = ('OMP_WAIT_POLICY', 'PASSIVE')
THREADS_HELP = ('CPU threads for the model (default 0: $OMP_NUM_THREADS if set, else half the '
                'cores, at least 1, which stays fast when other programs share the CPU)')


def usable_cpus() -> int:
    """Return the number of CPUs this process may run on (its affinity mask, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if value >= 1 else None


def default_threads(environ: MutableMapping[str, str] | None = None) -> int:
    """Return what ``0`` means: $OMP_NUM_THREADS if positive, else half the CPUs (>= 1)."""
    environ = os.environ if environ is None else environ
    from_user = _positive_int(environ.get('OMP_NUM_THREADS'))
    if from_user is not None:
        return from_user
    return max(1, usable_cpus() // 2)


def resolve_threads(requested: int | None,
                    environ: MutableMapping[str, str] | None = None) -> int:
    """
    Turn a ``--threads`` / ``threads`` value into a thread count (None and 0: the default).

    Raises:
        ConfigError: a negative value.
    """
    if requested is None or int(requested) == AUTO_THREADS:
        return default_threads(environ)
    if int(requested) < 0:
        raise ConfigError(f'threads {requested} must be >= 1, or 0 for the default (half the '
                          'cores, or $OMP_NUM_THREADS)')
    return int(requested)


def openmp_loaded() -> bool:
    """Whether torch (and with it the OpenMP runtime) is already loaded in this process."""
    return 'torch' in sys.modules


def prefer_passive_wait(environ: MutableMapping[str, str] | None = None) -> bool:
    """
    Ask OpenMP workers to sleep at barriers, unless the user set a wait policy already.

    Call it before torch is imported. Returns True when the passive policy was set now and will
    take effect (torch not loaded yet); False when the user's choice stands or torch was loaded
    earlier (then the runtime has read its environment and nothing changes).
    """
    environ = os.environ if environ is None else environ
    name, value = PASSIVE_WAIT
    if name in environ:
        return False
    environ[name] = value
    return not openmp_loaded()


def apply_threads(requested: int | None) -> int:
    """
    Set the intra-op threads torch computes with, before its first operation; return the count.

    When torch is loaded it is told directly (every thread started later, the node's worker
    included, picks the count up). When it is not, $OMP_NUM_THREADS is set for it to read when it
    loads (and for child processes).

    Raises:
        ConfigError: a negative value.
    """
    threads = resolve_threads(requested)
    if openmp_loaded():
        import torch  # noqa: PLC0415 - already loaded; imported here to keep this module light

        torch.set_num_threads(threads)
    else:
        os.environ['OMP_NUM_THREADS'] = str(threads)
    LOG.debug('torch CPU threads: %d (asked for %s)', threads, requested)
    return threads
