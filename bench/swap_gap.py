"""
Image reception during a map swap: the node's longest gap and frames counted while it swaps.

Does the node keep receiving (and counting) frames while ``~/load_map`` opens a big map? The
node runs directly (no launch) with its image callback wrapped to note the arrival time of every
frame (works with any version of the node: run it once with the old install on
PYTHONPATH, once with the new). A camera process publishes raw 640x480 bgr8 frames at 30 Hz
(sensor-data QoS, the large-image DDS profile on both sides, so transport loses nothing); the
probe swaps the 12-place route map for a synthetic map of ``--places`` places (same seeded
model), waits, and swaps back.

Measured per swap: how long the service call took, frames published and received in the call's
window (from 0.5 s before the call to 0.5 s after the answer), the longest gap between two
received frames in it, and the results' map ids (new node only: each must name the map it came
from, the old one for frames stamped before the call, the new one for frames after the answer).

Usage (in a sourced workspace, see ros_node_bench.py; the big map is written once into
--workdir and reused):
    python bench/swap_gap.py [--places 100000] [--label after] [--out bench/swap_gap.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import platform
import random
import signal
import sys
import time
from typing import Any

from bench_report import load_average
from ros_node_bench import (
    PROFILE,
    ROOT,
    Probe,
    ros_environment,
    start_camera,
    start_recording_node,
    write_test_map,
)
from soak_node import generated_place_recognition

WIDTH, HEIGHT = 640, 480


def synthetic_map(workdir: Path, places: int) -> Path:
    """Return the big map (same model as the route map), written once per --workdir."""
    path = workdir / f'synthetic_{places}'
    if not (path / 'manifest.json').is_file():
        sys.path.insert(0, str(ROOT / 'test'))
        from map_factory import write_synthetic_map  # noqa: PLC0415
        from model_factory import small_place_model  # noqa: PLC0415

        start = time.monotonic()
        write_synthetic_map(path, small_place_model().identity(), places)
        print(f'wrote the {places}-place map in {time.monotonic() - start:.0f} s', flush=True)
    return path


def longest_gap_ms(arrivals: list[float], start: float, end: float) -> float:
    """Longest time without a frame between ``start`` and ``end`` (edges included)."""
    inside = [t for t in arrivals if start <= t <= end]
    before = [t for t in arrivals if t < start]
    after = [t for t in arrivals if t > end]
    points = ([before[-1]] if before else [start]) + inside + ([after[0]] if after else [end])
    return max(b - a for a, b in zip(points, points[1:], strict=False)) * 1e3


def swap_figures(swap: dict[str, Any], arrivals: list[float], published: list[float],
                 results: list[tuple[float, str, int]], map_ids: dict[str, int]) -> dict:
    """Return the figures of one swap (see the module docstring)."""
    start, end = swap['called'] - 0.5, swap['answered'] + 0.5
    sent = sum(start <= t <= end for t in published)
    got = sum(start <= t <= end for t in arrivals)
    figures = {
        'to': swap['to'], 'success': swap['success'], 'message': swap['message'],
        'service_s': round(swap['answered'] - swap['called'], 3),
        'published_in_window': sent, 'received_in_window': got,
        'received_fraction': round(got / sent, 3) if sent else None,
        'longest_reception_gap_ms': round(longest_gap_ms(arrivals, swap['called'],
                                                         swap['answered']), 1),
    }
    if any(map_id for _, map_id, _ in results):
        # Results of frames stamped between the previous swap's answer and this call must
        # name the old map; between this answer and the next call, the new one.
        before = [r for r in results if swap['previous_answered_stamp'] < r[0]
                  < swap['called_stamp']]
        after = [r for r in results if swap['answered_stamp'] < r[0] < swap['next_called_stamp']]
        figures['results_before_call'] = len(before)
        figures['results_before_call_with_new_map_id'] = sum(r[1] == swap['new_id']
                                                             for r in before)
        figures['results_after_answer'] = len(after)
        figures['results_after_answer_with_old_map_id'] = sum(r[1] != swap['new_id']
                                                              for r in after)
        figures['place_ids_outside_their_map'] = sum(
            not 0 <= place < map_ids.get(map_id, 0) for _, map_id, place in results)
    return figures


def main() -> None:
    """Run the node, the camera and two swaps; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--places', type=int, default=100_000)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--hold-s', type=float, default=4.0, help='seconds between events')
    parser.add_argument('--label', default='', help="e.g. 'before' / 'after' (which code)")
    parser.add_argument('--workdir', type=Path, default=Path('/tmp/r2former_swap_gap'))
    parser.add_argument('--node-prefix', type=Path,
                        help='run the node from this install prefix (e.g. an older build); its '
                             'results are then not read (their message type may differ)')
    parser.add_argument('--out', type=Path, default=Path(__file__).with_name('swap_gap.json'))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    route = args.workdir / 'route'
    if not (route / 'manifest.json').is_file():
        route = write_test_map(args.workdir)
    big = synthetic_map(args.workdir, args.places)
    place_recognition = generated_place_recognition()
    from r2former_ros.core.mapdb import MapDatabase  # noqa: PLC0415
    from r2former_ros.srv import LoadMap  # noqa: PLC0415

    ids = {str(path): MapDatabase.open(path).map_id for path in (route, big)}
    map_sizes = {ids[str(route)]: 12, ids[str(big)]: args.places}
    domain_id = random.randint(110, 200)
    env = ros_environment(domain_id, PROFILE, args.workdir)
    node_env = dict(env)
    if args.node_prefix is not None:
        site = args.node_prefix / 'lib' / f'python{sys.version_info[0]}.{sys.version_info[1]}'
        for name, first in (('PYTHONPATH', site / 'site-packages'),
                            ('LD_LIBRARY_PATH', args.node_prefix / 'lib'),
                            ('AMENT_PREFIX_PATH', args.node_prefix)):
            node_env[name] = os.pathsep.join(filter(None, [str(first), env.get(name)]))
    record, published_file = args.workdir / 'arrivals.json', args.workdir / 'published.json'
    for stale in (record, published_file):
        stale.unlink(missing_ok=True)
    node = start_recording_node([f'map:={route}', 'device:=cpu', 'visualization:=false'],
                                node_env, record, args.workdir / 'node.log')
    probe = Probe(domain_id)
    results: list[tuple[float, str, int]] = []
    if args.node_prefix is None:
        probe.node.create_subscription(
            place_recognition, '/place_recognition',
            lambda msg: results.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                                        msg.map_id, msg.place_id)), 100)
    swaps = []
    load_before = load_average()
    try:
        if not probe.spin_until(lambda: probe.diagnostics.get('state') == 'active', 180.0):
            raise RuntimeError(f'node not active:\n{(args.workdir / "node.log").read_text()}')
        frames = int(args.rate * (4 * args.hold_s + 10))
        camera = start_camera(WIDTH, HEIGHT, frames, args.rate, env, args.workdir / 'camera.log',
                              times_file=published_file)
        probe.spin_until(lambda: probe.count('frames_in') > 10, 60.0)
        for target in (big, route):
            probe.spin_until(lambda: False, args.hold_s)
            swap: dict[str, Any] = {'to': str(target), 'new_id': ids[str(target)],
                                    'called_stamp': time.time(), 'called': time.monotonic()}
            answer = probe.call(LoadMap, '/localization_node/load_map',
                                LoadMap.Request(map=str(target)), 120.0)
            swap.update(answered=time.monotonic(), answered_stamp=time.time(),
                        success=bool(answer and answer.success),
                        message=answer.message if answer else 'no answer')
            swaps.append(swap)
        camera.wait(timeout=120.0 + frames / args.rate)
        probe.spin_until(lambda: False, 2.0)
    finally:
        probe.close()
        node.send_signal(signal.SIGINT)
        exit_code = node.wait(60.0)
    (args.workdir / 'results.json').write_text(json.dumps({'results': results, 'swaps': swaps}))
    for index, swap in enumerate(swaps):
        swap['previous_answered_stamp'] = swaps[index - 1]['answered_stamp'] if index else 0.0
        swap['next_called_stamp'] = (swaps[index + 1]['called_stamp'] if index + 1 < len(swaps)
                                     else float('inf'))
    arrivals = [row[0] for row in json.loads(record.read_text())]
    published = json.loads(published_file.read_text())
    report = {
        'what': f'~/load_map of a {args.places}-place map (and back to 12 places) while a '
                f'camera sends {WIDTH}x{HEIGHT} bgr8 at {args.rate:g} Hz; reception noted in the '
                "node's image callback",
        'label': args.label,
        'node_from': str(args.node_prefix or 'the sourced install'),
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, '
                   f'Python {platform.python_version()}, ROS {os.environ.get("ROS_DISTRO", "?")}',
        'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        'loadavg_before': load_before, 'loadavg_after': load_average(),
        'published': len(published), 'received': len(arrivals),
        'swaps': [swap_figures(s, arrivals, published, results, map_sizes) for s in swaps],
        'longest_gap_outside_swaps_ms': round(max(
            (b - a for a, b in zip(arrivals, arrivals[1:], strict=False)
             if not any(s['called'] - 0.5 <= a <= s['answered'] + 0.5 for s in swaps)),
            default=float('nan')) * 1e3, 1),
        'node_exit_code_after_sigint': exit_code,
        'command': 'python bench/swap_gap.py ' + ' '.join(sys.argv[1:]),
    }
    text = json.dumps(report, indent=1)
    print(text)
    args.out.write_text(text + '\n')


if __name__ == '__main__':
    main()
