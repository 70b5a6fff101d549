"""`r2former weights fetch r2former|msls-deits` with gdown replaced by a local stand-in module.

The stand-in writes what Google Drive may really hand back: the checkpoint (written the way the
authors saved it), an HTML error page, a truncated file, or nothing at all (a connection error).
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
import sys
import types

from model_factory import seeded_model
from official_format import save_official_format
import pytest

from r2former_ros.cli.main import main
from r2former_ros.core.errors import CheckpointError
from r2former_ros.core.hashing import file_sha256
from r2former_ros.core.model.checkpoint import LAYOUT_FULL, LAYOUT_GLOBAL_ONLY
from r2former_ros.core.places.official_weights import OFFICIAL_CHECKPOINTS, fetch_official

DriveFile = namedtuple('DriveFile', 'id path local_path')  # what gdown's folder listing yields
HTML = ('<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>'
        'Too many users have viewed or downloaded this file recently.</body></html>')


class StandInGdown(types.ModuleType):
    """A `gdown` that writes `content(output_path)` instead of downloading."""

    def __init__(self, content, folder=('README.md', 'CVPR23_DeitS_Rerank.pth')) -> None:
        super().__init__('gdown')
        self.content = content
        self.folder = folder
        self.calls: list[tuple[str, str]] = []

    def download_folder(self, id=None, skip_download=False, quiet=False, **_):  # noqa: A002
        self.calls.append(('folder', id))
        if isinstance(self.content, Exception):
            raise self.content
        return [DriveFile(f'file-{name}', f'R2Former/{name}', None) for name in self.folder]

    def download(self, id=None, output=None, quiet=False, **_):  # noqa: A002
        self.calls.append(('file', id))
        if isinstance(self.content, Exception):
            raise self.content
        self.content(Path(output))
        return output


def _full(path: Path) -> None:
    save_official_format(seeded_model(), path)


def _global_only(path: Path) -> None:
    save_official_format(seeded_model(), path, global_only=True)


def _html(path: Path) -> None:
    path.write_text(HTML)


def _truncated(path: Path) -> None:
    _full(path)
    path.write_bytes(path.read_bytes()[:path.stat().st_size * 2 // 3])


@pytest.fixture
def use_gdown(monkeypatch, tmp_path):
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path / 'cache'))

    def install(content, **kwargs) -> StandInGdown:
        module = StandInGdown(content, **kwargs)
        monkeypatch.setitem(sys.modules, 'gdown', module)
        return module

    return install


def _cache_files(tmp_path: Path) -> list[str]:
    cache = tmp_path / 'cache'
    return sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []


def test_fetch_r2former_downloads_verifies_and_prints_sha256(use_gdown, tmp_path, capsys):
    gdown = use_gdown(_full)
    assert main(['weights', 'fetch', 'r2former']) == 0
    target = tmp_path / 'cache' / 'CVPR23_DeitS_Rerank.pth'
    out = capsys.readouterr().out
    assert f'sha256: {file_sha256(target)}' in out
    assert 'every tool now finds it in the cache' in out
    # the file is looked up in the README's folder, then downloaded by its own id
    assert gdown.calls == [('folder', OFFICIAL_CHECKPOINTS['r2former'].drive_id),
                           ('file', 'file-CVPR23_DeitS_Rerank.pth')]
    assert _cache_files(tmp_path) == ['CVPR23_DeitS_Rerank.pth']
    # a second fetch finds it cached and does not download
    again = fetch_official('r2former', progress=lambda line: None)
    assert not again.downloaded and again.layout == LAYOUT_FULL and len(gdown.calls) == 2


def test_fetch_msls_deits_is_a_single_global_only_file(use_gdown, tmp_path, capsys):
    gdown = use_gdown(_global_only)
    assert main(['weights', 'fetch', 'msls-deits']) == 0
    assert gdown.calls == [('file', OFFICIAL_CHECKPOINTS['msls-deits'].drive_id)]
    out = capsys.readouterr().out
    assert 'reranking is unavailable' in out and 'msls_v2_deits.pth' in out
    fetched = fetch_official('msls-deits', progress=lambda line: None)
    assert fetched.layout == LAYOUT_GLOBAL_ONLY


@pytest.mark.parametrize('content, message', [
    (_html, 'the download is an HTML page, not a checkpoint'),
    (_truncated, 'the download is truncated'),
    (lambda path: path.write_bytes(b''), 'the download is empty'),
    (_global_only, 'holds a global_only checkpoint, expected r2former'),
])
def test_bad_downloads_are_refused_and_nothing_is_cached(use_gdown, tmp_path, content, message):
    use_gdown(content)
    with pytest.raises(CheckpointError, match=message) as info:
        fetch_official('r2former', progress=lambda line: None)
    assert 'nothing was saved' in str(info.value)
    assert 'https://drive.google.com/drive/folders/' in str(info.value)
    assert _cache_files(tmp_path) == []  # no partial file either


def test_unreachable_network_says_what_to_do(use_gdown, tmp_path, capsys):
    use_gdown(ConnectionError("HTTPSConnectionPool(host='drive.google.com', port=443): Max "
                              'retries exceeded (Caused by NameResolutionError)'))
    assert main(['weights', 'fetch', 'r2former']) == 2
    err = capsys.readouterr().err.strip()
    target = tmp_path / 'cache' / 'CVPR23_DeitS_Rerank.pth'
    assert len(err.splitlines()) == 1
    assert 'drive.google.com is unreachable from here (ConnectionError)' in err
    assert (f'download CVPR23_DeitS_Rerank.pth by hand from '
            f'{OFFICIAL_CHECKPOINTS["r2former"].url} and put it at {target}') in err
    assert '$R2FORMER_CHECKPOINT' in err
    assert _cache_files(tmp_path) == []


def test_folder_without_the_file_is_named(use_gdown):
    use_gdown(_full, folder=('README.md', 'other.pth'))
    with pytest.raises(CheckpointError, match=r'has no CVPR23_DeitS_Rerank.pth \(it lists: '
                                              r'README.md, other.pth\)'):
        fetch_official('r2former', progress=lambda line: None)


def test_missing_gdown_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setitem(sys.modules, 'gdown', None)  # import gdown -> ImportError
    with pytest.raises(CheckpointError,
                       match=r"needs gdown: pip install 'r2former_ros\[official\]'"):
        fetch_official('r2former', progress=lambda line: None)


def test_a_broken_cached_file_is_downloaded_again(use_gdown, tmp_path):
    gdown = use_gdown(_full)
    target = tmp_path / 'cache' / 'CVPR23_DeitS_Rerank.pth'
    target.parent.mkdir(parents=True)
    target.write_text(HTML)
    lines: list[str] = []
    fetched = fetch_official('r2former', progress=lines.append)
    assert fetched.downloaded and len(gdown.calls) == 2
    assert any('is in the cache but unusable' in line for line in lines)
