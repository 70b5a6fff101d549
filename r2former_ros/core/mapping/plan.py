"""
Planning a build without decoding pixels: which images become places, where they are.

Bags: stream the image topic's stamps, read the position source and pick keyframes per bag
(:mod:`r2former_ros.core.geo.keyframes`). The positions come from the NavSatFix topic (with the
optional pose topic for the heading): every stamp is geotagged
(:mod:`r2former_ros.core.geo.geotag`: interpolation in ENU, images in GPS gaps or outside the
fixes dropped and counted), and the map's position frame is ``'wgs84'``. Or, for a robot
without GPS, from the pose topic alone: the stamps are placed in the poses' own frame by the
same rules (:func:`~r2former_ros.core.geo.geotag.pose_tag_images`), and that frame (e.g.
``'map'``) becomes the map's position frame. Folders: every listed image is a place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from r2former_ros.core.errors import BagError, MapError
from r2former_ros.core.geo.coords import WGS84_FRAME, frame_position, place_position
from r2former_ros.core.geo.geotag import (
    Geotags,
    PoseArrays,
    filter_fixes,
    filter_poses,
    geotag_images,
    pose_tag_images,
)
from r2former_ros.core.geo.keyframes import select_keyframes
from r2former_ros.core.io import bag_open, bag_tracks, bags
from r2former_ros.core.io import folders as image_sources
from r2former_ros.core.io.bag_truth import pose_frame
from r2former_ros.core.mapping.options import BuildOptions, progress_bar
from r2former_ros.core.types import PlacePosition

LOG = logging.getLogger(__name__)

PlaceKey = tuple[str, int]  # (bag path or image folder, message index or row)


@dataclass(frozen=True)
class Planned:
    """An image chosen to become a place; ``slot`` indexes the build's new sources."""

    slot: int
    stamp_ns: int
    msg_index: int
    position: PlacePosition
    path: Path | None = None  # folder sources only


@dataclass
class Plan:
    """The outcome of planning: the ENU origin, new source blocks and the places to extract."""

    origin: tuple[float, float, float] | None  # None for a map in a pose frame
    sources: list[dict[str, Any]]
    places: dict[PlaceKey, Planned]
    position_frame: str = WGS84_FRAME  # 'wgs84' or the frame id of the poses


def read_stamps(opts: BuildOptions) -> dict[str, list[bags.ImageStamp]]:
    """Image stamps of every bag, grouped by bag path in reading order."""
    topic = opts.image_topic or ''  # always set for bags: check_options ran first
    total = bag_open.count_messages(opts.bags, topic)
    grouped: dict[str, list[bags.ImageStamp]] = {}
    with progress_bar(opts, total=total, unit='img', desc='reading stamps') as bar:
        for stamp in bags.iter_image_stamps(opts.bags, topic,
                                            stamp_source=opts.stamp_source):
            grouped.setdefault(stamp.bag_path, []).append(stamp)
            bar.update(1)
    return grouped


def plan_bags(opts: BuildOptions, origin: tuple[float, float, float] | None,
              position_frame: str | None = None) -> Plan:
    """
    Position and keyframe every image of the bags without decoding pixels.

    Args:
        opts: the build's options (GPS topic, or a pose topic alone).
        origin: the ENU origin of the GPS map appended to; None for a new map (the first fix).
        position_frame: the position frame of the map appended to; None for a new map.

    Raises:
        BagError: Unreadable bags, missing topics, no usable fix or pose, or no image with a
            position.
        MapError: the position source does not fit the map appended to.

    """
    grouped = read_stamps(opts)
    if not grouped:
        raise BagError(f'topic {opts.image_topic} has no messages in '
                       f'{", ".join(str(b) for b in opts.bags)}')
    if opts.gps_topic:
        return _plan_gps(opts, grouped, origin)
    return _plan_poses(opts, grouped, position_frame)


def _plan_gps(opts: BuildOptions, grouped: dict[str, list[bags.ImageStamp]],
              origin: tuple[float, float, float] | None) -> Plan:
    """GPS positions in the ENU frame of ``origin`` (new maps: of the first usable fix)."""
    gps_topic = opts.gps_topic or ''
    fixes = bag_tracks.read_navsat(opts.bags, gps_topic, stamp_source=opts.stamp_source)
    usable = filter_fixes(fixes)
    if len(usable) == 0:
        raise BagError(f'no usable GPS fix on {opts.gps_topic}: {len(fixes)} NavSatFix '
                       'message(s), none with status >= STATUS_FIX and a finite, non-(0, 0) '
                       'position')
    poses = (bag_tracks.read_poses(opts.bags, opts.pose_topic, stamp_source=opts.stamp_source)
             if opts.pose_topic else None)
    if origin is None:
        origin = (float(usable.lat[0]), float(usable.lon[0]), float(usable.alt[0]))
    fixed_origin = origin

    def tag(stamp_ns: np.ndarray) -> Geotags:
        return geotag_images(stamp_ns, fixes, max_gap_s=opts.max_gps_gap_s, poses=poses,
                             origin=fixed_origin)

    def position(tags: Geotags, k: int, heading: float | None) -> PlacePosition:
        return place_position(float(tags.lat[k]), float(tags.lon[k]), float(tags.alt[k]),
                              fixed_origin, heading)

    plan = Plan(origin, [], {})
    _plan_images(opts, grouped, plan, tag, position, _GPS_COUNTERS)
    if not plan.places:
        read = sum(s['images_read'] for s in plan.sources)
        gap = sum(s['dropped_gps_gap'] for s in plan.sources)
        outside = sum(s['dropped_outside_fixes'] for s in plan.sources)
        raise BagError(
            f'no image on {opts.image_topic} could be geotagged from {opts.gps_topic}: of {read} '
            f'images, {outside} lie outside the time span of the {len(usable)} usable fixes and '
            f'{gap} in GPS gaps longer than {opts.max_gps_gap_s} s (do images and fixes share '
            'a clock? is --max-gps-gap too small?)'
        )
    return plan


def _plan_poses(opts: BuildOptions, grouped: dict[str, list[bags.ImageStamp]],
                position_frame: str | None) -> Plan:
    """Positions in the frame of the pose topic (a robot without GPS): x, y, z and yaw."""
    pose_topic = opts.pose_topic or ''  # check_options: a pose topic when there is no GPS
    poses: PoseArrays = bag_tracks.read_poses(opts.bags, pose_topic,
                                              stamp_source=opts.stamp_source)
    frame = pose_frame(poses, pose_topic)
    if position_frame is not None and frame != position_frame:
        raise MapError(f"{opts.out}: the map holds positions in frame '{position_frame}'; "
                       f"the poses on {pose_topic} are in frame '{frame}'")
    usable = filter_poses(poses)
    if len(usable) == 0:
        raise BagError(f'no usable pose on {pose_topic}: {len(poses)} message(s), none with a '
                       'finite position')

    def tag(stamp_ns: np.ndarray) -> Geotags:
        return pose_tag_images(stamp_ns, usable, max_gap_s=opts.max_gps_gap_s)

    def position(tags: Geotags, k: int, heading: float | None) -> PlacePosition:
        return frame_position(float(tags.east[k]), float(tags.north[k]), float(tags.up[k]),
                              heading)

    plan = Plan(None, [], {}, position_frame=frame)
    _plan_images(opts, grouped, plan, tag, position, _POSE_COUNTERS)
    if not plan.places:
        read = sum(s['images_read'] for s in plan.sources)
        gap = sum(s['dropped_pose_gap'] for s in plan.sources)
        outside = sum(s['dropped_outside_poses'] for s in plan.sources)
        raise BagError(
            f'no image on {opts.image_topic} could be placed from the poses on {pose_topic}: '
            f'of {read} images, {outside} lie outside the time span of the {len(usable)} '
            f'usable poses and {gap} in pose gaps longer than {opts.max_gps_gap_s} s (do '
            'images and poses share a clock? is --max-gps-gap too small?)'
        )
    return plan


# Source counters of a bag by position source: GPS maps keep the names they always had.
_GPS_COUNTERS = {'tagged': 'geotagged', 'gap': 'dropped_gps_gap',
                 'outside': 'dropped_outside_fixes', 'usable': 'usable_fixes',
                 'max_gap': 'max_gps_gap_s'}
_POSE_COUNTERS = {'tagged': 'positioned', 'gap': 'dropped_pose_gap',
                  'outside': 'dropped_outside_poses', 'usable': 'usable_poses',
                  'max_gap': 'max_pose_gap_s'}


def _plan_images(opts: BuildOptions, grouped: dict[str, list[bags.ImageStamp]], plan: Plan,
                 tag: Callable[[np.ndarray], Geotags],
                 position: Callable[[Geotags, int, float | None], PlacePosition],
                 counters: dict[str, str]) -> None:
    """Position, keyframe and record every bag's images into ``plan`` (places and sources)."""
    for slot, (bag_path, stamps) in enumerate(grouped.items()):
        stamp_ns = np.array([s.stamp_ns for s in stamps], dtype=np.int64)
        msg_index = np.array([s.index for s in stamps], dtype=np.int64)
        # Receive order is not always stamp order; keyframing walks the images in time.
        order = np.argsort(stamp_ns, kind='stable')
        tags = tag(stamp_ns[order])
        kept = select_keyframes(tags.stamp_ns, tags.east, tags.north,
                                min_distance_m=opts.min_distance_m,
                                min_interval_s=opts.min_interval_s, all_frames=opts.all_frames)
        for k in kept:
            heading = float(tags.heading[k])
            index = int(msg_index[order[tags.image_index[k]]])
            plan.places[(bag_path, index)] = Planned(
                slot, int(tags.stamp_ns[k]), index,
                position(tags, int(k), None if np.isnan(heading) else heading))
        plan.sources.append({
            'kind': 'rosbag', 'bag': str(Path(bag_path).resolve()),
            'image_topic': opts.image_topic, 'gps_topic': opts.gps_topic,
            'pose_topic': opts.pose_topic, 'stamp_source': opts.stamp_source,
            'images_read': len(stamps), counters['tagged']: int(tags.image_index.size),
            counters['gap']: tags.n_dropped_gap,
            counters['outside']: tags.n_dropped_outside,
            'not_keyframe': int(tags.image_index.size - kept.size), 'selected': int(kept.size),
            'kept': 0, 'undecodable_skipped': 0, counters['usable']: tags.n_usable_fixes,
            counters['max_gap']: opts.max_gps_gap_s,
            'keyframes': {'min_distance_m': opts.min_distance_m,
                          'min_interval_s': opts.min_interval_s, 'all_frames': opts.all_frames},
        })
        LOG.info('%s: %d images, %d with a position (%d in gaps > %.2f s, %d outside the '
                 'track), %d keyframes', bag_path, len(stamps), tags.image_index.size,
                 tags.n_dropped_gap, opts.max_gps_gap_s, tags.n_dropped_outside, kept.size)


def plan_folder(opts: BuildOptions, origin: tuple[float, float, float] | None) -> Plan:
    """Every image of a VG-layout or CSV folder becomes a place."""
    folder = Path(opts.images_dir or '')
    if opts.csv_file is not None:
        images = image_sources.read_csv_folder(folder, opts.csv_file)
    else:
        images = image_sources.read_vg_folder(folder)
    if origin is None:
        origin = (images[0].lat, images[0].lon, images[0].alt)
    root = str(folder.resolve())
    places = {
        (root, row): Planned(0, 0, row, place_position(im.lat, im.lon, im.alt, origin,
                                                        im.heading), im.path)
        for row, im in enumerate(images)
    }
    source = {
        'kind': 'folder', 'images_dir': root, 'layout': 'csv' if opts.csv_file else opts.layout,
        'csv': None if opts.csv_file is None else str(Path(opts.csv_file).resolve()),
        'images_read': len(images), 'selected': len(images), 'kept': 0,
        'undecodable_skipped': 0,
    }
    return Plan(origin, [source], places)


def read_topics(paths: Sequence[str | os.PathLike[str]]) -> list[bag_open.TopicInfo]:
    """Topics, types and message counts of bags (for ``build_map --list-topics``)."""
    return bag_open.list_topics(list(paths))
