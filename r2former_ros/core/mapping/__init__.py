"""
Map building: recorded bags (or geotagged image folders) -> a map directory.

Pipeline for bags:
    1. Plan (no pixels decoded): stream the image topic's stamps (:func:`bags.iter_image_stamps`),
       read the NavSatFix topic and the optional pose topic, geotag every stamp
       (:mod:`geotag`: interpolation in ENU, images in GPS gaps or outside the fixes dropped and
       counted) and pick keyframes per bag (:mod:`keyframes`).
    2. Extract: a second pass over the bags decodes only the kept images. A background thread
       reads, decodes, resizes and normalises the next batch while the model encodes the
       current one; a bounded queue keeps at most ``PREFETCH_BATCHES`` batches in memory, so
       memory stays flat for any bag size.
    3. Write: :class:`mapdb.MapWriter` builds the map in a temporary sibling directory and renames
       it into place, so every failure (bad input, model error, Ctrl-C) leaves the old map or no
       map. ``append`` goes through :meth:`MapWriter.append`, which refuses another model.
    4. Calibrate the confidence model when :mod:`~r2former_ros.core.localize.calibration`
       is available.

Undecodable images (an unknown encoding, a corrupt JPEG) are skipped and counted per source in
the manifest (``undecodable_skipped``): one bad frame must not end an hour-long mapping run.
If none of the selected images decodes, the build fails naming the first problem.

Default keyframe spacing, ``DEFAULT_MIN_DISTANCE_M`` = 2 m: R2Former and VPR benchmarks count a
match as correct within 25 m, and localization wants 10-25 m; a place every 2 m keeps several
map images inside any 10 m radius (robust to occlusions and viewpoint changes) while a 10 km
route stays at 5000 places (about 0.34 GB at 67 KB per place in the int8 storage). Without the
rule a 15 Hz camera at walking speed (1.4 m/s) gives 10 images per metre, 20 times the data for
nearly the same recall.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
import logging
import os
from pathlib import Path
import queue
import sys
import threading
import time
from typing import Any, Generic, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray
import torch
from tqdm import tqdm

from r2former_ros.core.errors import (
    BagError,
    CheckpointError,
    ConfigError,
    ImageError,
    MapError,
    R2FormerError,
)
from r2former_ros.core.geo.coords import place_position
from r2former_ros.core.geo.geotag import filter_fixes, geotag_images
from r2former_ros.core.geo.keyframes import select_keyframes
from r2former_ros.core.io import bags
from r2former_ros.core.io import folders as image_sources
from r2former_ros.core.mapdb import (
    DEFAULT_THUMBNAIL_WIDTH,
    LOCAL_FORMATS,
    MANIFEST_NAME,
    MapWriter,
    PlaceRecord,
    map_info,
)
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.places.factory import load_place_model
from r2former_ros.core.places.preprocessing import preprocess
from r2former_ros.core.types import PlacePosition

LOG = logging.getLogger(__name__)

DEFAULT_MIN_DISTANCE_M = 2.0
DEFAULT_MAX_GPS_GAP_S = 1.0
DEFAULT_BATCH_SIZE = 16
CALIBRATION_THRESHOLD_M = 25.0
PREFETCH_BATCHES = 2
"""Decoded batches waiting for the model; bounds memory while keeping the model busy."""
INDEX_TYPES = ('auto', 'exact', 'ivf', 'hnsw')

_Key = tuple[str, int]  # (bag path or image folder, message index or row)
_T = TypeVar('_T')


@dataclass
class BuildOptions:
    """
    Everything :func:`build_map` needs besides the model; mirrors the ``build_map`` flags.

    Exactly one source: ``bags`` (with ``image_topic`` and ``gps_topic``), or ``images_dir``
    with ``layout='vg'`` or ``csv_file``.
    """

    out: str | os.PathLike[str]
    bags: Sequence[str | os.PathLike[str]] = ()
    image_topic: str | None = None
    gps_topic: str | None = None
    pose_topic: str | None = None
    images_dir: str | os.PathLike[str] | None = None
    csv_file: str | os.PathLike[str] | None = None
    layout: str | None = None
    min_distance_m: float | None = DEFAULT_MIN_DISTANCE_M
    min_interval_s: float | None = None
    all_frames: bool = False
    max_gps_gap_s: float = DEFAULT_MAX_GPS_GAP_S
    stamp_source: str = 'header'
    batch_size: int = DEFAULT_BATCH_SIZE
    append: bool = False
    overwrite: bool = False
    local_format: str = 'int8'
    index_type: str | None = None  # None: 'auto' for a new map, the stored choice on append
    thumbnails: bool = True
    calibrate: bool = True
    progress: bool = True
    backbone: str = 'r2former'
    checkpoint: str | os.PathLike[str] | None = None
    device: str = 'auto'
    input_hw: tuple[int, int] | None = None
    num_local: int | None = None
    precision: str = 'fp32'  # opt-in bf16/fp16 on CUDA


@dataclass
class BuildReport:
    """What a build did: the map, the places added, per-source counters and where time went."""

    path: Path
    num_places: int  # in the map, earlier places included when appending
    added: int
    sources: list[dict[str, Any]]  # the sources added by this build, as in the manifest
    calibrated: bool
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Planned:
    """An image chosen to become a place; ``slot`` indexes the build's new sources."""

    slot: int
    stamp_ns: int
    msg_index: int
    position: PlacePosition
    path: Path | None = None  # folder sources only


@dataclass
class _Plan:
    """The outcome of planning: the ENU origin, new source blocks and the places to extract."""

    origin: tuple[float, float, float]
    sources: list[dict[str, Any]]
    places: dict[_Key, _Planned]


@dataclass
class _Batch:
    """A batch ready for the model: normalised tensor (CPU models) or RGB images (others)."""

    keys: list[_Key]
    tensor: torch.Tensor | None
    rgb: list[NDArray[np.uint8]] | None
    thumbnails: list[NDArray[np.uint8]] | None


# ------------------------------------------------------------------------------ validation


def _check_options(opts: BuildOptions) -> None:
    """
    Reject inconsistent options before any bag is read or model loaded.

    Raises:
        ConfigError: Conflicting or out-of-range options.
        MapError: The output exists without overwrite/append, or append has no map.

    """
    if bool(opts.bags) == (opts.images_dir is not None):
        raise ConfigError('give either bags (--bag) or an image folder (--images), not both '
                          'and not neither')
    if opts.bags and not (opts.image_topic and opts.gps_topic):
        raise ConfigError('bags need --image-topic and --gps-topic (see --list-topics)')
    if opts.images_dir is not None and (opts.layout is None) == (opts.csv_file is None):
        raise ConfigError('an image folder needs exactly one of --csv FILE or --layout vg')
    if opts.layout is not None and opts.layout not in image_sources.LAYOUTS:
        raise ConfigError(f'layout {opts.layout!r} is not one of '
                          f'{", ".join(image_sources.LAYOUTS)}')
    if opts.append and opts.overwrite:
        raise ConfigError('--append and --overwrite exclude each other')
    if opts.batch_size < 1:
        raise ConfigError(f'batch size must be >= 1, got {opts.batch_size}')
    if not opts.max_gps_gap_s > 0:
        raise ConfigError(f'max GPS gap must be > 0 s, got {opts.max_gps_gap_s}')
    if not opts.all_frames and opts.min_distance_m is None and opts.min_interval_s is None:
        raise ConfigError('keyframing needs --min-distance or --min-interval (or --all-frames)')
    for name, value in (('min distance', opts.min_distance_m),
                        ('min interval', opts.min_interval_s)):
        if value is not None and not value >= 0:
            raise ConfigError(f'{name} must be >= 0, got {value}')
    if opts.local_format not in LOCAL_FORMATS:
        raise ConfigError(f'local format {opts.local_format!r} is not one of '
                          f'{", ".join(LOCAL_FORMATS)}')
    if opts.index_type is not None and opts.index_type not in INDEX_TYPES:
        raise ConfigError(f'index type {opts.index_type!r} is not one of {", ".join(INDEX_TYPES)}')
    out = Path(opts.out)
    is_map = (out / MANIFEST_NAME).is_file()
    if opts.append and not is_map:
        raise MapError(f'{out}: no map to append to (no {MANIFEST_NAME})')
    if not (opts.append or opts.overwrite) and is_map:
        raise MapError(f'{out}: a map already exists; pass --overwrite to replace it or '
                       '--append to add to it')
    if out.exists() and not out.is_dir():
        raise MapError(f'{out}: exists and is not a directory')
    if out.is_dir() and not is_map and any(out.iterdir()):
        raise MapError(f'{out}: exists, is not empty and is not a map; refusing to write there')


# -------------------------------------------------------------------------------- planning


def _progress(opts: BuildOptions, **kwargs: Any) -> tqdm:
    """Make a tqdm bar on stderr, off when not asked for or when stderr is not a terminal."""
    enabled = opts.progress and sys.stderr.isatty()
    return tqdm(disable=not enabled, file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                **kwargs)


def _read_stamps(opts: BuildOptions) -> dict[str, list[bags.ImageStamp]]:
    """Image stamps of every bag, grouped by bag path in reading order."""
    total = bags.count_messages(opts.bags, opts.image_topic)
    grouped: dict[str, list[bags.ImageStamp]] = {}
    with _progress(opts, total=total, unit='img', desc='reading stamps') as bar:
        for stamp in bags.iter_image_stamps(opts.bags, opts.image_topic,
                                            stamp_source=opts.stamp_source):
            grouped.setdefault(stamp.bag_path, []).append(stamp)
            bar.update(1)
    return grouped


def _plan_bags(opts: BuildOptions, origin: tuple[float, float, float] | None) -> _Plan:
    """
    Geotag and keyframe every image of the bags without decoding pixels.

    Raises:
        BagError: Unreadable bags, missing topics, no usable fix, or no geotagged image.

    """
    grouped = _read_stamps(opts)
    if not grouped:
        raise BagError(f'topic {opts.image_topic} has no messages in '
                       f'{", ".join(str(b) for b in opts.bags)}')
    fixes = bags.read_navsat(opts.bags, opts.gps_topic, stamp_source=opts.stamp_source)
    usable = filter_fixes(fixes)
    if len(usable) == 0:
        raise BagError(f'no usable GPS fix on {opts.gps_topic}: {len(fixes)} NavSatFix '
                       'message(s), none with status >= STATUS_FIX and a finite, non-(0, 0) '
                       'position')
    poses = (bags.read_poses(opts.bags, opts.pose_topic, stamp_source=opts.stamp_source)
             if opts.pose_topic else None)
    if origin is None:
        origin = (float(usable.lat[0]), float(usable.lon[0]), float(usable.alt[0]))
    plan = _Plan(origin, [], {})
    for slot, (bag_path, stamps) in enumerate(grouped.items()):
        stamp_ns = np.array([s.stamp_ns for s in stamps], dtype=np.int64)
        msg_index = np.array([s.index for s in stamps], dtype=np.int64)
        # Receive order is not always stamp order; keyframing walks the images in time.
        order = np.argsort(stamp_ns, kind='stable')
        tags = geotag_images(stamp_ns[order], fixes, max_gap_s=opts.max_gps_gap_s, poses=poses,
                             origin=origin)
        kept = select_keyframes(tags.stamp_ns, tags.east, tags.north,
                                min_distance_m=opts.min_distance_m,
                                min_interval_s=opts.min_interval_s, all_frames=opts.all_frames)
        for k in kept:
            heading = float(tags.heading[k])
            index = int(msg_index[order[tags.image_index[k]]])
            position = place_position(float(tags.lat[k]), float(tags.lon[k]), float(tags.alt[k]),
                                      origin, None if np.isnan(heading) else heading)
            plan.places[(bag_path, index)] = _Planned(slot, int(tags.stamp_ns[k]), index,
                                                      position)
        plan.sources.append({
            'kind': 'rosbag', 'bag': str(Path(bag_path).resolve()),
            'image_topic': opts.image_topic, 'gps_topic': opts.gps_topic,
            'pose_topic': opts.pose_topic, 'stamp_source': opts.stamp_source,
            'images_read': len(stamps), 'geotagged': int(tags.image_index.size),
            'dropped_gps_gap': tags.n_dropped_gap,
            'dropped_outside_fixes': tags.n_dropped_outside,
            'not_keyframe': int(tags.image_index.size - kept.size), 'selected': int(kept.size),
            'kept': 0, 'undecodable_skipped': 0, 'usable_fixes': tags.n_usable_fixes,
            'max_gps_gap_s': opts.max_gps_gap_s,
            'keyframes': {'min_distance_m': opts.min_distance_m,
                          'min_interval_s': opts.min_interval_s, 'all_frames': opts.all_frames},
        })
        LOG.info('%s: %d images, %d geotagged (%d in GPS gaps > %.2f s, %d outside the fixes), '
                 '%d keyframes', bag_path, len(stamps), tags.image_index.size,
                 tags.n_dropped_gap, opts.max_gps_gap_s, tags.n_dropped_outside, kept.size)
    if not plan.places:
        read = sum(s['images_read'] for s in plan.sources)
        gap = sum(s['dropped_gps_gap'] for s in plan.sources)
        outside = sum(s['dropped_outside_fixes'] for s in plan.sources)
        raise BagError(
            f'no image on {opts.image_topic} could be geotagged from {opts.gps_topic}: of {read} '
            f'images, {outside} lie outside the time span of the {len(usable)} usable fixes and '
            f'{gap} in GPS gaps longer than {opts.max_gps_gap_s} s (do images and fixes share '
            'a clock? is --max-gps-gap too small?)'
        )
    return plan


def _plan_folder(opts: BuildOptions, origin: tuple[float, float, float] | None) -> _Plan:
    """Every image of a VG-layout or CSV folder becomes a place."""
    folder = Path(opts.images_dir or '')
    if opts.csv_file is not None:
        images = image_sources.read_csv_folder(folder, opts.csv_file)
    else:
        images = image_sources.read_vg_folder(folder)
    if origin is None:
        origin = (images[0].lat, images[0].lon, images[0].alt)
    root = str(folder.resolve())
    places = {
        (root, row): _Planned(0, 0, row, place_position(im.lat, im.lon, im.alt, origin,
                                                        im.heading), im.path)
        for row, im in enumerate(images)
    }
    source = {
        'kind': 'folder', 'images_dir': root, 'layout': 'csv' if opts.csv_file else opts.layout,
        'csv': None if opts.csv_file is None else str(Path(opts.csv_file).resolve()),
        'images_read': len(images), 'selected': len(images), 'kept': 0,
        'undecodable_skipped': 0,
    }
    return _Plan(origin, [source], places)


# ------------------------------------------------------------------------------ extraction


class _Prefetcher(Generic[_T]):
    """
    Runs an iterator in a background thread, at most ``depth`` items ahead of the consumer.

    Exceptions in the thread are re-raised in the consumer; closing (also on the consumer's
    errors and Ctrl-C) stops the thread after its current item and closes the iterator there,
    so the bag files it holds are released.
    """

    def __init__(self, items: Iterator[_T], depth: int) -> None:
        self._items = items
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='map-decode', daemon=True)

    def __enter__(self) -> _Prefetcher[_T]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # Unblock a producer waiting on a full queue.
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put(('item', item)):
                    return
            self._put(('end', None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer thread
            self._put(('error', err))
        finally:
            close = getattr(self._items, 'close', None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[_T]:
        while True:
            kind, value = self._queue.get()
            if kind == 'end':
                return
            if kind == 'error':
                raise value
            yield value


def _thumbnail(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Shrink to the map's thumbnail width here, so queued batches carry small images."""
    height = max(1, round(rgb.shape[0] * DEFAULT_THUMBNAIL_WIDTH / rgb.shape[1]))
    return cv2.resize(rgb, (DEFAULT_THUMBNAIL_WIDTH, height), interpolation=cv2.INTER_AREA)


def _batches(
    pairs: Iterator[tuple[_Key, NDArray[np.uint8]]], model: PlaceModel, batch_size: int,
    thumbnails: bool, timing: dict[str, float],
) -> Iterator[_Batch]:
    """Group decoded images into model batches (runs in the prefetch thread)."""
    on_cpu = model.device.type == 'cpu'

    def pack(keys: list[_Key], rgb: list[NDArray[np.uint8]]) -> _Batch:
        start = time.perf_counter()
        # On CPU the resize/normalise overlaps inference here; on a GPU it is faster there.
        tensor = preprocess(rgb, model.input_hw, model.mean, model.std, 'cpu') if on_cpu else None
        thumbs = [_thumbnail(image) for image in rgb] if thumbnails else None
        timing['preprocess_s'] += time.perf_counter() - start
        return _Batch(keys, tensor, None if on_cpu else rgb, thumbs)

    keys: list[_Key] = []
    rgb: list[NDArray[np.uint8]] = []
    stream = iter(pairs)
    try:
        while True:
            start = time.perf_counter()
            try:
                key, image = next(stream)
            except StopIteration:
                break
            finally:
                timing['read_decode_s'] += time.perf_counter() - start
            keys.append(key)
            rgb.append(image)
            if len(keys) == batch_size:
                yield pack(keys, rgb)
                keys, rgb = [], []
        if keys:
            yield pack(keys, rgb)
    finally:
        close = getattr(stream, 'close', None)
        if close is not None:
            close()


def _bag_pairs(opts: BuildOptions, plan: _Plan,
               skips: list[str]) -> Iterator[tuple[_Key, NDArray[np.uint8]]]:
    """Decode the planned images of the bags (second pass)."""
    records = bags.iter_images(
        opts.bags, opts.image_topic or '', stamp_source=opts.stamp_source,
        skip_undecodable=True, select=lambda bag, _topic, index: (bag, index) in plan.places,
        on_skip=skips.append)
    try:
        for record in records:
            yield (record.bag_path, record.index), record.rgb
    finally:
        records.close()


def _folder_pairs(plan: _Plan, skips: list[str]) -> Iterator[tuple[_Key, NDArray[np.uint8]]]:
    """Read the planned images of a folder."""
    for key, planned in plan.places.items():
        try:
            yield key, image_sources.read_image_file(planned.path or '')
        except ImageError as err:
            LOG.warning('skipping undecodable image: %s', err)
            skips.append(str(err))


def _encode(model: PlaceModel, batch: _Batch) -> Any:
    """Run the model on one batch."""
    with torch.inference_mode():
        if batch.tensor is not None:
            return model.encode_batch(batch.tensor.to(model.device))
        images = batch.rgb or []
        return model.encode_batch(preprocess(images, model.input_hw, model.mean, model.std,
                                             model.device))


def _extract(opts: BuildOptions, plan: _Plan, model: PlaceModel, writer: MapWriter,
             source_ids: list[int], timing: dict[str, float]) -> list[int]:
    """
    Decode, encode and add every planned place; return the places kept per slot.

    Raises:
        ImageError: If not a single planned image could be decoded.

    """
    skips: list[str] = []
    pairs = _bag_pairs(opts, plan, skips) if opts.bags else _folder_pairs(plan, skips)
    kept = [0] * len(plan.sources)
    batches = _batches(pairs, model, opts.batch_size, opts.thumbnails, timing)
    with _Prefetcher(batches, PREFETCH_BATCHES) as prefetched, \
            _progress(opts, total=len(plan.places), unit='img', desc='extracting') as bar:
        stream = iter(prefetched)
        while True:
            start = time.perf_counter()
            batch = next(stream, None)
            timing['wait_s'] += time.perf_counter() - start
            if batch is None:
                break
            start = time.perf_counter()
            features = _encode(model, batch)
            timing['model_s'] += time.perf_counter() - start
            start = time.perf_counter()
            planned = [plan.places[key] for key in batch.keys]
            records = [PlaceRecord(p.stamp_ns, p.position, source_ids[p.slot], p.msg_index)
                       for p in planned]
            writer.add(features, records, batch.thumbnails)
            timing['write_s'] += time.perf_counter() - start
            for p in planned:
                kept[p.slot] += 1
            bar.update(len(planned))
    if skips and sum(kept) == 0:
        raise ImageError(f'none of the {len(plan.places)} selected images could be decoded; '
                         f'first problem: {skips[0]}')
    if skips:
        LOG.warning('%d of %d selected images could not be decoded and were skipped '
                    '(first: %s)', len(skips), len(plan.places), skips[0])
    return kept


# ---------------------------------------------------------------------------------- build


def _calibrate(path: Path, model: PlaceModel) -> bool:
    """Fit the confidence calibration when that module is installed; never fails the build."""
    try:
        from r2former_ros.core.localize.calibration import calibrate_map  # noqa: PLC0415 - optional
    except ImportError as err:
        LOG.info('confidence calibration skipped (%s)', err)
        return False
    try:
        calibrate_map(path, model, threshold_m=CALIBRATION_THRESHOLD_M)
    except R2FormerError as err:
        # The map is already committed and usable; calibration can be rerun on its own.
        LOG.warning('map %s written, but not calibrated: %s', path, err)
        return False
    return True


def _load_model(opts: BuildOptions) -> PlaceModel:
    return load_place_model(opts.backbone, opts.checkpoint, opts.device, opts.input_hw,
                            opts.num_local, precision=opts.precision)


def build_map(opts: BuildOptions, model: PlaceModel | None = None) -> BuildReport:
    """
    Build (or append to) a map from bags or an image folder; see the module docstring.

    Args:
        opts: What to read and how to write it.
        model: An already loaded place model; None loads one from the options.

    Returns:
        A report of the build.

    Raises:
        ConfigError: Inconsistent options.
        BagError: Unreadable or truncated bags, missing topics, no usable GPS, nothing
            geotagged.
        ImageError: No selected image could be decoded; a folder image list is bad.
        MapError: The output exists (without overwrite/append) or the map to append to is
            corrupt or was built with another model.
        CheckpointError: The checkpoint cannot be loaded.

    """
    started = time.perf_counter()
    timing = dict.fromkeys(('plan_s', 'read_decode_s', 'preprocess_s', 'wait_s', 'model_s',
                            'write_s', 'commit_s', 'calibrate_s'), 0.0)
    _check_options(opts)
    out = Path(opts.out)
    if opts.checkpoint is not None and not Path(opts.checkpoint).is_file():
        raise CheckpointError(f'checkpoint {opts.checkpoint} does not exist')
    origin = None
    if opts.append:
        # Places of an appended bag live in the existing map's ENU frame.
        block = map_info(out)['origin']
        origin = (float(block['lat']), float(block['lon']), float(block['alt']))
    # Bags are planned before the model loads: bad input fails in seconds, not after loading.
    start = time.perf_counter()
    plan = _plan_bags(opts, origin) if opts.bags else _plan_folder(opts, origin)
    timing['plan_s'] = time.perf_counter() - start
    model = model or _load_model(opts)
    identity = model.identity()
    if opts.append:
        writer = MapWriter.append(out, identity, index_type=opts.index_type)
        seen = {(s.get('bag'), s.get('image_topic')) for s in writer.sources}
        for source in plan.sources:
            if source.get('bag') and (source['bag'], source['image_topic']) in seen:
                # Not fatal (maybe intended), but usually a mistake that duplicates places.
                LOG.warning('%s %s is already in map %s; its places are added again',
                            source['bag'], source['image_topic'], out)
    else:
        writer = MapWriter(out, identity, local_format=opts.local_format,
                           index_type=opts.index_type or 'auto', overwrite=opts.overwrite)
        writer.set_origin(*plan.origin)
    source_ids = [writer.add_source(source) for source in plan.sources]
    with writer:
        kept = _extract(opts, plan, model, writer, source_ids, timing)
        for slot, source_id in enumerate(source_ids):
            plan.sources[slot]['kept'] = kept[slot]
            plan.sources[slot]['undecodable_skipped'] = plan.sources[slot]['selected'] - kept[slot]
            writer.update_source(source_id, plan.sources[slot])
        num_places = writer.num_places
        start = time.perf_counter()
    timing['commit_s'] = time.perf_counter() - start
    LOG.info('map %s: added %d places (%d in total)', out, sum(kept), num_places)
    calibrated = False
    if opts.calibrate:
        start = time.perf_counter()
        calibrated = _calibrate(out, model)
        timing['calibrate_s'] = time.perf_counter() - start
    timing['total_s'] = time.perf_counter() - started
    return BuildReport(out, num_places, sum(kept), plan.sources, calibrated, timing)


def read_topics(paths: Sequence[str | os.PathLike[str]]) -> list[bags.TopicInfo]:
    """Topics, types and message counts of bags (for ``build_map --list-topics``)."""
    return bags.list_topics(list(paths))
