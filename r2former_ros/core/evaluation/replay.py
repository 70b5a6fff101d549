"""
The node's pipeline over a bag, without ROS: the result bag of ``localize-bag`` and the demo.

:func:`replay_bag` localizes every image of a topic through
:meth:`~r2former_ros.core.localize.localizer.Localizer.localize_image` (the node's step) and
writes what the node would publish into a new rosbag2 (MCAP storage), stamped with the input
images' header stamps (log time = stamp): ``place_recognition`` (every image), ``fix`` (matched
images of a GPS map) and ``pose`` (matched images) and, when asked, ``match_image``; optionally a
CSV with one row per image. A map built from poses publishes its pose and results in its own
frame and no ``fix`` (it has no geodetic position). Both outputs are written under temporary
names and renamed into place at the end, so an error or Ctrl-C leaves nothing behind and a
rerun starts clean.

:func:`truth_positions` gives the replayed frames their true positions from the bag's GPS
(a GPS map) or its poses (a map in the poses' frame), so the same results can be scored by
:func:`~r2former_ros.core.evaluation.engine.summarize` (``localize-bag --json``, the demo) without
localizing any image twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import csv
import logging
import math
import os
from pathlib import Path
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from r2former_ros.core.errors import BagError
from r2former_ros.core.geo.coords import WGS84_FRAME
from r2former_ros.core.io import result_messages as rm
from r2former_ros.core.io.bag_open import count_messages
from r2former_ros.core.io.bags import iter_images
from r2former_ros.core.io.outputs import partial_path, remove
from r2former_ros.core.localize.localizer import Localizer
from r2former_ros.core.types import LocalizationResult

if TYPE_CHECKING:
    from r2former_ros.core.geo.geotag import Geotags
    from r2former_ros.core.io.bag_truth import FramedMap, TruthSource

LOG = logging.getLogger(__name__)

# (image record, result, query local rows, decode ms) -> None
ResultHook = Callable[[Any, LocalizationResult, Any, float], None]

TOPIC_RESULT = 'place_recognition'
TOPIC_FIX = 'fix'
TOPIC_POSE = 'pose'
TOPIC_MATCH = 'match_image'
CSV_COLUMNS = ('stamp_ns', 'place_id', 'matched', 'confidence', 'latitude', 'longitude',
               'global_score', 'rerank_score', 'decode_ms', 'extract_ms', 'retrieve_ms',
               'rerank_ms', 'total_ms', 'map_id')
PROGRESS_EVERY = 50  # images between progress lines


def _topic(prefix: str, name: str) -> str:
    return f'/{prefix.strip("/")}/{name}' if prefix.strip('/') else f'/{name}'


def replay_bag(localizer: Localizer, bag_paths: str | Path | Sequence[str | Path],
               image_topic: str, out_bag: str | Path, csv_path: str | Path | None = None,
               progress: bool = True, *, match_image: bool = False, map_frame_id: str = 'map',
               topic_prefix: str = '', frame_id: str = 'camera',
               on_result: ResultHook | None = None) -> dict[str, Any]:
    """
    Localize every image of ``image_topic`` and write the node's outputs to a new MCAP bag.

    Args:
        localizer: the pipeline (the node uses the same class).
        bag_paths: input bag(s) (anything ``core.io.bags`` reads).
        image_topic: Image or CompressedImage topic.
        out_bag: rosbag2 directory to create (must not exist).
        csv_path: optional CSV summary, one row per image (must not exist).
        progress: log a line every PROGRESS_EVERY images.
        match_image: also record ``match_image``.
        map_frame_id: frame of ``pose`` for a GPS map (a map built from poses uses its own).
        topic_prefix: namespace of the output topics ('' = ``/place_recognition`` ...).
        frame_id: header frame of results and fixes (bag images keep no frame id here).
        on_result: called after each image with (image record, result, query local rows,
            decode ms), so a caller can measure or draw without localizing the images again.

    Returns:
        Summary: images, matched, counts per output topic, mean/max total latency (ms), paths.

    Raises:
        BagError: ``out_bag`` or ``csv_path`` exists, or the input cannot be read; nothing is
            left behind.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: PLC0415

    from r2former_ros.core.drawing.match_image import result_match_image  # noqa: PLC0415

    out_bag = Path(out_bag)
    csv_file_path = Path(csv_path) if csv_path else None
    for target in (out_bag, csv_file_path):
        if target is not None and target.exists():
            raise BagError(f'{target} exists; choose a new output path or remove it')
    store = rm.result_typestore()
    threshold_m = localizer.config.threshold_m
    backbone = localizer.model.name
    position_frame = localizer.database.position_frame
    map_id = localizer.database.map_id  # every result names the map it came from
    total_images = count_messages(bag_paths, image_topic)
    topics = {TOPIC_RESULT: rm.PLACE_RECOGNITION_TYPE, TOPIC_FIX: rm.NAVSAT_TYPE,
              TOPIC_POSE: rm.POSE_COV_TYPE}
    if position_frame != WGS84_FRAME:
        del topics[TOPIC_FIX]  # a map built from poses has no geodetic position to publish
    if match_image:
        topics[TOPIC_MATCH] = rm.IMAGE_TYPE
    counts = dict.fromkeys(topics, 0)
    latencies: list[float] = []
    matched = 0
    # The bag is written inside a hidden staging folder under its final name: rosbags names the
    # data file after the bag folder, so staging the folder itself would name it '.x.partial'.
    staging = partial_path(out_bag)
    partial_bag = staging / out_bag.name
    partial_csv = partial_path(csv_file_path) if csv_file_path else None
    for leftover in (staging, partial_csv):  # from a run that was killed outright
        if leftover is not None:
            remove(leftover)
    staging.mkdir(parents=True)
    csv_file = open(partial_csv, 'w', newline='', encoding='utf-8') if partial_csv else None  # noqa: SIM115
    try:
        rows = csv.writer(csv_file) if csv_file else None
        if rows:
            rows.writerow(CSV_COLUMNS)
        writer = Writer(partial_bag, version=9, storage_plugin=StoragePlugin.MCAP)
        with writer:
            connections = {name: writer.add_connection(_topic(topic_prefix, name), msgtype,
                                                       typestore=store)
                           for name, msgtype in topics.items()}

            def write(name: str, fields: dict[str, Any] | None, stamp_ns: int) -> None:
                if fields is None:
                    return
                msg = rm.to_rosbags(store, topics[name], fields)
                writer.write(connections[name], stamp_ns, store.serialize_cdr(msg, topics[name]))
                counts[name] += 1

            images = iter_images(bag_paths, image_topic, skip_undecodable=True)
            while True:
                start = time.perf_counter()
                record = next(images, None)
                if record is None:
                    break
                decode_ms = (time.perf_counter() - start) * 1e3  # bag read + decode
                result, query_local = localizer.localize_image(
                    record.rgb, token_pairs=match_image, stamp_s=record.stamp_ns * 1e-9)
                stamp = record.stamp_ns
                fields = rm.place_recognition_fields(
                    result, stamp_ns=stamp, frame_id=frame_id, map_frame_id=map_frame_id,
                    backbone=backbone, decode_ms=decode_ms, position_frame=position_frame,
                    map_id=map_id)
                write(TOPIC_RESULT, fields, stamp)
                if TOPIC_FIX in topics:
                    write(TOPIC_FIX, rm.navsat_fields(result, stamp_ns=stamp, frame_id=frame_id,
                                                      threshold_m=threshold_m), stamp)
                write(TOPIC_POSE, rm.pose_fields(result, stamp_ns=stamp,
                                                 map_frame_id=map_frame_id,
                                                 threshold_m=threshold_m,
                                                 position_frame=position_frame), stamp)
                if match_image:
                    picture = result_match_image(localizer, record.rgb, query_local, result)
                    if picture is not None:
                        write(TOPIC_MATCH, rm.image_fields(picture, stamp_ns=stamp,
                                                           frame_id=frame_id), stamp)
                if on_result is not None:
                    on_result(record, result, query_local, decode_ms)
                matched += int(fields['matched'])
                latencies.append(fields['total_ms'])
                if rows:
                    rows.writerow([stamp, fields['place_id'], int(fields['matched']),
                                   f"{fields['confidence']:.6f}", f"{fields['latitude']:.9f}",
                                   f"{fields['longitude']:.9f}", f"{fields['global_score']:.6f}",
                                   f"{fields['rerank_score']:.6f}"]
                                  + [f'{fields[k]:.3f}' for k in CSV_COLUMNS[8:-1]] + [map_id])
                if progress and len(latencies) % PROGRESS_EVERY == 0:
                    LOG.info('localize-bag: %d/%d images, %d matched', len(latencies),
                             total_images, matched)
        if csv_file:
            csv_file.close()
        os.replace(partial_bag, out_bag)
        staging.rmdir()
        if partial_csv is not None and csv_file_path is not None:
            os.replace(partial_csv, csv_file_path)
    except BaseException:  # Ctrl-C included: leave nothing, so a rerun starts clean
        if csv_file:
            csv_file.close()
        for leftover in (staging, partial_csv):
            if leftover is not None:
                remove(leftover)
        raise
    summary = {
        'images': len(latencies), 'matched': matched, 'topics': {
            _topic(topic_prefix, name): count for name, count in counts.items()},
        'mean_total_ms': sum(latencies) / len(latencies) if latencies else math.nan,
        'max_total_ms': max(latencies, default=math.nan), 'out_bag': str(out_bag),
        'csv': str(csv_file_path) if csv_file_path else None, 'map_id': map_id,
    }
    if progress:
        LOG.info('localize-bag: %d images, %d matched -> %s', summary['images'], matched, out_bag)
    return summary


def truth_positions(bag_paths: str | Path | Sequence[str | Path], source: TruthSource,
                    stamps_ns: Sequence[int], database: FramedMap,
                    max_gap_s: float = 1.0) -> dict[int, tuple[float, float]]:
    """
    Look up the true positions (in the map's frame) of images by their stamps in the bag.

    The truth is the bag's NavSatFix for a GPS map (ENU about its origin) or its poses for a
    map built from poses (their frame must be the map's); the other kind is refused
    (:meth:`~r2former_ros.core.io.bag_truth.TruthSource.read_for`).

    Returns:
        ``{image index: (east, north)}`` for the images the truth covers (a usable fix or pose
        within ``max_gap_s`` on both sides); the others are left out.
    """
    track = source.read_for(bag_paths, database)
    return _positions(track.tag(np.asarray(stamps_ns, dtype=np.int64), max_gap_s))



def _positions(tags: Geotags) -> dict[int, tuple[float, float]]:
    return {int(i): (float(e), float(n))
            for i, e, n in zip(tags.image_index.tolist(), tags.east.tolist(),
                               tags.north.tolist(), strict=True)}
