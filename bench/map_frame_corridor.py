"""
The bundled corridor driven by a robot without GPS: poses in a rotated, offset `map` frame.

The same 60 + 60 real corridor images are written twice: with NavSatFix (the GPS drive, as the
demo has it) and with geometry_msgs/PoseStamped in frame `map` only, the true track turned by
0.7 rad and shifted by (-43, 127.5, 1.5) m, as a SLAM map would hold it (no NavSatFix at all).
Runs the real commands (printed as they run) with the DINOv2 fallback, writes bags, maps and
every JSON into OUT (default a fresh temporary directory), prints one JSON summary and stores it
as bench/map_frame_corridor.json:

1. ``build_map --gps-topic`` and ``build_map --pose-topic`` (no GPS) from the reference bags;
2. ``r2former map info`` of the pose map (its position frame);
3. ``r2former eval`` of the query drive: ``--gps-topic`` on the GPS map, ``--pose-topic`` on
   the pose map, single frame; then both maps calibrated on queries 0-29 (``r2former
   calibrate``, with the drive's GPS or its poses) and evaluated with the filter on 30-59;
4. ``r2former localize-bag --pose-topic --json`` on the pose map: the frame of every published
   pose, and the error of the matched frames (median), measured from the result bag against
   the drive's true map-frame positions (and as the eval JSON's pose_consistency).

    .venv/bin/python bench/map_frame_corridor.py [OUT]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import sys
import tempfile
from typing import Any

from drive_tools import ROOT, VENV, code_state, run
import numpy as np

from r2former_ros.core.io.traverse_bag import (
    GPS_TOPIC,
    IMAGE_TOPIC,
    POSE_TOPIC,
    QUERY_OFFSET_M,
    SPACING_M,
    MapFramePoses,
    bundled_corridor,
    write_traverse_bag,
)

DATA = bundled_corridor()
POSES = MapFramePoses()  # frame 'map', 0.7 rad, offset (-43, 127.5, 1.5) m
FRAMES = 60
MODEL = ['--backbone', 'dinov2-s14']
# Self-calibration on every map image: the default sizes it to the build's time, which would
# make the GPS and the pose map differ by the machine's load, not by their frames.
BUILD = ['--all-frames', '--calibration-queries', str(FRAMES), '--overwrite', '--quiet']
RECALL_KEYS = ('recall_global', 'recall_reranked', 'recall_filtered', 'num_queries',
               'num_queries_in_map', 'matched_fraction', 'matched_precision')


def write_bags(bags: Path) -> dict[str, Path]:
    """Write the reference (map) and query (drive) traverses, with GPS only and poses only."""
    refs = [DATA / 'ref' / f'{i:07d}.jpg' for i in range(FRAMES)]
    queries = [DATA / 'query' / f'{i:07d}.jpg' for i in range(FRAMES)]
    first = list(range(30))
    out = {
        'map_gps': write_traverse_bag(bags / 'map_gps', refs),
        'map_pose': write_traverse_bag(bags / 'map_pose', refs, poses=POSES, gps=False),
        'drive_gps': write_traverse_bag(bags / 'drive_gps', queries, QUERY_OFFSET_M),
        'drive_pose': write_traverse_bag(bags / 'drive_pose', queries, QUERY_OFFSET_M,
                                         poses=POSES, gps=False),
        'first_gps': write_traverse_bag(bags / 'first_gps', queries[:30], QUERY_OFFSET_M,
                                        along=first),
        'first_pose': write_traverse_bag(bags / 'first_pose', queries[:30], QUERY_OFFSET_M,
                                         along=first, poses=POSES, gps=False),
        'second_gps': write_traverse_bag(bags / 'second_gps', queries[30:], QUERY_OFFSET_M,
                                         along=list(range(30, 60))),
        'second_pose': write_traverse_bag(bags / 'second_pose', queries[30:], QUERY_OFFSET_M,
                                          along=list(range(30, 60)), poses=POSES, gps=False),
    }
    return out


def truth_flags(kind: str) -> list[Any]:
    return ['--gps-topic', GPS_TOPIC] if kind == 'gps' else ['--pose-topic', POSE_TOPIC]


def evaluate(out: Path, name: str, map_dir: Path, bag: Path, kind: str, filt: str,
             log: list[dict[str, Any]]) -> dict[str, Any]:
    result = out / f'eval_{name}.json'
    run([VENV / 'r2former', 'eval', '--map', map_dir, '--bag', bag, '--image-topic',
         IMAGE_TOPIC, *truth_flags(kind), '--filter', filt, '--json', result], log)
    return json.loads(result.read_text(encoding='utf-8'))


def recall_part(summary: dict[str, Any]) -> dict[str, Any]:
    return {**{key: summary.get(key) for key in RECALL_KEYS}, 'ece': summary['ece']}


def same_results(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """
    Compare two evals: recall and matched figures, the place of every frame, the confidence.

    The confidence may differ in its last digits: a calibration fitted on rotated coordinates
    rounds differently.
    """
    published = np.asarray(a['track']['published']) == np.asarray(b['track']['published'])
    confidence = np.abs(np.asarray(a['track']['confidence'], dtype=float)
                        - np.asarray(b['track']['confidence'], dtype=float))
    return {'recall_and_matched_equal': all(a.get(k) == b.get(k) for k in RECALL_KEYS),
            'published_place_equal_frames': f'{int(published.sum())}/{published.size}',
            'max_confidence_difference': float(confidence.max()),
            'ece_difference': abs(float(a['ece']) - float(b['ece']))}


def read_result_bag(path: Path) -> dict[str, Any]:
    """Per topic: count, frame ids; the /pose messages' positions and stamps."""
    from rosbags.highlevel import AnyReader  # noqa: PLC0415
    from rosbags.typesys import Stores, get_typestore  # noqa: PLC0415

    topics: dict[str, dict[str, Any]] = {}
    poses = []
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        for connection, stamp, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            entry = topics.setdefault(connection.topic, {'count': 0, 'frames': set()})
            entry['count'] += 1
            frame = msg.map_frame_id if connection.topic == '/place_recognition' \
                else msg.header.frame_id
            entry['frames'].add(frame)
            if connection.topic == '/pose':
                where = msg.pose.pose.position
                poses.append((stamp, where.x, where.y))
    for entry in topics.values():
        entry['frames'] = sorted(entry['frames'])
    return {'topics': topics, 'poses': poses}


def matched_errors(poses: list[tuple[int, float, float]], start_ns: int) -> np.ndarray:
    """Distance of each published pose to the drive's true map-frame position at its stamp."""
    errors = []
    for stamp, x, y in poses:
        frame = round((stamp - start_ns) / 1e9)
        true_x, true_y, _ = POSES.to_frame(frame * SPACING_M, QUERY_OFFSET_M, 0.0)
        errors.append(float(np.hypot(x - true_x, y - true_y)))
    return np.asarray(errors)


def main() -> None:
    from r2former_ros.core.io.traverse_bag import START_NS  # noqa: PLC0415

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(tempfile.mkdtemp(prefix='map_frame_corridor-'))
    out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    log: list[dict[str, Any]] = []
    bags = write_bags(out / 'bags')
    maps = {'gps': out / 'map_gps', 'pose': out / 'map_pose'}
    for kind, map_dir in maps.items():
        run([VENV / 'build_map', '--bag', bags[f'map_{kind}'], '--image-topic', IMAGE_TOPIC,
             *truth_flags(kind), *MODEL, '--out', map_dir, *BUILD], log)
    run([VENV / 'r2former', 'map', 'info', maps['pose']], log)
    info_text = log[-1]['stdout_tail']
    run([VENV / 'r2former', 'map', 'info', maps['pose'], '--json'], log)
    info = json.loads((maps['pose'] / 'manifest.json').read_text(encoding='utf-8'))
    single = {kind: evaluate(out, f'{kind}_single', maps[kind], bags[f'drive_{kind}'], kind,
                             'none', log) for kind in maps}
    filtered = {}
    for kind, map_dir in maps.items():
        run([VENV / 'r2former', 'calibrate', map_dir, '--bag', bags[f'first_{kind}'],
             '--image-topic', IMAGE_TOPIC, *truth_flags(kind), '--filter', 'hmm', '--json',
             out / f'calibrate_{kind}.json'], log)
        filtered[kind] = evaluate(out, f'{kind}_filtered', map_dir, bags[f'second_{kind}'],
                                  kind, 'hmm', log)
    replay = out / 'localize_pose'
    run([VENV / 'r2former', 'localize-bag', '--map', maps['pose'], '--bag', bags['drive_pose'],
         '--image-topic', IMAGE_TOPIC, '--out', replay, '--pose-topic', POSE_TOPIC, '--filter',
         'hmm', '--json', out / 'localize_pose.json'], log)
    replayed = json.loads((out / 'localize_pose.json').read_text(encoding='utf-8'))
    result_bag = read_result_bag(replay)
    errors = matched_errors(result_bag['poses'], START_NS)
    report = {
        'what': 'corridor (VPR-Bench, 60 + 60 real images, 10 m/frame), the query drive 1 m '
                'to the side; GPS drive vs the same images with PoseStamped in frame map '
                f'(rotation {POSES.rotation_rad} rad, offset {list(POSES.offset_m)} m, no '
                'NavSatFix); DINOv2 fallback on CPU, threshold 25 m, rerank top 100 (MNN)',
        'code': code_state(),
        'load_average_start_end': [round(v, 2) for v in (*load_start[:1],
                                                          os.getloadavg()[0])],
        'pose_map': {'position_frame': info.get('position_frame'),
                     'origin': info.get('origin'), 'places': info['counts']['num_places'],
                     'map_info_text': info_text},
        'single_frame_all_60': {kind: recall_part(single[kind]) for kind in maps},
        'single_frame_same': same_results(single['gps'], single['pose']),
        'filter_calibrated_on_0_29_scored_30_59': {kind: recall_part(filtered[kind])
                                                   for kind in maps},
        'filter_same': same_results(filtered['gps'], filtered['pose']),
        'localize_bag_pose_map': {
            'filter': replayed['filter'], 'topics': result_bag['topics'],
            'matched_frames': int(errors.size),
            'median_error_matched_m': float(np.median(errors)) if errors.size else None,
            'p90_error_matched_m': float(np.percentile(errors, 90)) if errors.size else None,
            'pose_consistency': replayed['pose_consistency'],
            'recall_filtered': replayed['recall_filtered']},
        'commands': log,
    }
    text = json.dumps(report, indent=2) + '\n'
    (out / 'report.json').write_text(text, encoding='utf-8')
    (ROOT / 'bench' / 'map_frame_corridor.json').write_text(text, encoding='utf-8')
    print(text)


if __name__ == '__main__':
    main()
