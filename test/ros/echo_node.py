"""
Test fixture node: republish every message received on one topic to another, unchanged.

Run as ``python echo_node.py MODULE:TYPE IN_TOPIC OUT_TOPIC``, e.g.
``python echo_node.py r2former_ros.msg:PlaceRecognition echo_in echo_out``. Exits 0 on SIGINT.

The output is reliable and transient-local (``ECHO_OUT_DEPTH`` kept), so a message echoed
before the test's subscription has matched still reaches it once it does.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from r2former_ros.ros.stopping import release_context, spin_until, stop_on_signals

ECHO_OUT_DEPTH = 10


def echo_out_qos() -> QoSProfile:
    """The echo's output QoS; a test's subscription must use the same to get the backlog."""
    return QoSProfile(depth=ECHO_OUT_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class EchoNode(Node):
    def __init__(self, msg_type: type, in_topic: str, out_topic: str) -> None:
        super().__init__('echo_node')
        self._publisher = self.create_publisher(msg_type, out_topic, echo_out_qos())
        self.create_subscription(msg_type, in_topic, self._publisher.publish, 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('type', help='MODULE:CLASS of the message, e.g. sensor_msgs.msg:Image')
    parser.add_argument('in_topic')
    parser.add_argument('out_topic')
    args = parser.parse_args(argv)
    module_name, _, class_name = args.type.partition(':')
    msg_type = getattr(importlib.import_module(module_name), class_name)

    # Stopped like the localization node: executor, node, context (see r2former_ros/ros/
    # stopping.py; rclpy's own SIGINT handling can fail the exit with a wait-set error).
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = EchoNode(msg_type, args.in_topic, args.out_topic)
    context = node.context
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    with stop_on_signals() as stop:
        try:
            spin_until(executor, stop, context)
        except ExternalShutdownException:
            pass
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()
    del node, executor
    release_context(context)  # before os._exit below: frees the DDS shared-memory segment
    return 0


if __name__ == '__main__':
    # Skip the interpreter's finalization (slow on a loaded machine: the test waits 10 s after
    # SIGINT); the node and the context are already shut down here.
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
