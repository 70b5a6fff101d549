"""
`r2former eval`: recall@N, latency and confidence quality on an image dataset or a query bag.

    r2former eval --dataset DIR --layout vg|vprbench [--checkpoint FILE] [--json OUT] [--plots DIR]
    r2former eval --map MAP_DIR --bag QUERY_BAG --image-topic T --gps-topic T [--json OUT]
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from typing import Any

from r2former_ros.cli.filter_args import add_filter_arguments, check_filter_arguments
from r2former_ros.cli.model_args import AUTO_BACKBONE_HELP, add_model_arguments, load_model_for_map
from r2former_ros.core.errors import ConfigError


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
    source.add_argument('--every', type=int, default=1, help='use every N-th bag image')
    add_model_arguments(parser, backbone_help=AUTO_BACKBONE_HELP + "; with --map: the map's")
    parser.add_argument('--threshold-m', type=float, default=25.0,
                        help='a match is true within this distance (default: %(default)s)')
    parser.add_argument('--rerank-top', type=int, default=100, metavar='N',
                        help='candidates reranked; 0 = global only (default: %(default)s)')
    parser.add_argument('--confidence-threshold', type=float, default=0.5,
                        help='"no match" below this confidence (default: %(default)s)')
    parser.add_argument('--no-calibrate', action='store_true',
                        help='do not calibrate an uncalibrated map in memory')
    parser.add_argument('--max-queries', type=int, help='stop after this many queries')
    add_filter_arguments(parser)  # sequence filter (H12): bag order, or file order = time
    parser.add_argument('--json', type=Path, help='also write the results here (JSON)')
    parser.add_argument('--plots', type=Path, help='write PNG plots into this directory')
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> str:
    dataset = args.dataset is not None
    bag = args.map_dir is not None or args.bag is not None
    if dataset == bag:
        raise ConfigError('give either --dataset DIR --layout vg|vprbench, or --map MAP_DIR '
                          '--bag BAG --image-topic T --gps-topic T')
    if dataset and not args.layout:
        raise ConfigError('--dataset needs --layout vg or --layout vprbench')
    if dataset and not args.dataset.is_dir():
        raise ConfigError(f'--dataset {args.dataset} is not a directory')
    if bag and not (args.map_dir and args.bag and args.image_topic and args.gps_topic):
        raise ConfigError('bag evaluation needs --map, --bag, --image-topic and --gps-topic')
    if bag and args.map_dir and not (args.map_dir / 'manifest.json').is_file():
        raise ConfigError(f'--map {args.map_dir} is not a map directory (no manifest.json)')
    missing = [str(p) for p in args.bag or [] if not p.exists()]
    if missing:
        raise ConfigError(f'--bag {missing[0]} does not exist')
    if args.rerank_top < 0 or args.threshold_m <= 0 or args.every < 1:
        raise ConfigError('--rerank-top must be >= 0, --threshold-m > 0 and --every >= 1')
    check_filter_arguments(args)
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
    """Run the evaluation, print the table, write JSON and plots."""
    mode = _check(args)  # before the heavy imports: bad arguments fail at once
    from r2former_ros.core import evaluation  # noqa: PLC0415

    model = _load_model(args, mode)
    print(evaluation.model_banner(model), flush=True)
    settings = evaluation.EvalSettings(threshold_m=args.threshold_m,
                                       rerank_top_n=args.rerank_top,
                                       retrieval_top_k=max(100, args.rerank_top),
                                       confidence_threshold=args.confidence_threshold,
                                       calibrate=not args.no_calibrate,
                                       max_queries=args.max_queries,
                                       filter=args.filter, max_speed_mps=args.max_speed)

    def progress(line: str) -> None:
        print(f'  {line}', file=sys.stderr, flush=True)

    if mode == 'dataset':
        result = evaluation.evaluate_dataset(model, args.dataset, args.layout, settings,
                                             progress=progress)
    else:
        result = evaluation.evaluate_bag(model, args.map_dir, args.bag, args.image_topic,
                                         args.gps_topic, settings, every=args.every,
                                         progress=progress)
    if not model.has_reranker:
        # A global-only checkpoint (its loader already said reranking is unavailable): there is
        # no reranked ranking, so the JSON says null rather than repeating the global recall.
        result.summary['recall_reranked'] = None
    plots = evaluation.write_plots(result, args.plots) if args.plots else []
    result.summary['plots'] = [str(p) for p in plots]
    if args.json:
        result.to_json(args.json)
    print('\n'.join(evaluation.format_table(result.summary).splitlines()[1:]))
    written = ([str(args.json)] if args.json else []) + (
        [f'{len(plots)} plots in {args.plots}'] if plots else [])
    if written:
        print(f'wrote {" and ".join(written)}')
    return 0
