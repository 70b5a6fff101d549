"""
Soak: 10,000 raw frames at 30 Hz through the node, with map swaps, resets and parameter changes.

The node runs from ``ros2 launch`` (small seeded 128x160 model on the CPU, the launch file's DDS
profile, ``filter:=hmm`` so a reset has something to restart); a camera process publishes
640x480 bgr8 frames with sensor-data QoS (with the same profile, see
config/fastdds_large_images.xml). The node cannot keep up with 30 Hz on a small CPU, so it runs
overloaded the whole time: it must drop (and count) what it cannot process, keep its latency
bounded and its memory flat. Every ``--swap-every`` frames the probe calls ``~/load_map``,
alternating the 12-place route map and a synthetic map of ``--big-places`` places (same model);
with ``--reset-every`` / ``--param-every`` it also calls ``~/reset_filter`` and changes
``result.top_k`` (10 <-> 8: a new localizer for the core settings) that often.

Measured: the node's counters (frames_in / processed / dropped / bad / errors / swaps),
end-to-end latency (receive -> publish, ``total_ms`` of every result) p50/p90/p99/max, the node
process's RSS every 5 s, the duration of every swap, and the map ids of the results: a frame
stamped before a swap was called must name the old map, one stamped after it answered the new
one, and every place id must lie in the map its result names.

Usage (in a sourced workspace, see ros_node_bench.py; takes frames / 30 s plus start-up; the
big map is written once into --workdir):
    python bench/soak_node.py [--frames 10000] [--swap-every 1000] [--reset-every 500]
        [--param-every 500] [--out bench/soak_node.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import random
import time
from typing import Any

from bench_report import load_average, rss_mb
from ros_node_bench import PROFILE, Launched, Probe, ros_environment, start_camera, write_test_map

SAMPLE_S = 5.0


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100.0 * len(ordered)) - 1))]


def generated_place_recognition() -> type:
    """Return r2former_ros.msg.PlaceRecognition from the sourced install (PYTHONPATH)."""
    import r2former_ros  # noqa: PLC0415

    entries = [os.environ.get('R2FORMER_ROS_SITE', ''),
               *os.environ.get('PYTHONPATH', '').split(os.pathsep)]
    for entry in filter(None, entries):
        package = Path(entry) / 'r2former_ros'
        found = (package / 'msg' / '__init__.py').is_file()
        if found and str(package) not in r2former_ros.__path__:
            r2former_ros.__path__.append(str(package))
    from r2former_ros.msg import PlaceRecognition  # noqa: PLC0415

    return PlaceRecognition


def set_integer_parameter(probe: Probe, name: str, value: int) -> bool:
    """``ros2 param set`` from the probe; True when the node accepted it."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: PLC0415
    from rcl_interfaces.srv import SetParameters  # noqa: PLC0415

    request = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
        type=ParameterType.PARAMETER_INTEGER, integer_value=value))])
    answer = probe.call(SetParameters, '/localization_node/set_parameters', request, 30.0)
    return bool(answer and answer.results and answer.results[0].successful)


def map_id_check(swaps: list[dict[str, Any]], results: list[tuple[float, str, int]],
                 first_id: str, sizes: dict[str, int]) -> dict[str, int]:
    """Count results that name the wrong map (see the module docstring)."""
    windows = sorted((s['called_stamp'], s['answered_stamp'], s['new_id']) for s in swaps
                     if s['success'])
    checked = wrong = 0
    for stamp, map_id, _ in results:
        expected: str | None = first_id
        for called, answered, new_id in windows:
            if stamp > answered:
                expected = new_id
            elif stamp >= called:
                expected = None  # stamped while the swap was under way: either map is right
                break
            else:
                break
        if expected is not None:
            checked += 1
            wrong += map_id != expected
    outside = sum(not 0 <= place < sizes.get(map_id, 0) for _, map_id, place in results)
    return {'results_checked_against_their_swap': checked, 'results_with_wrong_map_id': wrong,
            'place_ids_outside_the_named_map': outside}


def main() -> None:
    """Run the soak and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--frames', type=int, default=10_000)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--size', default='640x480', help='WxH of the camera frames')
    parser.add_argument('--swap-every', type=int, default=1000, help='frames (0: no swaps)')
    parser.add_argument('--big-places', type=int, default=100_000)
    parser.add_argument('--reset-every', type=int, default=0, help='frames (0: never)')
    parser.add_argument('--param-every', type=int, default=0, help='frames (0: never)')
    parser.add_argument('--warmup-results', type=int, default=100,
                        help='results before the RSS baseline is taken')
    parser.add_argument('--workdir', type=Path, default=Path('/tmp/r2former_soak'))
    parser.add_argument('--out', type=Path, default=Path(__file__).with_name('soak_node.json'))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split('x'))
    args.workdir.mkdir(parents=True, exist_ok=True)

    place_recognition = generated_place_recognition()
    from std_srvs.srv import Trigger  # noqa: PLC0415
    from swap_gap import synthetic_map  # noqa: PLC0415

    from r2former_ros.core.mapdb import MapDatabase  # noqa: PLC0415
    from r2former_ros.srv import LoadMap  # noqa: PLC0415

    route = args.workdir / 'route'
    if not (route / 'manifest.json').is_file():
        route = write_test_map(args.workdir)
    big = synthetic_map(args.workdir, args.big_places) if args.swap_every else route
    ids = {path: MapDatabase.open(path).map_id for path in (route, big)}
    sizes = {ids[route]: MapDatabase.open(route).num_places, ids[big]: args.big_places}
    domain_id = random.randint(110, 200)
    launched = Launched([f'map:={route}', 'device:=cpu', 'image_topic:=/camera/image_raw',
                         'rviz:=false', 'params_file:=' + str(write_params(args.workdir))],
                        ros_environment(domain_id, None, args.workdir),
                        args.workdir / 'launch.log')
    probe = Probe(domain_id)
    latencies: list[float] = []
    results: list[tuple[float, str, int]] = []

    def on_result(msg: Any) -> None:
        latencies.append(msg.total_ms)
        results.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg.map_id,
                        msg.place_id))

    probe.node.create_subscription(place_recognition, '/place_recognition', on_result, 100)
    events: list[dict[str, Any]] = []
    swaps: list[dict[str, Any]] = []
    load_before = load_average()
    try:
        if not probe.spin_until(lambda: probe.diagnostics.get('state') == 'active', 180.0):
            raise RuntimeError(f'node not active:\n{launched.output()[-3000:]}')
        pid = launched.node_pid()
        assert pid is not None, 'no localization_node process under ros2 launch'
        published_file = args.workdir / 'published.json'
        published_file.unlink(missing_ok=True)
        camera = start_camera(width, height, args.frames, args.rate,
                              ros_environment(domain_id, PROFILE, args.workdir),
                              args.workdir / 'camera.log', times_file=published_file)
        if not probe.spin_until(lambda: probe.count('frames_in') > 0, 180.0):
            raise RuntimeError('no frame reached the node')
        start = time.monotonic()  # about when the first frame was sent
        samples: list[tuple[float, float, int, str]] = []  # (s, RSS MiB, results, serving map)
        baseline: tuple[float, int] | None = None
        next_sample = start
        serving, top_k = route, 10
        done = {'swap': 0, 'reset': 0, 'param': 0}
        while camera.poll() is None:
            sent = int((time.monotonic() - start) * args.rate)
            if args.swap_every and sent // args.swap_every > done['swap']:
                done['swap'] += 1
                target = big if serving == route else route
                swap = {'frame': sent, 'to': target.name, 'new_id': ids[target],
                        'called_stamp': time.time(), 'called': time.monotonic()}
                answer = probe.call(LoadMap, '/localization_node/load_map',
                                    LoadMap.Request(map=str(target)), 300.0)
                swap.update(answered_stamp=time.time(),
                            seconds=round(time.monotonic() - swap['called'], 3),
                            success=bool(answer and answer.success))
                swaps.append(swap)
                serving = target if swap['success'] else serving
            if args.reset_every and sent // args.reset_every > done['reset']:
                done['reset'] += 1
                answer = probe.call(Trigger, '/localization_node/reset_filter',
                                    Trigger.Request(), 30.0)
                events.append({'frame': sent, 'event': 'reset_filter',
                               'success': bool(answer and answer.success)})
            if args.param_every and sent // args.param_every > done['param']:
                done['param'] += 1
                top_k = 8 if top_k == 10 else 10
                events.append({'frame': sent, 'event': f'result.top_k={top_k}',
                               'success': set_integer_parameter(probe, 'result.top_k', top_k)})
            if time.monotonic() >= next_sample:
                next_sample += SAMPLE_S
                sample = (round(time.monotonic() - start, 1), round(rss_mb(pid), 1),
                          len(latencies), serving.name)
                samples.append(sample)
                if baseline is None and len(latencies) >= args.warmup_results:
                    baseline = (sample[1], len(latencies))
            probe.spin_until(lambda: False, 0.1)
        probe.spin_until(lambda: False, 3.0)  # last results and diagnostics
        wall_s = time.monotonic() - start
        final_rss = rss_mb(pid)
        counters = {key: probe.count(key) for key in (
            'frames_in', 'frames_processed', 'frames_dropped', 'frames_dropped_at_map_swap',
            'bad_inputs', 'processing_errors', 'map_swaps')}
    finally:
        probe.close()
        exit_code = launched.stop()
    node_log = launched.output()
    published = len(json.loads(published_file.read_text())) if published_file.is_file() else -1

    base_rss, base_results = baseline if baseline is not None else (samples[0][1], 0)
    processed_after_warmup = max(len(latencies) - base_results, 1)
    # The last RSS sample of every period a map served (the next swap comes after it): per map,
    # these must stay flat across swaps, or each swap leaks.
    periods: list[tuple[str, float]] = []
    for sample in samples:
        if periods and periods[-1][0] == sample[3]:
            periods[-1] = (sample[3], sample[1])
        else:
            periods.append((sample[3], sample[1]))
    by_map = {name: [rss for serving_name, rss in periods if serving_name == name]
              for name in dict.fromkeys(s[3] for s in samples)}
    report = {
        'what': f'{args.frames} raw {width}x{height} bgr8 frames at {args.rate:g} Hz through '
                'the node (ros2 launch, small seeded 128x160 model on CPU, filter hmm), camera '
                'in another process, sensor-data QoS; load_map every '
                f'{args.swap_every or "-"} frames alternating the 12-place map and a '
                f'{args.big_places}-place one; reset_filter every {args.reset_every or "-"} and '
                f'result.top_k change every {args.param_every or "-"} frames',
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, '
                   f'Python {platform.python_version()}, ROS {os.environ.get("ROS_DISTRO", "?")}'
                   ', no GPU',
        'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        'loadavg_before': load_before, 'loadavg_after': load_average(),
        'published': published,
        'wall_s': round(wall_s, 1),
        **counters,
        'counted_fraction': round(counters['frames_in'] / max(published, 1), 4),
        'results_received': len(latencies),
        'processing_rate_hz': round(len(latencies) / wall_s, 2),
        'latency_ms': {
            'p50': round(percentile(latencies, 50), 1), 'p90': round(percentile(latencies, 90), 1),
            'p99': round(percentile(latencies, 99), 1), 'max': round(max(latencies), 1),
        },
        'swaps': [{key: s[key] for key in ('frame', 'to', 'seconds', 'success')} for s in swaps],
        'other_events_failed': [e for e in events if not e['success']],
        'events': {'reset_filter': sum(e['event'] == 'reset_filter' for e in events),
                   'parameter_changes': sum(e['event'] != 'reset_filter' for e in events)},
        **map_id_check(swaps, sorted(results), ids[route], sizes),
        'rss_mib': {
            'after_warmup': base_rss, 'end': round(final_rss, 1),
            'growth': round(final_rss - base_rss, 1),
            'growth_per_1000_results': round((final_rss - base_rss) * 1000.0
                                             / processed_after_warmup, 2),
            'max': max(s[1] for s in samples),
            'at_end_of_each_period_by_serving_map': by_map,
        },
        'rss_samples_every_30s': [s for i, s in enumerate(samples) if i % 6 == 0],
        'launch_exit_code_after_sigint': exit_code,
        'context_invalid_messages': node_log.count("publisher's context is invalid"),
        'wait_set_errors': node_log.count('failed to initialize wait set'),
        'command': 'python bench/soak_node.py ' + ' '.join(
            f'--{key.replace("_", "-")} {value}' for key, value in vars(args).items()
            if key not in ('out', 'workdir')),
    }
    text = json.dumps(report, indent=1)
    print(text)
    args.out.write_text(text + '\n')


def write_params(workdir: Path) -> Path:
    """Write the soak's parameters file: the sequence filter on (a reset restarts something)."""
    path = workdir / 'soak_params.yaml'
    path.write_text('/**:\n  ros__parameters:\n    filter: hmm\n    visualization: false\n')
    return path


if __name__ == '__main__':
    main()
