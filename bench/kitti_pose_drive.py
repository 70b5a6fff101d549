"""
A real-data check of maps in a robot's own frame: KITTI odometry excerpts written as ROS 2 bags.

Reads KITTI-odometry-format folders (``image_l/NNNNNN.png`` and ``poses.txt``, one 3x4
camera-to-world matrix per image, the world being the first camera's frame: x right, y down,
z forward), writes each as rosbag2 drives with the PNG bytes as ``sensor_msgs/CompressedImage``
and the ground-truth poses as ``geometry_msgs/PoseStamped`` in frame ``map`` (turned into ROS's
convention: x forward, y left, z up, REP 103), 10 Hz as KITTI records, and no GPS. Then runs the
real commands with the DINOv2 fallback:

1. ``build_map --pose-topic`` from the even frames (the map);
2. ``r2former map info``;
3. ``r2former eval --pose-topic`` with the odd frames as the held-out queries (the raw score
   as confidence: the build's self-calibration holds for 25 m, not for this threshold);
4. ``r2former localize-bag --pose-topic --json`` over the odd frames (frames of the published
   poses, median error of the matched ones).

The data is not in the repository: see /work/data_drives/kitti_vo_excerpts/README.md for where it
comes from. Bags, maps and JSON go into OUT (default a fresh temporary directory); the summary is
printed and stored as bench/kitti_pose_drive.json.

    .venv/bin/python bench/kitti_pose_drive.py DATA_DIR [OUT] [--threshold-m 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
import tempfile
from typing import Any

from drive_tools import ROOT, VENV, code_state, run
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

IMAGE_TOPIC = '/camera/image_raw/compressed'
POSE_TOPIC = '/map_pose'
FRAME = 'map'
START_NS = 1_700_000_000 * 10**9
FRAME_NS = 100_000_000  # KITTI odometry: 10 Hz


def kitti_poses(path: Path) -> np.ndarray:
    """(N, 3, 4) camera-to-world matrices of a KITTI poses.txt."""
    rows = np.loadtxt(path, dtype=np.float64).reshape(-1, 3, 4)
    return rows


def ros_pose(matrix: np.ndarray) -> tuple[float, float, float, float]:
    """
    (x, y, z, yaw) of a KITTI camera pose in a REP-103 frame: x forward, y left, z up.

    KITTI's world is the first camera's frame (x right, y down, z forward), so x_ros = z,
    y_ros = -x, z_ros = -y; the yaw is the direction the camera looks (its z axis) in x_ros,
    y_ros.
    """
    x, y, z = matrix[:, 3]
    forward = matrix[:, 2]
    return float(z), float(-x), float(-y), math.atan2(-forward[0], forward[2])


def write_drive(path: Path, images: list[Path], poses: np.ndarray, keep: list[int]) -> Path:
    """Write a bag: the images of frames ``keep``, the poses of every frame of their span."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types = store.types

    def header(stamp: int, frame: str) -> Any:
        return types['std_msgs/msg/Header'](
            stamp=types['builtin_interfaces/msg/Time'](sec=stamp // 10**9,
                                                      nanosec=stamp % 10**9), frame_id=frame)

    messages = []
    for i in keep:
        stamp = START_NS + i * FRAME_NS
        data = np.frombuffer(images[i].read_bytes(), dtype=np.uint8)
        messages.append((stamp, IMAGE_TOPIC, types['sensor_msgs/msg/CompressedImage'](
            header=header(stamp, 'camera'), format='png', data=data)))
    for i in range(min(keep), max(keep) + 1):
        stamp = START_NS + i * FRAME_NS
        x, y, z, yaw = ros_pose(poses[i])
        pose = types['geometry_msgs/msg/Pose'](
            position=types['geometry_msgs/msg/Point'](x=x, y=y, z=z),
            orientation=types['geometry_msgs/msg/Quaternion'](
                x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)))
        messages.append((stamp, POSE_TOPIC, types['geometry_msgs/msg/PoseStamped'](
            header=header(stamp, FRAME), pose=pose)))
    messages.sort(key=lambda m: m[0])
    msgtypes = {IMAGE_TOPIC: 'sensor_msgs/msg/CompressedImage',
                POSE_TOPIC: 'geometry_msgs/msg/PoseStamped'}
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    with writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=store)
                       for topic, msgtype in msgtypes.items()}
        for stamp, topic, msg in messages:
            writer.write(connections[topic], stamp, store.serialize_cdr(msg, msgtypes[topic]))
    return path


def result_poses(bag: Path) -> tuple[list[str], list[tuple[int, float, float]]]:
    """Frame ids and (stamp, x, y) of the /pose messages of a localize-bag result."""
    from rosbags.highlevel import AnyReader  # noqa: PLC0415

    frames, poses = [], []
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        connections = [c for c in reader.connections if c.topic == '/pose']
        for connection, stamp, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            frames.append(msg.header.frame_id)
            poses.append((stamp, msg.pose.pose.position.x, msg.pose.pose.position.y))
    return frames, poses


def check_sequence(folder: Path, out: Path, threshold_m: float,
                   log: list[dict[str, Any]]) -> dict[str, Any]:
    images = sorted((folder / 'image_l').glob('*.png'))
    poses = kitti_poses(folder / 'poses.txt')
    count = min(len(images), len(poses))
    even, odd = list(range(0, count, 2)), list(range(1, count, 2))
    map_bag = write_drive(out / 'map_bag', images, poses, even)
    query_bag = write_drive(out / 'query_bag', images, poses, odd)
    map_dir = out / 'map'
    run([VENV / 'build_map', '--bag', map_bag, '--image-topic', IMAGE_TOPIC, '--pose-topic',
         POSE_TOPIC, '--all-frames', '--backbone', 'dinov2-s14', '--calibration-queries',
         len(even), '--out', map_dir, '--overwrite', '--quiet'], log)
    run([VENV / 'r2former', 'map', 'info', map_dir], log)
    info_text = log[-1]['stdout_tail']
    info = json.loads((map_dir / 'manifest.json').read_text(encoding='utf-8'))
    evaluation = out / 'eval.json'
    # --no-calibrate: the build's self-calibration holds for 25 m, not for threshold_m, so both
    # eval and localize-bag publish the raw score (eval would otherwise fit one in memory).
    run([VENV / 'r2former', 'eval', '--map', map_dir, '--bag', query_bag, '--image-topic',
         IMAGE_TOPIC, '--pose-topic', POSE_TOPIC, '--threshold-m', threshold_m, '--filter',
         'none', '--no-calibrate', '--json', evaluation], log)
    summary = json.loads(evaluation.read_text(encoding='utf-8'))
    replay = out / 'localize'
    run([VENV / 'r2former', 'localize-bag', '--map', map_dir, '--bag', query_bag,
         '--image-topic', IMAGE_TOPIC, '--out', replay, '--pose-topic', POSE_TOPIC,
         '--threshold-m', threshold_m, '--filter', 'none', '--json', out / 'localize.json'], log)
    replayed = json.loads((out / 'localize.json').read_text(encoding='utf-8'))
    frames, published = result_poses(replay)
    truth = {START_NS + i * FRAME_NS: ros_pose(poses[i])[:2] for i in odd}
    errors = np.array([math.hypot(x - truth[stamp][0], y - truth[stamp][1])
                       for stamp, x, y in published])
    xyz = np.array([ros_pose(p)[:2] for p in poses[:count]])
    return {
        'frames': count, 'route_length_m': float(np.sum(np.linalg.norm(np.diff(xyz, axis=0),
                                                                         axis=1))),
        'map_places': info['counts']['num_places'], 'queries': len(odd),
        'position_frame': info.get('position_frame'),
        'map_info': info_text,
        'eval': {key: summary.get(key) for key in (
            'recall_global', 'recall_reranked', 'num_queries', 'num_queries_in_map',
            'matched_fraction', 'matched_precision', 'ece', 'bag_images', 'pose_consistency')},
        'localize_bag': {'pose_frames': sorted(set(frames)), 'matched': len(published),
                         'median_error_matched_m': float(np.median(errors)) if errors.size
                         else None,
                         'max_error_matched_m': float(errors.max()) if errors.size else None,
                         'recall_reranked': replayed['recall_reranked']},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('data', type=Path, help='folder of KITTI_sequence_* folders')
    parser.add_argument('out', type=Path, nargs='?')
    parser.add_argument('--threshold-m', type=float, default=2.0,
                        help='metres that count as the same place (default: %(default)s; '
                             'KITTI frames are about 1 m apart)')
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix='kitti_pose_drive-'))
    load_start = os.getloadavg()[0]
    log: list[dict[str, Any]] = []
    sequences = {}
    for folder in sorted(p for p in args.data.iterdir() if (p / 'poses.txt').is_file()):
        target = out / folder.name
        target.mkdir(parents=True, exist_ok=True)
        sequences[folder.name] = check_sequence(folder, target, args.threshold_m, log)
    report = {
        'what': 'KITTI odometry excerpts (real grayscale 1241x376 frames, ground-truth poses) '
                'as ROS 2 bags with PoseStamped in frame map and no GPS; map = even frames, '
                f'queries = odd frames (held out); DINOv2 fallback on CPU, threshold '
                f'{args.threshold_m:g} m',
        'data': str(args.data), 'code': code_state(),
        'load_average_start_end': [round(load_start, 2), round(os.getloadavg()[0], 2)],
        'sequences': sequences, 'commands': log,
    }
    text = json.dumps(report, indent=2) + '\n'
    (out / 'report.json').write_text(text, encoding='utf-8')
    (ROOT / 'bench' / 'kitti_pose_drive.json').write_text(text, encoding='utf-8')
    print(text)


if __name__ == '__main__':
    main()
