"""
Which map a reader holds: the map id, reading from what was opened, and changes that never
overwrite one another (the change lock and the manifest version check).
"""

from __future__ import annotations

import json
from pathlib import Path
import threading
import time
import uuid

import numpy as np
import pytest
from test_map_files import MODEL, ORIGIN, features, places, write_map

from r2former_ros.core.errors import MapError
from r2former_ros.core.mapdb import (
    MapDatabase,
    MapWriter,
    map_info,
    reader,
    verify_map,
    write_calibration,
)
from r2former_ros.core.mapdb.locking import lock_path, map_lock
from r2former_ros.core.mapdb.schema import MANIFEST_NAME

CALIBRATION_A = {'method': 'logistic', 'weights': [2.0], 'bias': -1.0}
CALIBRATION_B = {'method': 'logistic', 'weights': [3.0], 'bias': 0.5}


def write_seeded_map(path: Path, n: int, seed: int, **options) -> None:
    """A map whose thumbnails, like its features, depend on the seed (all differ per seed)."""
    colours = np.random.default_rng(seed).integers(0, 256, (n, 3))
    thumbs = [np.full((48, 64, 3), colour, np.uint8) for colour in colours]
    with MapWriter(path, MODEL, origin=ORIGIN, **options) as writer:
        writer.add(features(n, seed), places(n), thumbs)


def manifest_of(path: Path) -> dict:
    return json.loads((path / MANIFEST_NAME).read_text())


# ----------------------------------------------------------------------------- map identity


def test_each_build_gets_a_uuid_and_append_keeps_it(tmp_path):
    first, second = tmp_path / 'first', tmp_path / 'second'
    write_map(first, 4, seed=1)
    write_map(second, 4, seed=1)  # the same content: still another map
    db = MapDatabase.open(first)
    stored = manifest_of(first)['map_uuid']
    assert str(uuid.UUID(stored)) == stored == db.identity.uuid
    assert stored != manifest_of(second)['map_uuid']
    assert db.map_id == f'{stored}@{db.identity.manifest_sha256[:16]}'
    with MapWriter.append(first, MODEL) as writer:
        writer.add(features(2, 5), places(2))
    grown = MapDatabase.open(first)
    assert grown.identity.uuid == stored  # the same map, grown
    assert grown.identity.manifest_sha256 != db.identity.manifest_sha256  # another version
    assert grown.map_id != db.map_id


def test_a_map_without_uuid_gets_a_stable_one_from_its_data_files(tmp_path):
    path = tmp_path / 'map'
    write_map(path, 3)
    manifest = manifest_of(path)
    del manifest['map_uuid']  # as written before map_uuid existed
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    derived = MapDatabase.open(path).identity
    assert str(uuid.UUID(derived.uuid)) == derived.uuid
    assert MapDatabase.open(path).identity == derived  # stable
    write_calibration(path, CALIBRATION_A)
    after = MapDatabase.open(path).identity
    assert after.uuid == derived.uuid  # a calibration edit keeps the map's uuid...
    assert after.manifest_sha256 != derived.manifest_sha256  # ...and makes a new version
    info = map_info(path)
    assert (info['map_uuid'], info['manifest_sha256'], info['map_id']) == (
        after.uuid, after.manifest_sha256, after.map_id)


# ------------------------------------------------------------------ read from what was opened


@pytest.mark.parametrize('thumbnails', ['copied', 'through_the_handle'])
def test_a_map_rebuilt_in_place_under_an_open_reader_is_not_mixed_in(tmp_path, monkeypatch,
                                                                     thumbnails):
    if thumbnails == 'through_the_handle':
        monkeypatch.setattr(reader, 'THUMBNAIL_COPY_MAX_BYTES', 0)
    path = tmp_path / 'map'
    write_seeded_map(path, 6, seed=1, index_type='ivf')
    opened = MapDatabase.open(path)
    old_thumbnail = opened.thumbnail(2)
    old_id = opened.map_id
    # Rebuilt in place while open: other features, other size, other thumbnails.
    write_seeded_map(path, 9, seed=2, overwrite=True, index_type='ivf')
    assert MapDatabase.open(path).num_places == 9
    assert opened.num_places == 6 and opened.map_id == old_id
    np.testing.assert_allclose(opened.global_desc, features(6, 1).global_desc, atol=1e-6)
    query = features(6, 1).global_desc[4]
    assert opened.search(query, 1)[1][0, 0] == 4
    # The stored index is read again from the file as opened (after a device released it).
    opened.use_device('cpu')
    opened.use_device(None)
    assert opened.search(query, 3)[1][0, 0] == 4
    # Thumbnails: the opened map's, or none once its replaced directory is deleted; never the
    # new map's (all of whose thumbnails differ from the old ones).
    new_thumbnail = MapDatabase.open(path).thumbnail(2)
    assert not np.array_equal(old_thumbnail, new_thumbnail)
    served = opened.thumbnail(2)
    if thumbnails == 'copied':
        np.testing.assert_array_equal(served, old_thumbnail)
    else:
        assert served is None


# ------------------------------------------------------------------ locks and version checks


def test_a_calibration_fitted_on_an_older_version_is_refused(tmp_path):
    path = tmp_path / 'map'
    write_map(path, 4)
    version = MapDatabase.open(path).identity.manifest_sha256
    written = write_calibration(path, CALIBRATION_A, expected_manifest_sha256=version)
    assert written == MapDatabase.open(path).identity.manifest_sha256
    # A second tool that read the same version loses the race with an error...
    with pytest.raises(MapError, match='the map changed while the calibration'):
        write_calibration(path, CALIBRATION_B, expected_manifest_sha256=version)
    # ...and the first one's work is intact.
    assert manifest_of(path)['calibration'] == CALIBRATION_A
    assert verify_map(path) == []


def test_an_append_loses_to_a_calibration_written_meanwhile(tmp_path):
    path = tmp_path / 'map'
    write_map(path, 4)
    with pytest.raises(MapError, match='the map changed while the appended map'):
        with MapWriter.append(path, MODEL) as writer:
            writer.add(features(3, 7), places(3))
            write_calibration(path, CALIBRATION_A)  # another tool, before the append commits
    kept = MapDatabase.open(path)
    assert kept.num_places == 4 and kept.manifest['calibration'] == CALIBRATION_A
    assert sorted(p.name for p in tmp_path.iterdir()) == ['map']  # no temp dir, no lock file


def test_changes_wait_for_the_lock_and_give_up_with_a_clear_error(tmp_path):
    path = tmp_path / 'map'
    write_map(path, 3)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with map_lock(path):
            held.set()
            release.wait(10.0)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10.0)
    assert lock_path(path).exists()
    with pytest.raises(MapError, match='another process has been changing this map'):
        with map_lock(path, wait_s=0.2):
            pass
    done = []
    editor = threading.Thread(target=lambda: done.append(write_calibration(path,
                                                                           CALIBRATION_B)))
    editor.start()
    time.sleep(0.3)
    assert not done  # waits for the holder
    release.set()
    holder.join(10.0)
    editor.join(10.0)
    assert done and manifest_of(path)['calibration'] == CALIBRATION_B
    assert not lock_path(path).exists()
