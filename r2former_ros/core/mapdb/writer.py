"""
Writing a map: :class:`MapWriter`.

The writer streams places into a temporary sibling directory and swaps it into place at commit
(see :mod:`r2former_ros.core.mapdb.atomic`), so a crash leaves the old map or the new one at the
target path, never a half-written map. The swap happens under the map's change lock
(:mod:`r2former_ros.core.mapdb.locking`); an append also checks that the map it copied is still
the one at the path, so a calibration written meanwhile is never silently dropped.

Every new map gets a random ``map_uuid``; an append keeps the uuid of the map it extends (the
manifest hash tells the versions apart, see :class:`~r2former_ros.core.mapdb.schema.MapIdentity`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from pathlib import Path
import shutil
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros import __version__
from r2former_ros.core.errors import ConfigError, MapError
from r2former_ros.core.features import LOCAL_XY_ATT_COLUMNS, ImageFeatures
from r2former_ros.core.geo.coords import WGS84_FRAME
from r2former_ros.core.hashing import file_sha256
from r2former_ros.core.mapdb import index as retrieval
from r2former_ros.core.mapdb.atomic import (
    fsync_path,
    make_sibling_dir,
    swap_into_place,
    write_json_synced,
)
from r2former_ros.core.mapdb.batch_checks import check_batch
from r2former_ros.core.mapdb.handle import MapDirectory
from r2former_ros.core.mapdb.locking import check_version, map_lock
from r2former_ros.core.mapdb.npy import INT8_SCALE, NpyAppender, quantize_int8
from r2former_ros.core.mapdb.reader import MapDatabase
from r2former_ros.core.mapdb.schema import (
    ARRAY_FILES,
    ATTENTION_FILE,
    FORMAT_VERSION,
    GLOBAL_FILE,
    INDEX_FILE,
    LOCAL_DESC_FILE,
    LOCAL_FORMATS,
    MANIFEST_NAME,
    MAP_UUID_KEY,
    NO_GEODETIC_ORIGIN,
    PLACES_FILE,
    TOKEN_INDEX_FILE,
    PlaceRecord,
    dtype_label,
    new_map_uuid,
    normalise_model,
    parse_manifest,
    place_rows,
    position_frame_of,
    row_layout,
    utc_now,
)
from r2former_ros.core.mapdb.thumbnails import DEFAULT_THUMBNAIL_WIDTH, ThumbnailStore
from r2former_ros.core.mapdb.tuning import TuneSettings, tune_index


def is_replaceable(target: Path) -> bool:
    """Return True when ``target`` is absent, an empty directory, or a map directory."""
    if not target.exists() and not target.is_symlink():
        return True
    if not target.is_dir():
        return False
    return (target / MANIFEST_NAME).is_file() or not any(target.iterdir())


def _origin_dict(origin: Mapping[str, float]) -> dict[str, float]:
    try:
        return {key: float(origin[key]) for key in ('lat', 'lon', 'alt')}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f'origin must have numeric lat, lon, alt, got {origin!r}') from exc


class MapWriter:
    """
    Streams places into a new map directory and commits it atomically.

    Use it as a context manager: leaving the block normally commits (unless :meth:`commit` was
    already called); an exception, KeyboardInterrupt included, deletes the temporary directory
    and leaves any previous map at the target untouched.

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
        tune: TuneSettings | None = None,
        position_frame: str = WGS84_FRAME,
    ) -> None:
        """
        Prepare a writer; nothing is written before the ``with`` block starts.

        Args:
            path: the map directory to create or replace.
            model: model block: backbone, checkpoint, checkpoint_sha256, input_hw [H, W],
                num_local K, global_dim G, local_dim D, patch_size and optionally
                preprocessing.
            local_format: ``'fp16'`` or ``'int8'`` local descriptors.
            index_type: ``'auto'``, ``'exact'``, ``'ivf'`` or ``'hnsw'``.
            nprobe: IVF cells scanned per query (stored as the default).
            ef_search: HNSW efSearch (stored as the default).
            exact_max: ``'auto'`` uses the exact index below this many places.
            thumbnail_width: thumbnail width in pixels.
            origin: ENU origin ``{'lat', 'lon', 'alt'}``; may be set later.
            sources: initial source records; see :meth:`add_source`.
            overwrite: replace an existing map at ``path``.
            tune: tune nprobe/efSearch of an approximate index on the map's own descriptors
                (:mod:`r2former_ros.core.mapdb.tuning`); None keeps ``nprobe``/``ef_search``.
            position_frame: ``'wgs84'`` (places from GPS, ENU about ``origin``) or the frame
                id of the poses the places come from (their east, north, up are x, y, z in
                that frame); such a map has no geodetic origin (``origin`` stays None).
        """
        self._target = Path(path)
        self._model = normalise_model(model, str(self._target))
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
        if not position_frame:
            raise ConfigError(f'{self._target}: position_frame must name a frame')
        self._position_frame = str(position_frame)
        if origin is not None and self._position_frame != WGS84_FRAME:
            raise ConfigError(f"{self._target}: a map in frame '{position_frame}' has no "
                              f'geodetic origin, got {origin!r}')
        self._origin = None if origin is None else _origin_dict(origin)
        self._sources = [dict(s) for s in sources or []]
        self._overwrite = overwrite
        self._tune = tune
        self._base: MapDatabase | None = None
        self._created: str | None = None
        self._map_uuid = new_map_uuid()
        self.calibration: dict[str, Any] | None = None
        self._tmp: Path | None = None
        self._out: dict[str, NpyAppender] = {}
        self._thumbs: ThumbnailStore | None = None
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
        tune: TuneSettings | None = None,
    ) -> MapWriter:
        """
        Return a writer that adds places to an existing map.

        The existing map is checked against ``model`` (checkpoint SHA-256, backbone, input
        size, dims) and copied into the temporary directory when the ``with`` block starts; new
        ids continue after the old ones and the index is rebuilt at commit. The old map stays
        in place until the atomic swap.

        Raises:
            MapError: the map is missing, corrupt or built with another model.
        """
        base = MapDatabase.open(path, expected_model=model)
        manifest = base.manifest
        index_block = manifest.get('index', {})
        frame = position_frame_of(manifest)
        writer = cls(
            path, manifest['model'],
            local_format=manifest['storage']['local_format'],
            index_type=index_type or index_block.get('requested', manifest['index_type']),
            nprobe=nprobe or index_block.get('nprobe', retrieval.DEFAULT_NPROBE),
            ef_search=ef_search or index_block.get('ef_search', retrieval.DEFAULT_EF_SEARCH),
            thumbnail_width=(manifest.get('thumbnails') or {}).get(
                'width', DEFAULT_THUMBNAIL_WIDTH),
            origin=manifest['origin'] if frame == WGS84_FRAME else None,
            sources=manifest['sources'], overwrite=True, tune=tune, position_frame=frame)
        writer._base = base
        writer._created = manifest.get('created')
        writer._map_uuid = base.identity.uuid
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
    ) -> None:
        # Exceptions always propagate; they only decide between abort and commit.
        if exc_type is not None:
            self.abort()
        elif self._state == 'open':
            self.commit()

    # -- metadata

    @property
    def origin(self) -> dict[str, float] | None:
        """The ENU origin ``{'lat', 'lon', 'alt'}``, or None until set."""
        return None if self._origin is None else dict(self._origin)

    @property
    def position_frame(self) -> str:
        """``'wgs84'`` or the frame id of the poses the places come from."""
        return self._position_frame

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

        Appending cannot move the origin, because stored places are in its frame; a map in a
        pose frame has no geodetic origin to set.
        """
        if self._position_frame != WGS84_FRAME:
            raise MapError(f"{self._target}: the map holds positions in frame "
                           f"'{self._position_frame}', which has no geodetic origin")
        new = _origin_dict({'lat': lat, 'lon': lon, 'alt': alt})
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
        if not is_replaceable(self._target):
            raise MapError(f'{self._target}: exists and is not an r2former_ros map; '
                           'refusing to overwrite it')
        is_map = (self._target / MANIFEST_NAME).is_file()
        if is_map and not self._overwrite:
            raise MapError(f'{self._target}: a map already exists there; pass overwrite=True '
                           'to replace it or append to it')

    def _require_open(self) -> tuple[Path, ThumbnailStore]:
        if self._state != 'open' or self._tmp is None or self._thumbs is None:
            raise MapError(f'{self._target}: writer is {self._state}; use it as a context '
                           'manager and add places before commit')
        return self._tmp, self._thumbs

    def _start(self) -> None:
        if self._state != 'new':
            raise MapError(f'{self._target}: a MapWriter can be entered only once')
        self._target.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = make_sibling_dir(self._target, 'tmp')
        self._thumbs = ThumbnailStore(self._tmp, self._thumb_width, self._target)
        self._state = 'open'
        try:
            for name, (dtype, row_shape) in row_layout(self._model, self._local_format).items():
                self._out[name] = NpyAppender(self._tmp / name, dtype, row_shape)
            if self._base is not None:
                for name, arr in self._base.arrays.items():
                    self._out[name].copy_from(arr)
                self._count = self._base.num_places
                self._thumbs.copy_from(self._base.thumbnails)
        except BaseException:
            self.abort()
            raise

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
            features: N images' features; local x, y must be the patch centres of their token
                index (:func:`r2former_ros.core.features.patch_centre_xy`).
            places: N place records, same order.
            thumbnails: N RGB uint8 images (entries may be None), or None.

        Returns:
            The (N,) int64 ids given to the places.

        Raises:
            MapError: shapes disagree with the model, values are not finite, token indices are
                outside the patch grid, or x, y disagree.
        """
        _, thumbs = self._require_open()
        n = len(features)
        check_batch(self._model, features, places, thumbnails, self._target)
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
        self._out[PLACES_FILE].append(place_rows(ids, places))
        for place_id, image in zip(ids, thumbnails or [None] * n, strict=True):
            if image is not None:
                thumbs.add_image(int(place_id), image)
        self._count += n
        return ids

    # -- commit

    def commit(self) -> Path:
        """
        Finish the files, build the index, write the manifest and swap the map in.

        Every file of the new map and its directories are fsync'ed before the swap, and the
        parent directory after it.

        Returns:
            The target path.

        Raises:
            MapError: no places were added, the origin is unset, or the target became a
                non-map directory meanwhile. The temporary directory is removed on any failure.
        """
        tmp, thumbs = self._require_open()
        try:
            if self._count == 0:
                raise MapError(f'{self._target}: no places were added; not writing an empty map')
            if self._origin is None and self._position_frame == WGS84_FRAME:
                raise MapError(f'{self._target}: ENU origin was never set (set_origin)')
            for out in self._out.values():
                out.close()  # fsyncs each array file
            self._out.clear()
            index_block = self._write_index(tmp)
            write_json_synced(tmp / MANIFEST_NAME, self._manifest(tmp, index_block, thumbs))
            thumbs.sync()
            fsync_path(tmp)
            with map_lock(self._target):
                self._check_target()
                if self._base is not None:
                    self._check_base_unchanged()
                swap_into_place(tmp, self._target)
        except BaseException:
            self.abort()
            raise
        self._state = 'committed'
        return self._target

    def _check_base_unchanged(self) -> None:
        """Refuse to replace a map other than the one copied (e.g. one calibrated meanwhile)."""
        assert self._base is not None
        try:
            with MapDirectory(self._target) as directory:
                _, current = parse_manifest(directory)
        except MapError as exc:
            raise MapError(f'{self._target}: the map being appended to is gone or unreadable '
                           f'({exc}); the appended map was not written') from exc
        check_version(self._target, self._base.identity.manifest_sha256, current,
                      'the appended map')

    def _write_index(self, tmp: Path) -> dict[str, Any]:
        kind = retrieval.choose_index_type(self._index_request, self._count, self._exact_max)
        block: dict[str, Any] = {'type': kind, 'requested': self._index_request,
                                 'nprobe': int(self._nprobe), 'ef_search': int(self._ef_search)}
        if kind == 'exact':
            return block
        vectors = np.load(tmp / GLOBAL_FILE, allow_pickle=False)
        if self._tune is not None:
            tuned = tune_index(vectors, kind, self._tune)
            block['tuning'] = tuned.block
            if tuned.index is None:
                block['type'] = 'exact'
                return block
            index = tuned.index
            # The tuned value is this map's default from now on (MapDatabase.open applies it).
            block[tuned.block['param']] = int(tuned.block['value'])
        else:
            index = retrieval.build_index(vectors, kind, nprobe=self._nprobe,
                                          ef_search=self._ef_search)
        retrieval.save_index(index, tmp / INDEX_FILE)
        fsync_path(tmp / INDEX_FILE)
        # Keep the requested nprobe/efSearch: the index clips nprobe to nlist, and an append
        # with more places may allow the full value again.
        block.update({key: value for key, value in retrieval.search_params(index).items()
                      if key not in ('nprobe', 'ef_search')})
        return block

    def _manifest(self, tmp: Path, index_block: dict[str, Any],
                  thumbs: ThumbnailStore) -> dict[str, Any]:
        layout = {}
        for name in ARRAY_FILES:
            arr = np.load(tmp / name, mmap_mode='r', allow_pickle=False)
            layout[name] = (arr.dtype, list(arr.shape))
        data_files = list(ARRAY_FILES) + ([INDEX_FILE] if index_block['type'] != 'exact' else [])
        files = {name: {'bytes': os.path.getsize(tmp / name), 'sha256': file_sha256(tmp / name)}
                 for name in data_files}
        now = utc_now()
        return {
            'format_version': FORMAT_VERSION,
            'tool_version': __version__,
            MAP_UUID_KEY: self._map_uuid,
            'created': self._created or now,
            'modified': now,
            'model': self._model,
            'storage': {
                'local_format': self._local_format,
                'int8_scale': INT8_SCALE if self._local_format == 'int8' else None,
                'dtypes': {name: dtype_label(dt) for name, (dt, _) in layout.items()},
                'shapes': {name: shape for name, (_, shape) in layout.items()},
            },
            'counts': {'num_places': self._count},
            'sources': self._sources,
            'origin': self._origin if self._origin is not None else dict(NO_GEODETIC_ORIGIN),
            'position_frame': self._position_frame,
            'calibration': self.calibration,
            'index_type': index_block['type'],
            'index': index_block,
            'files': files,
            'thumbnails': thumbs.manifest_block(),
        }
