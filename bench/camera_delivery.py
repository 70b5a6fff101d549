"""
Raw camera frames between processes: how many reach the node (its ``frames_in`` counter).

For each resolution a camera-like publisher in its own process sends bgr8 frames at 30 Hz with
sensor-data QoS to the localization node started by ``ros2 launch`` (small seeded model on the
CPU, 12-place map). Three set-ups:
    default     no DDS profile anywhere (dds_profile:=none, camera with Fast DDS defaults): before
    node_only   the launch file's profile on the node only, camera with defaults
    both        the launch file's profile on the node and the same file for the camera: after

Usage (in a sourced workspace, see ros_node_bench.py):
    python bench/camera_delivery.py [--frames 150] [--out bench/camera_delivery.json]
Prints one JSON line per run and writes them all to --out.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import random
import tempfile
import time

from ros_node_bench import PROFILE, Launched, Probe, ros_environment, start_camera, write_test_map

RESOLUTIONS = ((640, 480), (1280, 720), (1920, 1080))
SETUPS = ('default', 'node_only', 'both')


def run_one(map_path: Path, workdir: Path, setup: str, width: int, height: int, frames: int,
            rate_hz: float) -> dict:
    """One launch + one camera; returns the counts."""
    domain_id = random.randint(110, 200)  # clear of the tests' 1-101
    node_env = ros_environment(domain_id, None, workdir)
    camera_env = ros_environment(domain_id, PROFILE if setup == 'both' else None, workdir)
    arguments = [f'map:={map_path}', 'device:=cpu', 'image_topic:=/camera/image_raw']
    if setup == 'default':
        arguments.append('dds_profile:=none')
    tag = f'{setup}_{width}x{height}'
    launched = Launched(arguments, node_env, workdir / f'launch_{tag}.log')
    probe = Probe(domain_id)
    try:
        if not probe.spin_until(lambda: probe.diagnostics.get('state') == 'active', 120.0):
            raise RuntimeError(f'node not active:\n{launched.output()[-3000:]}')
        camera = start_camera(width, height, frames, rate_hz, camera_env,
                              workdir / f'camera_{tag}.log')
        camera.wait(timeout=120.0 + frames / rate_hz)
        probe.spin_until(lambda: False, 3.0)  # diagnostics after the last frame
        result = {
            'setup': setup, 'resolution': f'{width}x{height}', 'encoding': 'bgr8',
            'rate_hz': rate_hz, 'published': frames,
            'frames_in': probe.count('frames_in'),
            'frames_processed': probe.count('frames_processed'),
            'frames_dropped': probe.count('frames_dropped'),
        }
        result['delivered_fraction'] = round(result['frames_in'] / frames, 3)
    finally:
        probe.close()
        result_code = launched.stop()
    result['launch_exit_code'] = result_code
    return result


def main() -> None:
    """Run every set-up at every resolution and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--frames', type=int, default=150)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--setups', nargs='+', default=list(SETUPS), choices=SETUPS)
    parser.add_argument('--out', type=Path, default=Path(__file__).with_name(
        'camera_delivery.json'))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix='camera_delivery_') as tmp:
        workdir = Path(tmp)
        map_path = write_test_map(workdir)
        for setup in args.setups:
            for width, height in RESOLUTIONS:
                row = run_one(map_path, workdir, setup, width, height, args.frames, args.rate)
                print(json.dumps(row), flush=True)
                rows.append(row)
    report = {
        'what': 'raw bgr8 frames, camera in another process, sensor-data QoS, 30 Hz; '
                'frames_in = what the node received',
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, Python '
                   f'{platform.python_version()}, ROS {os.environ.get("ROS_DISTRO", "?")}',
        'date': time.strftime('%Y-%m-%d'),
        'runs': rows,
    }
    args.out.write_text(json.dumps(report, indent=1) + '\n')


if __name__ == '__main__':
    main()
