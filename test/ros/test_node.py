"""
The localization node as a subprocess with real rclpy, on a 12-place route map.

The node uses the same seeded model as ``small_place_model()`` (no checkpoint, 128x160 input,
48 local tokens), so the map's model identity matches.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from node_helpers import (
    NODE,
    STARTUP_TIMEOUT,
    compressed_msg,
    diagnostics_values,
    image_msg,
    send_and_wait,
    start_localizer,
)
import numpy as np
import pytest
from ros_testing import Probe, RosEnv, wait_until

pytestmark = [
    pytest.mark.ros,
    pytest.mark.slow,
    pytest.mark.filterwarnings('ignore::DeprecationWarning:lark.*'),
]

BURST_FRAMES = 100
BURST_HZ = 30.0


def message_yaml(msg: Any, indent: str = '') -> str:
    """YAML-ish dump of an rclpy message (rosidl_runtime_py is not installed here)."""
    lines = []
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        if hasattr(value, 'get_fields_and_field_types'):
            lines.append(f'{indent}{name}:')
            lines.append(message_yaml(value, indent + '  '))
        elif isinstance(value, list) and value and hasattr(value[0], 'get_fields_and_field_types'):
            lines.append(f'{indent}{name}:')
            for item in value:
                body = message_yaml(item, indent + '    ').lstrip()
                lines.append(f'{indent}  - {body}')
        else:
            text = f"'{value}'" if isinstance(value, str) else \
                '.nan' if isinstance(value, float) and math.isnan(value) else str(value).lower() \
                if isinstance(value, bool) else str(value)
            lines.append(f'{indent}{name}: {text}')
    return '\n'.join(lines)


def latched_qos() -> Any:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def test_node_localizes_map_images_and_survives_garbage(
        route_map: tuple[Path, Any], r2former_msgs: Any, probe: Probe, start_node: Any,
        ros_env: RosEnv) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import CompressedImage, Image, NavSatFix, PointCloud2
    from visualization_msgs.msg import MarkerArray

    from r2former_ros.core.io.images import rgb_to_compressed
    from r2former_ros.core.mapdb import MapDatabase
    from r2former_ros.ros.conversions import PLACE_POINT_DTYPE

    map_path, world = route_map
    database = MapDatabase.open(map_path)
    results = probe.collect(r2former_msgs.PlaceRecognition, 'place_recognition')
    fixes = probe.collect(NavSatFix, 'fix')
    poses = probe.collect(PoseWithCovarianceStamped, 'pose')
    markers = probe.collect(MarkerArray, 'place_markers', latched_qos())
    map_places = probe.collect(PointCloud2, 'map_places', latched_qos())
    match_images = probe.collect(Image, 'match_image')
    diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    raw_pub = probe.publisher(Image, 'image')
    compressed_pub = probe.publisher(CompressedImage, 'image/compressed')
    # Random weights: the reranker may reorder an exact map image; global retrieval may not.
    node = start_localizer(start_node, ros_env, map_path, 'rerank.top_n:=0',
                           'image_transport:=both', 'confidence_threshold:=0.5')
    assert probe.wait_for_subscribers('image', 1, STARTUP_TIMEOUT), node.output()
    assert probe.wait_for_subscribers('image/compressed', 1, STARTUP_TIMEOUT), node.output()

    frames = [(place, image_msg(world.map_images[place], 100 + place, enc), raw_pub)
              for place, enc in ((0, 'rgb8'), (5, 'bgr8'), (11, 'rgb8'))]
    frames += [(place, compressed_msg(rgb_to_compressed(world.map_images[place], quality=95),
                                      200 + place), compressed_pub) for place in (3, 8)]
    for place, msg, publisher in frames:
        result = send_and_wait(probe, publisher, msg, results, node)
        assert result.place_id == place
        assert result.matched and result.confidence >= 0.5
        assert result.candidates[0].place_id == place and len(result.candidates) == 10
        assert result.header.frame_id == 'camera' and result.map_frame_id == 'map'
        assert not result.calibrated  # the route map holds no calibration: a raw score
        assert result.map_id == database.map_id and result.backbone == 'r2former'
        assert math.isclose(result.latitude, world.map_latlon[place][0], abs_tol=1e-12)
        stamp = msg.header.stamp.sec
        assert probe.spin_until(lambda s=stamp: any(f.header.stamp.sec == s for f in fixes)
                                and any(p.header.stamp.sec == s for p in poses), 10.0)
        fix = next(f for f in fixes if f.header.stamp.sec == stamp)
        assert (fix.latitude, fix.longitude) == pytest.approx(tuple(world.map_latlon[place][:2]),
                                                              abs=1e-12)
        assert fix.position_covariance_type == NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
        assert fix.position_covariance[0] > 0
        pose = next(p for p in poses if p.header.stamp.sec == stamp)
        where = database.position(place)
        assert pose.header.frame_id == 'map'
        assert (pose.pose.pose.position.x, pose.pose.pose.position.y) == pytest.approx(
            (where.east, where.north), abs=1e-9)
    print('\none result message (YAML):\n' + message_yaml(results[0]))

    # Garbage is counted and skipped; the node keeps working afterwards.
    wrong_step = image_msg(world.map_images[1], 300)
    wrong_step.step = 10
    unknown = image_msg(world.map_images[1], 301)
    unknown.encoding = 'no_such_encoding'
    truncated = compressed_msg(rgb_to_compressed(world.map_images[1])[:400], 302)
    for bad, publisher in ((wrong_step, raw_pub), (unknown, raw_pub),
                           (truncated, compressed_pub)):
        publisher.publish(bad)
        probe.spin_for(0.5)
    after = send_and_wait(probe, raw_pub, image_msg(world.map_images[7], 400), results, node)
    assert after.place_id == 7

    def bad_counted() -> bool:
        if not diagnostics:
            return False
        values = diagnostics_values(diagnostics[-1])
        processed = len({r.header.stamp.sec for r in results})
        return values['bad_inputs'] == '3' and values['frames_processed'] == str(processed)

    assert probe.spin_until(bad_counted, 10.0), diagnostics[-1] if diagnostics else node.output()
    values = diagnostics_values(diagnostics[-1])
    for stage in ('decode', 'extract', 'retrieve', 'rerank', 'total'):
        assert f'{stage}_ms_mean' in values
    assert {'input_rate_hz', 'output_rate_hz', 'frames_dropped'} <= set(values)
    assert values['map_id'] == database.map_id
    assert 'skipping bad image' in node.output()

    assert probe.spin_until(lambda: len(match_images) > 0, 10.0)
    picture = match_images[-1]
    assert picture.encoding == 'rgb8' and picture.width > picture.height > 0
    # All places once, on their own latched topic; per frame only the candidates and the best.
    assert probe.spin_until(lambda: len(map_places) > 0)
    assert len(map_places) == 1  # not re-sent while the map stays
    cloud = map_places[0]
    points = np.frombuffer(bytes(cloud.data), PLACE_POINT_DTYPE)
    assert cloud.header.frame_id == 'map' and cloud.width == 12 == points.size
    assert points['place_id'].tolist() == list(range(12))
    assert points['x'] == pytest.approx(database.places['east'], abs=1e-3)
    assert any(m.ns == 'candidates' and m.action == m.ADD for a in markers for m in a.markers)
    assert any(m.ns == 'best' for a in markers for m in a.markers)
    assert all(len(a.markers) == 10 + 2 for a in markers)  # result.top_k + best + label
    node.assert_stops_cleanly()


def test_node_burst_with_reranking_keeps_up_and_counts_drops(
        route_map: tuple[Path, Any], r2former_msgs: Any, probe: Probe, start_node: Any,
        ros_env: RosEnv) -> None:
    import time

    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    map_path, world = route_map
    results = probe.collect(r2former_msgs.PlaceRecognition, 'place_recognition')
    diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    publisher = probe.publisher(Image, 'image')
    node = start_localizer(start_node, ros_env, map_path, 'rerank.top_n:=12',
                           'retrieval.top_k:=12', 'visualization:=false')
    assert probe.wait_for_subscribers('image', 1, STARTUP_TIMEOUT), node.output()
    first = send_and_wait(probe, publisher, image_msg(world.map_images[2], 1), results, node)
    assert first.rerank_ms > 0 and not math.isnan(first.rerank_score)
    probe.spin_for(0.6)  # diagnostics (every 0.2 s) now include the first frame
    base = diagnostics_values(diagnostics[-1])

    messages = [image_msg(world.map_images[i % 12], 1000 + i) for i in range(BURST_FRAMES)]
    start = time.monotonic()
    for i, msg in enumerate(messages):
        publisher.publish(msg)
        probe.spin_until(lambda i=i: time.monotonic() >= start + (i + 1) / BURST_HZ, 1.0)

    def settled() -> bool:
        if not diagnostics:
            return False
        v = diagnostics_values(diagnostics[-1])
        done = int(v['frames_processed']) + int(v['frames_dropped']) + int(v['bad_inputs'])
        return int(v['frames_in']) == done and int(v['frames_in']) - int(base['frames_in']) \
            >= BURST_FRAMES * 95 // 100

    # Full-size 640x480 raw frames at 30 Hz, best effort: at least 95% reach the node (the
    # shared-memory segment of the DDS profile; with Fast DDS's 512 KiB default most are lost).
    assert probe.spin_until(settled, 60.0), (diagnostics_values(diagnostics[-1]), node.output())
    probe.spin_for(0.5)
    assert node.running, node.output()
    values = diagnostics_values(diagnostics[-1])
    frames_in, processed, drops = (int(values[key]) - int(base[key]) for key in (
        'frames_in', 'frames_processed', 'frames_dropped'))
    burst = [r for r in results if r.header.stamp.sec >= 1000]
    windows = [diagnostics_values(d) for d in diagnostics]
    stage_max = {stage: max((float(v[f'{stage}_ms_max']) for v in windows
                             if not math.isnan(float(v[f'{stage}_ms_max']))), default=math.nan)
                 for stage in ('decode', 'extract', 'retrieve', 'rerank')}
    max_latency = max(r.total_ms for r in burst)
    print(f'\nburst: published {BURST_FRAMES} at {BURST_HZ:.0f} Hz, frames in {frames_in}, '
          f'processed {processed}, drops {drops}, results received {len(burst)}, '
          f'max latency {max_latency:.1f} ms, mean latency '
          f'{sum(r.total_ms for r in burst) / len(burst):.1f} ms, max per stage (ms): '
          + ', '.join(f'{k} {v:.1f}' for k, v in stage_max.items()))
    assert frames_in == processed + drops
    assert len(burst) == processed
    assert all(0 <= r.place_id < 12 for r in burst)
    # Frames are processed in order, newest first after a drop: stamps only ever increase.
    stamps = [r.header.stamp.sec for r in burst]
    assert stamps == sorted(stamps)
    node.assert_stops_cleanly()


@pytest.mark.parametrize('case', ['missing_map', 'model_mismatch', 'params_file_not_yaml'])
def test_node_startup_errors_exit_nonzero(case: str, route_map: tuple[Path, Any],
                                          r2former_msgs: Any, probe: Probe, start_node: Any,
                                          ros_env: RosEnv) -> None:
    map_path, _ = route_map
    if case == 'missing_map':
        node = start_localizer(start_node, ros_env, ros_env.workdir / 'no_such_map')
        expected = 'map directory does not exist'
    elif case == 'model_mismatch':
        node = start_localizer(start_node, ros_env, map_path, 'num_local:=32')
        expected = 'was built with'
    else:  # rcl refuses it before the node exists: one line too, not rclpy's traceback
        params = ros_env.workdir / 'broken.yaml'
        params.write_text('localization_node:\n  ros__parameters:\n    threads: [1\n')
        node = start_node(*NODE, '--ros-args', '--params-file', str(params), name='localizer')
        expected = "Couldn't parse params file"
    assert wait_until(lambda: not node.running, STARTUP_TIMEOUT), node.output()
    code = node.stop()
    output = node.log_path.read_text(errors='replace')  # output() needs the open log
    assert code == 1, output
    assert 'cannot start' in output and expected in output
    assert 'Traceback' not in output
