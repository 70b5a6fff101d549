"""Small maps for tests: the route world encoded by a small seeded model, via MapWriter."""

from __future__ import annotations

from pathlib import Path

from route_world import RouteWorld, make_route

from r2former_ros.core.geo.coords import frame_position, place_position, wgs84_to_enu
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


def write_route_map_in_frame(path: Path, model: PlaceModel, num_places: int = 12,
                             frame: str = 'map', yaw_rad: float = 0.5,
                             offset_xy: tuple[float, float] = (120.0, -40.0)
                             ) -> tuple[Path, RouteWorld]:
    """
    The route world as a robot without GPS maps it: places from poses in ``frame`` (the route's
    ENU metres turned by ``yaw_rad`` and moved by ``offset_xy``), no geodetic origin.
    """
    import math

    world = make_route(num_places=num_places)
    origin = tuple(float(v) for v in world.map_latlon[0])
    cos_yaw, sin_yaw = math.cos(yaw_rad), math.sin(yaw_rad)
    records = []
    for i, (lat, lon, alt) in enumerate(world.map_latlon):
        east, north, up = wgs84_to_enu(float(lat), float(lon), float(alt), *origin)
        x = cos_yaw * east - sin_yaw * north + offset_xy[0]
        y = sin_yaw * east + cos_yaw * north + offset_xy[1]
        records.append(PlaceRecord(stamp_ns=i * 10**9, position=frame_position(x, y, up),
                                   source_index=0, msg_index=i))
    features = model.encode_rgb(world.map_images)
    with MapWriter(path, model.identity(), position_frame=frame,
                   sources=[{'kind': 'test', 'name': 'route_world_in_frame'}]) as writer:
        writer.add(features, records, list(world.map_images))
    return path, world


def write_synthetic_map(path: Path, model_identity: dict, num_places: int, seed: int = 0,
                        spacing_m: float = 2.0, batch: int = 2000) -> Path:
    """
    A map of ``num_places`` random places for ``model_identity`` (a model's ``identity()``),
    without encoding images: big maps for swap and soak tests in seconds.

    Places run east along a line ``spacing_m`` apart from the route world's origin; features
    are seeded random unit vectors (no thumbnails), so a node can load it in place of a map
    of the same model.
    """
    import numpy as np

    from r2former_ros.core.features import ImageFeatures, patch_centre_xy
    from r2former_ros.core.geo.coords import enu_to_wgs84

    rng = np.random.default_rng(seed)
    k, dim = int(model_identity['num_local']), int(model_identity['local_dim'])
    height, width = model_identity['input_hw']
    patch = int(model_identity['patch_size'])
    tokens = rng.permutation((height // patch) * (width // patch))[:k].astype(np.int64)
    x, y = patch_centre_xy(tokens[None], model_identity['input_hw'], patch)
    origin = tuple(float(v) for v in make_route(num_places=1).map_latlon[0])
    with MapWriter(path, model_identity, overwrite=True,
                   origin={'lat': origin[0], 'lon': origin[1], 'alt': origin[2]},
                   sources=[{'kind': 'test', 'name': 'synthetic'}]) as writer:
        for start in range(0, num_places, batch):
            n = min(batch, num_places - start)
            glob = rng.standard_normal((n, int(model_identity['global_dim'])), np.float32)
            local = np.empty((n, k, 3 + dim), np.float32)
            local[..., 0], local[..., 1], local[..., 2] = x, y, 1.0
            local[..., 3:] = rng.standard_normal((n, k, dim), np.float32)
            features = ImageFeatures(glob / np.linalg.norm(glob, axis=1, keepdims=True), local,
                                     np.broadcast_to(tokens, (n, k)).copy())
            records = []
            for i in range(start, start + n):
                lat, lon, alt = enu_to_wgs84(i * spacing_m, 0.0, 0.0, *origin)
                records.append(PlaceRecord(stamp_ns=i * 10**8,
                                           position=place_position(lat, lon, alt, origin=origin),
                                           source_index=0, msg_index=i))
            writer.add(features, records)
    return path
