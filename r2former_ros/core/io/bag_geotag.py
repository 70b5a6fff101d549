"""
Images of a drive bag paired with their GPS positions in a map's ENU frame.

One reader for everything that scores queries against ground truth from the same bag's
NavSatFix (``r2former eval --bags``, drive calibration), so both skip and count the same
images.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from r2former_ros.core.geo.geotag import filter_fixes, geotag_images
from r2former_ros.core.io import bag_open, bag_tracks, bags

# Images geotagged per call: each call converts the fix track, so one call per image would cost
# as much as decoding it on a long drive. Encoded messages are small enough to hold this many.
_GEOTAG_CHUNK = 32


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


def geotagged_bag_images(bag_paths: bag_open.Paths, image_topic: str, gps_topic: str,
                         origin: tuple[float, float, float], max_gap_s: float = 1.0,
                         every: int = 1) -> tuple[Iterator[GeotaggedImage], dict[str, int]]:
    """
    Every ``every``-th image of the bags with its GPS position, in time order.

    Images the GPS does not cover (no usable fix within ``max_gap_s`` on both sides) are
    skipped, and only the images returned are decoded. The returned stats (images seen,
    skipped_no_gps, usable_fixes) fill up while the iterator is consumed.
    """
    fixes = filter_fixes(bag_tracks.read_navsat(bag_paths, gps_topic))
    stats = {'images': 0, 'skipped_no_gps': 0, 'usable_fixes': len(fixes)}

    def tagged(chunk: list[bags.EncodedImage]) -> Iterator[GeotaggedImage]:
        if not chunk:
            return
        stamps = np.array([encoded.stamp_ns for encoded in chunk], dtype=np.int64)
        tags = geotag_images(stamps, fixes, max_gap_s=max_gap_s, origin=origin)
        where = dict(zip(tags.image_index.tolist(), zip(tags.east.tolist(), tags.north.tolist(),
                                                        strict=True), strict=True))
        for position, encoded in enumerate(chunk):
            if position not in where:
                stats['skipped_no_gps'] += 1
                continue
            east, north = where[position]
            # Decoded only now: images skipped by `every` or for lack of GPS never are.
            yield GeotaggedImage(encoded.decoded(), east, north)

    def generate() -> Iterator[GeotaggedImage]:
        with closing(bags.iter_encoded_images(bag_paths, image_topic)) as encoded_images:
            chunk: list[bags.EncodedImage] = []
            for encoded in encoded_images:
                stats['images'] += 1
                if (stats['images'] - 1) % every:
                    continue
                chunk.append(encoded)
                if len(chunk) == _GEOTAG_CHUNK:
                    yield from tagged(chunk)
                    chunk = []
            yield from tagged(chunk)

    return generate(), stats
