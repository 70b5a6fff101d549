"""
What a map directory holds: file names, dtypes, the place table and the manifest.

Everything that knows the on-disk layout without writing it lives here, so the writer, the
reader and `verify_map` agree on one definition. Layout of a map of N places, K local features,
D local dims and G global dims::

    manifest.json      format_version, tool_version, map_uuid, created, model, storage,
                       counts, sources, origin, position_frame, calibration, index_type, index,
                       files, thumbnails
    global.npy         (N, G) float32, unit L2 rows
    token_index.npy    (N, K) uint16 patch index (raster order of the patch grid)
    attention.npy      (N, K) float16 attention score (divided by the image's max)
    local_desc.npy     (N, K, D) float16 unit rows, or int8 ``round(127 * v)``
    places.npy         (N,) structured array, see :data:`PLACE_DTYPE`
    index.faiss        only for approximate indexes (IVF-Flat, HNSW)
    thumbnails/        optional ``{id:08d}.jpg`` previews
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import datetime
import hashlib
import json
import math
from pathlib import Path
from typing import Any
import uuid

import numpy as np
from numpy.typing import NDArray

from r2former_ros import __version__
from r2former_ros.core.errors import ConfigError, MapError
from r2former_ros.core.geo.coords import WGS84_FRAME
from r2former_ros.core.mapdb.handle import MapDirectory
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

# The manifest key of the map's uuid (see MapIdentity), and how much of the manifest hash a
# map_id shows (64 bits: enough to tell versions of one map apart).
MAP_UUID_KEY = 'map_uuid'
MAP_ID_HASH_CHARS = 16
# Namespace of the uuids derived for maps written before map_uuid existed (a fixed random one).
_DERIVED_UUID_NAMESPACE = uuid.UUID('6d0c2a4e-9b1f-4c8e-a3d5-2f7b8e91c4a6')

# Keys a model block must have, and the ones that make two models interchangeable.
MODEL_KEYS = ('backbone', 'checkpoint', 'checkpoint_sha256', 'input_hw', 'num_local',
              'global_dim', 'local_dim', 'patch_size')
IDENTITY_KEYS = ('checkpoint_sha256', 'backbone', 'input_hw', 'num_local', 'global_dim',
                 'local_dim', 'patch_size', 'preprocessing')
_INT_MODEL_KEYS = ('num_local', 'global_dim', 'local_dim', 'patch_size')

PLACE_DTYPE = np.dtype([
    ('id', '<i8'), ('stamp_ns', '<i8'),
    ('lat', '<f8'), ('lon', '<f8'), ('alt', '<f8'),
    ('east', '<f8'), ('north', '<f8'), ('up', '<f8'),
    ('utm_zone', '<i2'), ('utm_northern', '?'),
    ('utm_easting', '<f8'), ('utm_northing', '<f8'),
    ('heading', '<f8'), ('source_index', '<i4'), ('msg_index', '<i8'),
])

# PLACE_DTYPE column -> PlacePosition attribute (heading is handled apart: None <-> NaN).
_POSITION_COLUMNS = {
    'lat': 'latitude', 'lon': 'longitude', 'alt': 'altitude', 'east': 'east', 'north': 'north',
    'up': 'up', 'utm_zone': 'utm_zone', 'utm_northern': 'utm_northern',
    'utm_easting': 'utm_easting', 'utm_northing': 'utm_northing',
}


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


def place_rows(ids: NDArray[np.int64], places: Sequence[PlaceRecord]) -> np.ndarray:
    """Pack place records into :data:`PLACE_DTYPE` rows with the given ids."""
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


def position_of(row: np.void) -> PlacePosition:
    """Unpack one :data:`PLACE_DTYPE` row into a PlacePosition (NaN heading -> None)."""
    heading = float(row['heading'])
    fields: dict[str, Any] = {attr: row[column].item()
                              for column, attr in _POSITION_COLUMNS.items()}
    return PlacePosition(**fields, heading=None if math.isnan(heading) else heading)


def origin_lla(block: Mapping[str, Any]) -> tuple[float, float, float]:
    """Return a manifest's ``origin`` block as the (lat, lon, alt) of the map's ENU frame."""
    return float(block['lat']), float(block['lon']), float(block['alt'])


# The origin block of a map whose places are in a robot's own frame (built from poses): that
# frame has no geodetic origin, and none is invented. The block keeps its keys, so a reader
# that only shows it (`map info`) still finds them.
NO_GEODETIC_ORIGIN: dict[str, None] = {'lat': None, 'lon': None, 'alt': None}


def position_frame_of(manifest: Mapping[str, Any]) -> str:
    """
    Return the frame of a map's place positions.

    ``'wgs84'`` for a map built from GPS (and for maps written before the field existed), else
    the frame id of the poses it was built from (e.g. ``'map'``).
    """
    return str(manifest.get('position_frame') or WGS84_FRAME)


def geodetic_origin(manifest: Mapping[str, Any], where: str) -> tuple[float, float, float]:
    """
    Return the (lat, lon, alt) origin of a GPS map's ENU frame.

    Raises:
        MapError: the map's positions are in a pose frame, which has no geodetic origin.
    """
    frame = position_frame_of(manifest)
    if frame != WGS84_FRAME:
        raise MapError(f"map {where} holds positions in frame '{frame}' (built from poses, no "
                       'GPS): it has no geodetic origin, so GPS input cannot be placed on it; '
                       f"use poses in '{frame}' (--pose-topic)")
    return origin_lla(manifest['origin'])


def local_dtype(local_format: str) -> np.dtype:
    """Return the dtype of ``local_desc.npy`` for a storage format."""
    return np.dtype('<f2') if local_format == 'fp16' else np.dtype('i1')


def row_layout(model: Mapping[str, Any],
               local_format: str) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Return the dtype and per-place row shape of every array file."""
    k, d = int(model['num_local']), int(model['local_dim'])
    return {
        GLOBAL_FILE: (np.dtype('<f4'), (int(model['global_dim']),)),
        TOKEN_INDEX_FILE: (np.dtype('<u2'), (k,)),
        ATTENTION_FILE: (np.dtype('<f2'), (k,)),
        LOCAL_DESC_FILE: (local_dtype(local_format), (k, d)),
        PLACES_FILE: (PLACE_DTYPE, ()),
    }


def expected_layout(manifest: Mapping[str, Any]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Return the dtype and shape of every array file from the manifest's counts and model."""
    n = int(manifest['counts']['num_places'])
    rows = row_layout(manifest['model'], manifest['storage']['local_format'])
    return {name: (dtype, (n, *shape)) for name, (dtype, shape) in rows.items()}


def required_files(manifest: Mapping[str, Any]) -> list[str]:
    """List the data files a manifest must name (the exact index is rebuilt, never stored)."""
    names = list(ARRAY_FILES)
    if manifest['index_type'] != 'exact':
        names.append(INDEX_FILE)
    return names


def dtype_label(dtype: np.dtype) -> Any:
    """JSON-friendly dtype name: 'float32', or [[field, str], ...] for structured dtypes."""
    if dtype.names is None or dtype.fields is None:
        return dtype.name
    return [[name, dtype.fields[name][0].str] for name in dtype.names]


def utc_now() -> str:
    """Return the current time as an ISO 8601 UTC string (seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


# -------------------------------------------------------------------------- model identity


def normalise_model(model: Mapping[str, Any], where: str) -> dict[str, Any]:
    """
    Check a manifest `model` block and return it with canonical types.

    Raises:
        ConfigError: a required key is missing, or the sizes are not positive.
    """
    missing = [key for key in MODEL_KEYS if key not in model]
    if missing:
        raise ConfigError(f'{where}: model block lacks {", ".join(missing)}')
    out = dict(model)
    out['checkpoint'] = str(model['checkpoint'])
    out['input_hw'] = [int(v) for v in model['input_hw']]
    for key in _INT_MODEL_KEYS:
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
    if key == 'preprocessing':  # the normalisation; 'resize' only describes it in words
        value = value or {}
        return {name: [round(float(v), 6) for v in value[name]]
                for name in ('mean', 'std') if value.get(name) is not None} or None
    if key == 'input_hw' and value is not None:
        return [int(v) for v in value]
    if key in _INT_MODEL_KEYS and value is not None:
        return int(value)
    return value


def compare_model(stored: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Raise MapError naming the first identity field that differs (only given keys count)."""
    for key in IDENTITY_KEYS:
        if key not in expected:
            continue
        have, want = _identity_value(stored, key), _identity_value(expected, key)
        if key == 'preprocessing' and have is None:  # maps written before it was recorded
            continue
        if have != want:
            raise MapError(f'{where}: map was built with {key}={have!r} but the model in use has '
                           f'{key}={want!r}; rebuild the map or use the matching model')


# ---------------------------------------------------------------------- manifest and files


def read_manifest(path: Path) -> dict[str, Any]:
    """
    Read and check a map's manifest (not its data files).

    Raises:
        MapError: the directory or manifest is missing, unparsable, of an unsupported format
            version, or lacks a required block.
    """
    with MapDirectory(path) as directory:
        return parse_manifest(directory)[0]


def parse_manifest(directory: MapDirectory) -> tuple[dict[str, Any], str]:
    """
    Read and check the manifest of an opened map directory.

    Returns:
        The manifest and the sha256 of its bytes (the map's version, see :class:`MapIdentity`).

    Raises:
        MapError: as :func:`read_manifest`.
    """
    file = directory.shown(MANIFEST_NAME)
    try:
        raw = directory.read_bytes(MANIFEST_NAME)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise MapError(f'{file}: manifest is missing; {directory.path} is not a map '
                       'directory') from exc
    except OSError as exc:
        raise MapError(f'{file}: manifest cannot be read ({exc})') from exc
    try:
        manifest = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
        manifest['model'] = normalise_model(manifest['model'], str(file))
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
    return manifest, hashlib.sha256(raw).hexdigest()


# ------------------------------------------------------------------------------ identity


@dataclass(frozen=True)
class MapIdentity:
    """
    Which map, and which version of it.

    ``uuid`` is written by the build (:data:`MAP_UUID_KEY`) and kept by appends and manifest
    edits; a map written before it existed gets one derived from its data files' checksums, so
    it is stable too. ``manifest_sha256`` changes with every change to the map (an append, a
    new calibration). ``map_id`` = ``<uuid>@<first 16 hex digits of the manifest sha256>``.
    """

    uuid: str
    manifest_sha256: str

    @property
    def map_id(self) -> str:
        """The identity as one string (messages, diagnostics, result files)."""
        return f'{self.uuid}@{self.manifest_sha256[:MAP_ID_HASH_CHARS]}'


def map_identity(manifest: Mapping[str, Any], manifest_sha256: str) -> MapIdentity:
    """Return the identity of a manifest read with :func:`parse_manifest`."""
    stored = manifest.get(MAP_UUID_KEY)
    try:
        return MapIdentity(str(uuid.UUID(str(stored))), manifest_sha256)
    except ValueError:
        pass  # absent (a map from before map_uuid) or not a uuid: derive a stable one
    files = json.dumps(manifest['files'], sort_keys=True, separators=(',', ':'))
    return MapIdentity(str(uuid.uuid5(_DERIVED_UUID_NAMESPACE, files)), manifest_sha256)


def new_map_uuid() -> str:
    """Return a fresh random map uuid (written by a build)."""
    return str(uuid.uuid4())


def check_files(directory: MapDirectory, manifest: Mapping[str, Any],
                checksums: bool) -> list[str]:
    """Return problems with presence, sizes and (optionally) SHA-256 of the data files."""
    problems = []
    files = manifest['files']
    for name in required_files(manifest):
        if name not in files:
            problems.append(f'{directory.shown(MANIFEST_NAME)}: no entry for data file {name}')
    for name, entry in files.items():
        file = directory.shown(name)
        size = directory.size(name)
        if size is None:
            problems.append(f'{file}: data file is missing')
        elif size != int(entry['bytes']):
            problems.append(f'{file}: size is {size} bytes, manifest says {entry["bytes"]} '
                            '(truncated or modified)')
        elif checksums and directory.sha256(name) != entry['sha256']:
            problems.append(f'{file}: SHA-256 differs from the manifest (corrupted)')
    return problems
