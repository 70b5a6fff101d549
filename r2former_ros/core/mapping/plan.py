"""
Planning a build without decoding pixels: which images become places, where they are.

Bags: stream the image topic's stamps, read the NavSatFix topic and the optional pose topic,
geotag every stamp (:mod:`r2former_ros.core.geo.geotag`: interpolation in ENU, images in GPS gaps
or outside the fixes dropped and counted) and pick keyframes per bag
(:mod:`r2former_ros.core.geo.keyframes`). Folders: every listed image is a place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from r2former_ros.core.errors import BagError
from r2former_ros.core.geo.coords import place_position
from r2former_ros.core.geo.geotag import filter_fixes, geotag_images
from r2former_ros.core.geo.keyframes import select_keyframes
from r2former_ros.core.io import bag_open, bag_tracks, bags
from r2former_ros.core.io import folders as image_sources
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

    origin: tuple[float, float, float]
    sources: list[dict[str, Any]]
    places: dict[PlaceKey, Planned]


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


def plan_bags(opts: BuildOptions, origin: tuple[float, float, float] | None) -> Plan:
    """
    Geotag and keyframe every image of the bags without decoding pixels.

    Raises:
        BagError: Unreadable bags, missing topics, no usable fix, or no geotagged image.

    """
    grouped = read_stamps(opts)
    if not grouped:
        raise BagError(f'topic {opts.image_topic} has no messages in '
                       f'{", ".join(str(b) for b in opts.bags)}')
    gps_topic = opts.gps_topic or ''  # always set for bags: check_options ran first
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
    plan = Plan(origin, [], {})
    for slot, (bag_path, stamps) in enumerate(grouped.items()):
        stamp_ns = np.array([s.stamp_ns for s in stamps], dtype=np.int64)
        msg_index = np.array([s.index for s in stamps], dtype=np.int64)
        # Receive order is not always stamp order; keyframing walks the images in time.
        order = np.argsort(stamp_ns, kind='stable')
        tags = geotag_images(stamp_ns[order], fixes, max_gap_s=opts.max_gps_gap_s, poses=poses,
                             origin=origin)
        kept = select_keyframes(tags.stamp_ns, tags.east, tags.north,
                                min_distance_m=opts.min_distance_m,
                                min_interval_s=opts.min_interval_s, all_frames=opts.all_frames)
        for k in kept:
            heading = float(tags.heading[k])
            index = int(msg_index[order[tags.image_index[k]]])
            position = place_position(float(tags.lat[k]), float(tags.lon[k]), float(tags.alt[k]),
                                      origin, None if np.isnan(heading) else heading)
            plan.places[(bag_path, index)] = Planned(slot, int(tags.stamp_ns[k]), index,
                                                      position)
        plan.sources.append({
            'kind': 'rosbag', 'bag': str(Path(bag_path).resolve()),
            'image_topic': opts.image_topic, 'gps_topic': opts.gps_topic,
            'pose_topic': opts.pose_topic, 'stamp_source': opts.stamp_source,
            'images_read': len(stamps), 'geotagged': int(tags.image_index.size),
            'dropped_gps_gap': tags.n_dropped_gap,
            'dropped_outside_fixes': tags.n_dropped_outside,
            'not_keyframe': int(tags.image_index.size - kept.size), 'selected': int(kept.size),
            'kept': 0, 'undecodable_skipped': 0, 'usable_fixes': tags.n_usable_fixes,
            'max_gps_gap_s': opts.max_gps_gap_s,
            'keyframes': {'min_distance_m': opts.min_distance_m,
                          'min_interval_s': opts.min_interval_s, 'all_frames': opts.all_frames},
        })
        LOG.info('%s: %d images, %d geotagged (%d in GPS gaps > %.2f s, %d outside the fixes), '
                 '%d keyframes', bag_path, len(stamps), tags.image_index.size,
                 tags.n_dropped_gap, opts.max_gps_gap_s, tags.n_dropped_outside, kept.size)
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
