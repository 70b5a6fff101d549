"""
The authors' published R2Former checkpoints, fetched from Google Drive with `gdown` into the cache.

bytedance/R2Former's README links two files:

- `CVPR23_DeitS_Rerank.pth`, the full model (backbone + local head + reranker), in a shared
  Drive folder (`r2former weights fetch r2former`);
- `msls_v2_deits.pth`, the global-retrieval model the reranker was trained on
  (`r2former weights fetch msls-deits`; global-only: no reranking with it).

`gdown` is an optional extra (`pip install 'r2former_ros[official]'`). A download is written to a
temporary file next to its final place and only renamed into the cache after it proved to be a
torch zip archive that the safe loader reads, holding the expected layout: a Drive error page
(quota, virus-scan notice), an empty or a truncated file never reaches the cache. The tools then
find `CVPR23_DeitS_Rerank.pth` in the cache on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import importlib
import os
from pathlib import Path
import tempfile
from types import ModuleType
from typing import Any
import zipfile

from r2former_ros.core.errors import CheckpointError
from r2former_ros.core.hashing import file_sha256
from r2former_ros.core.model.checkpoint import (
    LAYOUT_FULL,
    LAYOUT_GLOBAL_ONLY,
    clean_state_dict,
    detect_layout,
    unwrap_state_dict,
)
from r2former_ros.core.model.checkpoint_file import diagnose_file, read_checkpoint
from r2former_ros.core.places.base import cache_root

Progress = Callable[[str], Any]
EXTRA_HINT = "pip install 'r2former_ros[official]' (or: pip install gdown)"


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One file the authors published and where it goes in the cache."""

    name: str  # the `r2former weights fetch` name
    file_name: str
    url: str  # the share link in the authors' README
    drive_id: str  # the file's id, or the folder's for `in_folder`
    in_folder: bool  # the README links a folder holding the file, not the file itself
    layout: str  # what the file must hold (checkpoint.LAYOUT_*)
    about: str


OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    'r2former': OfficialCheckpoint(
        name='r2former', file_name='CVPR23_DeitS_Rerank.pth',
        url='https://drive.google.com/drive/folders/14dkj0o0NpAD_1MB0Kqt7NiGxR5ekOdN_',
        drive_id='14dkj0o0NpAD_1MB0Kqt7NiGxR5ekOdN_', in_folder=True, layout=LAYOUT_FULL,
        about='the full R2Former model (global retrieval + reranking), CVPR 2023'),
    'msls-deits': OfficialCheckpoint(
        name='msls-deits', file_name='msls_v2_deits.pth',
        url='https://drive.google.com/file/d/1XBNjbbNUrp6NIv6REHrMLdHFw5joustx/view',
        drive_id='1XBNjbbNUrp6NIv6REHrMLdHFw5joustx', in_folder=False,
        layout=LAYOUT_GLOBAL_ONLY,
        about='the global-retrieval DeiT-S model (no trained reranker: global-only)'),
}


@dataclass(frozen=True)
class FetchedCheckpoint:
    """A verified checkpoint in the cache."""

    path: Path
    sha256: str
    size_bytes: int
    layout: str
    downloaded: bool  # False: it was already cached


def official_checkpoint(name: str) -> OfficialCheckpoint:
    """Look up a published checkpoint by its fetch name."""
    try:
        return OFFICIAL_CHECKPOINTS[name]
    except KeyError:
        raise CheckpointError(f'unknown official checkpoint {name!r}; known: '
                              f'{", ".join(sorted(OFFICIAL_CHECKPOINTS))}') from None


def by_hand(source: OfficialCheckpoint, target: Path) -> str:
    """Say what to do when the download cannot happen here."""
    if source.layout == LAYOUT_FULL:  # the tools look for this one in the cache by themselves
        return (f'download {source.file_name} by hand from {source.url} and put it at {target}, '
                'or set $R2FORMER_CHECKPOINT to where you saved it')
    return (f'download {source.file_name} by hand from {source.url}, put it at {target} and pass '
            '--checkpoint with that path (or set $R2FORMER_CHECKPOINT to it)')


def verify_checkpoint_file(path: Path, source: OfficialCheckpoint) -> str:
    """
    Check that `path` is the published checkpoint's kind of file; return its layout.

    Raises:
        CheckpointError: an HTML page, text, empty or truncated file, not a torch zip archive,
            unreadable by the safe loader, or holding the other layout.
    """
    problem = diagnose_file(path)
    if problem:
        raise CheckpointError(f'the download {problem}')
    if not zipfile.is_zipfile(path):
        raise CheckpointError('the download is not a torch zip archive')
    state_dict = unwrap_state_dict(read_checkpoint(path), str(path))
    layout = detect_layout(clean_state_dict(state_dict))
    if layout != source.layout:
        raise CheckpointError(f'the download holds a {layout} checkpoint, expected '
                              f'{source.layout} for {source.file_name}')
    return layout


def _import_gdown(source: OfficialCheckpoint, target: Path) -> ModuleType:
    try:
        return importlib.import_module('gdown')
    except ImportError:
        raise CheckpointError(f'fetching {source.file_name} needs gdown: {EXTRA_HINT}; or '
                              f'{by_hand(source, target)}') from None


def _file_id(gdown: ModuleType, source: OfficialCheckpoint) -> str:
    """Return the Drive id of the checkpoint file (looked up in its folder for a folder link)."""
    if not source.in_folder:
        return source.drive_id
    listing = gdown.download_folder(id=source.drive_id, skip_download=True, quiet=True) or []
    names = []
    for entry in listing:
        names.append(Path(str(entry.path)).name)
        if names[-1] == source.file_name:
            return str(entry.id)
    raise CheckpointError(f'the Drive folder {source.url} has no {source.file_name} (it lists: '
                          f'{", ".join(names) or "nothing"})')


def _failure(err: Exception) -> str:
    """One short phrase for a failed download (requests' own messages run to 300 characters)."""
    if isinstance(err, OSError):  # requests' ConnectionError and Timeout are OSErrors
        return f'drive.google.com is unreachable from here ({type(err).__name__})'
    text = (str(err).strip().splitlines() or [''])[0]
    text = text if len(text) <= 120 else text[:117] + '...'
    return f'Google Drive refused it ({type(err).__name__}: {text})'


def _download(gdown: ModuleType, source: OfficialCheckpoint, partial: Path, target: Path) -> None:
    try:
        file_id = _file_id(gdown, source)
        written = gdown.download(id=file_id, output=str(partial), quiet=False)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - gdown/requests raise many types; all mean "failed"
        raise CheckpointError(f'could not download {source.file_name}: {_failure(err)}; '
                              f'{by_hand(source, target)}') from err
    if written is None or not partial.is_file():
        raise CheckpointError(f'gdown could not download {source.file_name} (Drive refused or '
                              f'the link changed); {by_hand(source, target)}')


def fetch_official(name: str, cache_dir: str | os.PathLike[str] | None = None,
                   progress: Progress = print) -> FetchedCheckpoint:
    """
    Make sure an official checkpoint is in the cache, verified; download it if needed.

    Args:
        name: 'r2former' (CVPR23_DeitS_Rerank.pth) or 'msls-deits' (msls_v2_deits.pth).
        cache_dir: cache directory; default $R2FORMER_CACHE or ~/.cache/r2former_ros.
        progress: where progress lines go.

    Raises:
        CheckpointError: gdown missing, the network unreachable, or the download is not the
            checkpoint (HTML page, truncated, wrong layout); each says what to do instead.
    """
    source = official_checkpoint(name)
    target = cache_root(cache_dir) / source.file_name
    if target.is_file():
        try:
            layout = verify_checkpoint_file(target, source)
        except CheckpointError as err:
            progress(f'{target} is in the cache but unusable ({err}); downloading it again')
        else:
            progress(f'{source.file_name}: already in the cache')
            return FetchedCheckpoint(target, file_sha256(target), target.stat().st_size, layout,
                                     downloaded=False)
    gdown = _import_gdown(source, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f'downloading {source.file_name} from {source.url}: {source.about}')
    fd, tmp = tempfile.mkstemp(prefix=source.file_name + '.', suffix='.part', dir=target.parent)
    os.close(fd)
    partial = Path(tmp)
    try:
        _download(gdown, source, partial, target)
        try:
            layout = verify_checkpoint_file(partial, source)
        except CheckpointError as err:
            raise CheckpointError(f'{err}; nothing was saved. Google Drive sometimes serves an '
                                  'error page (quota exceeded, virus-scan notice) instead of the '
                                  f'file: try again later, or {by_hand(source, target)}') from None
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return FetchedCheckpoint(target, file_sha256(target), target.stat().st_size, layout,
                             downloaded=True)
