"""Helpers of the node tests: start the node, build image messages, wait for results."""

from __future__ import annotations

import array
from pathlib import Path
from typing import Any

import numpy as np
from ros_testing import NodeProcess, Probe, RosEnv

NODE = ('-m', 'r2former_ros.ros.localization_node')
STARTUP_TIMEOUT = 90.0  # model build + map load on a busy 2-core machine
RESULT_TIMEOUT = 30.0


def start_localizer(start_node: Any, ros_env: RosEnv, map_path: Path | str,
                    *params: str) -> NodeProcess:
    """Start the node with the test model's settings plus ``params`` ('name:=value')."""
    ros_env.env['R2FORMER_CACHE'] = str(ros_env.workdir / 'no_cache')  # never a real checkpoint
    ros_env.env.pop('R2FORMER_CHECKPOINT', None)
    args = [f'map:={map_path}', 'input_size:=128x160', 'num_local:=48', 'device:=cpu',
            'diagnostics_period_s:=0.2', *params]
    ros_args = [item for arg in args for item in ('-p', arg)]
    return start_node(*NODE, '--ros-args', *ros_args, name='localizer')


def image_msg(rgb: np.ndarray, stamp_sec: int, encoding: str = 'rgb8') -> Any:
    """A full-size raw sensor_msgs/Image of an RGB array (the route world's are 640x480)."""
    from sensor_msgs.msg import Image

    from r2former_ros.core.io.images import rgb_to_raw_image

    raw = rgb_to_raw_image(rgb, encoding)
    msg = Image(height=raw.height, width=raw.width, encoding=raw.encoding, step=raw.step,
                is_bigendian=raw.is_bigendian)
    msg.data = array.array('B', raw.data)
    msg.header.stamp.sec = stamp_sec
    msg.header.frame_id = 'camera'
    return msg


def compressed_msg(data: bytes, stamp_sec: int, fmt: str = 'jpeg') -> Any:
    """A sensor_msgs/CompressedImage."""
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.data = array.array('B', data)
    msg.header.stamp.sec = stamp_sec
    msg.header.frame_id = 'camera'
    return msg


def send_and_wait(probe: Probe, publisher: Any, msg: Any, results: list[Any],
                  node: NodeProcess) -> Any:
    """Publish (again, in case a best-effort frame was lost) until its result arrives."""
    stamp = msg.header.stamp.sec

    def arrived() -> bool:
        return any(r.header.stamp.sec == stamp for r in results)

    for _ in range(3):
        publisher.publish(msg)
        if probe.spin_until(lambda: arrived() or not node.running, RESULT_TIMEOUT / 3):
            break
    assert arrived(), f'no result for stamp {stamp}:\n{node.output()}'
    return next(r for r in results if r.header.stamp.sec == stamp)


def diagnostics_values(array_msg: Any) -> dict[str, str]:
    """The key/value pairs of the node's one DiagnosticStatus."""
    (status,) = array_msg.status
    return {kv.key: kv.value for kv in status.values}


def call_service(probe: Probe, service_type: Any, name: str, request: Any,
                 timeout: float = 30.0) -> Any:
    """Call a service from the probe and return the response (asserts it came)."""
    client = probe.node.create_client(service_type, name)
    assert probe.spin_until(client.service_is_ready, timeout), f'no service {name}'
    future = client.call_async(request)
    assert probe.spin_until(future.done, timeout), f'{name} did not answer'
    probe.node.destroy_client(client)
    return future.result()
