"""
A synthetic route cut from one real photograph, with a GPS track along it.

Map images are 640x480 windows slid along `data/route/tokyo_strip.jpg`; query images are windows at
a small in-between offset with a brightness change. Each window is given a position along a
straight line heading east (SPACING_M apart), so a query's ground truth is the map window it
overlaps most. With seeded random weights matching is weak: small offsets keep it above chance (a
40-px stride with 8-px query offsets ranks the right window or its neighbour first for most
queries).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from r2former_ros.core.geo.coords import enu_to_wgs84

STRIP = Path(__file__).parent / 'data' / 'route' / 'tokyo_strip.jpg'
ORIGIN = (35.6812, 139.7671, 40.0)  # lat, lon, alt of the route's start
SPACING_M = 10.0
WINDOW_W = 640


@dataclass
class RouteWorld:
    map_images: list[np.ndarray]  # RGB uint8 480x640
    query_images: list[np.ndarray]
    map_east: np.ndarray  # metres along the route
    query_east: np.ndarray
    map_latlon: np.ndarray  # (N, 3) lat, lon, alt
    query_latlon: np.ndarray
    query_truth: np.ndarray  # index of the map window each query overlaps most


def load_strip() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(STRIP)), cv2.COLOR_BGR2RGB)


def latlon_along(east: np.ndarray) -> np.ndarray:
    lat, lon, alt = enu_to_wgs84(east, np.zeros_like(east), np.zeros_like(east), *ORIGIN)
    return np.stack([np.asarray(lat), np.asarray(lon), np.asarray(alt)], axis=1)


def make_route(num_places: int = 25, stride_px: int = 40, query_offset_px: int = 8,
               gain: float = 1.1) -> RouteWorld:
    """Cut `num_places` map windows and `num_places - 1` queries from the strip."""
    strip = load_strip()
    max_places = (strip.shape[1] - WINDOW_W) // stride_px + 1
    if num_places > max_places:
        raise ValueError(f'the strip holds at most {max_places} windows at stride {stride_px}')
    xs = np.arange(num_places) * stride_px
    maps = [np.ascontiguousarray(strip[:, x:x + WINDOW_W]) for x in xs]
    queries = [np.clip(strip[:, x + query_offset_px:x + query_offset_px + WINDOW_W]
                       .astype(np.float32) * gain, 0, 255).astype(np.uint8) for x in xs[:-1]]
    metres_per_px = SPACING_M / stride_px
    map_east = xs * metres_per_px
    query_east = (xs[:-1] + query_offset_px) * metres_per_px
    truth = np.rint((xs[:-1] + query_offset_px) / stride_px).astype(int)
    return RouteWorld(maps, queries, map_east.astype(float), query_east.astype(float),
                      latlon_along(map_east.astype(float)), latlon_along(query_east.astype(float)),
                      truth)


DRIVE_IMAGE_TOPIC = '/camera/image_raw'
DRIVE_GPS_TOPIC = '/gps/fix'
DRIVE_START_NS = 1_700_000_000 * 10**9


def write_drive_bag(path: Path, world: RouteWorld, far_away: int = 0) -> Path:
    """
    The world's queries as a drive bag (one image per second, GPS at each query's position).

    ``far_away`` more frames follow, reusing the first query images, with GPS 10 km beyond the
    route's end: a drive that leaves the map (no map place within any threshold).
    """
    from bag_factory import IMAGE, NAVSAT, BagMessage, image_msg, navsat_msg, write_rosbag2

    images = list(world.query_images) + [world.query_images[k] for k in range(far_away)]
    east = list(world.query_east) + [10_000.0 + 10.0 * k for k in range(far_away)]
    latlon = latlon_along(np.asarray(east, dtype=float))
    messages = []
    for i, (rgb, (lat, lon, alt)) in enumerate(zip(images, latlon, strict=True)):
        stamp = DRIVE_START_NS + i * 10**9
        messages.append(BagMessage(DRIVE_IMAGE_TOPIC, IMAGE, stamp, image_msg(rgb, stamp)))
        for fix_stamp in (stamp - 250_000_000, stamp + 250_000_000):
            messages.append(BagMessage(DRIVE_GPS_TOPIC, NAVSAT, fix_stamp,
                                       navsat_msg(fix_stamp, lat, lon, alt)))
    messages.sort(key=lambda m: m.receive_ns)
    return write_rosbag2(path, messages, storage='mcap')
