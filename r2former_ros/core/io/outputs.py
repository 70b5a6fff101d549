"""
Outputs written all at once: an error or Ctrl-C leaves nothing half-written behind.

Each output is staged under a hidden temporary sibling (``.NAME.partial``) and moved into place
only when the command succeeded; on any exception, KeyboardInterrupt included, the staged files
are removed, so a rerun starts clean. A staged folder's files are moved into the target folder
one by one (files already there with other names are kept).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import os
from pathlib import Path
import shutil

from r2former_ros.core.errors import ConfigError


def partial_path(path: Path) -> Path:
    """Return the hidden sibling an output is staged under."""
    return path.with_name(f'.{path.name}.partial')


def remove(path: Path) -> None:
    """Remove a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def check_new_outputs(**paths: Path | None) -> None:
    """Refuse outputs that cannot be written: a file where a folder goes, or the reverse."""
    for name, path in paths.items():
        if path is None:
            continue
        wants_dir = name in ('plots', 'out')
        if wants_dir and path.exists() and not path.is_dir():
            raise ConfigError(f'--{name} {path} is a file; give a folder (created if missing)')
        if not wants_dir and path.is_dir():
            raise ConfigError(f'--{name} {path} is a folder; give a file name')


def _publish(staged: Path, target: Path) -> None:
    if not staged.exists():
        return
    if staged.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for item in sorted(staged.iterdir()):
            destination = target / item.name
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)
            os.replace(item, destination)
        staged.rmdir()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)


@contextmanager
def atomic_outputs(**paths: Path | None) -> Iterator[dict[str, Path]]:
    """
    Stage outputs (keyword = what it is, value = its final path, None = not asked for).

    Yields ``{name: staged path}`` for the outputs asked for; write there. They move into place
    when the block ends normally and are removed when it raises.
    """
    staged = {name: partial_path(Path(path)) for name, path in paths.items() if path is not None}
    for leftover in staged.values():  # from a run killed outright (SIGKILL, power)
        remove(leftover)
    for path in staged.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield staged
    except BaseException:
        for path in staged.values():
            remove(path)
        raise
    for name, path in staged.items():
        target = paths[name]
        assert target is not None
        _publish(path, Path(target))
