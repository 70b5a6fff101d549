"""
WGS84 geodesy without external libraries: ECEF, local ENU, UTM and great-circle distance.

All functions take scalars or numpy arrays (broadcast together) in degrees and metres and
return floats for scalar input, arrays otherwise. NaN inputs propagate to NaN outputs.

UTM uses the Krüger series of the transverse Mercator projection to fourth order in the third
flattening ``n``; the truncation error is below 0.1 mm within a zone (and a few millimetres
even 20 degrees of longitude away from the central meridian). Zones follow the standard grid
including the Norway (32V) and Svalbard (31X/33X/35X/37X) exceptions; pass ``zone=`` to keep a
whole map in one zone. Polar regions are not switched to UPS: the projection stays valid
there, the numbers are just far from a standard UTM grid.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.types import PlacePosition

WGS84_A = 6378137.0
"""Semi-major axis (m)."""
WGS84_F = 1.0 / 298.257223563
"""Flattening."""
WGS84_B = WGS84_A * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
"""First eccentricity squared."""
MEAN_EARTH_RADIUS_M = 6371008.8
"""IUGG mean radius R1 = (2a + b) / 3, used by :func:`haversine_m`."""

WGS84_FRAME = 'wgs84'
"""The position frame of a map built from GPS (any other frame is a pose frame, e.g. 'map')."""

UTM_K0 = 0.9996
UTM_FALSE_EASTING = 500000.0
UTM_FALSE_NORTHING_SOUTH = 10000000.0

_E = np.sqrt(WGS84_E2)
_N = WGS84_F / (2.0 - WGS84_F)
# Rectifying radius: meridian arc length per radian of rectifying latitude.
_A_RECT = WGS84_A / (1.0 + _N) * (1.0 + _N**2 / 4.0 + _N**4 / 64.0)
# Krüger coefficients (geographic -> projection: alpha; projection -> geographic: beta).
_ALPHA = (
    _N / 2 - 2 * _N**2 / 3 + 5 * _N**3 / 16 + 41 * _N**4 / 180,
    13 * _N**2 / 48 - 3 * _N**3 / 5 + 557 * _N**4 / 1440,
    61 * _N**3 / 240 - 103 * _N**4 / 140,
    49561 * _N**4 / 161280,
)
_BETA = (
    _N / 2 - 2 * _N**2 / 3 + 37 * _N**3 / 96 - _N**4 / 360,
    _N**2 / 48 + _N**3 / 15 - 437 * _N**4 / 1440,
    17 * _N**3 / 480 - 37 * _N**4 / 840,
    4397 * _N**4 / 161280,
)
_ITERATIONS = 8  # each fixed-point step gains a factor ~e^2 = 0.0067; 8 reach machine precision


def _arrays(*values: object) -> list[NDArray[np.float64]]:
    """Broadcast inputs to float64 arrays of a common shape."""
    return list(np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values)))


def _out(value: np.ndarray) -> float | np.ndarray:
    """Return a Python float for 0-d results, the array otherwise."""
    return float(value) if np.ndim(value) == 0 else value


def _check_lat(lat: np.ndarray) -> None:
    """
    Reject latitudes outside [-90, 90] degrees (NaN is let through).

    Raises:
        ConfigError: If a finite latitude is out of range.

    """
    bad = np.abs(lat) > 90.0
    if np.any(bad):
        raise ConfigError(f'latitude {lat[bad].flat[0]} is outside [-90, 90] degrees')


def _wrap_deg(angle: np.ndarray) -> np.ndarray:
    """Wrap degrees into [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


def wgs84_to_ecef(lat: object, lon: object, alt: object) -> tuple:
    """
    Convert geodetic coordinates to Earth-centred, Earth-fixed coordinates.

    Args:
        lat: Latitude in degrees.
        lon: Longitude in degrees.
        alt: Height above the ellipsoid in metres.

    Returns:
        (x, y, z) in metres.

    Raises:
        ConfigError: If a latitude is outside [-90, 90].

    """
    lat, lon, alt = _arrays(lat, lon, alt)
    _check_lat(lat)
    phi, lam = np.radians(lat), np.radians(lon)
    sin_phi = np.sin(phi)
    normal = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_phi**2)
    x = (normal + alt) * np.cos(phi) * np.cos(lam)
    y = (normal + alt) * np.cos(phi) * np.sin(lam)
    z = (normal * (1.0 - WGS84_E2) + alt) * sin_phi
    return _out(x), _out(y), _out(z)


def ecef_to_wgs84(x: object, y: object, z: object) -> tuple:
    """
    Convert Earth-centred, Earth-fixed coordinates to geodetic coordinates.

    Uses a fixed number of iterations of ``phi = atan2(z + e^2 N sin(phi), p)`` from Bowring's
    start, which converges to far below a micrometre for points near the Earth's surface and
    stays well-defined at the poles.

    Args:
        x: ECEF x in metres.
        y: ECEF y in metres.
        z: ECEF z in metres.

    Returns:
        (lat, lon, alt) in degrees, degrees and metres above the ellipsoid.

    """
    x, y, z = _arrays(x, y, z)
    p = np.hypot(x, y)
    lam = np.arctan2(y, x)
    # Bowring's parametric-latitude start is already within ~1e-10 rad on the surface.
    beta = np.arctan2(z * WGS84_A, p * WGS84_B)
    ep2 = WGS84_E2 / (1.0 - WGS84_E2)
    phi = np.arctan2(
        z + ep2 * WGS84_B * np.sin(beta) ** 3, p - WGS84_E2 * WGS84_A * np.cos(beta) ** 3
    )
    for _ in range(_ITERATIONS):
        normal = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(phi) ** 2)
        phi = np.arctan2(z + WGS84_E2 * normal * np.sin(phi), p)
    sin_phi = np.sin(phi)
    normal = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_phi**2)
    # This form of the height has no 1/cos(phi) and so is exact at the poles too.
    alt = p * np.cos(phi) + (z + WGS84_E2 * normal * sin_phi) * sin_phi - normal
    return _out(np.degrees(phi)), _out(np.degrees(lam)), _out(alt)


def _enu_rotation(origin_lat: float, origin_lon: float) -> np.ndarray:
    """Rows are the east, north and up unit vectors of the origin in ECEF."""
    phi, lam = np.radians(origin_lat), np.radians(origin_lon)
    sp, cp, sl, cl = np.sin(phi), np.cos(phi), np.sin(lam), np.cos(lam)
    return np.array([[-sl, cl, 0.0], [-sp * cl, -sp * sl, cp], [cp * cl, cp * sl, sp]])


def _check_origin(origin_lat: float, origin_lon: float, origin_alt: float) -> None:
    """
    Require a finite, scalar ENU origin.

    Raises:
        ConfigError: If the origin is not finite or its latitude is out of range.

    """
    values = np.asarray([origin_lat, origin_lon, origin_alt], dtype=np.float64)
    if values.shape != (3,) or not np.all(np.isfinite(values)) or abs(values[0]) > 90.0:
        raise ConfigError(
            f'ENU origin ({origin_lat}, {origin_lon}, {origin_alt}) must be finite scalars'
        )


def wgs84_to_enu(
    lat: object, lon: object, alt: object,
    origin_lat: float, origin_lon: float, origin_alt: float,
) -> tuple:
    """
    Convert geodetic coordinates to a local East-North-Up frame about an origin.

    Args:
        lat: Latitude in degrees.
        lon: Longitude in degrees.
        alt: Height above the ellipsoid in metres.
        origin_lat: Origin latitude in degrees.
        origin_lon: Origin longitude in degrees.
        origin_alt: Origin height in metres.

    Returns:
        (east, north, up) in metres.

    Raises:
        ConfigError: If the origin is not finite or a latitude is out of range.

    """
    _check_origin(origin_lat, origin_lon, origin_alt)
    x, y, z = _arrays(*wgs84_to_ecef(lat, lon, alt))
    x0, y0, z0 = wgs84_to_ecef(origin_lat, origin_lon, origin_alt)
    delta = np.stack([x - x0, y - y0, z - z0], axis=-1)
    enu = delta @ _enu_rotation(origin_lat, origin_lon).T
    return _out(enu[..., 0]), _out(enu[..., 1]), _out(enu[..., 2])


def enu_to_wgs84(
    east: object, north: object, up: object,
    origin_lat: float, origin_lon: float, origin_alt: float,
) -> tuple:
    """
    Convert local East-North-Up coordinates about an origin back to geodetic coordinates.

    Args:
        east: East in metres.
        north: North in metres.
        up: Up in metres.
        origin_lat: Origin latitude in degrees.
        origin_lon: Origin longitude in degrees.
        origin_alt: Origin height in metres.

    Returns:
        (lat, lon, alt) in degrees, degrees and metres.

    Raises:
        ConfigError: If the origin is not finite.

    """
    _check_origin(origin_lat, origin_lon, origin_alt)
    east, north, up = _arrays(east, north, up)
    enu = np.stack([east, north, up], axis=-1)
    delta = enu @ _enu_rotation(origin_lat, origin_lon)
    x0, y0, z0 = wgs84_to_ecef(origin_lat, origin_lon, origin_alt)
    return ecef_to_wgs84(delta[..., 0] + x0, delta[..., 1] + y0, delta[..., 2] + z0)


def utm_zone(lat: object, lon: object) -> int | np.ndarray:
    """
    Return the standard UTM zone number, including the Norway and Svalbard exceptions.

    Args:
        lat: Latitude in degrees.
        lon: Longitude in degrees (any wrap).

    Returns:
        Zone 1..60 as an int for scalar input, an int array otherwise.

    """
    lat, lon = _arrays(lat, lon)
    lon = _wrap_deg(lon)
    zone = np.clip(np.floor((lon + 180.0) / 6.0).astype(np.int64) + 1, 1, 60)
    zone = np.where((lat >= 56.0) & (lat < 64.0) & (lon >= 3.0) & (lon < 12.0), 32, zone)
    svalbard = (lat >= 72.0) & (lat < 84.0)
    for low, high, number in ((0.0, 9.0, 31), (9.0, 21.0, 33), (21.0, 33.0, 35), (33.0, 42.0, 37)):
        zone = np.where(svalbard & (lon >= low) & (lon < high), number, zone)
    return int(zone) if zone.ndim == 0 else zone


def _central_meridian(zone: np.ndarray) -> np.ndarray:
    """Central meridian of a zone in degrees."""
    return (zone - 1) * 6.0 - 177.0


def _check_zone(zone: np.ndarray) -> None:
    """
    Require zone numbers 1..60.

    Raises:
        ConfigError: If a zone is out of range.

    """
    if np.any((zone < 1) | (zone > 60)):
        raise ConfigError(f'UTM zone must be within 1..60, got {zone[(zone < 1) | (zone > 60)]}')


def wgs84_to_utm(
    lat: object, lon: object, zone: int | None = None, northern: bool | None = None
) -> tuple:
    """
    Project geodetic coordinates to UTM.

    Args:
        lat: Latitude in degrees.
        lon: Longitude in degrees.
        zone: Force this zone (1..60) instead of the standard one, e.g. to keep a map that
            crosses a zone boundary in one frame.
        northern: Force the hemisphere of the false northing (False adds 10,000 km).

    Returns:
        (zone, northern, easting, northing): int/bool for scalar input, arrays otherwise;
        easting and northing in metres.

    Raises:
        ConfigError: If a latitude or the forced zone is out of range.

    """
    lat, lon = _arrays(lat, lon)
    _check_lat(lat)
    zones = np.broadcast_to(
        np.asarray(utm_zone(lat, lon) if zone is None else zone, dtype=np.int64), lat.shape
    )
    _check_zone(zones)
    north = np.broadcast_to(np.asarray(lat >= 0.0 if northern is None else northern), lat.shape)
    dlam = np.radians(_wrap_deg(lon - _central_meridian(zones)))
    sin_phi = np.sin(np.radians(lat))
    with np.errstate(divide='ignore', invalid='ignore'):
        # tan of the conformal latitude; inf at the poles, which the atan/atanh below accept.
        tau = np.sinh(np.arctanh(sin_phi) - _E * np.arctanh(_E * sin_phi))
        xi_p = np.arctan2(tau, np.cos(dlam))
        eta_p = np.arctanh(np.sin(dlam) / np.sqrt(1.0 + tau**2))
    xi, eta = xi_p.copy(), eta_p.copy()
    for j, alpha in enumerate(_ALPHA, start=1):
        xi += alpha * np.sin(2 * j * xi_p) * np.cosh(2 * j * eta_p)
        eta += alpha * np.cos(2 * j * xi_p) * np.sinh(2 * j * eta_p)
    easting = UTM_FALSE_EASTING + UTM_K0 * _A_RECT * eta
    northing = UTM_K0 * _A_RECT * xi + np.where(north, 0.0, UTM_FALSE_NORTHING_SOUTH)
    if lat.ndim == 0:
        return int(zones), bool(north), float(easting), float(northing)
    return zones.copy(), north.copy(), easting, northing


def utm_to_wgs84(zone: object, northern: object, easting: object, northing: object) -> tuple:
    """
    Convert UTM coordinates back to geodetic coordinates.

    Args:
        zone: Zone number 1..60.
        northern: True for the northern hemisphere (no false northing).
        easting: Easting in metres.
        northing: Northing in metres.

    Returns:
        (lat, lon) in degrees; lon wrapped to [-180, 180).

    Raises:
        ConfigError: If a zone is out of range.

    """
    zone_a, north_a, easting_a, northing_a = np.broadcast_arrays(
        np.asarray(zone, dtype=np.int64), np.asarray(northern, dtype=bool),
        np.asarray(easting, dtype=np.float64), np.asarray(northing, dtype=np.float64),
    )
    _check_zone(zone_a)
    xi = (northing_a - np.where(north_a, 0.0, UTM_FALSE_NORTHING_SOUTH)) / (UTM_K0 * _A_RECT)
    eta = (easting_a - UTM_FALSE_EASTING) / (UTM_K0 * _A_RECT)
    xi_p, eta_p = xi.copy(), eta.copy()
    for j, beta in enumerate(_BETA, start=1):
        xi_p -= beta * np.sin(2 * j * xi) * np.cosh(2 * j * eta)
        eta_p -= beta * np.cos(2 * j * xi) * np.sinh(2 * j * eta)
    chi = np.arcsin(np.clip(np.sin(xi_p) / np.cosh(eta_p), -1.0, 1.0))
    phi = _geodetic_from_conformal(chi)
    lam = np.arctan2(np.sinh(eta_p), np.cos(xi_p))
    lon = _wrap_deg(_central_meridian(zone_a) + np.degrees(lam))
    return _out(np.degrees(phi)), _out(lon)


def _geodetic_from_conformal(chi: np.ndarray) -> np.ndarray:
    """
    Invert ``atanh(sin chi) = atanh(sin phi) - e atanh(e sin phi)`` for phi by fixed point.

    Args:
        chi: Conformal latitude in radians.

    Returns:
        Geodetic latitude in radians.

    """
    with np.errstate(divide='ignore'):
        psi = np.arctanh(np.sin(chi))  # isometric latitude, +-inf at the poles
        phi = chi.copy()
        for _ in range(_ITERATIONS):
            phi = np.arcsin(np.tanh(psi + _E * np.arctanh(_E * np.sin(phi))))
    return phi


def haversine_m(lat1: object, lon1: object, lat2: object, lon2: object) -> float | np.ndarray:
    """
    Great-circle distance on a sphere of the mean Earth radius.

    Accurate to about 0.5 % against the ellipsoid, which is plenty for thresholds such as
    "within 25 m"; use ENU for metric work.

    Args:
        lat1: First latitude in degrees.
        lon1: First longitude in degrees.
        lat2: Second latitude in degrees.
        lon2: Second longitude in degrees.

    Returns:
        Distance in metres.

    """
    lat1, lon1, lat2, lon2 = (np.radians(v) for v in _arrays(lat1, lon1, lat2, lon2))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(
        (lon2 - lon1) / 2
    ) ** 2
    return _out(2.0 * MEAN_EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def place_position(lat: float, lon: float, alt: float,
                   origin: tuple[float, float, float],
                   heading: float | None = None) -> PlacePosition:
    """
    Every coordinate form a place carries, from WGS84 and the map's ENU origin.

    Args:
        lat: latitude, degrees.
        lon: longitude, degrees.
        alt: altitude, metres (ellipsoidal, as NavSatFix gives it).
        origin: (lat, lon, alt) of the map's ENU frame.
        heading: radians in ENU (0 = east, counter-clockwise), or None when unknown.
    """
    east, north, up = wgs84_to_enu(lat, lon, alt, *origin)
    zone, northern, easting, northing = wgs84_to_utm(lat, lon)
    return PlacePosition(float(lat), float(lon), float(alt), float(east), float(north), float(up),
                         int(zone), bool(northern), float(easting), float(northing),
                         None if heading is None or not np.isfinite(heading) else float(heading))


def frame_position(x: float, y: float, z: float, heading: float | None = None) -> PlacePosition:
    """
    Return a place known only in a robot's own frame (poses, no GPS), inventing nothing.

    x, y, z go into the east, north, up fields (metres in that frame); lat, lon, alt and the
    UTM easting/northing are NaN and the UTM zone 0 (unknown).

    Args:
        x: metres along the frame's x axis.
        y: metres along its y axis.
        z: metres along its z axis.
        heading: yaw in radians, counter-clockwise from the frame's x axis, or None.
    """
    nan = float('nan')
    return PlacePosition(nan, nan, nan, float(x), float(y), float(z), 0, False, nan, nan,
                         None if heading is None or not np.isfinite(heading) else float(heading))
