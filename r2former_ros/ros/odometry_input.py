"""
The node's optional odometry input: ``odom`` (nav_msgs/Odometry) into an OdometryTrack.

With ``use_odometry: true`` (the launch file sets it when ``odom_topic:=`` is given) the node
subscribes to ``odom`` (remap it to the robot's odometry: wheels, visual-inertial,
robot_localization's output) and every message's header stamp and planar pose go into the
core's :class:`~r2former_ros.core.localize.odometry.OdometryTrack`, which the localizer's
sequence filter reads between two image stamps. A stream that stops, has gaps or jumps is
refused frame by frame (the filter falls back to its velocity estimate or speed bound); the
node warns and counts those frames in ``/diagnostics``.
"""

from __future__ import annotations

from typing import Any

from r2former_ros.core.io.bag_tracks import yaw_from_quaternion
from r2former_ros.core.localize.odometry import OdometryTrack

ODOM_TOPIC = 'odom'


def odometry_pose(msg: Any) -> tuple[float, float, float, float]:
    """(stamp seconds, x, y, yaw) of a nav_msgs/Odometry (or anything with header and pose)."""
    pose = msg.pose.pose
    q = pose.orientation
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    return (float(stamp), float(pose.position.x), float(pose.position.y),
            yaw_from_quaternion(q.x, q.y, q.z, q.w))


class OdometryInput:
    """The ``odom`` subscription of one node; the track outlives map swaps (it is the robot's)."""

    def __init__(self, node: Any, track: OdometryTrack | None = None,
                 callback_group: Any = None) -> None:
        """Subscribe ``node`` to ``odom`` (reliable, depth 50: odometry is small and frequent)."""
        from nav_msgs.msg import Odometry  # noqa: PLC0415 - only where odometry is used

        self.track = track or OdometryTrack()
        self.messages = 0
        self._node = node
        self.subscription = node.create_subscription(Odometry, ODOM_TOPIC, self._on_odometry, 50,
                                                     callback_group=callback_group)

    def _on_odometry(self, msg: Any) -> None:
        self.track.add(*odometry_pose(msg))
        self.messages += 1

    def destroy(self) -> None:
        """Unsubscribe (cleanup)."""
        self._node.destroy_subscription(self.subscription)
