"""Small maps for tests: the route world encoded by a small seeded model, via MapWriter."""

from __future__ import annotations

from pathlib import Path

from route_world import RouteWorld, make_route

from r2former_ros.core.geo.coords import place_position
from r2former_ros.core.mapdb import MapWriter, PlaceRecord
from r2former_ros.core.places.base import PlaceModel


def write_image_map(path: Path, model: PlaceModel, images, latlon, local_format: str = 'int8',
                    thumbnails: bool = True) -> Path:
    """Encode `images` and write them as a map at `path` with positions from `latlon` (N, 3)."""
    origin = tuple(float(v) for v in latlon[0])
    features = model.encode_rgb(images)
    records = [PlaceRecord(stamp_ns=i * 10**9, position=place_position(*row, origin=origin),
                           source_index=0, msg_index=i) for i, row in enumerate(latlon)]
    with MapWriter(path, model.identity(), local_format=local_format,
                   origin={'lat': origin[0], 'lon': origin[1], 'alt': origin[2]},
                   sources=[{'kind': 'test', 'name': 'route_world'}]) as writer:
        writer.add(features, records, list(images) if thumbnails else None)
    return path


def write_route_map(path: Path, model: PlaceModel,
                    num_places: int = 12) -> tuple[Path, RouteWorld]:
    """The route world's first `num_places` windows as a map; returns the map and the world."""
    world = make_route(num_places=num_places)
    return write_image_map(path, model, world.map_images, world.map_latlon), world
