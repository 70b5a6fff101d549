"""
Extracting the planned places: decode, encode, write.

A second pass over the bags decodes only the kept images. A background thread reads, decodes,
resizes and normalises the next batch while the model encodes the current one; a bounded queue
keeps at most ``PREFETCH_BATCHES`` batches in memory, so memory stays flat for any bag size.
Undecodable images are skipped and counted; if none decodes, the build fails naming the first
problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
import logging
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
import torch

from r2former_ros.core.errors import ImageError
from r2former_ros.core.features import ImageFeatures
from r2former_ros.core.io import bags
from r2former_ros.core.io.images import read_image_file
from r2former_ros.core.mapdb import (
    DEFAULT_THUMBNAIL_WIDTH,
    MapWriter,
    PlaceRecord,
    resize_to_width,
)
from r2former_ros.core.mapping.decode_pool import decode_in_order
from r2former_ros.core.mapping.options import BuildOptions, progress_bar
from r2former_ros.core.mapping.plan import PlaceKey, Plan, Planned
from r2former_ros.core.mapping.prefetch import Prefetcher
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.places.preprocessing import preprocess

LOG = logging.getLogger(__name__)

PREFETCH_BATCHES = 2
"""Decoded batches waiting for the model; bounds memory while keeping the model busy."""
# Smaller images hold no place worth a map entry (a 1x1 PNG, a broken thumbnail): skipped, named.
MIN_IMAGE_PX = 32


@dataclass
class _Batch:
    """A batch ready for the model: normalised tensor (CPU models) or RGB images (others)."""

    keys: list[PlaceKey]
    tensor: torch.Tensor | None
    rgb: list[NDArray[np.uint8]] | None
    thumbnails: list[NDArray[np.uint8]] | None


def _batches(
    pairs: Iterator[tuple[PlaceKey, NDArray[np.uint8]]], model: PlaceModel, batch_size: int,
    thumbnails: bool, timing: dict[str, float],
) -> Iterator[_Batch]:
    """Group decoded images into model batches (runs in the prefetch thread)."""
    on_cpu = model.device.type == 'cpu'

    def pack(keys: list[PlaceKey], rgb: list[NDArray[np.uint8]]) -> _Batch:
        start = time.perf_counter()
        # On CPU the resize/normalise overlaps inference here; on a GPU it is faster there.
        tensor = preprocess(rgb, model.input_hw, model.mean, model.std, 'cpu') if on_cpu else None
        # Shrunk here, so queued batches carry small images.
        thumbs = ([resize_to_width(image, DEFAULT_THUMBNAIL_WIDTH) for image in rgb]
                  if thumbnails else None)
        timing['preprocess_s'] += time.perf_counter() - start
        return _Batch(keys, tensor, None if on_cpu else rgb, thumbs)

    keys: list[PlaceKey] = []
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


def _decoded(pairs: Iterator[tuple[tuple[PlaceKey, Any], NDArray[np.uint8] | ImageError]],
             skips: list[str]) -> Iterator[tuple[PlaceKey, NDArray[np.uint8]]]:
    """Pass decoded images on; log and count the ones that failed."""
    for (key, _job), result in pairs:
        if isinstance(result, ImageError):
            LOG.warning('skipping undecodable image: %s', result)
            skips.append(str(result))
            continue
        yield key, result


def _bag_pairs(opts: BuildOptions, plan: Plan,
               skips: list[str]) -> Iterator[tuple[PlaceKey, NDArray[np.uint8]]]:
    """Decode the planned images of the bags (second pass), in a thread pool."""
    messages = bags.iter_encoded_images(
        opts.bags, opts.image_topic or '', stamp_source=opts.stamp_source,
        select=lambda bag, _topic, index: (bag, index) in plan.places)
    jobs = (((m.bag_path, m.index), m) for m in messages)
    decoded = decode_in_order(jobs, lambda job: job[1].decode(), opts.decode_threads)
    try:
        yield from _decoded(decoded, skips)
    finally:
        # Stops the decoders before the bag they read is closed.
        decoded.close()
        messages.close()


def _folder_pairs(opts: BuildOptions, plan: Plan,
                  skips: list[str]) -> Iterator[tuple[PlaceKey, NDArray[np.uint8]]]:
    """Read the planned images of a folder, in a thread pool."""
    jobs = ((key, planned.path or '') for key, planned in plan.places.items())
    decoded = decode_in_order(jobs, lambda job: read_image_file(job[1]), opts.decode_threads)
    try:
        yield from _decoded(decoded, skips)
    finally:
        decoded.close()


def too_small(rgb: NDArray[np.uint8], where: str) -> str | None:
    """Say why an image is too small for a map entry (named by ``where``); None if it is not."""
    height, width = rgb.shape[:2]
    if min(height, width) >= MIN_IMAGE_PX:
        return None
    return (f'{where}: {width}x{height} px is smaller than the '
            f'{MIN_IMAGE_PX}x{MIN_IMAGE_PX} minimum')


def image_name(bag: str, index: int, path: object = None) -> str:
    """Name a planned image in messages: its file, else its bag and message index."""
    return str(path) if path else f'{bag} message {index}'


def _big_enough(pairs: Iterator[tuple[PlaceKey, NDArray[np.uint8]]], plan: Plan,
                skips: list[str]) -> Iterator[tuple[PlaceKey, NDArray[np.uint8]]]:
    """Pass images of at least MIN_IMAGE_PX a side; skip (and name) the others."""
    for key, rgb in pairs:
        problem = too_small(rgb, image_name(key[0], key[1], plan.places[key].path))
        if problem is None:
            yield key, rgb
            continue
        LOG.warning('skipping a tiny image: %s', problem)
        skips.append(problem)


def _encode(model: PlaceModel, batch: _Batch) -> Any:
    """Run the model on one batch."""
    with torch.inference_mode():
        if batch.tensor is not None:
            return model.encode_batch(batch.tensor.to(model.device))
        images = batch.rgb or []
        return model.encode_batch(preprocess(images, model.input_hw, model.mean, model.std,
                                             model.device))


def extract_places(opts: BuildOptions, plan: Plan, model: PlaceModel, writer: MapWriter,
             source_ids: list[int], timing: dict[str, float]) -> list[int]:
    """
    Decode, encode and add every planned place; return the places kept per slot.

    Raises:
        ImageError: If not a single planned image could be decoded.

    """
    skips: list[str] = []
    pairs = _big_enough(_bag_pairs(opts, plan, skips) if opts.bags else
                        _folder_pairs(opts, plan, skips), plan, skips)
    kept = [0] * len(plan.sources)
    batches = _batches(pairs, model, opts.batch_size, opts.thumbnails, timing)
    with Prefetcher(batches, PREFETCH_BATCHES) as prefetched, \
            progress_bar(opts, total=len(plan.places), unit='img', desc='extracting') as bar:
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
            write_planned(writer, planned, source_ids, features, batch.thumbnails, kept)
            timing['write_s'] += time.perf_counter() - start
            bar.update(len(planned))
    check_skips(plan, kept, skips)
    return kept


def write_planned(writer: MapWriter, planned: list[Planned], source_ids: list[int],
                  features: ImageFeatures, thumbnails: list[NDArray[np.uint8]] | None,
                  kept: list[int]) -> None:
    """Add the encoded places of one batch to the map and count them per source slot."""
    records = [PlaceRecord(p.stamp_ns, p.position, source_ids[p.slot], p.msg_index)
               for p in planned]
    writer.add(features, records, thumbnails)
    for p in planned:
        kept[p.slot] += 1


def check_skips(plan: Plan, kept: list[int], skips: list[str]) -> None:
    """
    Refuse a build that kept no image; otherwise log how many were skipped and the first why.

    Raises:
        ImageError: Not a single planned image could be decoded and used.
    """
    if sum(kept) == 0:
        raise ImageError(f'none of the {len(plan.places)} selected images could be decoded and '
                         f'used; first problem: {skips[0] if skips else "?"}')
    if skips:
        LOG.warning('%d of %d selected images were skipped (undecodable, or smaller than '
                    '%dx%d px; first: %s)', len(skips), len(plan.places), MIN_IMAGE_PX,
                    MIN_IMAGE_PX, skips[0])
