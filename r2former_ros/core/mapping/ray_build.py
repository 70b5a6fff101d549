"""
Map building on a Ray cluster: ``build_map --ray [ADDRESS]`` (optional extra ``[ray]``).

The same pipeline as :func:`r2former_ros.core.mapping.build.build_map`, spread with Ray Data:

1. The driver plans (stamps, GPS, keyframes: no pixels) exactly as the plain build does.
2. **CPU tasks** read and decode: one task per bag (a bag is read front to back, so it is the
   unit of reading; several drives give several tasks) or per block of folder images. They
   apply the plain build's checks (undecodable and too-small images are skipped and counted).
3. **Actors** extract features: ``map_batches`` with an actor class, so each worker loads the
   model once and keeps it. One actor per GPU when the cluster has GPUs, else CPU actors.
4. The driver writes the batches, in the plain build's order, through the same
   :class:`~r2former_ros.core.mapdb.MapWriter`: the map appears atomically (temporary sibling
   directory, then a rename) or not at all. Calibration then runs in the driver as usual.

Failures: Ray retries a task whose worker died and restarts a dead actor (Ray Data's defaults);
an error that outlives the retries reaches the driver, the writer aborts and no map is written
or changed. The result equals the plain build's map: same places in the same order, features
from the same model code (equal up to float rounding of different batch shapes), and the same
manifest apart from times.
"""

from __future__ import annotations

from collections.abc import Iterator
import logging
import time
from typing import Any

import numpy as np

from r2former_ros.core.errors import ConfigError, ImageError
from r2former_ros.core.features import ImageFeatures
from r2former_ros.core.io import bags
from r2former_ros.core.io.images import read_image_file
from r2former_ros.core.mapdb import (
    DEFAULT_THUMBNAIL_WIDTH,
    MapWriter,
    resize_to_width,
)
from r2former_ros.core.mapping.build import (
    _load_model,
    finish_build,
    open_map_writer,
    plan_build,
    record_kept,
)
from r2former_ros.core.mapping.extract import check_skips, image_name, too_small, write_planned
from r2former_ros.core.mapping.options import BuildOptions, BuildReport
from r2former_ros.core.mapping.plan import Plan

LOG = logging.getLogger(__name__)

FOLDER_BLOCK = 256
"""Folder images per decoding task: large enough to amortise a task, small enough to spread."""
_EMPTY_RGB = np.zeros((1, 1, 3), np.uint8)


def _import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415 - optional dependency
        import ray.data  # noqa: F401, PLC0415
    except ImportError as err:
        raise ConfigError('build_map --ray needs Ray: pip install "r2former_ros[ray]" '
                          f'(or pip install "ray[data]"); {err}') from err
    return ray


def _segments(plan: Plan, opts: BuildOptions) -> list[dict[str, Any]]:
    """Work items for the decoding tasks, in the plain build's order."""
    if opts.bags:
        by_bag: dict[str, list[int]] = {}
        for bag, index in plan.places:
            by_bag.setdefault(bag, []).append(index)
        return [{'bag': bag, 'indices': sorted(indices), 'files': []}
                for bag, indices in by_bag.items()]
    keys = list(plan.places)
    blocks = [keys[start:start + FOLDER_BLOCK] for start in range(0, len(keys), FOLDER_BLOCK)]
    return [{'bag': block[0][0], 'indices': [index for _, index in block],
             'files': [str(plan.places[key].path) for key in block]} for block in blocks]


class DecodeSegment:
    """Ray task body: read and decode one segment; one row per planned image."""

    def __init__(self, image_topic: str, stamp_source: str, thumbnails: bool) -> None:
        self.image_topic, self.stamp_source = image_topic, stamp_source
        self.thumbnails = thumbnails

    def _row(self, bag: str, index: int, rgb: np.ndarray | None, error: str,
             file: str = '') -> dict[str, Any]:
        if rgb is not None:
            problem = too_small(rgb, image_name(bag, index, file))
            if problem is not None:  # named as the plain build names it
                error, rgb = problem, None
        thumb = (resize_to_width(rgb, DEFAULT_THUMBNAIL_WIDTH)
                 if rgb is not None and self.thumbnails else _EMPTY_RGB)
        return {'bag': bag, 'index': index, 'error': error,
                'rgb': _EMPTY_RGB if rgb is None else rgb, 'thumb': thumb}

    def __call__(self, segment: dict[str, Any]) -> Iterator[dict[str, Any]]:
        bag, wanted = segment['bag'], set(segment['indices'])
        if segment['files']:
            for index, file in zip(segment['indices'], segment['files'], strict=True):
                try:
                    yield self._row(bag, index, read_image_file(file), '', file)
                except ImageError as err:
                    yield self._row(bag, index, None, str(err), file)
            return
        messages = bags.iter_encoded_images(
            [bag], self.image_topic, stamp_source=self.stamp_source,
            select=lambda _bag, _topic, index: index in wanted)
        for message in messages:
            try:
                yield self._row(bag, message.index, message.decode(), '')
            except ImageError as err:
                yield self._row(bag, message.index, None, str(err))


class EncodeBatch:
    """Ray Data actor: loads the place model once, encodes batches of decoded images."""

    def __init__(self, model_options: dict[str, Any]) -> None:
        # Imported in the worker: the driver's model is not shipped, each actor loads its own.
        from r2former_ros.core.places import factory  # noqa: PLC0415

        self.model = factory.load_place_model(**model_options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch  # noqa: PLC0415

        errors = [str(e) for e in batch['error']]
        ok = [row for row, error in enumerate(errors) if not error]
        shape = self.model.identity()
        count, k = len(errors), int(shape['num_local'])
        # Rows that failed to decode keep zero features; the driver skips them by 'error'.
        glob = np.zeros((count, int(shape['global_dim'])), np.float32)
        local = np.zeros((count, k, 3 + int(shape['local_dim'])), np.float32)
        tokens = np.zeros((count, k), np.int64)
        if ok:
            with torch.inference_mode():
                # Copies: Ray hands out read-only arrays, which torch warns about on every batch.
                features = self.model.encode_rgb([np.array(batch['rgb'][row]) for row in ok])
            glob[ok], local[ok], tokens[ok] = (features.global_desc, features.local_feats,
                                               features.token_index)
        return {'bag': batch['bag'], 'index': batch['index'], 'error': batch['error'],
                'thumb': batch['thumb'], 'global_desc': glob, 'local_feats': local,
                'token_index': tokens}


def _model_options(opts: BuildOptions, device: str) -> dict[str, Any]:
    return {'backbone': opts.backbone,
            'checkpoint': None if opts.checkpoint is None else str(opts.checkpoint),
            'device': device, 'input_hw': opts.input_hw, 'num_local': opts.num_local,
            'precision': opts.precision}


def _init_ray(ray: Any, address: str | None, num_cpus: int | None) -> None:
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)


def build_map_ray(opts: BuildOptions, address: str | None = None, *,
                  num_cpus: int | None = None, num_actors: int | None = None) -> BuildReport:
    """
    Build (or append to) a map with Ray; see the module docstring.

    Args:
        opts: What to read and how to write it (as for the plain build).
        address: A running cluster (``'auto'``, ``'ray://host:10001'``, ``'host:6379'``);
            None starts a local Ray with ``num_cpus`` CPUs (None: all).
        num_cpus: CPUs of a local Ray.
        num_actors: Feature-extraction actors; default one per GPU, else one.

    Returns:
        The same report as the plain build; ``seconds`` has plan_s, ray_s (decode + encode +
        write, overlapped), commit_s, calibrate_s and total_s.

    Raises:
        ConfigError: Ray is not installed, or the options are inconsistent.
        The plain build's BagError / ImageError / MapError / CheckpointError otherwise.

    """
    ray = _import_ray()
    started = time.perf_counter()
    timing = dict.fromkeys(('plan_s', 'ray_s', 'commit_s', 'calibrate_s'), 0.0)
    out, plan = plan_build(opts, timing)
    # The driver's model gives the map identity and calibrates afterwards, as in the plain build.
    model = _load_model(opts)
    _init_ray(ray, address, num_cpus)
    gpus = int(ray.cluster_resources().get('GPU', 0))
    actors = num_actors or max(1, gpus)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the plain build's place order
    context.enable_progress_bars = bool(opts.progress)
    decoder = DecodeSegment(opts.image_topic or '', opts.stamp_source, opts.thumbnails)
    dataset = ray.data.from_items(_segments(plan, opts)).flat_map(decoder, num_cpus=1)
    device = 'cuda' if gpus else 'cpu'
    dataset = dataset.map_batches(
        EncodeBatch, fn_constructor_kwargs={'model_options': _model_options(opts, device)},
        batch_size=opts.batch_size, batch_format='numpy', concurrency=actors,
        num_gpus=1 if gpus else 0, num_cpus=1)
    writer = open_map_writer(opts, out, model.identity(), plan)
    source_ids = [writer.add_source(source) for source in plan.sources]
    kept = [0] * len(plan.sources)
    skips: list[str] = []
    with writer:
        start = time.perf_counter()
        for batch in dataset.iter_batches(batch_size=None, batch_format='numpy'):
            _add_batch(batch, plan, writer, source_ids, kept, skips, opts.thumbnails)
        timing['ray_s'] = time.perf_counter() - start
        check_skips(plan, kept, skips)
        record_kept(writer, plan, source_ids, kept)
        num_places = writer.num_places
        start = time.perf_counter()
    timing['commit_s'] = time.perf_counter() - start
    return finish_build(opts, out, model, plan, kept, num_places, timing, started,
                        how=' with Ray')


def _add_batch(batch: dict[str, np.ndarray], plan: Plan, writer: MapWriter,
               source_ids: list[int], kept: list[int], skips: list[str],
               thumbnails: bool) -> None:
    """Write the decoded rows of one result batch; count the skipped ones."""
    rows = []
    for row, error in enumerate(batch['error']):
        if error:
            LOG.warning('skipping image: %s', error)
            skips.append(str(error))
        else:
            rows.append(row)
    if not rows:
        return
    planned = [plan.places[(str(batch['bag'][row]), int(batch['index'][row]))] for row in rows]
    features = ImageFeatures(np.asarray(batch['global_desc'][rows], np.float32),
                             np.asarray(batch['local_feats'][rows], np.float32),
                             np.asarray(batch['token_index'][rows], np.int64))
    thumbs = [np.asarray(batch['thumb'][row]) for row in rows] if thumbnails else None
    write_planned(writer, planned, source_ids, features, thumbs, kept)

