"""
``r2former localize-bag``: run the node's pipeline over a bag without ROS and record its outputs.

    r2former localize-bag --map MAP --bag BAG --image-topic /camera/image_raw --out RESULT_BAG
        [--csv results.csv] [--checkpoint FILE] [--backbone r2former] [--device auto]

The result bag is a rosbag2 directory (MCAP storage) with the node's topics, stamped with the
input images' header stamps (log time = stamp): ``place_recognition``
(r2former_ros/msg/PlaceRecognition, every image), ``fix`` (NavSatFix, matched images), ``pose``
(PoseWithCovarianceStamped, matched images) and, with ``--match-image``, ``match_image``. Open it
in Foxglove or play it into rviz. The CSV has one row per image.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import csv
import logging
import math
from pathlib import Path
import sys
import time
from typing import Any

from r2former_ros.cli.filter_args import add_filter_arguments, check_filter_arguments
from r2former_ros.cli.model_args import MAP_BACKBONE_HELP, add_model_arguments, load_model_for_map
from r2former_ros.core.errors import BagError
from r2former_ros.core.io import result_messages as rm
from r2former_ros.core.io.bags import count_messages, iter_images
from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig
from r2former_ros.core.types import LocalizationResult

LOG = logging.getLogger(__name__)

# (image record, result, query local rows, decode ms) -> None
ResultHook = Callable[[Any, LocalizationResult, Any, float], None]

TOPIC_RESULT = 'place_recognition'
TOPIC_FIX = 'fix'
TOPIC_POSE = 'pose'
TOPIC_MATCH = 'match_image'
CSV_COLUMNS = ('stamp_ns', 'place_id', 'matched', 'confidence', 'latitude', 'longitude',
               'global_score', 'rerank_score', 'decode_ms', 'extract_ms', 'retrieve_ms',
               'rerank_ms', 'total_ms')


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
        bag_paths: input bag(s) (anything ``core.bags`` reads).
        image_topic: Image or CompressedImage topic.
        out_bag: rosbag2 directory to create (must not exist).
        csv_path: optional CSV summary, one row per image.
        progress: log progress every 50 images.
        match_image: also record ``match_image``.
        map_frame_id: frame of ``pose``.
        topic_prefix: namespace of the output topics ('' = ``/place_recognition`` ...).
        frame_id: header frame of results and fixes (bag images keep no frame id here).
        on_result: called after each image with (image record, result, query local rows,
            decode ms), so a caller can measure or draw without localizing the images again.

    Returns:
        Summary: images, matched, counts per output topic, mean/max total latency (ms), paths.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: PLC0415

    from r2former_ros.core.drawing.match_image import result_match_image  # noqa: PLC0415

    out_bag = Path(out_bag)
    if out_bag.exists():
        raise BagError(f'{out_bag} exists; choose a new --out directory')
    store = rm.result_typestore()
    threshold_m = localizer.config.threshold_m
    backbone = str(localizer.model.identity().get('backbone', ''))
    total_images = count_messages(bag_paths, image_topic)
    topics = {TOPIC_RESULT: rm.PLACE_RECOGNITION_TYPE, TOPIC_FIX: rm.NAVSAT_TYPE,
              TOPIC_POSE: rm.POSE_COV_TYPE}
    if match_image:
        topics[TOPIC_MATCH] = rm.IMAGE_TYPE
    counts = dict.fromkeys(topics, 0)
    latencies: list[float] = []
    matched = 0
    csv_file = open(csv_path, 'w', newline='', encoding='utf-8') if csv_path else None  # noqa: SIM115
    try:
        rows = csv.writer(csv_file) if csv_file else None
        if rows:
            rows.writerow(CSV_COLUMNS)
        writer = Writer(out_bag, version=9, storage_plugin=StoragePlugin.MCAP)
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
                    backbone=backbone, decode_ms=decode_ms)
                write(TOPIC_RESULT, fields, stamp)
                write(TOPIC_FIX, rm.navsat_fields(result, stamp_ns=stamp, frame_id=frame_id,
                                                  threshold_m=threshold_m), stamp)
                write(TOPIC_POSE, rm.pose_fields(result, stamp_ns=stamp,
                                                 map_frame_id=map_frame_id,
                                                 threshold_m=threshold_m), stamp)
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
                                  + [f'{fields[k]:.3f}' for k in CSV_COLUMNS[8:]])
                if progress and len(latencies) % 50 == 0:
                    LOG.info('localize-bag: %d/%d images, %d matched', len(latencies),
                             total_images, matched)
    except BaseException:
        if csv_file:
            csv_file.close()
        raise
    if csv_file:
        csv_file.close()
    summary = {
        'images': len(latencies), 'matched': matched, 'topics': {
            _topic(topic_prefix, name): count for name, count in counts.items()},
        'mean_total_ms': sum(latencies) / len(latencies) if latencies else math.nan,
        'max_total_ms': max(latencies, default=math.nan), 'out_bag': str(out_bag),
        'csv': str(csv_path) if csv_path else None,
    }
    if progress:
        LOG.info('localize-bag: %d images, %d matched -> %s', summary['images'], matched, out_bag)
    return summary


def run(args: argparse.Namespace) -> int:
    """Entry point of the verb."""
    from r2former_ros.core.mapdb import MapDatabase  # noqa: PLC0415

    check_filter_arguments(args)
    database = MapDatabase.open(args.map)
    model = load_model_for_map(args, database.manifest['model'])
    config = LocalizerConfig(retrieval_top_k=args.retrieval_top_k,
                             rerank_top_n=args.rerank_top_n, result_top_k=args.result_top_k,
                             confidence_threshold=args.confidence_threshold,
                             threshold_m=args.threshold_m, filter=args.filter,
                             max_speed_mps=args.max_speed)
    localizer = Localizer(model, database, config)
    summary = replay_bag(localizer, args.bag, args.image_topic, args.out, args.csv,
                         match_image=args.match_image, map_frame_id=args.map_frame_id)
    print(f"{summary['images']} images, {summary['matched']} matched; mean latency "
          f"{summary['mean_total_ms']:.1f} ms, max {summary['max_total_ms']:.1f} ms")
    print(f"wrote {summary['out_bag']}:")
    for topic, count in summary['topics'].items():
        print(f'  {topic}: {count}')
    if summary['csv']:
        print(f"wrote {summary['csv']}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``localize-bag`` to the ``r2former`` command."""
    defaults = LocalizerConfig()
    parser = subparsers.add_parser(
        'localize-bag', help='localize every image of a bag and write a result bag (MCAP)',
        description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--map', required=True, help='map directory (build_map)')
    parser.add_argument('--bag', required=True, nargs='+', help='input bag(s)')
    parser.add_argument('--image-topic', required=True, help='Image or CompressedImage topic')
    parser.add_argument('--out', required=True, help='result bag directory to create (MCAP)')
    parser.add_argument('--csv', help='also write a CSV summary here')
    add_model_arguments(parser, backbone_help=MAP_BACKBONE_HELP)
    parser.add_argument('--retrieval-top-k', type=int, default=defaults.retrieval_top_k)
    parser.add_argument('--rerank-top-n', type=int, default=defaults.rerank_top_n)
    parser.add_argument('--result-top-k', type=int, default=defaults.result_top_k)
    parser.add_argument('--confidence-threshold', type=float,
                        default=defaults.confidence_threshold)
    parser.add_argument('--threshold-m', type=float, default=defaults.threshold_m)
    parser.add_argument('--map-frame-id', default='map')
    add_filter_arguments(parser)  # sequence filter over the bag's images (H12)
    parser.add_argument('--match-image', action='store_true', help='also record match_image')
    parser.set_defaults(func=run)


if __name__ == '__main__':
    from r2former_ros.cli.main import main  # noqa: PLC0415

    sys.exit(main(['localize-bag', *sys.argv[1:]]))
