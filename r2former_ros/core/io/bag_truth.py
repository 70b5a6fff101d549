"""
A drive's true positions, from its GPS or from its poses, in the frame of a map's places.

A map built from GPS holds metres east/north/up of its geodetic origin (position frame
``'wgs84'``); a map built from poses holds x, y, z of the poses' own frame (e.g. ``'map'`` of a
robot's SLAM). Whatever scores a drive against a map (``eval``'s query bags, the drive
calibration, ``localize-bag --json``) takes the drive's truth from the same kind of source the
map was built from: NavSatFix for a GPS map, poses in the map's frame for a pose map. The other
kind, or poses in another frame, is refused in one line, because a position in one frame means
nothing in the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from r2former_ros.core.errors import BagError, ConfigError
from r2former_ros.core.geo.coords import WGS84_FRAME
from r2former_ros.core.geo.geotag import (
    FixArrays,
    Geotags,
    PoseArrays,
    filter_fixes,
    filter_poses,
    geotag_images,
    pose_tag_images,
)
from r2former_ros.core.io.bag_open import NAVSAT_TYPE, Paths, as_path_list, check_requested
from r2former_ros.core.io.bag_tracks import read_navsat, read_poses

GPS = 'gps'
POSE = 'pose'
POSE_TYPE_NAMES = 'PoseStamped, PoseWithCovarianceStamped or nav_msgs/Odometry'


class FramedMap(Protocol):
    """What a truth needs of a map (``MapDatabase`` has it): its frame, and a GPS map's origin."""

    path: Path

    @property
    def position_frame(self) -> str: ...

    @property
    def origin(self) -> tuple[float, float, float]: ...


def pose_frame(poses: PoseArrays, topic: str) -> str:
    """
    Return the one frame the poses of a topic are given in.

    Raises:
        BagError: the topic has no message, its messages name no frame, several frames, or
            the reserved name of GPS maps.
    """
    frames = list(poses.frame_ids)
    if not frames:
        raise BagError(f'pose topic {topic} has no messages')
    if len(frames) > 1:
        raise BagError(f'poses on {topic} are in {len(frames)} frames '
                       f'({", ".join(repr(f) for f in frames)}); positions need one frame')
    if not frames[0]:
        raise BagError(f'poses on {topic} have an empty header.frame_id: in which frame are '
                       'they? (a map records the frame of its positions)')
    if frames[0] == WGS84_FRAME:
        raise BagError(f"poses on {topic} are in a frame named '{WGS84_FRAME}', the name this "
                       'tool keeps for GPS maps; rename the frame')
    return frames[0]


@dataclass(frozen=True)
class TruthTrack:
    """A drive's truth read from its bag, ready to give image stamps their positions."""

    source: TruthSource
    fixes: FixArrays | None = None  # usable fixes (GPS truth)
    poses: PoseArrays | None = None  # usable poses (pose truth)
    origin: tuple[float, float, float] | None = None  # the GPS map's geodetic origin

    @property
    def usable(self) -> int:
        """Usable fixes or poses."""
        track = self.fixes if self.fixes is not None else self.poses
        return 0 if track is None else len(track)

    @property
    def skipped_key(self) -> str:
        """The stats key counting images the truth does not cover."""
        return 'skipped_no_gps' if self.source.kind == GPS else 'skipped_no_pose'

    @property
    def usable_key(self) -> str:
        """The stats key counting usable fixes or poses."""
        return 'usable_fixes' if self.source.kind == GPS else 'usable_poses'

    def tag(self, stamp_ns: np.ndarray, max_gap_s: float = 1.0) -> Geotags:
        """Positions (map metres) of the stamps the truth covers; see the geotag rules."""
        if self.poses is not None:
            return pose_tag_images(stamp_ns, self.poses, max_gap_s=max_gap_s)
        assert self.fixes is not None  # read() fills one of the two
        return geotag_images(stamp_ns, self.fixes, max_gap_s=max_gap_s, origin=self.origin)


@dataclass(frozen=True)
class TruthSource:
    """Where a drive's true positions come from: a NavSatFix topic or a pose topic."""

    kind: str  # GPS or POSE
    topic: str

    @classmethod
    def from_topics(cls, gps_topic: str | None, pose_topic: str | None) -> TruthSource:
        """
        Return the one truth source named by a tool's --gps-topic / --pose-topic.

        Raises:
            ConfigError: both or neither are given.
        """
        if bool(gps_topic) == bool(pose_topic):
            raise ConfigError("give the drive's true positions with --gps-topic (NavSatFix, for "
                              f'a GPS map) or --pose-topic ({POSE_TYPE_NAMES}, for a map in '
                              'the frame of those poses), '
                              + ('not both' if gps_topic else 'none was given'))
        return cls(GPS, str(gps_topic)) if gps_topic else cls(POSE, str(pose_topic))

    def describe(self) -> str:
        """'GPS on /gps/fix' or 'poses on /map_pose': how reports name the truth."""
        return f'{"GPS" if self.kind == GPS else "poses"} on {self.topic}'

    def check_map(self, position_frame: str, map_name: str) -> None:
        """
        Refuse a truth of the other kind than the map's positions.

        Raises:
            ConfigError: GPS truth for a pose-frame map, or pose truth for a GPS map.
        """
        if position_frame == WGS84_FRAME and self.kind == POSE:
            raise ConfigError(f'map {map_name} holds GPS positions (WGS84): its truth comes from '
                              f'a NavSatFix topic (--gps-topic), not --pose-topic {self.topic}')
        if position_frame != WGS84_FRAME and self.kind == GPS:
            raise ConfigError(f"map {map_name} holds positions in frame '{position_frame}' "
                              '(built from poses, no GPS): give the truth as poses in that '
                              f'frame (--pose-topic), not --gps-topic {self.topic}')

    def check_bag(self, bag_paths: Paths, position_frame: str, map_name: str) -> None:
        """
        Check the source against the map and the bags, reading only its own topic.

        Meant to run before a model loads: the kind, the topic's type and, for poses, their
        frame (the map's) are checked.

        Raises:
            ConfigError: the kind does not fit the map.
            BagError: the topic is absent or of another type, or the poses are in another frame.
        """
        self.read(bag_paths, position_frame, None, map_name, check_only=True)

    def read_for(self, bag_paths: Paths, database: FramedMap) -> TruthTrack:
        """
        Read the truth of a drive for an open map (see :meth:`read`).

        Raises:
            ConfigError: the kind does not fit the map.
            BagError: the topic is absent or of another type, or the poses are in another frame.
        """
        name = str(database.path)
        self.check_map(database.position_frame, name)
        # After check_map a GPS truth means a GPS map, whose origin exists.
        origin = database.origin if self.kind == GPS else None
        return self.read(bag_paths, database.position_frame, origin, name)

    def read(self, bag_paths: Paths, position_frame: str,
             origin: tuple[float, float, float] | None, map_name: str, *,
             check_only: bool = False) -> TruthTrack:
        """
        Read the truth of a drive for a map whose places are in ``position_frame``.

        Args:
            bag_paths: the drive's bag(s).
            position_frame: the map's position frame (``'wgs84'`` or the poses' frame).
            origin: a GPS map's geodetic origin (None for a pose-frame map).
            map_name: how error messages name the map.
            check_only: check kind, type and frame without keeping the track.

        Raises:
            ConfigError: the kind does not fit the map.
            BagError: the topic is absent or of another type, or the poses are in another frame.
        """
        self.check_map(position_frame, map_name)
        paths = as_path_list(bag_paths)
        if self.kind == GPS:
            if check_only:
                check_requested(paths, [self.topic], [NAVSAT_TYPE], 'sensor_msgs/NavSatFix')
                return TruthTrack(self)
            if origin is None:
                raise ConfigError(f"map {map_name}: GPS truth needs the map's geodetic origin")
            return TruthTrack(self, fixes=filter_fixes(read_navsat(paths, self.topic)),
                              origin=origin)
        poses = read_poses(paths, self.topic)
        frame = pose_frame(poses, self.topic)
        if frame != position_frame:
            raise BagError(f"poses on {self.topic} are in frame '{frame}', map {map_name} holds "
                           f"positions in frame '{position_frame}': give a pose topic in "
                           f"'{position_frame}'")
        return TruthTrack(self, poses=None if check_only else filter_poses(poses))
