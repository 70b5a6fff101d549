"""
`r2former eval`: recall@N, latency and confidence quality on an image dataset or a query bag.

    r2former eval --dataset DIR --layout vg|vprbench [--checkpoint FILE] [--json OUT] [--plots DIR]
    r2former eval --map MAP_DIR --bag QUERY_BAG --image-topic T --gps-topic T [--json OUT]
    r2former eval --map MAP_DIR --bag QUERY_BAG --image-topic T --pose-topic T [--json OUT]

A map built from poses (no GPS) takes the query bag's poses in its frame as the truth
(--pose-topic); a GPS map takes its NavSatFix (--gps-topic). Distances, --threshold-m and every
metric are metres in the map's frame.
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
from r2former_ros.cli.model_args import AUTO_BACKBONE_HELP, add_model_arguments, load_model_for_map
from r2former_ros.cli.truth_args import check_bag_truth
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.io.outputs import check_new_outputs


def register(subparsers: Any) -> None:
    """Add the `eval` verb."""
    parser = subparsers.add_parser(
        'eval', help='recall@N, latency and confidence on a dataset or a query bag',
        description=__doc__.split('\n\n')[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group('what to evaluate (a dataset, or a map and a query bag)')
    source.add_argument('--dataset', type=Path, help='image dataset directory')
    source.add_argument('--layout', choices=['vg', 'vprbench'],
                        help='vg: database/ + queries/ with @utm_east@utm_north@ in the names; '
                             'vprbench: ref/ + query/ + ground_truth_new.npy')
    source.add_argument('--map', type=Path, dest='map_dir', help='map directory')
    source.add_argument('--bag', type=Path, nargs='+', help='query bag(s)')
    source.add_argument('--image-topic', help='query image topic')
    source.add_argument('--gps-topic', help='query NavSatFix topic (the ground truth)')
    source.add_argument('--pose-topic',
                        help='instead of --gps-topic, for a map built from poses: the query '
                             "bag's poses in the map's frame (PoseStamped, "
                             'PoseWithCovarianceStamped or Odometry) are the ground truth')
    source.add_argument('--odom-topic',
                        help="the bag's odometry (nav_msgs/Odometry or a pose topic): the "
                             "sequence filter's motion step reads it, as the node's odom input")
    source.add_argument('--every', type=int, default=1, help='use every N-th bag image')
    add_model_arguments(parser, backbone_help=AUTO_BACKBONE_HELP + "; with --map: the map's")
    # The node's settings; with --filter hmm the queries are a drive: bag order, or file order.
    add_localizer_arguments(parser)
    parser.add_argument('--no-calibrate', action='store_true',
                        help='do not calibrate an uncalibrated map in memory')
    parser.add_argument('--max-queries', type=int, help='stop after this many queries')
    parser.add_argument('--json', type=Path, help='also write the results here (JSON)')
    parser.add_argument('--plots', type=Path, help='write PNG plots into this directory')
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> str:
    dataset = args.dataset is not None
    bag = args.map_dir is not None or args.bag is not None
    if dataset == bag:
        raise ConfigError('give either --dataset DIR --layout vg|vprbench, or --map MAP_DIR '
                          '--bag BAG --image-topic T --gps-topic T (or --pose-topic T)')
    if dataset and not args.layout:
        raise ConfigError('--dataset needs --layout vg or --layout vprbench')
    if dataset and not args.dataset.is_dir():
        raise ConfigError(f'--dataset {args.dataset} is not a directory')
    if bag and not (args.map_dir and args.bag and args.image_topic and
                    (args.gps_topic or args.pose_topic)):
        raise ConfigError('bag evaluation needs --map, --bag, --image-topic and --gps-topic '
                          '(a GPS map) or --pose-topic (a map built from poses)')
    if bag and args.map_dir and not (args.map_dir / 'manifest.json').is_file():
        raise ConfigError(f'--map {args.map_dir} is not a map directory (no manifest.json)')
    missing = [str(p) for p in args.bag or [] if not p.exists()]
    if missing:
        raise ConfigError(f'--bag {missing[0]} does not exist')
    if args.every < 1:
        raise ConfigError(f'--every {args.every} must be >= 1')
    localizer_config(args)  # every localizer flag checked before the model loads
    check_new_outputs(json=args.json, plots=args.plots)
    if bag:
        check_bag_truth(args.map_dir, args.bag, args.image_topic, args.gps_topic,
                        args.pose_topic, args.odom_topic)
    elif args.odom_topic or args.pose_topic:
        raise ConfigError('--odom-topic and --pose-topic need a bag (--map, --bag): a dataset '
                          'has neither')
    return 'dataset' if dataset else 'bag'


def _load_model(args: argparse.Namespace, mode: str) -> Any:
    from r2former_ros.core.mapdb import map_info  # noqa: PLC0415
    from r2former_ros.core.places.factory import load_place_model  # noqa: PLC0415 - torch is slow

    if mode == 'bag':
        return load_model_for_map(args, map_info(args.map_dir))
    # No --backbone: R2Former with a checkpoint, else the cached DINOv2 fallback (said once).
    return load_place_model(backbone=args.backbone, checkpoint=args.checkpoint,
                            device=args.device, precision=args.precision,
                            input_hw=args.input_size, num_local=args.num_local)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation, print the table, write JSON and plots (all or nothing)."""
    mode = _check(args)  # before the heavy imports: bad arguments fail at once
    from r2former_ros.core import evaluation  # noqa: PLC0415
    from r2former_ros.core.io.outputs import atomic_outputs  # noqa: PLC0415

    model = _load_model(args, mode)
    print(evaluation.model_banner(model), flush=True)
    note_global_only(args, model.has_reranker)
    settings = evaluation.EvalSettings(localizer=localizer_config(args, model.has_reranker),
                                       calibrate=not args.no_calibrate,
                                       max_queries=args.max_queries)

    def progress(line: str) -> None:
        print(f'  {line}', file=sys.stderr, flush=True)

    if mode == 'dataset':
        result = evaluation.evaluate_dataset(model, args.dataset, args.layout, settings,
                                             progress=progress)
    else:
        result = evaluation.evaluate_bag(model, args.map_dir, args.bag, args.image_topic,
                                         args.gps_topic, settings, every=args.every,
                                         progress=progress, odom_topic=args.odom_topic,
                                         pose_topic=args.pose_topic)
        _warn_in_sample(result.summary, args)
    if not model.has_reranker:
        # A global-only checkpoint (its loader already said reranking is unavailable): there is
        # no reranked ranking, so the JSON says null rather than repeating the global recall.
        result.summary['recall_reranked'] = None
    with atomic_outputs(json=args.json, plots=args.plots) as staged:
        plots = evaluation.write_plots(result, staged['plots']) if args.plots else []
        result.summary['plots'] = [str(args.plots / p.name) for p in plots]
        if args.json:
            result.to_json(staged['json'])
    print('\n'.join(evaluation.format_table(result.summary).splitlines()[1:]))
    written = ([str(args.json)] if args.json else []) + (
        [f'{len(plots)} plots in {args.plots}'] if plots else [])
    if written:
        print(f'wrote {" and ".join(written)}')
    return 0


def _warn_in_sample(summary: dict[str, Any], args: argparse.Namespace) -> None:
    """Say so when the drive evaluated is the one that calibrated the map (in-sample figures)."""
    from r2former_ros.core.calibration.drive import drive_name  # noqa: PLC0415

    info = summary.get('confidence', {}).get('calibration_info') or {}
    calibrated_on = info.get('drive')
    if calibrated_on and calibrated_on == drive_name(args.bag):
        message = (f'this drive ({calibrated_on}) is the one the map was calibrated on: its '
                   'confidence and trust figures are in-sample; evaluate another drive for '
                   'figures you can trust')
        summary['in_sample_warning'] = message
        print(f'warning: {message}', file=sys.stderr)
