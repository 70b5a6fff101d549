"""
Camera frames between processes: how many reach the node, and what each way costs.

For each resolution a camera-like publisher in its own process sends frames at 30 Hz with
sensor-data QoS to the localization node started by ``ros2 launch`` (small seeded model on the
CPU, 12-place map). Set-ups:
    default     raw bgr8, no DDS profile anywhere (dds_profile:=none, camera at Fast DDS
                defaults)
    node_only   raw bgr8, the launch file's profile on the node only, camera at defaults
    both        raw bgr8, the launch file's profile on the node and the same file loaded by the
                camera
    compressed  JPEG (quality 85, about 380 KB at 1920x1080) on <topic>/compressed, camera at
                DDS defaults, node launched with image_transport:=compressed (and, as always, the
                launch file's profile)

Besides ``frames_in`` (what the node received) each run reports what it costs: CPU of the node
and of the camera process (percent of one core over the run, from /proc; the bench camera sends
ready-made JPEGs, so for a camera that must encode them the JPEG set-up adds ``jpeg_encode_ms``
per frame, measured here with OpenCV), the node's decode time per frame (``decode_ms`` of its
results: JPEG decoding vs the bgr8 -> RGB copy) and the transport latency (result arrival minus
image stamp, less the node's own receive-to-publish time).

Usage (in a sourced workspace, see ros_node_bench.py):
    python bench/camera_delivery.py [--frames 150] [--setups both compressed]
        [--resolutions 1920x1080] [--out bench/camera_delivery.json]
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

from bench_report import load_average
from ros_node_bench import (
    PROFILE,
    Launched,
    Probe,
    camera_pictures,
    ros_environment,
    start_camera,
    write_test_map,
)
from soak_node import generated_place_recognition, percentile

RESOLUTIONS = ('640x480', '1280x720', '1920x1080')
SETUPS = ('default', 'node_only', 'both', 'compressed')


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def jpeg_costs(width: int, height: int) -> dict[str, float]:
    """Measure what a camera without its own JPEG encoder pays per frame (median of 20)."""
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    frame = cv2.imdecode(np.frombuffer(camera_pictures(width, height, 'compressed', 1)[0],
                                       np.uint8), cv2.IMREAD_COLOR)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        ok, encoded = cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
        times.append((time.perf_counter() - start) * 1e3)
    return {'jpeg_kb': round(len(encoded) / 1024), 'jpeg_encode_ms': round(percentile(times, 50),
                                                                          1)}


def run_one(map_path: Path, workdir: Path, setup: str, width: int, height: int, frames: int,
            rate_hz: float, place_recognition: type) -> dict:
    """One launch + one camera; returns the counts and costs."""
    domain_id = random.randint(110, 200)  # clear of the tests' 1-101
    node_env = ros_environment(domain_id, None, workdir)
    camera_env = ros_environment(domain_id, PROFILE if setup == 'both' else None, workdir)
    arguments = [f'map:={map_path}', 'device:=cpu', 'image_topic:=/camera/image_raw']
    if setup == 'default':
        arguments.append('dds_profile:=none')
    transport = 'compressed' if setup == 'compressed' else 'raw'
    arguments.append(f'image_transport:={transport}')
    tag = f'{setup}_{width}x{height}'
    launched = Launched(arguments, node_env, workdir / f'launch_{tag}.log')
    probe = Probe(domain_id)
    seen: list[tuple[float, float, float, float]] = []  # (arrival, stamp, total_ms, decode_ms)
    probe.node.create_subscription(
        place_recognition, '/place_recognition',
        lambda msg: seen.append((time.time(), msg.header.stamp.sec + msg.header.stamp.nanosec
                                 * 1e-9, msg.total_ms, msg.decode_ms)), 100)
    try:
        if not probe.spin_until(lambda: probe.diagnostics.get('state') == 'active', 120.0):
            raise RuntimeError(f'node not active:\n{launched.output()[-3000:]}')
        node_pid = launched.node_pid()
        assert node_pid is not None
        camera = start_camera(width, height, frames, rate_hz, camera_env,
                              workdir / f'camera_{tag}.log', transport=transport)
        node_cpu, camera_cpu, started = cpu_seconds(node_pid), 0.0, time.monotonic()
        while camera.poll() is None and time.monotonic() < started + 120.0 + frames / rate_hz:
            camera_cpu = cpu_seconds(camera.pid)
            probe.spin_until(lambda: False, 0.2)
        seconds = time.monotonic() - started
        node_cpu = cpu_seconds(node_pid) - node_cpu
        probe.spin_until(lambda: False, 3.0)  # diagnostics after the last frame
        result = {
            'setup': setup, 'resolution': f'{width}x{height}',
            'encoding': 'jpeg' if transport == 'compressed' else 'bgr8',
            'rate_hz': rate_hz, 'published': frames,
            'frames_in': probe.count('frames_in'),
            'frames_processed': probe.count('frames_processed'),
            'frames_dropped': probe.count('frames_dropped'),
            'node_cpu_percent': round(100.0 * node_cpu / seconds, 1),
            'camera_cpu_percent': round(100.0 * camera_cpu / seconds, 1),
        }
        if seen:
            result['decode_ms_mean'] = round(sum(s[3] for s in seen) / len(seen), 2)
            transport_ms = [(arrival - stamp) * 1e3 - total for arrival, stamp, total, _ in seen]
            result['transport_ms_p50'] = round(percentile(transport_ms, 50), 1)
        result['delivered_fraction'] = round(result['frames_in'] / frames, 3)
        if transport == 'compressed':
            result.update(jpeg_costs(width, height))
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
    parser.add_argument('--resolutions', nargs='+', default=list(RESOLUTIONS))
    parser.add_argument('--out', type=Path, default=Path(__file__).with_name(
        'camera_delivery.json'))
    args = parser.parse_args()
    place_recognition = generated_place_recognition()
    rows = []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix='camera_delivery_') as tmp:
        workdir = Path(tmp)
        map_path = write_test_map(workdir)
        for setup in args.setups:
            for resolution in args.resolutions:
                width, height = (int(v) for v in resolution.split('x'))
                row = run_one(map_path, workdir, setup, width, height, args.frames, args.rate,
                              place_recognition)
                print(json.dumps(row), flush=True)
                rows.append(row)
    report = {
        'what': 'camera frames (raw bgr8, or JPEG on <topic>/compressed) from another process, '
                'sensor-data QoS, 30 Hz; frames_in = what the node received; CPU in percent of '
                'one core over the run',
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, Python '
                   f'{platform.python_version()}, ROS {os.environ.get("ROS_DISTRO", "?")}',
        'date': time.strftime('%Y-%m-%d'),
        'loadavg_before': load_before, 'loadavg_after': load_average(),
        'runs': rows,
        'command': 'python bench/camera_delivery.py ' + ' '.join(
            f'--{key} ' + (' '.join(map(str, value)) if isinstance(value, list) else str(value))
            for key, value in vars(args).items() if key != 'out'),
    }
    args.out.write_text(json.dumps(report, indent=1) + '\n')


if __name__ == '__main__':
    main()
