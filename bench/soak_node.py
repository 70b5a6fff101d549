"""
Soak and overload: 10,000 raw frames at 30 Hz through the localization node.

The node runs from ``ros2 launch`` (small seeded 128x160 model on the CPU, 12-place map, the
launch file's DDS profile); a camera process publishes 640x480 bgr8 frames with sensor-data QoS
(with the same profile, see config/fastdds_large_images.xml). The node cannot keep up with
30 Hz on a small CPU, so it runs overloaded the whole time: it must drop (and count) what it
cannot process, keep its latency bounded and its memory flat.

Measured: the node's counters (frames_in / processed / dropped / bad / errors), end-to-end
latency (receive -> publish, ``total_ms`` of every result) p50/p90/p99/max, the node process's
RSS every 5 s (growth from the end of warm-up to the end).

Usage (in a sourced workspace, see ros_node_bench.py; takes frames / 30 s plus start-up):
    python bench/soak_node.py [--frames 10000] [--out bench/soak_node.json]
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

from bench_report import rss_mb
from ros_node_bench import PROFILE, Launched, Probe, ros_environment, start_camera, write_test_map


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100.0 * len(ordered)) - 1))]


def generated_place_recognition() -> type:
    """Return r2former_ros.msg.PlaceRecognition from the sourced install (PYTHONPATH)."""
    import r2former_ros  # noqa: PLC0415

    for entry in os.environ.get('PYTHONPATH', '').split(os.pathsep):
        package = Path(entry) / 'r2former_ros'
        found = (package / 'msg' / '__init__.py').is_file()
        if found and str(package) not in r2former_ros.__path__:
            r2former_ros.__path__.append(str(package))
    from r2former_ros.msg import PlaceRecognition  # noqa: PLC0415

    return PlaceRecognition


def main() -> None:
    """Run the soak and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--frames', type=int, default=10_000)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--size', default='640x480', help='WxH of the camera frames')
    parser.add_argument('--warmup-results', type=int, default=100,
                        help='results before the RSS baseline is taken')
    parser.add_argument('--out', type=Path, default=Path(__file__).with_name('soak_node.json'))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split('x'))

    place_recognition = generated_place_recognition()

    with tempfile.TemporaryDirectory(prefix='soak_node_') as tmp:
        workdir = Path(tmp)
        map_path = write_test_map(workdir)
        domain_id = random.randint(110, 200)
        launched = Launched([f'map:={map_path}', 'device:=cpu', 'image_topic:=/camera/image_raw',
                             'rviz:=false'], ros_environment(domain_id, None, workdir),
                            workdir / 'launch.log')
        probe = Probe(domain_id)
        latencies: list[float] = []
        probe.node.create_subscription(place_recognition, '/place_recognition',
                                       lambda msg: latencies.append(msg.total_ms), 100)
        try:
            if not probe.spin_until(lambda: probe.diagnostics.get('state') == 'active', 180.0):
                raise RuntimeError(f'node not active:\n{launched.output()[-3000:]}')
            pid = launched.node_pid()
            assert pid is not None, 'no localization_node process under ros2 launch'
            camera = start_camera(width, height, args.frames, args.rate,
                                  ros_environment(domain_id, PROFILE, workdir),
                                  workdir / 'camera.log')
            start = time.monotonic()
            samples: list[tuple[float, float, int]] = []  # (seconds, RSS MiB, results)
            baseline: tuple[float, int] | None = None
            next_sample = start
            while camera.poll() is None:
                next_sample += 5.0
                probe.spin_until(lambda due=next_sample: time.monotonic() >= due, 10.0)
                sample = (round(time.monotonic() - start, 1), round(rss_mb(pid), 1),
                          len(latencies))
                samples.append(sample)
                if baseline is None and len(latencies) >= args.warmup_results:
                    baseline = (sample[1], len(latencies))
            probe.spin_until(lambda: False, 3.0)  # last results and diagnostics
            wall_s = time.monotonic() - start
            final_rss = rss_mb(pid)
            counters = {key: probe.count(key) for key in (
                'frames_in', 'frames_processed', 'frames_dropped', 'bad_inputs',
                'processing_errors')}
        finally:
            probe.close()
            exit_code = launched.stop()
        node_log = launched.output()

    base_rss, base_results = baseline if baseline is not None else (samples[0][1], 0)
    processed_after_warmup = max(len(latencies) - base_results, 1)
    report = {
        'what': f'{args.frames} raw {width}x{height} bgr8 frames at {args.rate:g} Hz through '
                'the node (ros2 launch, small seeded 128x160 model on CPU, 12-place map), '
                'camera in another process, sensor-data QoS',
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, '
                   f'Python {platform.python_version()}, ROS {os.environ.get("ROS_DISTRO", "?")}'
                   ', no GPU',
        'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        'published': args.frames,
        'wall_s': round(wall_s, 1),
        **counters,
        'delivered_fraction': round(counters['frames_in'] / args.frames, 4),
        'results_received': len(latencies),
        'processing_rate_hz': round(len(latencies) / wall_s, 2),
        'latency_ms': {
            'p50': round(percentile(latencies, 50), 1), 'p90': round(percentile(latencies, 90), 1),
            'p99': round(percentile(latencies, 99), 1), 'max': round(max(latencies), 1),
        },
        'rss_mib': {
            'after_warmup': base_rss, 'end': round(final_rss, 1),
            'growth': round(final_rss - base_rss, 1),
            'growth_per_1000_results': round((final_rss - base_rss) * 1000.0
                                             / processed_after_warmup, 2),
            'max': max(s[1] for s in samples),
        },
        'rss_samples_every_30s': [s for i, s in enumerate(samples) if i % 6 == 0],
        'launch_exit_code_after_sigint': exit_code,
        'context_invalid_messages': node_log.count("publisher's context is invalid"),
    }
    text = json.dumps(report, indent=1)
    print(text)
    args.out.write_text(text + '\n')


if __name__ == '__main__':
    main()
