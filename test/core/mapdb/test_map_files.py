"""How a map reaches the disk: permissions, the atomic swap (exchange and fallback), fsyncs."""

from __future__ import annotations

import os
from pathlib import Path
import stat

import numpy as np
import pytest

from r2former_ros.core.features import ImageFeatures, patch_centre_xy
from r2former_ros.core.mapdb import MapDatabase, MapWriter, PlaceRecord, atomic, verify_map
from r2former_ros.core.types import PlacePosition

# 64x96 input, 16-px patches: a 4 x 6 grid, 8 tokens kept per image.
MODEL = {'backbone': 'r2former', 'checkpoint': 'test.pth', 'checkpoint_sha256': 'c' * 64,
         'input_hw': [64, 96], 'num_local': 8, 'global_dim': 16, 'local_dim': 4,
         'patch_size': 16}
ORIGIN = {'lat': 48.1, 'lon': 11.5, 'alt': 520.0}


def features(n: int, seed: int) -> ImageFeatures:
    rng = np.random.default_rng(seed)
    tokens = np.stack([rng.choice(24, 8, replace=False) for _ in range(n)]).astype(np.int64)
    local = rng.normal(size=(n, 8, 3 + 4)).astype(np.float32)
    x, y = patch_centre_xy(tokens, MODEL['input_hw'], MODEL['patch_size'])
    local[..., 0], local[..., 1], local[..., 2] = x, y, 1.0
    glob = rng.normal(size=(n, 16)).astype(np.float32)
    return ImageFeatures(glob / np.linalg.norm(glob, axis=1, keepdims=True), local, tokens)


def places(n: int) -> list[PlaceRecord]:
    return [PlaceRecord(stamp_ns=i, position=PlacePosition(48.1, 11.5, 520.0, 0.0, float(i), 0.0,
                                                           32, True, 690000.0, 5330000.0 + i))
            for i in range(n)]


def write_map(path: Path, n: int, seed: int = 0, overwrite: bool = False, **options) -> None:
    thumbs = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(n)]
    with MapWriter(path, MODEL, origin=ORIGIN, overwrite=overwrite, **options) as writer:
        writer.add(features(n, seed), places(n), thumbs)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def test_map_is_readable_by_other_users(tmp_path, umask):
    # A node running as another user reads the map: 0755 directories, 0644 files (umask 022),
    # not the owner-only 0700 a tempfile.mkdtemp directory would have.
    path = tmp_path / 'map'
    write_map(path, 6, index_type='ivf')
    assert mode(path) == 0o755
    entries = list(path.rglob('*'))
    assert {p.name for p in entries} >= {'index.faiss', 'thumbnails', '00000005.jpg'}
    for entry in entries:
        assert mode(entry) == (0o755 if entry.is_dir() else 0o644), entry


def test_map_modes_follow_the_umask(tmp_path, umask):
    umask(0o077)
    path = tmp_path / 'map'
    write_map(path, 3)
    assert mode(path) == 0o700
    assert all(mode(p) == (0o700 if p.is_dir() else 0o600) for p in path.rglob('*'))


def test_exchange_swaps_two_directories(tmp_path):
    first, second = tmp_path / 'a', tmp_path / 'b'
    first.mkdir()
    second.mkdir()
    (first / 'mark').write_text('first')
    (second / 'mark').write_text('second')
    if not atomic.exchange_paths(first, second):
        pytest.skip('renameat2(RENAME_EXCHANGE) is not available on this system')
    assert (first / 'mark').read_text() == 'second'
    assert (second / 'mark').read_text() == 'first'
    with pytest.raises(FileNotFoundError):
        atomic.exchange_paths(tmp_path / 'missing', first)


def replace_map(path: Path) -> None:
    """Overwrite the map at `path` with a different one and check the result."""
    write_map(path, 4, seed=1)
    write_map(path, 7, seed=2, overwrite=True)
    db = MapDatabase.open(path)
    assert db.num_places == 7
    np.testing.assert_allclose(db.global_desc, features(7, 2).global_desc, atol=1e-6)
    assert verify_map(path) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ['map']  # old map removed


def test_overwrite_uses_one_exchange_on_linux(tmp_path, monkeypatch):
    if atomic._RENAMEAT2 is None:
        pytest.skip('renameat2 is not available on this system')
    exchanges, renames = [], []
    real_exchange, real_rename = atomic.exchange_paths, os.rename

    def exchange(first, second):
        exchanges.append((Path(first).name, Path(second).name))
        return real_exchange(first, second)

    def rename(src, dst):
        renames.append((Path(src).name, Path(dst).name))
        real_rename(src, dst)

    monkeypatch.setattr(atomic, 'exchange_paths', exchange)
    monkeypatch.setattr(atomic.os, 'rename', rename)
    replace_map(tmp_path / 'map')
    # First build: one rename (nothing to replace); overwrite: one exchange, no renames.
    assert len(renames) == 1 and renames[0][1] == 'map'
    assert len(exchanges) == 1 and exchanges[0][1] == 'map'


def test_overwrite_falls_back_to_two_renames(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, '_RENAMEAT2', None)  # as on macOS or an old glibc
    renames = []
    real_rename = os.rename

    def rename(src, dst):
        renames.append((Path(src).name, Path(dst).name))
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, 'rename', rename)
    replace_map(tmp_path / 'map')
    assert atomic.exchange_paths(tmp_path / 'map', tmp_path / 'map') is False
    # The overwrite moved the old map aside, then the new one in.
    (old_src, old_dst), (new_src, new_dst) = renames[1:]
    assert old_src == 'map' and old_dst.startswith('.map.old-')
    assert new_src.startswith('.map.tmp-') and new_dst == 'map'


def test_fallback_restores_the_old_map_when_the_second_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / 'map'
    write_map(path, 4, seed=1)
    monkeypatch.setattr(atomic, '_RENAMEAT2', None)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith('.map.tmp-'):
            raise OSError('disk pulled')
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, 'rename', rename)
    with pytest.raises(OSError, match='disk pulled'):
        write_map(path, 7, seed=2, overwrite=True)
    assert MapDatabase.open(path, verify_checksums=True).num_places == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ['map']


def test_commit_syncs_the_maps_files_not_the_machine(tmp_path, monkeypatch):
    if not Path('/proc/self/fd').is_dir():
        pytest.skip('needs /proc to name the synced files')

    def machine_sync():
        raise AssertionError('os.sync() waits for every disk write on the host')

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f'/proc/self/fd/{fd}'))
        real_fsync(fd)

    monkeypatch.setattr(os, 'sync', machine_sync)
    monkeypatch.setattr(os, 'fsync', fsync)
    write_map(tmp_path / 'map', 5, index_type='hnsw')
    names = [Path(p).name for p in synced]
    files = {'global.npy', 'token_index.npy', 'attention.npy', 'local_desc.npy', 'places.npy',
             'index.faiss', 'manifest.json', 'thumbnails'} | {f'{i:08d}.jpg' for i in range(5)}
    assert files <= set(names)  # every file of the map and its thumbnail directory
    assert any(name.startswith('.map.tmp-') for name in names)  # the map directory itself
    assert names[-1] == tmp_path.name  # the parent directory, last, after the swap
    assert all(Path(p).is_relative_to(tmp_path) for p in synced)  # nothing else
