"""
``r2former localize-bag``: run the node's pipeline over a bag without ROS and record its outputs.

    r2former localize-bag --map MAP --bag BAG --image-topic /camera/image_raw --out RESULT_BAG
        [--csv results.csv] [--gps-topic /gps/fix --json metrics.json] [--filter hmm]
    r2former localize-bag --map MAP_FROM_POSES --bag BAG --image-topic T --out RESULT_BAG
        [--pose-topic /map_pose --json metrics.json]

The result bag is a rosbag2 directory (MCAP storage) with the node's topics, stamped with the
input images' header stamps (log time = stamp): ``place_recognition``
(r2former_ros/msg/PlaceRecognition, every image), ``fix`` (NavSatFix, matched images), ``pose``
(PoseWithCovarianceStamped, matched images) and, with ``--match-image``, ``match_image``. Open it
in Foxglove or play it into rviz. The CSV has one row per image. With ``--gps-topic`` and
``--json``, the same results are scored against the bag's GPS by the evaluation engine of
``r2former eval`` (same JSON keys). A map built from poses (no GPS) publishes its poses and
results in its own frame and no ``fix``; its truth for ``--json`` is ``--pose-topic`` (poses in
the map's frame). Outputs appear only when the run completes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Any

from r2former_ros.cli.localizer_args import (
    add_localizer_arguments,
    localizer_config,
    note_global_only,
)
from r2former_ros.cli.model_args import MAP_BACKBONE_HELP, add_model_arguments, load_model_for_map
from r2former_ros.cli.truth_args import check_bag_truth
from r2former_ros.core.errors import ConfigError

DEFAULT_MAP_FRAME_ID = 'map'


def _check(args: argparse.Namespace) -> None:
    """Refuse bad arguments before the model loads."""
    from r2former_ros.core.io.outputs import check_new_outputs  # noqa: PLC0415

    if not (args.map / 'manifest.json').is_file():
        raise ConfigError(f'--map {args.map} is not a map directory (no manifest.json)')
    for bag in args.bag:
        if not bag.exists():
            raise ConfigError(f'--bag {bag} does not exist')
    for name, path in (('out', args.out), ('csv', args.csv)):
        if path is not None and path.exists():
            raise ConfigError(f'--{name} {path} exists; choose a new path or remove it')
    if args.json and not (args.gps_topic or args.pose_topic):
        raise ConfigError('--json scores the results against the truth: give --gps-topic (a '
                          'GPS map) or --pose-topic (a map built from poses) too')
    check_new_outputs(json=args.json)
    localizer_config(args)


def run(args: argparse.Namespace) -> int:
    """Entry point of the verb."""
    _check(args)
    from r2former_ros.core.evaluation import replay  # noqa: PLC0415
    from r2former_ros.core.io.bag_open import as_path_list, check_drive_topics  # noqa: PLC0415
    from r2former_ros.core.localize.localizer import Localizer  # noqa: PLC0415
    from r2former_ros.core.localize.odometry import OdometryTrack  # noqa: PLC0415
    from r2former_ros.core.mapdb import MapDatabase  # noqa: PLC0415

    paths = as_path_list(args.bag)
    if args.gps_topic or args.pose_topic:
        check_bag_truth(args.map, paths, args.image_topic, args.gps_topic, args.pose_topic,
                        args.odom_topic)  # before the model loads
    else:
        check_drive_topics(paths, args.image_topic, None, args.odom_topic)
    database = MapDatabase.open(args.map)
    map_frame_id = _map_frame_id(args.map_frame_id, database.position_frame, args.map)
    model = load_model_for_map(args, database.manifest['model'])
    note_global_only(args, model.has_reranker)
    odometry = OdometryTrack.from_bag(paths, args.odom_topic) if args.odom_topic else None
    localizer = Localizer(model, database, localizer_config(args, model.has_reranker),
                          odometry=odometry)
    records: list[tuple[int, Any, float]] = []

    def keep(record: Any, result: Any, query_local: Any, decode_ms: float) -> None:
        records.append((record.stamp_ns, result, decode_ms))

    summary = replay.replay_bag(localizer, paths, args.image_topic, args.out, args.csv,
                                match_image=args.match_image, map_frame_id=map_frame_id,
                                on_result=keep if args.json else None)
    print(f"{summary['images']} images, {summary['matched']} matched; mean latency "
          f"{summary['mean_total_ms']:.1f} ms, max {summary['max_total_ms']:.1f} ms")
    print(f"wrote {summary['out_bag']} (map {summary['map_id']}):")
    for topic, count in summary['topics'].items():
        print(f'  {topic}: {count}')
    if summary['csv']:
        print(f"wrote {summary['csv']}")
    if args.json:
        _write_metrics(localizer, records, args)
    return 0


def _map_frame_id(requested: str | None, position_frame: str, map_dir: Path) -> str:
    """Choose the frame of the result bag's poses: a pose map's own, else --map-frame-id."""
    from r2former_ros.core.geo.coords import WGS84_FRAME  # noqa: PLC0415

    if position_frame == WGS84_FRAME:
        return requested or DEFAULT_MAP_FRAME_ID
    if requested not in (None, position_frame):
        raise ConfigError(f"--map-frame-id {requested}: map {map_dir} holds positions in frame "
                          f"'{position_frame}' (built from poses), the frame its poses are "
                          'published in')
    return position_frame


def _write_metrics(localizer: Any, records: list[tuple[int, Any, float]],
                   args: argparse.Namespace) -> None:
    """Score the replayed results against the bag's truth (the engine of `r2former eval`)."""
    from r2former_ros.core import evaluation  # noqa: PLC0415
    from r2former_ros.core.evaluation.replay import truth_positions  # noqa: PLC0415
    from r2former_ros.core.io.bag_truth import TruthSource  # noqa: PLC0415
    from r2former_ros.core.io.outputs import atomic_outputs  # noqa: PLC0415

    source = TruthSource.from_topics(args.gps_topic, args.pose_topic)
    truth = truth_positions(args.bag, source, [stamp for stamp, _, _ in records],
                            localizer.database)
    frames = [evaluation.LocalizedFrame(f'frame {i}', result, *truth[i], decode_ms=decode_ms)
              for i, (_, result, decode_ms) in enumerate(records) if i in truth]
    if not frames:
        raise ConfigError(f'no image of {args.image_topic} has a true position from '
                          f'{source.describe()}: nothing to score')
    extra = {'map': str(args.map), 'bags': [str(p) for p in args.bag],
             'image_topic': args.image_topic, 'gps_topic': args.gps_topic,
             'num_images_without_gps': len(records) - len(frames)}
    if args.pose_topic:  # a GPS map's JSON keeps the keys it always had
        extra.update({'pose_topic': args.pose_topic,
                      'position_frame': localizer.database.position_frame,
                      'num_images_without_pose': extra.pop('num_images_without_gps')})
    result = evaluation.summarize(localizer, frames, extra=extra)
    with atomic_outputs(json=args.json) as staged:
        result.to_json(staged['json'])
    print('\n'.join(evaluation.format_table(result.summary).splitlines()[1:]))
    print(f'wrote {args.json}')


def register(subparsers: Any) -> None:
    """Add ``localize-bag`` to the ``r2former`` command."""
    parser = subparsers.add_parser(
        'localize-bag', help='localize every image of a bag and write a result bag (MCAP)',
        description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--map', type=Path, required=True, help='map directory (build_map)')
    parser.add_argument('--bag', type=Path, required=True, nargs='+', help='input bag(s)')
    parser.add_argument('--image-topic', required=True, help='Image or CompressedImage topic')
    parser.add_argument('--out', type=Path, required=True,
                        help='result bag directory to create (MCAP; must not exist)')
    parser.add_argument('--csv', type=Path, help='also write a CSV, one row per image')
    parser.add_argument('--gps-topic',
                        help='NavSatFix topic of the bag: the truth --json scores against')
    parser.add_argument('--pose-topic',
                        help="instead of --gps-topic, for a map built from poses: the bag's "
                             "poses in the map's frame (PoseStamped, PoseWithCovarianceStamped "
                             'or Odometry), the truth --json scores against')
    parser.add_argument('--odom-topic',
                        help="the bag's odometry (nav_msgs/Odometry or a pose topic): the "
                             "sequence filter's motion step reads it, as the node's odom input")
    parser.add_argument('--json', type=Path,
                        help='also score the results (recall, trust, latency; the keys of '
                             '`r2former eval --json`) and write them here; needs --gps-topic or '
                             '--pose-topic')
    add_model_arguments(parser, backbone_help=MAP_BACKBONE_HELP)
    add_localizer_arguments(parser, result_top_k=True)
    parser.add_argument('--map-frame-id', default=None,
                        help='frame id of the pose messages of a GPS map: its ENU frame '
                             f'(default: {DEFAULT_MAP_FRAME_ID}); a map built from poses '
                             'publishes in its own frame')
    parser.add_argument('--match-image', action='store_true',
                        help='also record match_image (query beside the matched map image)')
    parser.set_defaults(func=run)


if __name__ == '__main__':
    from r2former_ros.cli.main import main  # noqa: PLC0415

    sys.exit(main(['localize-bag', *sys.argv[1:]]))
