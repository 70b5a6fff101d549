"""
`build_map`: build a place-recognition map from recorded bags or a geotagged image folder.

Installed as a console script (pip) and as ``lib/r2former_ros/build_map`` (``ros2 run``); needs
no ROS installation.
"""

from __future__ import annotations

import argparse
import logging
import sys

from r2former_ros.cli.model_args import add_model_arguments
from r2former_ros.core import mapping
from r2former_ros.core.errors import R2FormerError
from r2former_ros.core.io.folders import LAYOUTS
from r2former_ros.core.mapdb import LOCAL_FORMATS
from r2former_ros.core.mapdb.tuning import DEFAULT_TARGET_RECALL, DEFAULT_TOP_K
from r2former_ros.core.mapping.decode_pool import DEFAULT_DECODE_THREADS
from r2former_ros.core.threads import apply_threads, prefer_passive_wait

PROG = 'build_map'
_SPACING_M = mapping.DEFAULT_MIN_DISTANCE_M  # short name for the help text below

EPILOG = f"""\
examples:
  # what does the bag hold?
  build_map --bag drive_2024_05_01 --list-topics

  # a map from one drive (rosbag2 directory, .db3 or .mcap, a bare .mcap or a ROS 1 .bag)
  build_map --bag drive_2024_05_01 --image-topic /camera/image_raw/compressed \\
      --gps-topic /gps/fix --out maps/campus --checkpoint CVPR23_DeitS_Rerank.pth

  # two drives, heading from odometry, on a GPU server
  build_map --bag morning --bag evening --image-topic /cam/image --gps-topic /fix \\
      --pose-topic /odom --device cuda --batch-size 64 --out maps/campus --overwrite

  # a robot without GPS: positions from its SLAM/localization poses, the map in their frame
  build_map --bag warehouse_drive --image-topic /cam/image --pose-topic /map_pose \
      --out maps/warehouse

  # add a later drive to an existing map (same checkpoint only)
  build_map --bag drive_2024_06_01 --image-topic /cam/image --gps-topic /fix \\
      --out maps/campus --append

  # a dataset folder: VPR benchmark names (@UTM_east@UTM_north@zone@letter@lat@lon@...@.jpg)
  build_map --images pitts30k/images/test/database --layout vg --out maps/pitts30k
  # ... or a folder plus a CSV with columns file, lat, lon[, alt][, heading]
  build_map --images photos --csv photos/positions.csv --out maps/photos

keyframes: an image becomes a place when the robot moved --min-distance metres (default
{_SPACING_M:g}) or --min-interval seconds passed since the last kept image. Why
{_SPACING_M:g} m: place recognition is judged correct within 25 m (R2Former and the VPR
benchmarks) and localization aims at 10-25 m, so a place every {_SPACING_M:g} m leaves
several map images within any 10 m, robust to occlusion and viewpoint change, while a 10 km
route stays at 5000 places. Without it a 15 Hz camera at walking speed (1.4 m/s) gives 10
images per metre: 20x the map for almost no recall. Image folders keep every image.

index: an IVF or HNSW index (--index ivf|hnsw, or auto above 300,000 places) is tuned on the
map's own descriptors: map images are the queries (each leaving its own place out), and nprobe
/ efSearch grow until recall@--index-top-k against exact search reaches --index-recall. The
value, the recall and the ms per query go into the manifest (`r2former map info` shows them);
when no value reaches the target within --index-budget-ms, the map keeps the exact index and
the log says why. On a CUDA localizer the search is exact on the GPU whatever the map stores.

ray: --ray runs the same build on Ray Data (one decoding task per bag, model actors) and
writes the same map; see the README section "City-scale maps".

failures: exit code 2 and one line naming the problem (missing topic with the available ones,
truncated or corrupt bag, no usable GPS fix or pose, poses without one frame id, existing output
without --overwrite/--append, a map from another checkpoint, GPS places appended to a map in a
pose frame or the reverse). Images that cannot be decoded (unknown encoding, corrupt
JPEG) are skipped and counted in the manifest (undecodable_skipped); the build fails only
when none decodes. Nothing is ever half-written: the map is built in a temporary sibling
directory and renamed into place, and a failure or Ctrl-C leaves the previous map (or none).
"""


def build_parser() -> argparse.ArgumentParser:
    """Build the ``build_map`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.strip().split('\n')[0].split(': ', 1)[1],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_argument_group('input')
    src.add_argument('--bag', action='append', default=[], metavar='PATH',
                     help='rosbag2 directory, .db3/.mcap file or ROS 1 .bag (repeatable; read in '
                          'the given order)')
    src.add_argument('--image-topic', metavar='TOPIC',
                     help='sensor_msgs/Image or CompressedImage topic')
    src.add_argument('--gps-topic', metavar='TOPIC',
                     help='sensor_msgs/NavSatFix topic: the place positions (a GPS map)')
    src.add_argument('--pose-topic', metavar='TOPIC',
                     help='geometry_msgs/PoseStamped, PoseWithCovarianceStamped or '
                          'nav_msgs/Odometry topic. Alone (no --gps-topic): the place '
                          "positions and headings, and the map is in the poses' frame (e.g. "
                          'map); beside --gps-topic: the heading only (default: direction of '
                          'GPS motion)')
    src.add_argument('--list-topics', action='store_true',
                     help="print the bags' topics, types and message counts, then exit")
    src.add_argument('--images', metavar='DIR', help='image folder instead of bags')
    src.add_argument('--csv', metavar='FILE',
                     help='positions of the --images files: columns file, lat, lon[, alt]'
                          '[, heading in compass degrees]')
    src.add_argument('--layout', choices=LAYOUTS,
                     help='--images file names carry the position (VPR benchmark layout)')
    sel = parser.add_argument_group('keyframes and positions')
    sel.add_argument('--min-distance', type=float, default=mapping.DEFAULT_MIN_DISTANCE_M,
                     metavar='METRES',
                     help=f'keep an image after moving this far (default '
                          f'{_SPACING_M:g}; see below)')
    sel.add_argument('--min-interval', type=float, metavar='SECONDS',
                     help='also keep an image this long after the last kept one (default: off)')
    sel.add_argument('--all-frames', action='store_true', help='keep every geotagged image')
    sel.add_argument('--max-gps-gap', type=float, default=mapping.DEFAULT_MAX_GPS_GAP_S,
                     metavar='SECONDS',
                     help='drop images farther than this from a usable fix (or pose, '
                          'without GPS) on either side '
                          f'(default {mapping.DEFAULT_MAX_GPS_GAP_S:g})')
    mdl = parser.add_argument_group('model')
    add_model_arguments(mdl)
    mdl.add_argument('--batch-size', type=int, default=mapping.DEFAULT_BATCH_SIZE,
                     help=f'images per model call (default {mapping.DEFAULT_BATCH_SIZE})')
    mdl.add_argument('--decode-threads', type=int, default=DEFAULT_DECODE_THREADS, metavar='N',
                     help='images decoded in parallel (default: one per core, here '
                          f'{DEFAULT_DECODE_THREADS})')
    out = parser.add_argument_group('output')
    out.add_argument('--out', metavar='MAP_DIR', help='map directory to write')
    mode = out.add_mutually_exclusive_group()
    mode.add_argument('--append', action='store_true',
                      help='add places to the map at --out (same checkpoint only); the index '
                           'is rebuilt')
    mode.add_argument('--overwrite', action='store_true', help='replace the map at --out')
    out.add_argument('--local-format', choices=LOCAL_FORMATS, default='int8',
                     help='local descriptor storage: int8 (default, half the size, within '
                          '1/254 per component) or fp16')
    out.add_argument('--index', choices=mapping.INDEX_TYPES, default=None,
                     help='global index: auto (default: exact for small maps, IVF above), '
                          'exact, ivf or hnsw; on --append the stored choice. IVF/HNSW are '
                          'tuned on the map itself (see below)')
    out.add_argument('--index-top-k', type=int, default=DEFAULT_TOP_K, metavar='K',
                     help='tune IVF nprobe / HNSW efSearch until recall@K against exact search '
                          "reaches --index-recall (default %(default)s, the localizer's "
                          'retrieval.top_k)')
    out.add_argument('--index-recall', type=float, default=DEFAULT_TARGET_RECALL, metavar='R',
                     help='recall@K target of the tuning (default %(default)s)')
    out.add_argument('--index-budget-ms', type=float, metavar='MS',
                     help='slowest acceptable ms per query of the tuned index (default: the '
                          "exact scan's own); over budget the map keeps the exact index")
    out.add_argument('--no-thumbnails', action='store_true',
                     help='skip the small JPEG previews')
    out.add_argument('--no-calibrate', action='store_true',
                     help='skip fitting the confidence calibration after building')
    out.add_argument('--calibration-queries', type=int, metavar='N',
                     help='map images used as queries by that calibration, evenly spread '
                          '(default: as many as fit in half the time the build took, at least '
                          'a minute, up to 2000; the build says how many); each reranks the top '
                          'candidates, about 4.8 s with the official model on a 2-core CPU')
    dist = parser.add_argument_group('distributed (optional extra r2former_ros[ray])')
    dist.add_argument('--ray', nargs='?', const='local', metavar='ADDRESS',
                      help='spread decoding (CPU tasks) and feature extraction (GPU actors, CPU '
                           'actors without GPUs) over a Ray cluster: ADDRESS like auto or '
                           'ray://head:10001; without ADDRESS a local Ray on this machine')
    dist.add_argument('--ray-cpus', type=int, metavar='N',
                      help='CPUs of the local Ray started by --ray without ADDRESS '
                           '(default: all)')
    parser.add_argument('--quiet', action='store_true',
                        help='no progress bar, warnings and errors only')
    return parser


class _UsageError(Exception):
    """A flag combination argparse cannot express; reported like argparse errors."""


def _list_topics(args: argparse.Namespace) -> int:
    """Print topics as an aligned table."""
    if not args.bag:
        raise _UsageError('--list-topics needs --bag PATH')
    topics = mapping.read_topics(args.bag)
    width = max([len('topic')] + [len(t.name) for t in topics])
    type_width = max([len('type')] + [len(t.msgtype) for t in topics])
    print(f'{"topic":<{width}}  {"type":<{type_width}}  count')
    for topic in topics:
        print(f'{topic.name:<{width}}  {topic.msgtype:<{type_width}}  {topic.count}')
    return 0


def _options(args: argparse.Namespace) -> mapping.BuildOptions:
    if not args.out:
        raise _UsageError('--out MAP_DIR is required')
    return mapping.BuildOptions(
        out=args.out, bags=args.bag, image_topic=args.image_topic, gps_topic=args.gps_topic,
        pose_topic=args.pose_topic, images_dir=args.images, csv_file=args.csv,
        layout=args.layout, min_distance_m=args.min_distance, min_interval_s=args.min_interval,
        all_frames=args.all_frames, max_gps_gap_s=args.max_gps_gap, batch_size=args.batch_size,
        decode_threads=args.decode_threads,
        append=args.append, overwrite=args.overwrite, local_format=args.local_format,
        index_type=args.index, index_top_k=args.index_top_k,
        index_target_recall=args.index_recall, index_budget_ms=args.index_budget_ms,
        thumbnails=not args.no_thumbnails,
        calibrate=not args.no_calibrate, calibration_queries=args.calibration_queries,
        progress=not args.quiet, backbone=args.backbone,
        checkpoint=args.checkpoint, device=args.device, input_hw=args.input_size,
        num_local=args.num_local, precision=args.precision)


def _summary(report: mapping.BuildReport) -> str:
    from r2former_ros.core.mapping.extract import MIN_IMAGE_PX  # noqa: PLC0415 - loaded by now

    lines = [f'wrote {report.path}: {report.added} new places, {report.num_places} in the map']
    for source in report.sources:
        where = source.get('bag') or source.get('images_dir')
        dropped = ''
        if source['kind'] == 'rosbag' and 'dropped_pose_gap' in source:  # positions from poses
            dropped = (f', {source["dropped_pose_gap"]} dropped in pose gaps, '
                       f'{source["dropped_outside_poses"]} outside the poses, '
                       f'{source["not_keyframe"]} between keyframes')
        elif source['kind'] == 'rosbag':
            dropped = (f', {source["dropped_gps_gap"]} dropped in GPS gaps, '
                       f'{source["dropped_outside_fixes"]} outside the fixes, '
                       f'{source["not_keyframe"]} between keyframes')
        lines.append(f'  {where}: {source["images_read"]} images read, {source["kept"]} kept'
                     f'{dropped}, {source["undecodable_skipped"]} skipped (undecodable or '
                     f'smaller than {MIN_IMAGE_PX}x{MIN_IMAGE_PX} px)')
    # The plain and the Ray build time different stages; show the ones this build has.
    parts = [f'{report.seconds[key]:.1f} s {label}' for key, label in _TIME_LABELS
             if key in report.seconds]
    lines.append(f'  time: {", ".join(parts)}' + ('' if report.calibrated else '; not calibrated'))
    return '\n'.join(lines)


_TIME_LABELS = (('total_s', 'total'), ('plan_s', 'planning'),
                ('read_decode_s', 'reading+decoding'), ('model_s', 'model'),
                ('ray_s', 'Ray workers (decoding+model)'))


def main(argv: list[str] | None = None) -> int:
    """Run ``build_map``; every failure is one line on stderr and a non-zero exit code."""
    prefer_passive_wait()  # before the pipeline imports torch (OpenMP reads it once, at load)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    # faiss announces at INFO which CPU build it tries and loads (it is imported lazily, after
    # this point): noise in every command's output, so only its warnings show.
    logging.getLogger('faiss').setLevel(logging.WARNING)
    try:
        if args.list_topics:
            return _list_topics(args)
        options = _options(args)
        apply_threads(args.threads)
        # The pipeline loads torch; imported only now, so --help and usage errors are instant.
        if args.ray is not None:
            from r2former_ros.core.mapping.ray_build import build_map_ray  # noqa: PLC0415

            report = build_map_ray(options, None if args.ray == 'local' else args.ray,
                                   num_cpus=args.ray_cpus)
        else:
            from r2former_ros.core.mapping.build import build_map  # noqa: PLC0415

            report = build_map(options)
    except _UsageError as err:
        parser.error(str(err))  # exits 2 with the usage line
    except R2FormerError as err:
        print(f'{PROG}: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted; no map was written or changed', file=sys.stderr)
        return 130
    if not args.quiet:
        print(_summary(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
