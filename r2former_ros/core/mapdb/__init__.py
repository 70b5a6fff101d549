"""
The on-disk map: one directory of numpy arrays, a manifest and a faiss index.

Layout (N places, K local features, D local dims, G global dims)::

    manifest.json      format_version, tool_version, created, model, storage, counts,
                       sources, origin, calibration, index_type, index, files, thumbnails
    global.npy         (N, G) float32, unit L2 rows
    token_index.npy    (N, K) uint16 patch index (raster order of the patch grid)
    attention.npy      (N, K) float16 attention score (divided by the image's max)
    local_desc.npy     (N, K, D) float16 unit rows, or int8 ``round(127 * v)``
    places.npy         (N,) structured array, see :data:`PLACE_DTYPE`
    index.faiss        only for approximate indexes (IVF-Flat, HNSW)
    thumbnails/        optional ``{id:08d}.jpg`` previews

Local ``x, y`` are not stored: they are patch centres recomputed from the token
index by :func:`token_xy`. Place ids are row numbers, ``0 .. N-1``.

int8 error bound: descriptor rows are L2-normalised, so every component lies in
``[-1, 1]`` and ``q = round(127 v)`` never clips. The dequantised ``q / 127``
differs from ``v`` by at most :data:`INT8_MAX_ABS_ERROR` = 1/254 (about 0.0039)
per component, i.e. at most ``sqrt(D) / 254`` in L2 norm (0.045 for D = 128;
about 0.026 for typical rounding). The reranker re-normalises the rows.

Writers build in a sibling temporary directory ``.{name}.tmp-XXXX``, fsync it
and rename it into place; an existing map is first renamed to
``.{name}.old-XXXX`` and deleted after the swap, so a crash leaves the old map
or the new one, never a half-written map at the target path.

The exact index (``IndexFlatIP``) is a copy of ``global.npy`` and is rebuilt at
load time; see :mod:`r2former_ros.core.mapdb.index` for the ``auto`` rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
import datetime
import hashlib
import json
import math
import os
from pathlib import Path
import secrets
import shutil
import tempfile
from types import TracebackType
from typing import Any

import cv2
import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros import __version__
from r2former_ros.core.errors import ConfigError, MapError
from r2former_ros.core.features import LOCAL_XY_ATT_COLUMNS, ImageFeatures
from r2former_ros.core.hashing import file_sha256
from r2former_ros.core.mapdb import index as retrieval
from r2former_ros.core.types import PlacePosition

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)

MANIFEST_NAME = 'manifest.json'
GLOBAL_FILE = 'global.npy'
TOKEN_INDEX_FILE = 'token_index.npy'
ATTENTION_FILE = 'attention.npy'
LOCAL_DESC_FILE = 'local_desc.npy'
PLACES_FILE = 'places.npy'
INDEX_FILE = 'index.faiss'
THUMBNAIL_DIR = 'thumbnails'
ARRAY_FILES = (GLOBAL_FILE, TOKEN_INDEX_FILE, ATTENTION_FILE, LOCAL_DESC_FILE, PLACES_FILE)

LOCAL_FORMATS = ('fp16', 'int8')
INT8_SCALE = 127.0
INT8_MAX_ABS_ERROR = 0.5 / INT8_SCALE
DEFAULT_THUMBNAIL_WIDTH = 160
_THUMBNAIL_JPEG_QUALITY = 85

# Keys a model block must have, and the ones that make two models interchangeable.
MODEL_KEYS = ('backbone', 'checkpoint', 'checkpoint_sha256', 'input_hw', 'num_local',
              'global_dim', 'local_dim', 'patch_size')
IDENTITY_KEYS = ('checkpoint_sha256', 'backbone', 'input_hw', 'num_local', 'global_dim',
                 'local_dim', 'patch_size')

PLACE_DTYPE = np.dtype([
    ('id', '<i8'), ('stamp_ns', '<i8'),
    ('lat', '<f8'), ('lon', '<f8'), ('alt', '<f8'),
    ('east', '<f8'), ('north', '<f8'), ('up', '<f8'),
    ('utm_zone', '<i2'), ('utm_northern', '?'),
    ('utm_easting', '<f8'), ('utm_northing', '<f8'),
    ('heading', '<f8'), ('source_index', '<i4'), ('msg_index', '<i8'),
])

# Copies of existing data and the token xy table move through memory in chunks this big.
_CHUNK_BYTES = 64 * 1024 * 1024
# .npy preamble: magic (6) + version (2) + header length (2).
_NPY_PREAMBLE = 10
_XY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class PlaceRecord:
    """
    What the map stores about one place besides its features.

    The place id is assigned by the writer (the next row number).
    """

    stamp_ns: int
    position: PlacePosition
    source_index: int = 0  # index into the manifest's ``sources``
    msg_index: int = 0  # the image's index in its topic


# ---------------------------------------------------------------------------- small helpers


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(value: Any) -> Any:
    # Builders hand over numpy scalars in sources/calibration; JSON wants Python types.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def _write_json_synced(path: Path, data: Mapping[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default)
    with open(path, 'w', encoding='utf-8') as fh:
        fh.write(text + '\n')
        fh.flush()
        os.fsync(fh.fileno())


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def token_xy(
    token_index: ArrayLike, input_hw: Sequence[int], patch_size: int
) -> NDArray[np.float32]:
    """
    Return the normalised patch-centre coordinates of token indices.

    ``x = ((p mod grid_w) * patch + patch / 2) / max(H, W)`` and
    ``y = ((p div grid_w) * patch + patch / 2) / max(H, W)`` with
    ``grid_w = W // patch``, the convention of the local feature columns.

    Args:
        token_index: integer patch indices, any shape.
        input_hw: model input size (H, W).
        patch_size: patch side in pixels.

    Returns:
        float32 array of shape ``token_index.shape + (2,)`` holding (x, y).
    """
    height, width = int(input_hw[0]), int(input_hw[1])
    grid_w = width // patch_size
    p = np.asarray(token_index, dtype=np.int64)
    scale = float(max(height, width))
    half = patch_size / 2.0
    out = np.empty(p.shape + (2,), dtype=np.float32)
    out[..., 0] = ((p % grid_w) * patch_size + half) / scale
    out[..., 1] = ((p // grid_w) * patch_size + half) / scale
    return out


def quantize_int8(desc: ArrayLike) -> NDArray[np.int8]:
    """Quantise unit-norm descriptor rows to int8 as ``clip(round(127 v), -127, 127)``."""
    unit = retrieval.normalize_rows(desc)
    return np.clip(np.rint(unit * INT8_SCALE), -127, 127).astype(np.int8)


def dequantize_int8(q: ArrayLike) -> NDArray[np.float32]:
    """Return ``q / 127`` as float32 (within :data:`INT8_MAX_ABS_ERROR` of the original)."""
    return np.asarray(q, dtype=np.float32) / np.float32(INT8_SCALE)


# --------------------------------------------------------------------- streaming .npy files


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], total: int | None = None) -> bytes:
    """
    Return a version 1.0 .npy header, padded to ``total`` bytes when given.

    Without ``total`` the header is sized for the largest plausible row count,
    so a file can be grown and its header rewritten in place at the end.
    """
    descr = np.lib.format.dtype_to_descr(dtype)
    if total is None:
        sized = (10 ** 18,) + tuple(shape[1:])
        text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {sized!r}, }}"
        # Round up to 64 bytes so the data starts aligned, which memory mapping likes.
        total = -(-(_NPY_PREAMBLE + len(text) + 1) // 64) * 64
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body_len = total - _NPY_PREAMBLE
    if len(text) + 1 > body_len:
        raise MapError(f'.npy header for shape {shape} does not fit in {total} bytes')
    body = text.ljust(body_len - 1) + '\n'
    return np.lib.format.MAGIC_PREFIX + bytes([1, 0]) + body_len.to_bytes(2, 'little') + \
        body.encode('latin1')


class _NpyAppender:
    """
    A .npy file grown row block by row block, finalised with its real shape.

    Only the block being written is in memory, so a map of any size is written
    with memory bounded by one batch.
    """

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._header_len = len(_npy_header(self.dtype, (0,) + self.row_shape))
        self._fh = open(path, 'wb')
        self._fh.write(_npy_header(self.dtype, (0,) + self.row_shape))

    def append(self, block: np.ndarray) -> None:
        arr = np.ascontiguousarray(block, dtype=self.dtype)
        if arr.shape[1:] != self.row_shape:
            raise MapError(f'{self.path}: block rows have shape {arr.shape[1:]}, '
                           f'expected {self.row_shape}')
        self._fh.write(arr.tobytes())
        self.rows += arr.shape[0]

    def close(self) -> None:
        header = _npy_header(self.dtype, (self.rows,) + self.row_shape, self._header_len)
        self._fh.seek(0)
        self._fh.write(header)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()


def _copy_rows(src: np.ndarray, dst: _NpyAppender) -> None:
    row_bytes = max(1, int(np.prod(src.shape[1:], dtype=np.int64)) * src.dtype.itemsize)
    step = max(1, _CHUNK_BYTES // row_bytes)
    for start in range(0, src.shape[0], step):
        dst.append(np.asarray(src[start:start + step]))


# -------------------------------------------------------------------------- model identity


def _normalise_model(model: Mapping[str, Any], where: str) -> dict[str, Any]:
    missing = [key for key in MODEL_KEYS if key not in model]
    if missing:
        raise ConfigError(f'{where}: model block lacks {", ".join(missing)}')
    out = dict(model)
    out['checkpoint'] = str(model['checkpoint'])
    out['input_hw'] = [int(v) for v in model['input_hw']]
    for key in ('num_local', 'global_dim', 'local_dim', 'patch_size'):
        out[key] = int(model[key])
    out.setdefault('preprocessing', {})
    if len(out['input_hw']) != 2 or min(out['input_hw']) < out['patch_size']:
        raise ConfigError(f'{where}: model input_hw {out["input_hw"]} is not an (H, W) pair '
                          f'of at least one patch ({out["patch_size"]} px)')
    if min(out['num_local'], out['global_dim'], out['local_dim'], out['patch_size']) < 1:
        raise ConfigError(f'{where}: model dims must be positive, got {out}')
    return out


def _identity_value(model: Mapping[str, Any], key: str) -> Any:
    value = model.get(key)
    if key == 'input_hw' and value is not None:
        return [int(v) for v in value]
    if key in ('num_local', 'global_dim', 'local_dim', 'patch_size') and value is not None:
        return int(value)
    return value


def _compare_model(stored: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Raise MapError naming the first identity field that differs (only given keys count)."""
    for key in IDENTITY_KEYS:
        if key not in expected:
            continue
        have, want = _identity_value(stored, key), _identity_value(expected, key)
        if have != want:
            raise MapError(f'{where}: map was built with {key}={have!r} but the model in use has '
                           f'{key}={want!r}; rebuild the map or use the matching model')


# ---------------------------------------------------------------------- manifest and checks


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST_NAME
    if not path.is_dir():
        raise MapError(f'{path}: map directory does not exist')
    if not file.is_file():
        raise MapError(f'{file}: manifest is missing; {path} is not a map directory')
    try:
        manifest = json.loads(file.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MapError(f'{file}: manifest cannot be parsed ({exc})') from exc
    if not isinstance(manifest, dict):
        raise MapError(f'{file}: manifest is not a JSON object')
    version = manifest.get('format_version')
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise MapError(f'{file}: format_version {version!r} is not supported (this '
                       f'r2former_ros {__version__} reads {list(SUPPORTED_FORMAT_VERSIONS)})')
    for key in ('model', 'storage', 'counts', 'files', 'index_type', 'origin', 'sources'):
        if key not in manifest:
            raise MapError(f'{file}: manifest lacks {key!r}')
    try:
        manifest['model'] = _normalise_model(manifest['model'], str(file))
        num = int(manifest['counts']['num_places'])
        fmt = manifest['storage']['local_format']
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise MapError(f'{file}: malformed manifest ({exc})') from exc
    if num < 1 or fmt not in LOCAL_FORMATS:
        raise MapError(f'{file}: bad num_places {num} or local_format {fmt!r}')
    entries = manifest['files']
    if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and isinstance(e.get('bytes'), int) and
            isinstance(e.get('sha256'), str) for e in entries.values()):
        raise MapError(f'{file}: files must map names to {{bytes, sha256}}')
    return manifest


def _expected_layout(manifest: Mapping[str, Any]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    model = manifest['model']
    n = int(manifest['counts']['num_places'])
    k, d, g = model['num_local'], model['local_dim'], model['global_dim']
    local_dtype = np.dtype('<f2') if manifest['storage']['local_format'] == 'fp16' else \
        np.dtype('i1')
    return {
        GLOBAL_FILE: (np.dtype('<f4'), (n, g)),
        TOKEN_INDEX_FILE: (np.dtype('<u2'), (n, k)),
        ATTENTION_FILE: (np.dtype('<f2'), (n, k)),
        LOCAL_DESC_FILE: (local_dtype, (n, k, d)),
        PLACES_FILE: (PLACE_DTYPE, (n,)),
    }


def _required_files(manifest: Mapping[str, Any]) -> list[str]:
    names = list(ARRAY_FILES)
    if manifest['index_type'] != 'exact':
        names.append(INDEX_FILE)
    return names


def _check_files(path: Path, manifest: Mapping[str, Any], checksums: bool) -> list[str]:
    """Return problems with presence, sizes and (optionally) SHA-256 of the data files."""
    problems = []
    files = manifest['files']
    for name in _required_files(manifest):
        if name not in files:
            problems.append(f'{path / MANIFEST_NAME}: no entry for data file {name}')
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            problems.append(f'{file}: data file is missing')
            continue
        size = file.stat().st_size
        if size != int(entry['bytes']):
            problems.append(f'{file}: size is {size} bytes, manifest says {entry["bytes"]} '
                            '(truncated or modified)')
        elif checksums and file_sha256(file) != entry['sha256']:
            problems.append(f'{file}: SHA-256 differs from the manifest (corrupted)')
    return problems


def _load_arrays(
    path: Path, manifest: Mapping[str, Any], skip: Iterable[str] = ()
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Memory-map the data arrays and check dtypes and shapes against counts and the model."""
    arrays: dict[str, np.ndarray] = {}
    problems = []
    storage = manifest['storage']
    for name, (dtype, shape) in _expected_layout(manifest).items():
        if name in skip:
            continue
        file = path / name
        try:
            arr = np.load(file, mmap_mode='r', allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            problems.append(f'{file}: cannot be read as a .npy array ({exc})')
            continue
        stored_shape = storage.get('shapes', {}).get(name)
        if arr.dtype != dtype or arr.shape != shape:
            problems.append(f'{file}: holds {arr.dtype} {arr.shape}, expected {dtype} {shape}')
        elif stored_shape is not None and tuple(stored_shape) != shape:
            problems.append(f'{path / MANIFEST_NAME}: storage shape of {name} is {stored_shape}, '
                            f'counts and model give {list(shape)}')
        else:
            arrays[name] = arr
    places = arrays.get(PLACES_FILE)
    if places is not None and not np.array_equal(places['id'], np.arange(places.shape[0])):
        problems.append(f'{path / PLACES_FILE}: place ids are not 0..N-1')
    return arrays, problems


def _thumbnail_names(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.suffix == '.jpg')


def _thumbnail_digest(entries: Mapping[str, str]) -> str:
    # One digest over (name, file hash) pairs keeps the manifest small for 100k thumbnails.
    lines = ''.join(f'{name} {entries[name]}\n' for name in sorted(entries))
    return hashlib.sha256(lines.encode('ascii')).hexdigest()


def _check_thumbnails(path: Path, manifest: Mapping[str, Any]) -> list[str]:
    block = manifest.get('thumbnails')
    if not block:
        return []
    directory = path / THUMBNAIL_DIR
    names = _thumbnail_names(directory)
    problems = []
    if len(names) != int(block['count']):
        problems.append(f'{directory}: {len(names)} thumbnails, manifest says {block["count"]}')
    total = sum((directory / name).stat().st_size for name in names)
    if total != int(block['bytes']):
        problems.append(f'{directory}: thumbnails hold {total} bytes, manifest says '
                        f'{block["bytes"]}')
    elif _thumbnail_digest({n: file_sha256(directory / n) for n in names}) != block['sha256']:
        problems.append(f'{directory}: thumbnail checksum differs from the manifest (corrupted)')
    return problems


def _is_replaceable(target: Path) -> bool:
    """Return True when ``target`` is absent, an empty directory, or a map directory."""
    if not target.exists() and not target.is_symlink():
        return True
    if not target.is_dir():
        return False
    return (target / MANIFEST_NAME).is_file() or not any(target.iterdir())


def _unique_sibling(target: Path, tag: str) -> Path:
    while True:
        candidate = target.parent / f'.{target.name}.{tag}-{secrets.token_hex(4)}'
        if not candidate.exists():
            return candidate


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing target is moved aside and then deleted."""
    old = None
    if target.exists():
        old = _unique_sibling(target, 'old')
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------- writer


class MapWriter:
    """
    Streams places into a new map directory and commits it atomically.

    Use it as a context manager: leaving the block normally commits (unless
    :meth:`commit` was already called); an exception, KeyboardInterrupt
    included, deletes the temporary directory and leaves any previous map at
    the target untouched.

    Example::

        with MapWriter(out_dir, model, local_format='int8') as writer:
            src = writer.add_source({'bag': bag, 'image_topic': topic})
            writer.set_origin(lat0, lon0, alt0)
            writer.add(features, places, thumbnails)
    """

    def __init__(
        self,
        path: str | Path,
        model: Mapping[str, Any],
        *,
        local_format: str = 'int8',
        index_type: str = 'auto',
        nprobe: int = retrieval.DEFAULT_NPROBE,
        ef_search: int = retrieval.DEFAULT_EF_SEARCH,
        exact_max: int = retrieval.AUTO_EXACT_MAX_PLACES,
        thumbnail_width: int = DEFAULT_THUMBNAIL_WIDTH,
        origin: Mapping[str, float] | None = None,
        sources: Sequence[Mapping[str, Any]] | None = None,
        overwrite: bool = False,
    ) -> None:
        """
        Prepare a writer; nothing is written before the ``with`` block starts.

        Args:
            path: the map directory to create or replace.
            model: model block: backbone, checkpoint, checkpoint_sha256,
                input_hw [H, W], num_local K, global_dim G, local_dim D,
                patch_size and optionally preprocessing.
            local_format: ``'fp16'`` or ``'int8'`` local descriptors.
            index_type: ``'auto'``, ``'exact'``, ``'ivf'`` or ``'hnsw'``.
            nprobe: IVF cells scanned per query (stored as the default).
            ef_search: HNSW efSearch (stored as the default).
            exact_max: ``'auto'`` uses the exact index below this many places.
            thumbnail_width: thumbnail width in pixels.
            origin: ENU origin ``{'lat', 'lon', 'alt'}``; may be set later.
            sources: initial source records; see :meth:`add_source`.
            overwrite: replace an existing map at ``path``.
        """
        self._target = Path(path)
        self._model = _normalise_model(model, str(self._target))
        if local_format not in LOCAL_FORMATS:
            raise ConfigError(f'{self._target}: local_format must be fp16 or int8, '
                              f'got {local_format!r}')
        retrieval.choose_index_type(index_type, 0)  # validates the name
        if thumbnail_width < 8:
            raise ConfigError(f'{self._target}: thumbnail_width must be >= 8, '
                              f'got {thumbnail_width}')
        self._local_format = local_format
        self._index_request = index_type
        self._nprobe, self._ef_search, self._exact_max = nprobe, ef_search, exact_max
        self._thumb_width = int(thumbnail_width)
        self._origin = None if origin is None else self._origin_dict(origin)
        self._sources = [dict(s) for s in sources or []]
        self._overwrite = overwrite
        self._base: MapDatabase | None = None
        self._created: str | None = None
        self.calibration: dict[str, Any] | None = None
        self._tmp: Path | None = None
        self._out: dict[str, _NpyAppender] = {}
        self._thumbs: dict[str, str] = {}
        self._thumb_bytes = 0
        self._count = 0
        self._state = 'new'
        self._check_target()

    @classmethod
    def append(
        cls,
        path: str | Path,
        model: Mapping[str, Any],
        *,
        index_type: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> MapWriter:
        """
        Return a writer that adds places to an existing map.

        The existing map is checked against ``model`` (checkpoint SHA-256,
        backbone, input size, dims) and copied into the temporary directory
        when the ``with`` block starts; new ids continue after the old ones
        and the index is rebuilt at commit. The old map stays in place until
        the atomic swap.

        Raises:
            MapError: the map is missing, corrupt or built with another model.
        """
        base = MapDatabase.open(path, expected_model=model)
        manifest = base.manifest
        index_block = manifest.get('index', {})
        writer = cls(
            path, manifest['model'],
            local_format=manifest['storage']['local_format'],
            index_type=index_type or index_block.get('requested', manifest['index_type']),
            nprobe=nprobe or index_block.get('nprobe', retrieval.DEFAULT_NPROBE),
            ef_search=ef_search or index_block.get('ef_search', retrieval.DEFAULT_EF_SEARCH),
            thumbnail_width=(manifest.get('thumbnails') or {}).get(
                'width', DEFAULT_THUMBNAIL_WIDTH),
            origin=manifest['origin'], sources=manifest['sources'], overwrite=True)
        writer._base = base
        writer._created = manifest.get('created')
        writer.calibration = manifest.get('calibration')
        return writer

    # -- context manager

    def __enter__(self) -> MapWriter:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc_type is not None:
            self.abort()
            return False
        if self._state == 'open':
            self.commit()
        return False

    # -- metadata

    @staticmethod
    def _origin_dict(origin: Mapping[str, float]) -> dict[str, float]:
        try:
            return {key: float(origin[key]) for key in ('lat', 'lon', 'alt')}
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f'origin must have numeric lat, lon, alt, got {origin!r}') from exc

    @property
    def origin(self) -> dict[str, float] | None:
        """The ENU origin ``{'lat', 'lon', 'alt'}``, or None until set."""
        return None if self._origin is None else dict(self._origin)

    @property
    def num_places(self) -> int:
        """Places in the map so far (copied ones included when appending)."""
        return self._count

    @property
    def sources(self) -> list[dict[str, Any]]:
        """A copy of the source records."""
        return [dict(s) for s in self._sources]

    def set_origin(self, lat: float, lon: float, alt: float) -> None:
        """
        Set the WGS84 origin of the map's ENU frame.

        Appending cannot move the origin, because stored places are in its frame.
        """
        new = self._origin_dict({'lat': lat, 'lon': lon, 'alt': alt})
        if self._base is not None and new != self._origin:
            raise MapError(f'{self._target}: cannot change the ENU origin of an existing map '
                           f'from {self._origin} to {new}')
        self._origin = new

    def add_source(self, info: Mapping[str, Any]) -> int:
        """Record a source (bag, topics, counters...) and return its ``source_index``."""
        self._sources.append(dict(info))
        return len(self._sources) - 1

    def update_source(self, index: int, info: Mapping[str, Any]) -> None:
        """Merge ``info`` into source ``index`` (e.g. final counters)."""
        if not 0 <= index < len(self._sources):
            raise ConfigError(f'{self._target}: no source {index} '
                              f'(have {len(self._sources)})')
        self._sources[index].update(info)

    # -- lifecycle

    def _check_target(self) -> None:
        if not _is_replaceable(self._target):
            raise MapError(f'{self._target}: exists and is not an r2former_ros map; '
                           'refusing to overwrite it')
        is_map = (self._target / MANIFEST_NAME).is_file()
        if is_map and not self._overwrite:
            raise MapError(f'{self._target}: a map already exists there; pass overwrite=True '
                           'to replace it or append to it')

    def _require_open(self) -> Path:
        if self._state != 'open' or self._tmp is None:
            raise MapError(f'{self._target}: writer is {self._state}; use it as a context '
                           'manager and add places before commit')
        return self._tmp

    def _start(self) -> None:
        if self._state != 'new':
            raise MapError(f'{self._target}: a MapWriter can be entered only once')
        self._target.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f'.{self._target.name}.tmp-',
                                          dir=self._target.parent))
        self._state = 'open'
        try:
            self._open_outputs()
            if self._base is not None:
                self._copy_base(self._base)
        except BaseException:
            self.abort()
            raise

    def _open_outputs(self) -> None:
        tmp = self._require_open()
        m = self._model
        k, d = m['num_local'], m['local_dim']
        local_dtype = np.dtype('<f2') if self._local_format == 'fp16' else np.dtype('i1')
        layout = {
            GLOBAL_FILE: (np.dtype('<f4'), (m['global_dim'],)),
            TOKEN_INDEX_FILE: (np.dtype('<u2'), (k,)),
            ATTENTION_FILE: (np.dtype('<f2'), (k,)),
            LOCAL_DESC_FILE: (local_dtype, (k, d)),
            PLACES_FILE: (PLACE_DTYPE, ()),
        }
        for name, (dtype, row_shape) in layout.items():
            self._out[name] = _NpyAppender(tmp / name, dtype, row_shape)

    def _copy_base(self, base: MapDatabase) -> None:
        tmp = self._require_open()
        for name, arr in base._arrays.items():
            _copy_rows(arr, self._out[name])
        self._count = base.num_places
        src_dir = base.path / THUMBNAIL_DIR
        for name in _thumbnail_names(src_dir):
            data = (src_dir / name).read_bytes()
            self._store_thumbnail_bytes(tmp, name, data)

    def abort(self) -> None:
        """Discard everything written so far; the target path is not touched."""
        if self._state == 'committed':
            return
        for out in self._out.values():
            out.abort()
        self._out.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._state = 'aborted'

    # -- adding places

    def add(
        self,
        features: ImageFeatures,
        places: Sequence[PlaceRecord],
        thumbnails: Sequence[np.ndarray | None] | None = None,
    ) -> NDArray[np.int64]:
        """
        Append a batch of places.

        Args:
            features: N images' features; local x, y must match
                :func:`token_xy` of their token index.
            places: N place records, same order.
            thumbnails: N RGB uint8 images (entries may be None), or None.

        Returns:
            The (N,) int64 ids given to the places.

        Raises:
            MapError: shapes disagree with the model, values are not finite,
                token indices are outside the patch grid, or x, y disagree.
        """
        tmp = self._require_open()
        n = len(features)
        self._check_batch(features, places, thumbnails)
        ids = np.arange(self._count, self._count + n, dtype=np.int64)
        feats = np.asarray(features.local_feats, dtype=np.float32)
        desc = feats[..., LOCAL_XY_ATT_COLUMNS:]
        if self._local_format == 'int8':
            stored = quantize_int8(desc)
        else:
            stored = retrieval.normalize_rows(desc).astype(np.float16)
        self._out[GLOBAL_FILE].append(retrieval.normalize_rows(features.global_desc))
        self._out[TOKEN_INDEX_FILE].append(np.asarray(features.token_index).astype(np.uint16))
        self._out[ATTENTION_FILE].append(feats[..., 2].astype(np.float16))
        self._out[LOCAL_DESC_FILE].append(stored)
        self._out[PLACES_FILE].append(_place_rows(ids, places))
        for place_id, image in zip(ids, thumbnails or [None] * n, strict=True):
            if image is not None:
                self._store_thumbnail_bytes(tmp, f'{place_id:08d}.jpg', self._encode(image))
        self._count += n
        return ids

    def _check_batch(
        self,
        features: ImageFeatures,
        places: Sequence[PlaceRecord],
        thumbnails: Sequence[np.ndarray | None] | None,
    ) -> None:
        m = self._model
        n, k, d = len(features), m['num_local'], m['local_dim']
        where = self._target
        if len(places) != n or (thumbnails is not None and len(thumbnails) != n):
            raise MapError(f'{where}: batch of {n} features has {len(places)} places and '
                           f'{None if thumbnails is None else len(thumbnails)} thumbnails')
        expected = {'global_desc': (n, m['global_dim']), 'local_feats': (n, k, 3 + d),
                    'token_index': (n, k)}
        for field, shape in expected.items():
            got = np.shape(getattr(features, field))
            if got != shape:
                raise MapError(f'{where}: features.{field} has shape {got}, the map model '
                               f'needs {shape}')
        finite = np.isfinite(features.global_desc).all() and \
            np.isfinite(features.local_feats).all()
        if not finite:
            raise MapError(f'{where}: features contain NaN or infinite values')
        self._check_tokens(features)

    def _check_tokens(self, features: ImageFeatures) -> None:
        m = self._model
        grid = (m['input_hw'][0] // m['patch_size']) * (m['input_hw'][1] // m['patch_size'])
        tokens = np.asarray(features.token_index)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= min(grid, 65536)):
            raise MapError(f'{self._target}: token index outside the {grid}-patch grid '
                           f'({tokens.min()}..{tokens.max()})')
        xy = token_xy(tokens, m['input_hw'], m['patch_size'])
        err = np.abs(np.asarray(features.local_feats)[..., :2] - xy)
        if err.size and float(err.max()) > _XY_TOLERANCE:
            raise MapError(f'{self._target}: local x, y differ from the patch centres of the '
                           f'token index by up to {float(err.max()):.4g}; the model and the '
                           'map disagree on the coordinate convention')

    def _encode(self, rgb: np.ndarray) -> bytes:
        image = np.asarray(rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MapError(f'{self._target}: thumbnails must be (H, W, 3) uint8 RGB, got '
                           f'{image.dtype} {image.shape}')
        height = max(1, round(image.shape[0] * self._thumb_width / image.shape[1]))
        small = cv2.resize(image, (self._thumb_width, height), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode('.jpg', cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, _THUMBNAIL_JPEG_QUALITY])
        if not ok:
            raise MapError(f'{self._target}: JPEG encoding of a thumbnail failed')
        return buf.tobytes()

    def _store_thumbnail_bytes(self, tmp: Path, name: str, data: bytes) -> None:
        directory = tmp / THUMBNAIL_DIR
        directory.mkdir(exist_ok=True)
        # No per-file fsync: thousands of tiny syncs are slow; commit() syncs them in one go.
        (directory / name).write_bytes(data)
        self._thumbs[name] = hashlib.sha256(data).hexdigest()
        self._thumb_bytes += len(data)

    # -- commit

    def commit(self) -> Path:
        """
        Finish the files, build the index, write the manifest and swap the map in.

        Returns:
            The target path.

        Raises:
            MapError: no places were added, the origin is unset, or the target
                became a non-map directory meanwhile. The temporary directory
                is removed on any failure.
        """
        tmp = self._require_open()
        try:
            if self._count == 0:
                raise MapError(f'{self._target}: no places were added; not writing an empty map')
            if self._origin is None:
                raise MapError(f'{self._target}: ENU origin was never set (set_origin)')
            for out in self._out.values():
                out.close()
            self._out.clear()
            index_block = self._write_index(tmp)
            manifest = self._manifest(tmp, index_block)
            _write_json_synced(tmp / MANIFEST_NAME, manifest)
            if self._thumbs:
                os.sync()  # flushes the unsynced thumbnail files before the rename
                _fsync_dir(tmp / THUMBNAIL_DIR)
            _fsync_dir(tmp)
            self._check_target()
            _swap_into_place(tmp, self._target)
        except BaseException:
            self.abort()
            raise
        self._state = 'committed'
        return self._target

    def _write_index(self, tmp: Path) -> dict[str, Any]:
        kind = retrieval.choose_index_type(self._index_request, self._count, self._exact_max)
        block: dict[str, Any] = {'type': kind, 'requested': self._index_request,
                                 'nprobe': int(self._nprobe), 'ef_search': int(self._ef_search)}
        if kind == 'exact':
            return block
        vectors = np.load(tmp / GLOBAL_FILE, allow_pickle=False)
        index = retrieval.build_index(vectors, kind, nprobe=self._nprobe,
                                      ef_search=self._ef_search)
        retrieval.save_index(index, tmp / INDEX_FILE)
        with open(tmp / INDEX_FILE, 'rb') as fh:
            os.fsync(fh.fileno())
        # Keep the requested nprobe/efSearch: the index clips nprobe to nlist, and an append
        # with more places may allow the full value again.
        block.update({key: value for key, value in retrieval.search_params(index).items()
                      if key not in ('nprobe', 'ef_search')})
        return block

    def _manifest(self, tmp: Path, index_block: dict[str, Any]) -> dict[str, Any]:
        layout = {}
        for name in ARRAY_FILES:
            arr = np.load(tmp / name, mmap_mode='r', allow_pickle=False)
            layout[name] = (arr.dtype, list(arr.shape))
        data_files = list(ARRAY_FILES) + ([INDEX_FILE] if index_block['type'] != 'exact' else [])
        files = {name: {'bytes': (tmp / name).stat().st_size, 'sha256': file_sha256(tmp / name)}
                 for name in data_files}
        now = _utc_now()
        manifest: dict[str, Any] = {
            'format_version': FORMAT_VERSION,
            'tool_version': __version__,
            'created': self._created or now,
            'modified': now,
            'model': self._model,
            'storage': {
                'local_format': self._local_format,
                'int8_scale': INT8_SCALE if self._local_format == 'int8' else None,
                'dtypes': {name: _dtype_label(dt) for name, (dt, _) in layout.items()},
                'shapes': {name: shape for name, (_, shape) in layout.items()},
            },
            'counts': {'num_places': self._count},
            'sources': self._sources,
            'origin': self._origin,
            'calibration': self.calibration,
            'index_type': index_block['type'],
            'index': index_block,
            'files': files,
            'thumbnails': None,
        }
        if self._thumbs:
            manifest['thumbnails'] = {'count': len(self._thumbs), 'width': self._thumb_width,
                                      'bytes': self._thumb_bytes,
                                      'sha256': _thumbnail_digest(self._thumbs)}
        return manifest


def _dtype_label(dtype: np.dtype) -> Any:
    if dtype.names is None:
        return dtype.name
    return [[name, dtype.fields[name][0].str] for name in dtype.names]


_POSITION_COLUMNS = {
    'lat': 'latitude', 'lon': 'longitude', 'alt': 'altitude', 'east': 'east', 'north': 'north',
    'up': 'up', 'utm_zone': 'utm_zone', 'utm_northern': 'utm_northern',
    'utm_easting': 'utm_easting', 'utm_northing': 'utm_northing',
}


def _place_rows(ids: NDArray[np.int64], places: Sequence[PlaceRecord]) -> np.ndarray:
    rows = np.zeros(len(places), dtype=PLACE_DTYPE)
    rows['id'] = ids
    rows['stamp_ns'] = [rec.stamp_ns for rec in places]
    rows['source_index'] = [rec.source_index for rec in places]
    rows['msg_index'] = [rec.msg_index for rec in places]
    for column, attr in _POSITION_COLUMNS.items():
        rows[column] = [getattr(rec.position, attr) for rec in places]
    rows['heading'] = [math.nan if rec.position.heading is None else rec.position.heading
                       for rec in places]
    return rows


# ----------------------------------------------------------------------------------- reader


class MapDatabase:
    """
    A map opened for localization; create it with :meth:`open`.

    Large arrays stay memory-mapped, so resident memory does not grow with the
    map except for the faiss index (the exact index is a copy of the global
    descriptors).
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray],
        index: faiss.Index,
    ) -> None:
        """Wrap already-checked parts; use :meth:`open` instead."""
        self.path = path
        self._manifest = manifest
        self._arrays = arrays
        self._index = index
        self._model = manifest['model']

    @classmethod
    def open(
        cls,
        path: str | Path,
        expected_model: Mapping[str, Any] | None = None,
        verify_checksums: bool = False,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> MapDatabase:
        """
        Open and check a map directory.

        Args:
            path: the map directory.
            expected_model: model fields to require (any of checkpoint_sha256,
                backbone, input_hw, num_local, global_dim, local_dim,
                patch_size); others are ignored.
            verify_checksums: also hash every data file (reads the whole map).
            nprobe: override the stored IVF nprobe.
            ef_search: override the stored HNSW efSearch.

        Raises:
            MapError: missing or unparsable manifest, unsupported format,
                missing/truncated/corrupt files, wrong shapes or dtypes, or a
                model mismatch (naming the field and both values).
        """
        root = Path(path)
        manifest = _read_manifest(root)
        if expected_model is not None:
            _compare_model(manifest['model'], expected_model, str(root))
        problems = _check_files(root, manifest, verify_checksums)
        if verify_checksums:
            problems += _check_thumbnails(root, manifest)
        if not problems:
            arrays, problems = _load_arrays(root, manifest)
        if problems:
            raise MapError('; '.join(problems))
        index = _open_index(root, manifest, arrays[GLOBAL_FILE])
        block = manifest.get('index', {})
        retrieval.set_search_params(index, nprobe=nprobe or block.get('nprobe'),
                                    ef_search=ef_search or block.get('ef_search'))
        return cls(root, manifest, arrays, index)

    # -- metadata

    @property
    def manifest(self) -> dict[str, Any]:
        """The parsed manifest (do not modify)."""
        return self._manifest

    @property
    def num_places(self) -> int:
        """Number of places N."""
        return int(self._manifest['counts']['num_places'])

    def __len__(self) -> int:
        return self.num_places

    @property
    def local_format(self) -> str:
        """``'fp16'`` or ``'int8'``."""
        return str(self._manifest['storage']['local_format'])

    @property
    def index_type(self) -> str:
        """``'exact'``, ``'ivf'`` or ``'hnsw'``."""
        return str(self._manifest['index_type'])

    @property
    def places(self) -> np.ndarray:
        """(N,) structured array with :data:`PLACE_DTYPE` fields (memory-mapped)."""
        return self._arrays[PLACES_FILE]

    @property
    def global_desc(self) -> np.ndarray:
        """(N, G) float32 unit global descriptors (memory-mapped)."""
        return self._arrays[GLOBAL_FILE]

    @property
    def local_desc_storage(self) -> np.ndarray:
        """(N, K, D) stored local descriptors, fp16 or int8 (memory-mapped)."""
        return self._arrays[LOCAL_DESC_FILE]

    def bytes_per_place(self) -> float:
        """Total bytes of the data files in ``files`` (no manifest, no thumbnails) per place."""
        total = sum(int(entry['bytes']) for entry in self._manifest['files'].values())
        return total / self.num_places

    # -- access

    def _rows(self, ids: ArrayLike) -> NDArray[np.int64]:
        rows = np.atleast_1d(np.asarray(ids)).astype(np.int64)
        if rows.ndim != 1:
            raise IndexError(f'place ids must be a 1-D sequence, got shape {rows.shape}')
        bad = (rows < 0) | (rows >= self.num_places)
        if bad.any():
            raise IndexError(f'{self.path}: place id {int(rows[bad][0])} is outside '
                             f'0..{self.num_places - 1}')
        return rows

    def token_index(self, ids: ArrayLike) -> NDArray[np.int64]:
        """Return the (len(ids), K) int64 token indices of places ``ids``."""
        return self._arrays[TOKEN_INDEX_FILE][self._rows(ids)].astype(np.int64)

    def local_features(self, ids: ArrayLike) -> NDArray[np.float32]:
        """
        Return the local features of places ``ids`` in the model's layout.

        Returns:
            (len(ids), K, 3 + D) float32: x, y (recomputed from the token
            index), attention, descriptor (int8 dequantised as q / 127).
        """
        rows = self._rows(ids)
        m = self._model
        out = np.empty((rows.size, m['num_local'], LOCAL_XY_ATT_COLUMNS + m['local_dim']),
                       dtype=np.float32)
        out[..., :2] = token_xy(self._arrays[TOKEN_INDEX_FILE][rows], m['input_hw'],
                                m['patch_size'])
        out[..., 2] = self._arrays[ATTENTION_FILE][rows]
        stored = self._arrays[LOCAL_DESC_FILE][rows]
        out[..., LOCAL_XY_ATT_COLUMNS:] = (dequantize_int8(stored) if stored.dtype == np.int8
                                           else stored)
        return out

    def search(
        self, query_global: ArrayLike, k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """
        Return the ``k`` best places per query by cosine of the global descriptors.

        Args:
            query_global: (Q, G) or (G,) float32.
            k: neighbours per query; clipped to the number of places.

        Returns:
            scores (Q, k) float32 cosine and ids (Q, k) int64, best first
            (approximate indexes may pad with id -1, score -inf).
        """
        q = np.asarray(query_global, dtype=np.float32)
        if q.shape[-1:] != (self._model['global_dim'],):
            raise MapError(f'{self.path}: query global descriptor has shape {q.shape}, the map '
                           f'stores global_dim {self._model["global_dim"]}')
        return retrieval.search(self._index, q, k)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change IVF nprobe / HNSW efSearch of the loaded index."""
        retrieval.set_search_params(self._index, nprobe=nprobe, ef_search=ef_search)

    def position(self, place_id: int) -> PlacePosition:
        """Return where place ``place_id`` is."""
        row = self.places[int(self._rows([place_id])[0])]
        heading = float(row['heading'])
        return PlacePosition(
            latitude=float(row['lat']), longitude=float(row['lon']), altitude=float(row['alt']),
            east=float(row['east']), north=float(row['north']), up=float(row['up']),
            utm_zone=int(row['utm_zone']), utm_northern=bool(row['utm_northern']),
            utm_easting=float(row['utm_easting']), utm_northing=float(row['utm_northing']),
            heading=None if math.isnan(heading) else heading)

    def thumbnail(self, place_id: int) -> NDArray[np.uint8] | None:
        """Return the RGB thumbnail of a place, or None when the map has none for it."""
        row = int(self._rows([place_id])[0])
        file = self.path / THUMBNAIL_DIR / f'{row:08d}.jpg'
        if not file.is_file():
            return None
        bgr = cv2.imdecode(np.fromfile(file, dtype=np.uint8), cv2.IMREAD_COLOR)
        return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _open_index(path: Path, manifest: Mapping[str, Any], global_desc: np.ndarray) -> faiss.Index:
    kind = manifest['index_type']
    if kind == 'exact':
        return retrieval.build_index(np.asarray(global_desc), 'exact')
    file = path / INDEX_FILE
    index = retrieval.load_index(file)
    if index.ntotal != global_desc.shape[0] or index.d != global_desc.shape[1] or \
            retrieval.index_type_of(index) != kind:
        raise MapError(f'{file}: index holds {index.ntotal} x {index.d} '
                       f'({retrieval.index_type_of(index)}), the map has '
                       f'{global_desc.shape[0]} x {global_desc.shape[1]} ({kind})')
    return index


# ------------------------------------------------------------------------------ utilities


def verify_map(path: str | Path) -> list[str]:
    """
    Check a map completely (checksums, sizes, shapes, index, thumbnails).

    Returns:
        Problems found, one message per problem naming the file; empty when
        the map is sound.
    """
    root = Path(path)
    try:
        manifest = _read_manifest(root)
    except MapError as exc:
        return [str(exc)]
    problems = _check_files(root, manifest, checksums=True)
    bad = {name for name in manifest['files'] if any(str(root / name) in p for p in problems)}
    arrays, more = _load_arrays(root, manifest, skip=bad)
    problems += more + _check_thumbnails(root, manifest)
    if GLOBAL_FILE in arrays and INDEX_FILE not in bad:
        try:
            _open_index(root, manifest, arrays[GLOBAL_FILE])
        except MapError as exc:
            problems.append(str(exc))
    return problems


def map_info(path: str | Path) -> dict[str, Any]:
    """
    Summarise a map from its manifest (no data files are read).

    Returns:
        num_places, bytes_per_place, checkpoint_sha256, format_version,
        backbone, input_hw, num_local, global_dim, local_dim, local_format,
        index_type, origin, sources, created, tool_version, has_thumbnails,
        calibrated.
    """
    root = Path(path)
    manifest = _read_manifest(root)
    model = manifest['model']
    num = int(manifest['counts']['num_places'])
    total = sum(int(entry['bytes']) for entry in manifest['files'].values())
    return {
        'path': str(root),
        'num_places': num,
        'bytes_per_place': total / num,
        'checkpoint': model.get('checkpoint'),
        'checkpoint_sha256': model['checkpoint_sha256'],
        'format_version': manifest['format_version'],
        'tool_version': manifest.get('tool_version'),
        'created': manifest.get('created'),
        'backbone': model['backbone'],
        'input_hw': model['input_hw'],
        'num_local': model['num_local'],
        'global_dim': model['global_dim'],
        'local_dim': model['local_dim'],
        'local_format': manifest['storage']['local_format'],
        'index_type': manifest['index_type'],
        'origin': manifest['origin'],
        'sources': manifest['sources'],
        'has_thumbnails': bool(manifest.get('thumbnails')),
        # A calibration block without weights records why fitting was skipped: not calibrated.
        'calibrated': bool((manifest.get('calibration') or {}).get('weights')),
    }


def write_calibration(path: str | Path, calibration: Mapping[str, Any] | None) -> None:
    """
    Store a confidence calibration in a map's manifest, atomically.

    Only ``manifest.json`` is replaced (write, fsync, rename); the data files
    and their checksums are unaffected.
    """
    root = Path(path)
    manifest = _read_manifest(root)
    manifest['calibration'] = None if calibration is None else dict(calibration)
    manifest['modified'] = _utc_now()
    tmp = _unique_sibling(root / MANIFEST_NAME, 'tmp')
    try:
        _write_json_synced(tmp, manifest)
        os.replace(tmp, root / MANIFEST_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(root)
