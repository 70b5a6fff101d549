"""
Odometry for the sequence filter: how far the robot travelled between two image stamps.

Every ROS robot publishes ``nav_msgs/Odometry`` (wheels, visual-inertial, robot_localization).
:class:`OdometryTrack` keeps the recent poses of such a stream (x, y, yaw in the odometry's own
frame: only distances and heading changes are read, so its drift and its frame do not matter)
and answers :meth:`OdometryTrack.step`: the path length and heading change between two stamps,
interpolated between the messages around each stamp.

It refuses what it cannot vouch for, and says why, so the filter falls back to its speed bound:
no message yet, the stream stopped (no message within ``max_gap_s`` after a stamp), a gap in the
stream around a stamp, or a jump (two consecutive messages farther apart than ``max_speed_mps``
allows: a reset, a relocalization, a glitch). The node feeds it from its ``odom`` subscription;
the bag tools from a bag's odometry topic (``--odom-topic``).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import threading
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from r2former_ros.core.errors import ConfigError

DEFAULT_MAX_GAP_S = 0.5  # odometry publishes at 10-100 Hz; half a second without is a stall
DEFAULT_JUMP_SPEED_MPS = 50.0  # faster than any ground robot: a reset or a glitch
DEFAULT_HORIZON_S = 60.0  # poses kept (image stamps older than this are not asked about)


@dataclass(frozen=True)
class OdometryStep:
    """Travel between two image stamps, or why odometry cannot say."""

    distance_m: float | None  # path length; None when odometry cannot be used for this step
    heading_change_rad: float | None  # yaw change in (-pi, pi]
    problem: str | None = None  # why not usable (None when usable)

    @property
    def usable(self) -> bool:
        return self.distance_m is not None


def _wrap(angle: float) -> float:
    """Angle in (-pi, pi]."""
    wrapped = math.remainder(angle, 2.0 * math.pi)
    return math.pi if wrapped == -math.pi else wrapped


class OdometryTrack:
    """Recent odometry poses (thread-safe: the node adds on its executor, reads in its worker)."""

    def __init__(self, max_gap_s: float = DEFAULT_MAX_GAP_S,
                 jump_speed_mps: float = DEFAULT_JUMP_SPEED_MPS,
                 horizon_s: float = DEFAULT_HORIZON_S) -> None:
        if not (max_gap_s > 0 and jump_speed_mps > 0 and horizon_s > 0):
            raise ConfigError(f'max_gap_s={max_gap_s}, jump_speed_mps={jump_speed_mps} and '
                              f'horizon_s={horizon_s} must be > 0')
        self.max_gap_s = float(max_gap_s)
        self.jump_speed_mps = float(jump_speed_mps)
        self.horizon_s = float(horizon_s)
        self._lock = threading.Lock()
        self._stamps: list[float] = []
        self._poses: list[tuple[float, float, float]] = []

    @classmethod
    def from_arrays(cls, stamp_s: ArrayLike, x: ArrayLike, y: ArrayLike, yaw: ArrayLike,
                    **kwargs: float) -> OdometryTrack:
        """Build a track holding a whole recorded stream (a bag's odometry topic)."""
        track = cls(**{'horizon_s': math.inf, **kwargs})
        order = np.argsort(np.asarray(stamp_s, dtype=np.float64), kind='stable')
        for i in order.tolist():
            track.add(float(np.asarray(stamp_s)[i]), float(np.asarray(x)[i]),
                      float(np.asarray(y)[i]), float(np.asarray(yaw)[i]))
        return track

    @classmethod
    def from_bag(cls, bag_paths: Any, topic: str, **kwargs: float) -> OdometryTrack:
        """
        Build a track from a bag's odometry topic (nav_msgs/Odometry or a pose topic).

        Raises:
            BagError: the topic is missing, of another type, or the bag cannot be read.
            ConfigError: the topic holds no message.
        """
        from r2former_ros.core.io.bag_tracks import read_poses  # noqa: PLC0415 - rosbags

        poses = read_poses(bag_paths, topic)
        if len(poses) == 0:
            raise ConfigError(f'odometry topic {topic} holds no message')
        return cls.from_arrays(poses.stamp_ns * 1e-9, poses.x, poses.y, poses.yaw, **kwargs)

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)

    def add(self, stamp_s: float, x: float, y: float, yaw: float) -> None:
        """Add one pose; out-of-order messages are inserted in place, old ones dropped."""
        if not all(math.isfinite(v) for v in (stamp_s, x, y, yaw)):
            return  # a NaN pose says nothing; the stream will look stalled if it lasts
        with self._lock:
            stamps = self._stamps
            index = len(stamps)
            while index and stamps[index - 1] > stamp_s:
                index -= 1
            stamps.insert(index, float(stamp_s))
            self._poses.insert(index, (float(x), float(y), float(yaw)))
            cutoff = stamps[-1] - self.horizon_s
            drop = 0
            while drop < len(stamps) - 2 and stamps[drop + 1] < cutoff:
                drop += 1
            if drop:
                del stamps[:drop]
                del self._poses[:drop]

    def reset(self) -> None:
        """Forget every pose (a map swap, a new drive)."""
        with self._lock:
            self._stamps.clear()
            self._poses.clear()

    def last_stamp(self) -> float | None:
        """Stamp of the newest pose (None: none yet)."""
        with self._lock:
            return self._stamps[-1] if self._stamps else None

    def step(self, from_s: float, to_s: float) -> OdometryStep:
        """
        Path length and heading change travelled between two stamps (from_s <= to_s).

        The ends are interpolated between the messages around each stamp; the path in between
        follows every message, so a curve counts its whole length.
        """
        with self._lock:
            stamps = list(self._stamps)
            poses = list(self._poses)
        if not stamps:
            return OdometryStep(None, None, 'no odometry message yet')
        if to_s < from_s:
            from_s, to_s = to_s, from_s
        if to_s > stamps[-1]:
            if to_s - stamps[-1] > self.max_gap_s:
                return OdometryStep(None, None, f'odometry stopped: the last message is '
                                                f'{to_s - stamps[-1]:.2f} s older than the image')
            # The newest message is recent enough: hold its pose (it is about to be updated).
        if from_s < stamps[0]:
            return OdometryStep(None, None, 'no odometry before the previous image')
        inside = [i for i, s in enumerate(stamps) if from_s < s < to_s]
        start = self._pose_at(stamps, poses, from_s)
        end = self._pose_at(stamps, poses, to_s)
        if start is None or end is None:
            return OdometryStep(None, None, f'a gap of more than {self.max_gap_s:g} s in the '
                                            'odometry around an image')
        path = [start, *(poses[i] for i in inside), end]
        times = [from_s, *(stamps[i] for i in inside), to_s]
        distance = 0.0
        for (x0, y0, _), (x1, y1, _), t0, t1 in zip(path, path[1:], times, times[1:],
                                                    strict=False):
            segment = math.hypot(x1 - x0, y1 - y0)
            if segment > self.jump_speed_mps * max(t1 - t0, 1e-3) and segment > 1.0:
                return OdometryStep(None, None, f'odometry jumped {segment:.1f} m in '
                                                f'{t1 - t0:.2f} s')
            distance += segment
        heading = _wrap(end[2] - start[2])
        return OdometryStep(distance, heading)

    def _pose_at(self, stamps: list[float], poses: list[tuple[float, float, float]],
                 stamp: float) -> tuple[float, float, float] | None:
        """Pose at ``stamp``, interpolated; None across a gap longer than ``max_gap_s``."""
        index = int(np.searchsorted(stamps, stamp))
        if index < len(stamps) and stamps[index] == stamp:
            return poses[index]
        if index == 0:
            return None
        if index == len(stamps):  # after the newest message (checked recent by the caller)
            return poses[-1]
        t0, t1 = stamps[index - 1], stamps[index]
        if t1 - t0 > self.max_gap_s:
            return None
        w = (stamp - t0) / (t1 - t0)
        (x0, y0, a0), (x1, y1, a1) = poses[index - 1], poses[index]
        return (x0 + w * (x1 - x0), y0 + w * (y1 - y0), a0 + w * _wrap(a1 - a0))
