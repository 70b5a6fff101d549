"""
Images of a drive bag paired with their GPS positions in a map's ENU frame.

One reader for everything that scores queries against ground truth from the same bag's
NavSatFix (``r2former eval --bags``, drive calibration), so both skip and count the same
images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from r2former_ros.core.geo.geotag import filter_fixes, geotag_images
from r2former_ros.core.io import bags


@dataclass(frozen=True)
class GeotaggedImage:
    """A bag image with its ground-truth position (metres east/north of the map origin)."""

    record: bags.ImageRecord
    east: float
    north: float

    @property
    def name(self) -> str:
        """``<bag file name>#<message index>``: how reports name a bag image."""
        return f'{Path(self.record.bag_path).name}#{self.record.index}'


def geotagged_bag_images(bag_paths: bags.Paths, image_topic: str, gps_topic: str,
                         origin: tuple[float, float, float], max_gap_s: float = 1.0,
                         every: int = 1) -> tuple[Iterator[GeotaggedImage], dict[str, int]]:
    """
    Every ``every``-th image of the bags with its GPS position, in time order.

    Images the GPS does not cover (no usable fix within ``max_gap_s`` on both sides) are
    skipped. The returned stats (images seen, skipped_no_gps, usable_fixes) fill up while the
    iterator is consumed.
    """
    fixes = filter_fixes(bags.read_navsat(bag_paths, gps_topic))
    stats = {'images': 0, 'skipped_no_gps': 0, 'usable_fixes': len(fixes)}

    def generate() -> Iterator[GeotaggedImage]:
        for record in bags.iter_images(bag_paths, image_topic):
            stats['images'] += 1
            if (stats['images'] - 1) % every:
                continue
            tags = geotag_images(np.array([record.stamp_ns]), fixes, max_gap_s=max_gap_s,
                                 origin=origin)
            if tags.image_index.size == 0:
                stats['skipped_no_gps'] += 1
                continue
            yield GeotaggedImage(record, float(tags.east[0]), float(tags.north[0]))

    return generate(), stats
