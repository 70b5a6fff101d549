"""
Images of a drive bag paired with their true positions in a map's frame.

One reader for everything that scores queries against ground truth from the same bag
(``r2former eval --bags``, drive calibration): the bag's NavSatFix for a GPS map, or its poses
for a map in the poses' frame (:mod:`.bag_truth`), so both skip and count the same images.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from r2former_ros.core.io import bag_open, bags
from r2former_ros.core.io.bag_truth import TruthTrack

# Images geotagged per call: each call converts the fix track, so one call per image would cost
# as much as decoding it on a long drive. Encoded messages are small enough to hold this many.
_GEOTAG_CHUNK = 32


@dataclass(frozen=True)
class GeotaggedImage:
    """A bag image with its ground-truth position (metres east/north in the map's frame)."""

    record: bags.ImageRecord
    east: float
    north: float

    @property
    def name(self) -> str:
        """``<bag file name>#<message index>``: how reports name a bag image."""
        return f'{Path(self.record.bag_path).name}#{self.record.index}'


def geotagged_bag_images(bag_paths: bag_open.Paths, image_topic: str, truth: TruthTrack,
                         max_gap_s: float = 1.0,
                         every: int = 1) -> tuple[Iterator[GeotaggedImage], dict[str, int]]:
    """
    Every ``every``-th image of the bags with its true position, in time order.

    Images the truth does not cover (no usable fix or pose within ``max_gap_s`` on both sides)
    are skipped, and only the images returned are decoded. The returned stats (images seen,
    skipped_no_gps or skipped_no_pose, usable_fixes or usable_poses) fill up while the iterator
    is consumed.
    """
    stats = {'images': 0, truth.skipped_key: 0, truth.usable_key: truth.usable}

    def tagged(chunk: list[bags.EncodedImage]) -> Iterator[GeotaggedImage]:
        if not chunk:
            return
        stamps = np.array([encoded.stamp_ns for encoded in chunk], dtype=np.int64)
        tags = truth.tag(stamps, max_gap_s)
        where = dict(zip(tags.image_index.tolist(), zip(tags.east.tolist(), tags.north.tolist(),
                                                        strict=True), strict=True))
        for position, encoded in enumerate(chunk):
            if position not in where:
                stats[truth.skipped_key] += 1
                continue
            east, north = where[position]
            # Decoded only now: images skipped by `every` or for lack of truth never are.
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
