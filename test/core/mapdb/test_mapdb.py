"""The on-disk map: round trips, append, atomicity, corruption and model checks."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from r2former_ros import __version__
from r2former_ros.core import mapdb
from r2former_ros.core.errors import ConfigError, MapError
from r2former_ros.core.features import ImageFeatures, patch_centre_xy
from r2former_ros.core.mapdb import MapDatabase, MapWriter, PlaceRecord
from r2former_ros.core.types import PlacePosition

# (64, 96) with 16 px patches is a 4 x 6 grid: 24 patches, 16 kept per image.
SMALL = {'backbone': 'r2former', 'checkpoint': '/ckpt/test.pth', 'checkpoint_sha256': 'a' * 64,
         'input_hw': [64, 96], 'num_local': 16, 'global_dim': 32, 'local_dim': 8,
         'patch_size': 16, 'preprocessing': {'mean': [0.485, 0.456, 0.406],
                                             'std': [0.229, 0.224, 0.225],
                                             'resize': 'stretch to input_hw'}}
FULL = dict(SMALL, input_hw=[480, 640], num_local=500, global_dim=256, local_dim=128)
ORIGIN = {'lat': 48.1, 'lon': 11.5, 'alt': 520.0}


def make_features(model: dict, n: int, seed: int) -> ImageFeatures:
    rng = np.random.default_rng(seed)
    height, width = model['input_hw']
    patch, k, d = model['patch_size'], model['num_local'], model['local_dim']
    grid_w, grid = width // patch, (height // patch) * (width // patch)
    tokens = np.stack([rng.choice(grid, k, replace=False) for _ in range(n)]).astype(np.int64)
    local = np.empty((n, k, 3 + d), np.float32)
    scale = max(height, width)
    local[..., 0] = ((tokens % grid_w) * patch + patch / 2) / scale
    local[..., 1] = ((tokens // grid_w) * patch + patch / 2) / scale
    att = np.sort(rng.uniform(0.1, 1.0, size=(n, k)), axis=1)[:, ::-1]
    local[..., 2] = att / att[:, :1]
    local[..., 3:] = rng.normal(size=(n, k, d)) * 3.0  # not normalised, like the model head
    glob = rng.normal(size=(n, model['global_dim'])).astype(np.float32)
    glob /= np.linalg.norm(glob, axis=1, keepdims=True)
    return ImageFeatures(glob, local, tokens)


def make_places(n: int, start: int = 0, source: int = 0) -> list[PlaceRecord]:
    out = []
    for i in range(start, start + n):
        pos = PlacePosition(latitude=48.1 + i * 1e-5, longitude=11.5, altitude=520.0 + i,
                            east=0.0, north=i * 1.1, up=float(i), utm_zone=32,
                            utm_northern=True, utm_easting=690000.0 + i,
                            utm_northing=5330000.0 + i,
                            heading=None if i % 3 == 0 else 0.1 * i)
        out.append(PlaceRecord(stamp_ns=1_700_000_000_000_000_000 + i, position=pos,
                               source_index=source, msg_index=10 * i))
    return out


def rgb_image(i: int) -> np.ndarray:
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., i % 3] = 255  # pure red, green or blue to catch channel swaps
    return image


def build(path: Path, model: dict = SMALL, n: int = 50, seed: int = 0, batch: int = 16,
          thumbnails: bool = False, **options) -> ImageFeatures:
    feats = make_features(model, n, seed)
    with MapWriter(path, model, origin=ORIGIN, **options) as writer:
        source = writer.add_source({'bag': 'run1.mcap', 'image_topic': '/cam/image',
                                    'gps_topic': '/gps/fix', 'num_images_read': n})
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            thumbs = [rgb_image(i) for i in range(start, stop)] if thumbnails else None
            ids = writer.add(feats.slice(start, stop), make_places(stop - start, start, source),
                             thumbs)
            assert ids.tolist() == list(range(start, stop))
        writer.update_source(source, {'num_kept': n})
    return feats


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob('*')) if p.is_file()}


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# ------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize('local_format', ['fp16', 'int8'])
def test_round_trip(tmp_path, local_format):
    path = tmp_path / 'map'
    feats = build(path, local_format=local_format)
    db = MapDatabase.open(path, expected_model=SMALL, verify_checksums=True)
    assert db.num_places == len(db) == 50
    assert db.local_format == local_format and db.index_type == 'exact'
    np.testing.assert_allclose(db.global_desc, feats.global_desc, atol=1e-6)
    np.testing.assert_array_equal(db.token_index(np.arange(50)), feats.token_index)

    ids = np.array([3, 0, 49, 17])
    local = db.local_features(ids)
    assert local.shape == (4, 16, 11) and local.dtype == np.float32
    np.testing.assert_allclose(local[..., :2], feats.local_feats[ids, :, :2], atol=1e-6)
    np.testing.assert_allclose(local[..., 2], feats.local_feats[ids, :, 2], atol=1e-3)
    original = unit(feats.local_feats[ids, :, 3:])
    restored = local[..., 3:]
    if local_format == 'int8':
        assert np.abs(restored - original).max() <= mapdb.INT8_MAX_ABS_ERROR + 1e-7
    else:
        np.testing.assert_allclose(restored, original, atol=1e-3)
    cosine = np.sum(unit(restored) * original, axis=-1)
    assert cosine.min() > 0.999


def test_manifest_contents(tmp_path):
    path = tmp_path / 'map'
    build(path, local_format='int8')
    manifest = json.loads((path / 'manifest.json').read_text())
    assert manifest['format_version'] == 1
    assert manifest['tool_version'] == __version__
    assert manifest['created'].endswith('+00:00')
    assert manifest['model']['checkpoint_sha256'] == SMALL['checkpoint_sha256']
    assert manifest['model']['preprocessing'] == SMALL['preprocessing']
    assert manifest['counts'] == {'num_places': 50}
    assert manifest['origin'] == ORIGIN
    assert manifest['index_type'] == 'exact'
    assert manifest['calibration'] is None
    assert manifest['sources'] == [{'bag': 'run1.mcap', 'image_topic': '/cam/image',
                                    'gps_topic': '/gps/fix', 'num_images_read': 50,
                                    'num_kept': 50}]
    storage = manifest['storage']
    assert storage['local_format'] == 'int8'
    assert storage['dtypes']['local_desc.npy'] == 'int8'
    assert storage['dtypes']['token_index.npy'] == 'uint16'
    assert storage['dtypes']['attention.npy'] == 'float16'
    assert storage['shapes']['local_desc.npy'] == [50, 16, 8]
    assert set(manifest['files']) == set(mapdb.ARRAY_FILES)  # exact index is not stored
    for name, entry in manifest['files'].items():
        assert entry['bytes'] == (path / name).stat().st_size
        assert entry['sha256'] == hashlib.sha256((path / name).read_bytes()).hexdigest()


def test_places_and_positions(tmp_path):
    path = tmp_path / 'map'
    build(path, n=10, batch=4)
    db = MapDatabase.open(path)
    places = db.places
    assert places.dtype == mapdb.PLACE_DTYPE
    np.testing.assert_array_equal(places['id'], np.arange(10))
    np.testing.assert_array_equal(places['msg_index'], np.arange(10) * 10)
    assert np.isnan(places['heading'][0]) and places['heading'][1] == pytest.approx(0.1)
    expected = make_places(10)
    for i in (0, 4, 9):
        assert db.position(i) == expected[i].position
    assert db.position(3).heading is None
    with pytest.raises(IndexError, match='outside'):
        db.position(10)
    with pytest.raises(IndexError, match='outside'):
        db.local_features([-1])  # faiss's "no result" id must not wrap around


def test_patch_centre_formula():
    hw, patch = (480, 640), 16
    tokens = np.array([[0, 1, 39, 40, 1199]])
    x, y = patch_centre_xy(tokens, hw, patch)
    assert x.shape == y.shape == (1, 5)
    expected = [[(8 + 16 * (p % 40)) / 640, (8 + 16 * (p // 40)) / 640] for p in tokens[0]]
    np.testing.assert_allclose(np.stack((x, y), axis=-1)[0], expected, atol=1e-7)
    assert [x[0, 4], y[0, 4]] == pytest.approx([632 / 640, 472 / 640])


def test_map_xy_equals_model_xy(tmp_path):
    # The map stores no x, y: what it recomputes must be what the model's selection produced.
    torch = pytest.importorskip('torch')
    from r2former_ros.core.model.config import R2FormerConfig
    from r2former_ros.core.model.local_tokens import select_local_tokens

    config = R2FormerConfig(input_hw=(64, 96), num_local=16, local_dim=8)
    grid = 4 * 6
    score = torch.rand(2, grid, generator=torch.Generator().manual_seed(0))
    feats, tokens = select_local_tokens(torch.randn(2, 2 + grid, 12), score,
                                        torch.nn.Linear(12, 8), config)
    model = dict(SMALL, global_dim=32, local_dim=8)
    glob = unit(np.random.default_rng(0).normal(size=(2, 32))).astype(np.float32)
    features = ImageFeatures(glob, feats.detach().numpy(), tokens.numpy())
    with MapWriter(tmp_path / 'map', model, origin=ORIGIN) as writer:
        writer.add(features, make_places(2))
    stored = MapDatabase.open(tmp_path / 'map').local_features([0, 1])
    np.testing.assert_allclose(stored[..., :2], features.local_feats[..., :2], atol=1e-7)


def test_int8_quantisation_bound():
    v = unit(np.random.default_rng(1).normal(size=(200, 128)))
    q = mapdb.quantize_int8(v)
    assert q.dtype == np.int8 and q.min() >= -127
    restored = mapdb.dequantize_int8(q)
    assert np.abs(restored - v).max() <= mapdb.INT8_MAX_ABS_ERROR + 1e-7
    assert np.sum(unit(restored) * v, axis=1).min() > 0.999


def test_search_finds_each_place(tmp_path):
    path = tmp_path / 'map'
    feats = build(path)
    db = MapDatabase.open(path)
    scores, ids = db.search(feats.global_desc[:5], 3)
    assert scores.shape == ids.shape == (5, 3)
    np.testing.assert_array_equal(ids[:, 0], np.arange(5))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    with pytest.raises(MapError, match='global_dim 32'):
        db.search(np.zeros((1, 16), np.float32), 1)


@pytest.mark.parametrize('index_type', ['ivf', 'hnsw'])
def test_approximate_index_is_stored(tmp_path, index_type):
    path = tmp_path / 'map'
    feats = build(path, n=200, batch=64, index_type=index_type)
    manifest = json.loads((path / 'manifest.json').read_text())
    assert manifest['index_type'] == index_type
    assert 'index.faiss' in manifest['files']
    db = MapDatabase.open(path, verify_checksums=True, nprobe=1000)
    _, ids = db.search(feats.global_desc[:10], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(10))
    assert mapdb.verify_map(path) == []


def test_auto_index_switches_by_size(tmp_path):
    build(tmp_path / 'small', n=60, exact_max=100)
    build(tmp_path / 'large', n=60, exact_max=50)
    assert mapdb.map_info(tmp_path / 'small')['index_type'] == 'exact'
    assert mapdb.map_info(tmp_path / 'large')['index_type'] == 'ivf'
    assert (tmp_path / 'large' / 'index.faiss').is_file()
    assert not (tmp_path / 'small' / 'index.faiss').exists()


def test_thumbnails(tmp_path):
    path = tmp_path / 'map'
    build(path, n=6, thumbnails=True, thumbnail_width=32)
    db = MapDatabase.open(path, verify_checksums=True)
    assert sorted(p.name for p in (path / 'thumbnails').iterdir())[0] == '00000000.jpg'
    for i in range(3):
        thumb = db.thumbnail(i)
        assert thumb.shape == (24, 32, 3) and thumb.dtype == np.uint8
        assert int(np.argmax(thumb.reshape(-1, 3).mean(axis=0))) == i  # RGB order kept
    assert mapdb.map_info(path)['has_thumbnails']
    no_thumbs = tmp_path / 'plain'
    build(no_thumbs, n=3)
    assert MapDatabase.open(no_thumbs).thumbnail(0) is None


# ---------------------------------------------------------------------------------- storage


def test_no_pickle_anywhere(tmp_path):
    path = tmp_path / 'map'
    build(path, thumbnails=True)
    files = sorted(path.glob('*.npy'))
    assert {f.name for f in files} == set(mapdb.ARRAY_FILES)
    for file in files:
        arr = np.load(file, allow_pickle=False)
        assert not arr.dtype.hasobject


def test_local_arrays_are_memory_mapped(tmp_path):
    path = tmp_path / 'map'
    build(path)
    db = MapDatabase.open(path)
    for arr in (db.local_desc_storage, db.global_desc, db.places):
        assert isinstance(arr, np.memmap) or isinstance(arr.base, np.memmap)


def test_npy_header_is_rewritten_in_place(tmp_path):
    # The streaming writer reserves the header for any row count; np.load must accept it.
    path = tmp_path / 'map'
    build(path, n=7, batch=3)
    for name in mapdb.ARRAY_FILES:
        with open(path / name, 'rb') as fh:
            assert np.lib.format.read_magic(fh) == (1, 0)
            shape, fortran, _ = np.lib.format.read_array_header_1_0(fh)
            assert shape[0] == 7 and not fortran
            assert fh.tell() % 64 == 0


@pytest.mark.parametrize('local_format', ['int8', 'fp16'])
def test_bytes_per_place_at_full_size(tmp_path, local_format, capsys):
    path = tmp_path / 'map'
    build(path, model=FULL, n=20, batch=8, local_format=local_format)
    db = MapDatabase.open(path, expected_model=FULL)
    per_place = db.bytes_per_place()
    assert mapdb.map_info(path)['bytes_per_place'] == per_place
    with capsys.disabled():
        print(f'\nbytes_per_place {local_format} K=500 D=128 G=256 N=20: {per_place:.0f}')
    if local_format == 'int8':
        assert per_place <= 66 * 1024
    else:
        assert per_place <= 130 * 1024
    assert db.local_features([0, 19]).shape == (2, 500, 131)


# ----------------------------------------------------------------------------------- append


def test_append_continues_ids_and_rebuilds_index(tmp_path):
    path = tmp_path / 'map'
    old = build(path, n=30, thumbnails=True)
    new = make_features(SMALL, 12, seed=5)
    with MapWriter.append(path, SMALL) as writer:
        assert writer.num_places == 30 and writer.origin == ORIGIN
        source = writer.add_source({'bag': 'run2.mcap', 'image_topic': '/cam/image'})
        assert source == 1
        ids = writer.add(new, make_places(12, 30, source), [rgb_image(i) for i in range(12)])
        assert ids.tolist() == list(range(30, 42))
    db = MapDatabase.open(path, verify_checksums=True)
    assert db.num_places == 42
    np.testing.assert_array_equal(db.places['id'], np.arange(42))
    assert db.places['source_index'][29] == 0 and db.places['source_index'][30] == 1
    np.testing.assert_allclose(db.global_desc[:30], old.global_desc, atol=1e-6)
    np.testing.assert_array_equal(db.token_index(np.arange(30, 42)), new.token_index)
    _, found = db.search(new.global_desc, 1)
    np.testing.assert_array_equal(found[:, 0], np.arange(30, 42))
    assert [s['bag'] for s in db.manifest['sources']] == ['run1.mcap', 'run2.mcap']
    assert db.thumbnail(35) is not None and db.thumbnail(5) is not None
    assert mapdb.verify_map(path) == []
    assert [p for p in siblings(path) if p != 'map'] == []


def test_append_rebuilds_stored_index(tmp_path):
    path = tmp_path / 'map'
    build(path, n=100, index_type='ivf')
    new = make_features(SMALL, 20, seed=9)
    with MapWriter.append(path, SMALL) as writer:
        writer.add(new, make_places(20, 100))
    db = MapDatabase.open(path, nprobe=1000)
    assert db.index_type == 'ivf'
    _, found = db.search(new.global_desc, 1)
    np.testing.assert_array_equal(found[:, 0], np.arange(100, 120))


def test_append_refuses_another_model(tmp_path):
    path = tmp_path / 'map'
    build(path, n=10)
    before = tree_digest(path)
    other = dict(SMALL, checkpoint_sha256='b' * 64)
    with pytest.raises(MapError, match='checkpoint_sha256') as err:
        MapWriter.append(path, other)
    assert 'a' * 64 in str(err.value) and 'b' * 64 in str(err.value)
    assert tree_digest(path) == before


def test_append_cannot_move_origin(tmp_path):
    path = tmp_path / 'map'
    build(path, n=5)
    with pytest.raises(MapError, match='origin'), MapWriter.append(path, SMALL) as writer:
        writer.set_origin(0.0, 0.0, 0.0)
    assert MapDatabase.open(path).num_places == 5


# ------------------------------------------------------------------------------- atomicity


@pytest.mark.parametrize('exc_type', [RuntimeError, KeyboardInterrupt])
def test_failure_inside_with_leaves_nothing(tmp_path, exc_type):
    path = tmp_path / 'map'
    feats = make_features(SMALL, 8, 0)
    with pytest.raises(exc_type), MapWriter(path, SMALL, origin=ORIGIN) as writer:
        writer.add(feats, make_places(8), [rgb_image(i) for i in range(8)])
        raise exc_type('boom')
    assert not path.exists()
    assert siblings(path) == []


@pytest.mark.parametrize('mode', ['append', 'overwrite'])
def test_failure_during_replace_keeps_old_map(tmp_path, mode):
    path = tmp_path / 'map'
    build(path, n=20, thumbnails=True)
    before = tree_digest(path)
    feats = make_features(SMALL, 8, 3)
    writer = MapWriter.append(path, SMALL) if mode == 'append' else \
        MapWriter(path, SMALL, origin=ORIGIN, overwrite=True)
    with pytest.raises(KeyboardInterrupt), writer:
        writer.add(feats, make_places(8, writer.num_places))
        raise KeyboardInterrupt
    assert tree_digest(path) == before
    assert siblings(path) == ['map']


def test_failed_commit_leaves_old_map(tmp_path):
    path = tmp_path / 'map'
    build(path, n=10)
    before = tree_digest(path)
    with pytest.raises(MapError, match='no places'), \
            MapWriter(path, SMALL, origin=ORIGIN, overwrite=True):
        pass
    with pytest.raises(MapError, match='origin'), \
            MapWriter(tmp_path / 'other', SMALL) as writer:
        writer.add(make_features(SMALL, 2, 0), make_places(2))
    assert tree_digest(path) == before
    assert siblings(path) == ['map']


def test_overwrite_rules(tmp_path):
    path = tmp_path / 'map'
    build(path, n=10)
    with pytest.raises(MapError, match='overwrite=True'):
        MapWriter(path, SMALL)
    build(path, n=12, seed=4, overwrite=True)
    assert MapDatabase.open(path).num_places == 12
    assert siblings(path) == ['map']

    foreign = tmp_path / 'photos'
    foreign.mkdir()
    (foreign / 'holiday.jpg').write_bytes(b'precious')
    with pytest.raises(MapError, match='not an r2former_ros map'):
        MapWriter(foreign, SMALL, overwrite=True)
    assert (foreign / 'holiday.jpg').read_bytes() == b'precious'

    empty = tmp_path / 'empty'
    empty.mkdir()
    build(empty, n=3)  # an empty directory is not worth protecting
    assert MapDatabase.open(empty).num_places == 3


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ConfigError, match='checkpoint_sha256'):
        MapWriter(tmp_path / 'm', {k: v for k, v in SMALL.items() if k != 'checkpoint_sha256'})
    with pytest.raises(ConfigError, match='local_format'):
        MapWriter(tmp_path / 'm', SMALL, local_format='fp32')
    feats = make_features(SMALL, 4, 0)
    shifted = ImageFeatures(feats.global_desc, feats.local_feats.copy(), feats.token_index)
    shifted.local_feats[..., 0] += 0.01
    with MapWriter(tmp_path / 'm', SMALL, origin=ORIGIN) as writer:
        with pytest.raises(MapError, match='x, y'):
            writer.add(shifted, make_places(4))
        with pytest.raises(MapError, match='local_feats'):
            writer.add(make_features(dict(SMALL, local_dim=4), 4, 0), make_places(4))
        with pytest.raises(MapError, match='4 features has 3 places'):
            writer.add(feats, make_places(3))
        writer.add(feats, make_places(4))
    assert MapDatabase.open(tmp_path / 'm').num_places == 4


# ------------------------------------------------------------------------ checks on opening


def test_corrupted_file_is_detected_by_checksums(tmp_path):
    path = tmp_path / 'map'
    build(path)
    file = path / 'local_desc.npy'
    data = bytearray(file.read_bytes())
    data[-100:-90] = bytes(255 - b for b in data[-100:-90])
    file.write_bytes(bytes(data))
    MapDatabase.open(path)  # same size: only checksums can tell
    with pytest.raises(MapError, match='local_desc.npy.*SHA-256'):
        MapDatabase.open(path, verify_checksums=True)
    problems = mapdb.verify_map(path)
    assert len(problems) == 1 and 'local_desc.npy' in problems[0]


@pytest.mark.parametrize('name', ['local_desc.npy', 'places.npy', 'global.npy'])
def test_truncation_is_caught_without_checksums(tmp_path, name):
    path = tmp_path / 'map'
    build(path)
    file = path / name
    os.truncate(file, file.stat().st_size - 33)
    with pytest.raises(MapError, match=f'{name}.*truncated'):
        MapDatabase.open(path)
    assert any(name in p for p in mapdb.verify_map(path))


def test_missing_file_and_bad_manifest(tmp_path):
    path = tmp_path / 'map'
    build(path)
    (path / 'attention.npy').unlink()
    with pytest.raises(MapError, match='attention.npy.*missing'):
        MapDatabase.open(path)
    manifest = path / 'manifest.json'
    manifest.write_text('{not json')
    with pytest.raises(MapError, match='manifest.json.*cannot be parsed'):
        MapDatabase.open(path)
    assert 'cannot be parsed' in mapdb.verify_map(path)[0]
    with pytest.raises(MapError, match='does not exist'):
        MapDatabase.open(tmp_path / 'nowhere')
    (tmp_path / 'dir').mkdir()
    with pytest.raises(MapError, match='not a map directory'):
        MapDatabase.open(tmp_path / 'dir')


def test_unsupported_format_version(tmp_path):
    path = tmp_path / 'map'
    build(path)
    manifest = json.loads((path / 'manifest.json').read_text())
    manifest['format_version'] = 99
    (path / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(MapError, match='format_version 99'):
        MapDatabase.open(path)


def test_shape_mismatch_with_counts(tmp_path):
    path = tmp_path / 'map'
    build(path)
    manifest = json.loads((path / 'manifest.json').read_text())
    manifest['counts']['num_places'] = 49
    (path / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(MapError, match=r'global.npy: holds float32 \(50, 32\)'):
        MapDatabase.open(path)


@pytest.mark.parametrize(('field', 'value'), [
    ('checkpoint_sha256', 'c' * 64), ('backbone', 'dinov2'), ('input_hw', [480, 640]),
    ('global_dim', 384), ('local_dim', 384), ('num_local', 500), ('patch_size', 14),
])
def test_expected_model_mismatch_names_the_field(tmp_path, field, value):
    path = tmp_path / 'map'
    build(path, n=5)
    with pytest.raises(MapError, match=field) as err:
        MapDatabase.open(path, expected_model={field: value})
    assert repr(value) in str(err.value) and repr(SMALL[field]) in str(err.value)


def test_expected_model_accepts_matching_subset(tmp_path):
    path = tmp_path / 'map'
    build(path, n=5)
    db = MapDatabase.open(path, expected_model={'input_hw': (64, 96), 'backbone': 'r2former',
                                                'checkpoint': '/elsewhere/same.pth'})
    assert db.num_places == 5


# ------------------------------------------------------------------------------- utilities


def test_map_info_and_calibration(tmp_path):
    path = tmp_path / 'map'
    build(path, local_format='fp16')
    info = mapdb.map_info(path)
    assert info['num_places'] == 50
    assert info['checkpoint_sha256'] == 'a' * 64
    assert info['format_version'] == 1
    assert info['backbone'] == 'r2former' and info['input_hw'] == [64, 96]
    assert info['local_format'] == 'fp16' and info['index_type'] == 'exact'
    assert info['origin'] == ORIGIN and info['sources'][0]['bag'] == 'run1.mcap'
    assert info['bytes_per_place'] == MapDatabase.open(path).bytes_per_place()
    assert not info['calibrated']
    # a block that only records why fitting was skipped does not make the map calibrated
    mapdb.write_calibration(path, {'method': 'logistic', 'weights': None, 'info': {'skipped': 1}})
    assert not mapdb.map_info(path)['calibrated']
    mapdb.write_calibration(path, {'method': 'logistic', 'weights': [np.float32(2.5)],
                                   'bias': -1.0})
    assert MapDatabase.open(path).manifest['calibration'] == {'method': 'logistic',
                                                              'weights': [2.5], 'bias': -1.0}
    assert mapdb.map_info(path)['calibrated']
    assert mapdb.verify_map(path) == []
    assert siblings(path) == ['map']
    # Appending keeps the calibration.
    with MapWriter.append(path, SMALL) as writer:
        writer.add(make_features(SMALL, 2, 1), make_places(2, 50))
    assert MapDatabase.open(path).manifest['calibration']['method'] == 'logistic'
