"""WGS84 / ECEF / ENU / UTM conversions against PROJ reference values and round trips."""

import math

import numpy as np
import pytest

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.geo.coords import (
    MEAN_EARTH_RADIUS_M,
    ecef_to_wgs84,
    enu_to_wgs84,
    haversine_m,
    utm_to_wgs84,
    utm_zone,
    wgs84_to_ecef,
    wgs84_to_enu,
    wgs84_to_utm,
)

# (lat, lon, zone, northern, easting, northing), computed once with PROJ 9.5.1 (EPSG:326xx/327xx).
UTM_REFERENCE = [
    (48.137154, 11.576124, 32, True, 691650.3668, 5334754.2466),  # Munich
    (-33.856784, 151.215297, 56, False, 334900.2613, 6252290.5224),  # Sydney
    (40.689247, -74.044502, 18, True, 580735.6450, 4504700.3807),  # New York
    (0.0, 3.0, 31, True, 500000.0000, 0.0000),
    (-0.5, -179.9, 1, False, 177176.0374, 9944663.6224),
    (60.39299, 5.32415, 32, True, 297477.3070, 6700830.0632),  # Bergen: Norway exception
    (78.2232, 15.6267, 33, True, 514278.7151, 8683355.4695),  # Longyearbyen: Svalbard
    (51.0, 13.0, 33, True, 359666.7037, 5651728.6827),
    (-45.0, 170.5, 59, False, 460592.3510, 5016928.0124),
]
# (lat, lon, h) -> ECEF (x, y, z), same PROJ (EPSG:4979 -> EPSG:4978).
ECEF_REFERENCE = [
    ((48.137154, 11.576124, 519.0), (4177969.8860, 855799.8257, 4727453.7743)),
    ((-33.856784, 151.215297, 10.0), (-4646976.6484, 2553081.6383, -3533271.2249)),
]


@pytest.mark.parametrize('lat, lon, zone, northern, easting, northing', UTM_REFERENCE)
def test_utm_matches_proj_to_a_millimetre(lat, lon, zone, northern, easting, northing):
    got = wgs84_to_utm(lat, lon)
    assert got[:2] == (zone, northern)
    assert got[2] == pytest.approx(easting, abs=1e-3)
    assert got[3] == pytest.approx(northing, abs=1e-3)


def test_utm_at_the_pole_is_the_scaled_quarter_meridian():
    # WGS84 quarter meridian 10 001 965.7293 m, times the UTM scale 0.9996.
    assert wgs84_to_utm(90.0, 3.0)[3] == pytest.approx(0.9996 * 10001965.7293, abs=1e-3)


def test_utm_round_trip_over_a_grid():
    lat, lon = np.meshgrid(np.linspace(-80, 84, 41), np.linspace(-179.99, 179.99, 73))
    zone, northern, easting, northing = wgs84_to_utm(lat, lon)
    assert zone.shape == lat.shape and northern.dtype == bool
    back_lat, back_lon = utm_to_wgs84(zone, northern, easting, northing)
    assert np.abs(back_lat - lat).max() < 1e-9
    assert np.abs(back_lon - lon).max() < 1e-9


def test_forced_zone_round_trips_across_the_antimeridian():
    zone, northern, easting, northing = wgs84_to_utm(-16.5, -179.5, zone=60)
    assert zone == 60 and not northern and easting > 500000.0
    lat, lon = utm_to_wgs84(zone, northern, easting, northing)
    assert lat == pytest.approx(-16.5, abs=1e-9) and lon == pytest.approx(-179.5, abs=1e-9)


@pytest.mark.parametrize('lat, lon, zone', [
    (60.0, 4.0, 32), (60.0, 2.9, 31), (65.0, 4.0, 31), (78.0, 8.9, 31), (78.0, 9.1, 33),
    (78.0, 25.0, 35), (78.0, 40.0, 37), (0.0, 180.0, 1), (0.0, -180.0, 1), (0.0, 179.9, 60),
    (10.0, 360.5, 31),
])
def test_zone_numbers_including_exceptions(lat, lon, zone):
    assert utm_zone(lat, lon) == zone


@pytest.mark.parametrize('lla, xyz', ECEF_REFERENCE)
def test_ecef_matches_proj(lla, xyz):
    got = wgs84_to_ecef(*lla)
    assert got == pytest.approx(xyz, abs=1e-3)
    back = ecef_to_wgs84(*got)
    assert back[:2] == pytest.approx(lla[:2], abs=1e-10) and back[2] == pytest.approx(lla[2],
                                                                                      abs=1e-6)


def test_ecef_round_trip_including_poles_and_altitudes():
    lat = np.array([90.0, -90.0, 0.0, 45.0, -60.0, 89.999, 12.3])
    lon = np.array([0.0, 120.0, -180.0, 10.0, 170.0, -45.0, 77.7])
    alt = np.array([0.0, 100.0, -50.0, 9000.0, 400000.0, 1.0, 20200000.0])
    back = ecef_to_wgs84(*wgs84_to_ecef(lat, lon, alt))
    assert np.abs(back[0] - lat).max() < 1e-9
    assert np.abs(back[2] - alt).max() < 1e-5
    not_pole = np.abs(lat) < 90
    assert np.abs(back[1] - lon)[not_pole].max() < 1e-9


def test_enu_axes_and_round_trip():
    origin = (48.0, 11.0, 500.0)
    assert wgs84_to_enu(*origin, *origin) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    east = wgs84_to_enu(48.0, 11.001, 500.0, *origin)
    assert east[0] > 70 and abs(east[1]) < 0.01 and abs(east[2]) < 0.01
    lat, lon, alt = enu_to_wgs84(np.array([0.0, 100.0, -2500.0]), np.array([100.0, 0.0, 3000.0]),
                                 np.array([0.0, 5.0, -20.0]), *origin)
    assert lat[0] > 48.0 and lon[0] == pytest.approx(11.0, abs=1e-12)
    e, n, u = wgs84_to_enu(lat, lon, alt, *origin)
    np.testing.assert_allclose(e, [0.0, 100.0, -2500.0], atol=1e-6)
    np.testing.assert_allclose(n, [100.0, 0.0, 3000.0], atol=1e-6)
    np.testing.assert_allclose(u, [0.0, 5.0, -20.0], atol=1e-6)


def test_enu_distance_matches_utm_distance_locally():
    origin = (-33.85, 151.2, 0.0)
    e, n, _ = wgs84_to_enu(-33.86, 151.21, 0.0, *origin)
    _, _, e0, n0 = wgs84_to_utm(origin[0], origin[1])
    _, _, e1, n1 = wgs84_to_utm(-33.86, 151.21)
    # UTM lengths carry the grid scale (0.9996..1.0004); ENU is true length.
    assert math.hypot(e, n) == pytest.approx(math.hypot(e1 - e0, n1 - n0), rel=1e-3)


def test_haversine_known_distances():
    one_degree = MEAN_EARTH_RADIUS_M * math.pi / 180
    assert haversine_m(10.0, 20.0, 11.0, 20.0) == pytest.approx(one_degree, rel=1e-12)
    assert haversine_m(0.0, 0.0, 0.0, 90.0) == pytest.approx(MEAN_EARTH_RADIUS_M * math.pi / 2)
    assert haversine_m(0.0, 179.5, 0.0, -179.5) == pytest.approx(one_degree, rel=1e-12)
    got = haversine_m(np.array([0.0, 1.0]), 0.0, np.array([0.0, 2.0]), 0.0)
    np.testing.assert_allclose(got, [0.0, one_degree])


def test_scalar_in_float_out():
    assert isinstance(wgs84_to_enu(1.0, 2.0, 3.0, 1.0, 2.0, 0.0)[0], float)
    assert isinstance(haversine_m(1.0, 2.0, 3.0, 4.0), float)
    assert isinstance(utm_to_wgs84(32, True, 500000.0, 5e6)[0], float)


def test_invalid_inputs_raise_config_error():
    with pytest.raises(ConfigError, match='91'):
        wgs84_to_utm(91.0, 0.0)
    with pytest.raises(ConfigError, match='zone'):
        utm_to_wgs84(0, True, 500000.0, 0.0)
    with pytest.raises(ConfigError, match='zone'):
        wgs84_to_utm(10.0, 10.0, zone=61)
    with pytest.raises(ConfigError, match='origin'):
        wgs84_to_enu(1.0, 1.0, 0.0, float('nan'), 0.0, 0.0)
