"""
`r2former calibrate`: fit a map's confidence on a second drive of the route (with its truth).

    r2former calibrate MAP_DIR --bag BAG --image-topic T --gps-topic T [--threshold-m M]
        [--filter hmm|none] [--rerank-top-n N] [--max-speed V] [--json OUT]
    r2former calibrate MAP_FROM_POSES --bag BAG --image-topic T --pose-topic T [...]

Record the route once more (another day, another lane), then run this: the drive's GPS (or, for
a map built from poses, its poses in the map's frame) labels each frame, and the single-frame
confidence (and with ``--filter hmm``, the default, the sequence filter's observation model and
its filtered confidence) are fitted on it, cross-validated in contiguous blocks of the drive,
and stored in the map's manifest (atomically)
with the settings they hold for: backbone, ranking (global or rerank top-N), filter and
threshold. The node and the tools use the calibration only under those settings; under others
the confidence is a raw score and every result says ``calibrated: false``.
"""

from __future__ import annotations

import argparse
import json
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
from r2former_ros.core.localize.settings import DEFAULT_TARGET_PRECISION


def register(subparsers: Any) -> None:
    """Add the `calibrate` verb."""
    parser = subparsers.add_parser(
        'calibrate', help="fit a map's confidence on a second drive with GPS or poses",
        description=__doc__.split('\n\n')[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('map_dir', type=Path, metavar='MAP_DIR', help='map directory')
    parser.add_argument('--bag', type=Path, nargs='+', required=True,
                        help='the drive: bag(s) of another recording of the route')
    parser.add_argument('--image-topic', required=True, help='image topic of the drive')
    parser.add_argument('--gps-topic',
                        help='NavSatFix topic of the drive (labels only; never a filter input)')
    parser.add_argument('--pose-topic',
                        help='instead of --gps-topic, for a map built from poses: the '
                             "drive's poses in the map's frame (PoseStamped, "
                             'PoseWithCovarianceStamped or Odometry; labels only)')
    parser.add_argument('--odom-topic',
                        help='odometry of the drive (nav_msgs/Odometry or a pose topic): the '
                             'filter is fitted reading it, and the calibration then holds for a '
                             'node that reads odometry too (odom_topic:=)')
    # The settings the node will run: the calibration holds for these only.
    add_localizer_arguments(parser, filter_default='hmm')
    parser.add_argument('--target-precision', type=float, default=DEFAULT_TARGET_PRECISION,
                        metavar='P',
                        help='the precision "matched" must keep: the lowest confidence '
                             'threshold whose held-out precision on this drive reaches P with '
                             'a 95%% lower bound for its size is stored, and the node and eval '
                             'use it unless --confidence-threshold is set (default: '
                             '%(default)s)')
    parser.add_argument('--every', type=int, default=1, help='use every N-th image')
    parser.add_argument('--dry-run', action='store_true',
                        help='fit and report, but do not write the manifest')
    parser.add_argument('--json', type=Path, help='also write the report here')
    add_model_arguments(parser, backbone_help=MAP_BACKBONE_HELP)
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if args.every < 1:
        raise ConfigError(f'--every {args.every} must be >= 1')
    if not 0.0 < args.target_precision < 1.0:
        raise ConfigError(f'--target-precision {args.target_precision} must be in (0, 1)')
    localizer_config(args)
    if not (args.map_dir / 'manifest.json').is_file():
        raise ConfigError(f'{args.map_dir} is not a map directory (no manifest.json)')
    for bag in args.bag:
        if not bag.exists():
            raise ConfigError(f'bag {bag} does not exist')
    check_bag_truth(args.map_dir, args.bag, args.image_topic, args.gps_topic, args.pose_topic,
                    args.odom_topic)


def _ece(value: float | None) -> str:
    return 'n/a' if value is None else f'{value:.3f}'


def format_report(report: dict[str, Any]) -> str:
    """Format the report: frames, top-1 accuracy and ECE (raw, cross-validated) of each."""
    settings = report['settings']
    lines = [f"drive {report['drive']}: {report['num_frames']} frames with a true position "
             f"({report['num_outside_map']} farther than {settings['threshold_m']:g} m from "
             'every map place)',
             f"settings: backbone {settings['backbone']}, ranking {settings['ranking']}, "
             f"threshold {settings['threshold_m']:g} m, filters "
             f"{', '.join(settings['filters']) or 'none calibrated'}"]
    single = report['single']
    lines.append(f"single frame: top-1 right {single['top1_right']:.3f}; ECE raw "
                 f"{_ece(single['ece_raw'])}, calibrated {_ece(single['ece_calibrated'])}, "
                 f"cross-validated {_ece(single['ece_cv'])}"
                 + ('' if single['calibrated'] else f" (not calibrated: {single['reason']})"))
    filtered = report.get('filtered')
    if filtered:
        lines.append(f"filtered (hmm, tempering {filtered['tempering']:g}): top-1 right "
                     f"{filtered['top1_right']:.3f}; ECE raw {_ece(filtered['ece_raw'])}, "
                     f"calibrated {_ece(filtered['ece_calibrated'])}, cross-validated "
                     f"{_ece(filtered['ece_cv'])}")
    for name, point in (report.get('operating_points') or {}).items():
        if point.get('threshold') is None:
            continue
        lines.append(f"operating point ({'filter' if name == 'hmm' else 'single frame'}): "
                     f"threshold {point['threshold']:.3f} keeps precision "
                     f"{point['precision']:.3f} on {point['frames']} held-out frames, at least "
                     f"{point['certified_precision']:.3f} with 95% confidence, matching "
                     f"{point['matched_fraction']:.0%}"
                     + ('' if point['target_met'] else
                        f" (target {point['target_precision']:g} not reachable on this drive: "
                        'the most it certifies; record a longer drive for more)'))
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    """Fit, report, store."""
    _check(args)
    from r2former_ros.core.calibration.drive import calibrate_on_drive  # noqa: PLC0415
    from r2former_ros.core.mapdb import map_info  # noqa: PLC0415

    # Only the manifest: calibrate_on_drive opens the map itself.
    model = load_model_for_map(args, map_info(args.map_dir))
    note_global_only(args, model.has_reranker)
    config = localizer_config(args, model.has_reranker)

    def progress(line: str) -> None:
        print(f'  {line}', file=sys.stderr, flush=True)

    report = calibrate_on_drive(args.map_dir, model, args.bag, args.image_topic, args.gps_topic,
                                config, every=args.every, write=not args.dry_run,
                                progress=progress, odom_topic=args.odom_topic,
                                target_precision=args.target_precision,
                                pose_topic=args.pose_topic)
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=float) + '\n',
                             encoding='utf-8')
    print(('stored in ' if report['written'] else 'dry run: not stored in ')
          + str(args.map_dir / 'manifest.json'))
    return 0
