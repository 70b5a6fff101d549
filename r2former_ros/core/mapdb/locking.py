"""
One writer at a time per map: :func:`map_lock`, and the version check a change makes under it.

Whatever changes a finished map - a calibration written into its manifest, an append or a
rebuild swapped in at its path - takes this lock for its read-check-replace step, and checks that
the map is still the version it started from (the manifest's sha256), so two tools working on
one map at once never silently drop one another's work: the one that finds the map changed
stops with a :class:`~r2former_ros.core.errors.MapError` naming both versions.

The lock is an exclusive ``fcntl.flock`` on a file beside the map directory
(``.<name>.lock`` in its parent), not inside it: a rebuild replaces the whole directory, and a
lock file inside it would be replaced with it. The holder removes the file when it is done (still
holding the lock, and a waiter checks that the file it locked is still the one at the path); a
crashed tool's lock goes with its process, leaving at most the empty file. Without ``fcntl``
(Windows), or where the lock file cannot be created (a read-only parent), the change goes ahead
unlocked after a warning: the version check still catches most lost races there.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import logging
import os
from pathlib import Path
import time

from r2former_ros.core.errors import MapError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOG = logging.getLogger(__name__)
LOCK_WAIT_S = 60.0  # longer than any manifest edit or directory swap takes
_POLL_S = 0.05


def lock_path(map_dir: Path) -> Path:
    """Return the lock file of the map at ``map_dir``: ``.<name>.lock`` in its parent."""
    return map_dir.parent / f'.{map_dir.name}.lock'


@contextlib.contextmanager
def map_lock(map_dir: str | Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """
    Hold the map's exclusive change lock for the ``with`` block.

    Raises:
        MapError: another process held it for longer than ``wait_s`` seconds.
    """
    target = Path(map_dir)
    file = lock_path(target)
    if fcntl is None:
        _warn_unlocked(target, 'this platform has no fcntl')
        yield
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            _warn_unlocked(target, f'cannot create {file}: {exc.strerror}')
            yield
            return
        try:
            _flock_until(fd, deadline, target, file, wait_s)
        except BaseException:
            os.close(fd)
            raise
        if _still_linked(fd, file):
            break
        # The holder before us removed the file after we opened it: lock the current one.
        os.close(fd)
    try:
        yield
    finally:
        # Removed while still locked, so no one can lock this inode and believe they hold the
        # lock: a waiter that opened it finds it unlinked above and retries.
        with contextlib.suppress(OSError):
            os.unlink(file)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _flock_until(fd: int, deadline: float, target: Path, file: Path, wait_s: float) -> None:
    assert fcntl is not None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise MapError(f'{target}: another process has been changing this map for '
                               f'over {wait_s:.0f} s (lock {file}); try again when it is '
                               'done') from None
            time.sleep(_POLL_S)


def _still_linked(fd: int, file: Path) -> bool:
    try:
        named = os.stat(file)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _warn_unlocked(target: Path, why: str) -> None:
    LOG.warning('%s: changing the map without a lock (%s); only the version check guards '
                'against a concurrent change', target, why)


def check_version(map_dir: Path, expected_sha256: str, current_sha256: str, what: str) -> None:
    """
    Raise when the map changed since it was read (call it under :func:`map_lock`).

    Args:
        map_dir: the map.
        expected_sha256: the manifest sha256 the change was prepared against.
        current_sha256: the manifest sha256 now.
        what: the change, for the message (``'the calibration'``, ``'the appended map'``).
    """
    if expected_sha256 != current_sha256:
        raise MapError(f'{map_dir}: the map changed while {what} was being prepared (manifest '
                       f'{expected_sha256[:12]} -> {current_sha256[:12]}: another tool '
                       f'calibrated, appended to or rebuilt it); {what} was not written, so '
                       'nothing was lost: run it again on the current map')
