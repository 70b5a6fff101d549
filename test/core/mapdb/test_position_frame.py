"""A map records its position frame: 'wgs84' for GPS maps, the poses' frame without GPS."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_mapdb import ORIGIN, SMALL, build, make_features

from r2former_ros.core.errors import ConfigError, MapError
from r2former_ros.core.geo.coords import frame_position
from r2former_ros.core.mapdb import MapDatabase, MapWriter, PlaceRecord, map_info


def pose_places(n: int) -> list[PlaceRecord]:
    return [PlaceRecord(stamp_ns=i, position=frame_position(3.0 * i, -2.0 * i, 0.1, 0.5),
                        msg_index=i) for i in range(n)]


def build_pose_map(path, n: int = 6, frame: str = 'map') -> None:
    with MapWriter(path, SMALL, position_frame=frame) as writer:
        writer.add_source({'bag': 'slam.mcap', 'pose_topic': '/map_pose'})
        writer.add(make_features(SMALL, n, 3), pose_places(n))


def test_a_gps_map_records_wgs84_and_keeps_its_origin(tmp_path):
    build(tmp_path / 'gps', n=4)
    manifest = json.loads((tmp_path / 'gps' / 'manifest.json').read_text())
    assert manifest['position_frame'] == 'wgs84' and manifest['origin'] == ORIGIN
    database = MapDatabase.open(tmp_path / 'gps')
    assert database.position_frame == 'wgs84'
    assert database.origin == (ORIGIN['lat'], ORIGIN['lon'], ORIGIN['alt'])
    assert map_info(tmp_path / 'gps')['position_frame'] == 'wgs84'


def test_maps_written_before_the_field_are_gps_maps(tmp_path):
    build(tmp_path / 'old', n=4)
    path = tmp_path / 'old' / 'manifest.json'
    manifest = json.loads(path.read_text())
    del manifest['position_frame']
    path.write_text(json.dumps(manifest))
    database = MapDatabase.open(tmp_path / 'old')
    assert database.position_frame == 'wgs84' and database.origin[0] == ORIGIN['lat']


def test_a_pose_map_has_its_frame_no_geodetic_origin_and_refuses_gps_input(tmp_path):
    build_pose_map(tmp_path / 'slam')
    manifest = json.loads((tmp_path / 'slam' / 'manifest.json').read_text())
    assert manifest['position_frame'] == 'map'
    assert manifest['origin'] == {'lat': None, 'lon': None, 'alt': None}
    database = MapDatabase.open(tmp_path / 'slam')
    assert database.position_frame == 'map'
    with pytest.raises(MapError, match="frame 'map'.*no geodetic origin.*--pose-topic"):
        _ = database.origin
    place = database.position(2)
    assert (place.east, place.north, place.heading) == (6.0, -4.0, 0.5)
    assert math.isnan(place.latitude) and place.utm_zone == 0
    info = map_info(tmp_path / 'slam')
    assert info['position_frame'] == 'map' and info['origin']['lat'] is None


def test_appending_keeps_the_frame_and_a_pose_map_takes_no_origin(tmp_path):
    build_pose_map(tmp_path / 'slam', n=4)
    with MapWriter.append(tmp_path / 'slam', SMALL) as writer:
        assert writer.position_frame == 'map' and writer.origin is None
        with pytest.raises(MapError, match='no geodetic origin'):
            writer.set_origin(1.0, 2.0, 3.0)
        writer.add(make_features(SMALL, 2, 9), pose_places(2))
    database = MapDatabase.open(tmp_path / 'slam')
    assert database.num_places == 6 and database.position_frame == 'map'
    np.testing.assert_allclose(database.places['east'][4:], [0.0, 3.0])


def test_writer_refuses_an_origin_for_a_pose_frame_and_an_empty_frame(tmp_path):
    with pytest.raises(ConfigError, match='no geodetic origin'):
        MapWriter(tmp_path / 'a', SMALL, origin=ORIGIN, position_frame='map')
    with pytest.raises(ConfigError, match='position_frame'):
        MapWriter(tmp_path / 'b', SMALL, position_frame='')
    # A GPS map still needs its origin.
    with pytest.raises(MapError, match='origin was never set'), \
            MapWriter(tmp_path / 'c', SMALL) as writer:
        writer.add(make_features(SMALL, 2, 1), pose_places(2))
    assert not (tmp_path / 'c').exists()
