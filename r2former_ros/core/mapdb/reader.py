"""
Reading a map for localization: :class:`MapDatabase`.

Large arrays stay memory-mapped. Local ``x, y`` are not stored: they are patch centres
recomputed from the token index (:func:`r2former_ros.core.features.patch_centre_xy`). The exact
index (``IndexFlatIP``) is a copy of ``global.npy`` and is rebuilt at load time instead of being
stored; see :mod:`r2former_ros.core.mapdb.index` for the ``auto`` rule.

A map is read from what was opened: every file comes through one handle on the directory (see
:mod:`r2former_ros.core.mapdb.handle`), the arrays stay mapped from the files so opened, a stored
index file stays open for a later re-read, and thumbnails are copied into memory when they are
few (:data:`THUMBNAIL_COPY_MAX_BYTES`) or else read through the directory handle. A map rebuilt
or swapped at the same path while it is open is therefore never mixed into it: it keeps serving
the opened version (at worst without thumbnails, once a replaced directory is deleted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
import weakref

import faiss
import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros.core.errors import MapError
from r2former_ros.core.features import LOCAL_XY_ATT_COLUMNS, patch_centre_xy
from r2former_ros.core.mapdb import index as retrieval
from r2former_ros.core.mapdb.handle import MapDirectory
from r2former_ros.core.mapdb.npy import dequantize_int8
from r2former_ros.core.mapdb.schema import (
    ATTENTION_FILE,
    GLOBAL_FILE,
    INDEX_FILE,
    LOCAL_DESC_FILE,
    MANIFEST_NAME,
    PLACES_FILE,
    TOKEN_INDEX_FILE,
    MapIdentity,
    check_files,
    compare_model,
    expected_layout,
    geodetic_origin,
    map_identity,
    parse_manifest,
    position_frame_of,
    position_of,
)
from r2former_ros.core.mapdb.thumbnails import MapThumbnails, check_thumbnails
from r2former_ros.core.types import PlacePosition

if TYPE_CHECKING:
    import torch

    from r2former_ros.core.mapdb.torch_index import TorchExactIndex

# Thumbnails up to this many bytes in all are copied into memory when a map is opened (a few
# thousand 160-px previews); more are read through the directory handle on demand.
THUMBNAIL_COPY_MAX_BYTES = 32 * 1024 * 1024


def load_arrays(
    directory: MapDirectory, manifest: Mapping[str, Any], skip: Iterable[str] = ()
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Memory-map the data arrays and check dtypes and shapes against counts and the model."""
    arrays: dict[str, np.ndarray] = {}
    problems = []
    storage = manifest['storage']
    for name, (dtype, shape) in expected_layout(manifest).items():
        if name in skip:
            continue
        file = directory.shown(name)
        try:
            arr = directory.memmap_npy(name)
        except (OSError, ValueError, EOFError) as exc:
            problems.append(f'{file}: cannot be read as a .npy array ({exc})')
            continue
        stored_shape = storage.get('shapes', {}).get(name)
        if arr.dtype != dtype or arr.shape != shape:
            problems.append(f'{file}: holds {arr.dtype} {arr.shape}, expected {dtype} {shape}')
        elif stored_shape is not None and tuple(stored_shape) != shape:
            problems.append(f'{directory.shown(MANIFEST_NAME)}: storage shape of {name} is '
                            f'{stored_shape}, counts and model give {list(shape)}')
        else:
            arrays[name] = arr
    places = arrays.get(PLACES_FILE)
    if places is not None and not np.array_equal(places['id'], np.arange(places.shape[0])):
        problems.append(f'{directory.shown(PLACES_FILE)}: place ids are not 0..N-1')
    return arrays, problems


def read_stored_index(handle: IO[bytes], where: Path, manifest: Mapping[str, Any],
                      global_desc: np.ndarray) -> faiss.Index:
    """Read an approximate index from an open file and check it matches the descriptors."""
    kind = manifest['index_type']
    handle.seek(0)
    index = retrieval.read_index_from(handle, where)
    if index.ntotal != global_desc.shape[0] or index.d != global_desc.shape[1] or \
            retrieval.index_type_of(index) != kind:
        raise MapError(f'{where}: index holds {index.ntotal} x {index.d} '
                       f'({retrieval.index_type_of(index)}), the map has '
                       f'{global_desc.shape[0]} x {global_desc.shape[1]} ({kind})')
    return index


def open_index(directory: MapDirectory, manifest: Mapping[str, Any],
               global_desc: np.ndarray) -> faiss.Index:
    """Rebuild the exact index or load the stored one, checking it matches the descriptors."""
    if manifest['index_type'] == 'exact':
        return retrieval.build_index(np.asarray(global_desc), 'exact')
    with _open_index_file(directory) as handle:
        return read_stored_index(handle, directory.shown(INDEX_FILE), manifest, global_desc)


def _open_index_file(directory: MapDirectory) -> IO[bytes]:
    try:
        return directory.open(INDEX_FILE)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise MapError(f'{directory.shown(INDEX_FILE)}: faiss index file is missing') from exc


def _close_all(*resources: Any) -> None:
    for resource in resources:
        if resource is not None:
            resource.close()


class MapDatabase:
    """
    A map opened for localization; create it with :meth:`open`.

    Large arrays stay memory-mapped, so resident memory does not grow with the map except for
    the faiss index (the exact index is a copy of the global descriptors), which is released
    while a GPU answers the searches (:meth:`use_device`). Everything is read from the map
    that was opened (see the module docstring); :meth:`close` releases the open files early
    (garbage collection does it too).
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray],
        index: faiss.Index, search_params: dict[str, int | None], *,
        identity: MapIdentity, thumbnails: MapThumbnails, index_file: IO[bytes] | None = None,
    ) -> None:
        """Wrap already-checked parts; use :meth:`open` instead."""
        self.path = path
        self._manifest = manifest
        self._arrays = arrays
        # None while a device index answers: faiss's copy of the descriptors (1 GB at 1M places
        # for the exact index) is released then, and rebuilt if search returns to faiss.
        self._index: faiss.Index | None = index
        self._search_params = search_params  # nprobe / ef_search, reapplied on a rebuild
        self._model = manifest['model']
        self._device_index: TorchExactIndex | None = None
        self._identity = identity
        self._thumbnails = thumbnails
        self._index_file = index_file  # the stored index as opened, for a rebuild
        self._finalizer = weakref.finalize(self, _close_all, self._thumbnails, index_file)

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
            expected_model: model fields to require (any of checkpoint_sha256, backbone,
                input_hw, num_local, global_dim, local_dim, patch_size); others are ignored.
            verify_checksums: also hash every data file (reads the whole map).
            nprobe: override the stored IVF nprobe.
            ef_search: override the stored HNSW efSearch.

        Raises:
            MapError: missing or unparsable manifest, unsupported format,
                missing/truncated/corrupt files, wrong shapes or dtypes, or a model mismatch
                (naming the field and both values).
        """
        root = Path(path)
        directory = MapDirectory(root)
        index_file = thumbnails = None
        try:
            manifest, manifest_sha256 = parse_manifest(directory)
            if expected_model is not None:
                compare_model(manifest['model'], expected_model, str(root))
            problems = check_files(directory, manifest, verify_checksums)
            if verify_checksums:
                problems += check_thumbnails(directory, manifest)
            if not problems:
                arrays, problems = load_arrays(directory, manifest)
            if problems:
                raise MapError('; '.join(problems))
            if manifest['index_type'] == 'exact':
                index = retrieval.build_index(np.asarray(arrays[GLOBAL_FILE]), 'exact')
            else:
                index_file = _open_index_file(directory)
                index = read_stored_index(index_file, directory.shown(INDEX_FILE), manifest,
                                          arrays[GLOBAL_FILE])
            thumbnails = MapThumbnails.load(directory, manifest, THUMBNAIL_COPY_MAX_BYTES)
        except BaseException:
            _close_all(index_file, thumbnails)
            raise
        finally:
            if thumbnails is None or not thumbnails.holds(directory):
                directory.close()
        block = manifest.get('index', {})
        params = {'nprobe': nprobe or block.get('nprobe'),
                  'ef_search': ef_search or block.get('ef_search')}
        retrieval.set_search_params(index, **params)
        return cls(root, manifest, arrays, index, params,
                   identity=map_identity(manifest, manifest_sha256), thumbnails=thumbnails,
                   index_file=index_file)

    def close(self) -> None:
        """Release the open index file and directory handle (the arrays stay readable)."""
        self._finalizer()

    # -- metadata

    @property
    def manifest(self) -> dict[str, Any]:
        """The parsed manifest (do not modify)."""
        return self._manifest

    @property
    def identity(self) -> MapIdentity:
        """Which map and which version of it (uuid and manifest hash, see MapIdentity)."""
        return self._identity

    @property
    def map_id(self) -> str:
        """``<uuid>@<manifest hash prefix>``: what results and diagnostics name the map by."""
        return self.identity.map_id

    @property
    def origin(self) -> tuple[float, float, float]:
        """
        The (lat, lon, alt) origin of a GPS map's ENU frame.

        Raises:
            MapError: the map is in a pose frame (no GPS), which has no geodetic origin: GPS
                input cannot be placed on it.
        """
        return geodetic_origin(self._manifest, str(self.path))

    @property
    def position_frame(self) -> str:
        """
        Frame of the places' positions: ``'wgs84'`` or the poses' frame id.

        ``'wgs84'``: places from GPS, ENU metres about :attr:`origin`; else the frame id of
        the poses the map was built from (places' east, north, up = x, y, z in that frame).
        """
        return position_frame_of(self._manifest)

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

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """Every memory-mapped array by file name (read-only views; the writer copies them)."""
        return self._arrays

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
            (len(ids), K, 3 + D) float32: x, y (recomputed from the token index), attention,
            descriptor (int8 dequantised as q / 127).
        """
        rows = self._rows(ids)
        m = self._model
        out = np.empty((rows.size, m['num_local'], LOCAL_XY_ATT_COLUMNS + m['local_dim']),
                       dtype=np.float32)
        tokens = self._arrays[TOKEN_INDEX_FILE][rows].astype(np.int64)
        out[..., 0], out[..., 1] = patch_centre_xy(tokens, m['input_hw'], m['patch_size'])
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
            scores (Q, k) float32 cosine and ids (Q, k) int64, best first (approximate indexes
            may pad with id -1, score -inf).
        """
        q = np.asarray(query_global, dtype=np.float32)
        if q.shape[-1:] != (self._model['global_dim'],):
            raise MapError(f'{self.path}: query global descriptor has shape {q.shape}, the map '
                           f'stores global_dim {self._model["global_dim"]}')
        if self._device_index is not None:
            return self._device_index.search(q, k)
        return retrieval.search(self._faiss_index(), q, k)

    def _faiss_index(self) -> faiss.Index:
        if self._index is None:
            if self._index_file is None:  # exact: rebuilt from the mapped descriptors
                self._index = retrieval.build_index(np.asarray(self.global_desc), 'exact')
            else:
                self._index = read_stored_index(self._index_file, self.path / INDEX_FILE,
                                                self._manifest, self.global_desc)
            retrieval.set_search_params(self._index, **self._search_params)
        return self._index

    def use_device(self, device: str | torch.device | None, precision: str = 'fp16') -> None:
        """
        Search exactly on a torch device from now on, or (``None``) with faiss again.

        On a GPU the global descriptors are copied there once and every search is one matmul
        plus top-k over all places: exact, whatever approximate index the map stores
        (:mod:`r2former_ros.core.mapdb.torch_index`). The localizer calls this when its model
        runs on CUDA.
        """
        if device is None:
            self._device_index = None
            return
        # torch is imported only by maps that search with it.
        from r2former_ros.core.mapdb.torch_index import TorchExactIndex

        self._device_index = TorchExactIndex(self.global_desc, device, precision)
        self._index = None  # unused from now on; see __init__

    @property
    def retrieval_backend(self) -> str:
        """What answers :meth:`search`: ``'faiss <type>'`` or ``'torch exact <device> <fp>'``."""
        if self._device_index is not None:
            return (f'torch exact {self._device_index.device} '
                    f'{self._device_index.precision}')
        return f'faiss {self.index_type}'

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change IVF nprobe / HNSW efSearch of the map's faiss index (kept for a rebuild)."""
        retrieval.set_search_params(self._faiss_index(), nprobe=nprobe, ef_search=ef_search)
        changed = {'nprobe': nprobe, 'ef_search': ef_search}
        self._search_params.update({key: value for key, value in changed.items()
                                    if value is not None})

    def position(self, place_id: int) -> PlacePosition:
        """Return where place ``place_id`` is."""
        return position_of(self.places[int(self._rows([place_id])[0])])

    def thumbnail(self, place_id: int) -> NDArray[np.uint8] | None:
        """Return the RGB thumbnail of a place, or None when the map has none for it."""
        return self._thumbnails.image(int(self._rows([place_id])[0]))

    @property
    def thumbnails(self) -> MapThumbnails:
        """The opened map's thumbnails (names and encoded bytes, for copying them)."""
        return self._thumbnails


class _UsesDevice(Protocol):
    """The part of :class:`~r2former_ros.core.mapdb.MapDatabase` that picks the backend."""

    @property
    def retrieval_backend(self) -> str: ...

    def use_device(self, device: str | torch.device | None, precision: str = ...) -> None: ...


def follow_model_device(database: _UsesDevice, device: torch.device) -> bool:
    """
    Move a map's retrieval to the model's device when that is a GPU; return whether it moved.

    The localizer calls this: a CUDA model means the GPU is there and exact search on it is
    faster than any CPU index. CPU models keep faiss (and the map's tuned index).
    """
    if device.type != 'cuda' or not database.retrieval_backend.startswith('faiss'):
        return False
    database.use_device(device)
    return True
