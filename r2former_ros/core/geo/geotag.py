"""
Pure geotagging of image stamps from GNSS fixes and optional odometry/pose headings.

Rules:
    * A fix is usable when ``status >= STATUS_FIX`` (so ``STATUS_NO_FIX = -1`` and Jazzy's
      ``STATUS_UNKNOWN = -2`` are skipped), latitude, longitude and altitude are all finite,
      the latitude lies in [-90, 90], and the fix is not exactly (0, 0), which drivers publish
      as a placeholder before their first fix. Fixes with a repeated stamp keep the first one.
    * Positions are interpolated linearly in time in a local ENU frame about the first usable
      fix, not in degrees: a degree of longitude is not a fixed distance, and interpolating
      degrees across the antimeridian (179.9 -> -179.9) would sweep around the globe.
    * An image is geotagged only if it has a usable fix at most ``max_gap_s`` before it AND one
      at most ``max_gap_s`` after it; there is no extrapolation past the first or last fix.
    * Heading (radians, ENU: 0 = east, counter-clockwise) comes from the pose/odometry yaw when
      poses are given, taken as-is (REP 103: the frame is assumed to be ENU-aligned), NaN where
      no pose lies within ``max_gap_s`` on both sides. Without poses it is the direction of GNSS
      motion over ``heading_window_s`` around the image, NaN when slower than ``min_speed_mps``.
    * A robot without GPS gives its positions as poses in its own frame (e.g. a SLAM ``map``):
      :func:`pose_tag_images` places the image stamps in that frame by the same rules (linear
      interpolation, ``max_gap_s`` on both sides, no extrapolation); x, y, z go into the
      east, north, up columns and the geodetic fields stay NaN: nothing is invented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.geo.coords import enu_to_wgs84, wgs84_to_enu

STATUS_NO_FIX = -1
"""``sensor_msgs/NavSatStatus.STATUS_NO_FIX``."""
STATUS_FIX = 0
"""``sensor_msgs/NavSatStatus.STATUS_FIX``: the lowest status that carries a position."""


@dataclass(frozen=True)
class FixArrays:
    """NavSatFix messages as parallel arrays (stamps in nanoseconds)."""

    stamp_ns: np.ndarray  # int64
    lat: np.ndarray  # float64 degrees
    lon: np.ndarray  # float64 degrees
    alt: np.ndarray  # float64 metres above the ellipsoid
    status: np.ndarray  # int16 NavSatStatus.status
    covariance_type: np.ndarray  # uint8 position_covariance_type

    def __len__(self) -> int:
        return int(self.stamp_ns.shape[0])

    def take(self, index: np.ndarray) -> FixArrays:
        """
        Select rows by an index or boolean array.

        Args:
            index: Integer indices or a boolean mask.

        Returns:
            A new FixArrays with the selected rows.

        """
        return FixArrays(
            self.stamp_ns[index], self.lat[index], self.lon[index], self.alt[index],
            self.status[index], self.covariance_type[index],
        )


@dataclass(frozen=True)
class PoseArrays:
    """Odometry or PoseStamped messages as parallel arrays (stamps in nanoseconds)."""

    stamp_ns: np.ndarray  # int64
    x: np.ndarray  # float64 metres
    y: np.ndarray
    z: np.ndarray
    yaw: np.ndarray  # float64 radians about z, in (-pi, pi]
    # The distinct header frame ids of the messages, in order of first appearance.
    frame_ids: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.stamp_ns.shape[0])

    def take(self, index: np.ndarray) -> PoseArrays:
        """Select rows by an index or boolean array (the frame ids are kept)."""
        return PoseArrays(self.stamp_ns[index], self.x[index], self.y[index], self.z[index],
                          self.yaw[index], self.frame_ids)


@dataclass(frozen=True)
class Geotags:
    """Positions of the images that could be geotagged, plus what was dropped."""

    image_index: np.ndarray  # int64 indices into the image stamps given to geotag_images
    stamp_ns: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    east: np.ndarray  # metres in the ENU frame about `origin` (poses: x of their frame)
    north: np.ndarray  # (poses: y)
    up: np.ndarray  # (poses: z)
    heading: np.ndarray  # radians ENU (poses: yaw in their frame), NaN = unknown
    # (lat, lon, alt); None without usable fixes, and for positions from poses
    origin: tuple[float, float, float] | None
    n_dropped_gap: int = 0  # a usable fix on each side, but one is farther than max_gap_s
    n_dropped_outside: int = 0  # before the first or after the last usable fix
    n_usable_fixes: int = 0  # usable fixes, or usable poses for positions from poses

    @property
    def n_dropped(self) -> int:
        """All images that got no position."""
        return self.n_dropped_gap + self.n_dropped_outside


def usable_fix_mask(fixes: FixArrays, min_status: int = STATUS_FIX) -> np.ndarray:
    """
    Flag the fixes that carry a usable position (see the module docstring for the rule).

    Args:
        fixes: All fixes.
        min_status: Lowest NavSatStatus.status accepted.

    Returns:
        Boolean array, one entry per fix.

    """
    finite = np.isfinite(fixes.lat) & np.isfinite(fixes.lon) & np.isfinite(fixes.alt)
    with np.errstate(invalid='ignore'):
        in_range = np.abs(fixes.lat) <= 90.0
    placeholder = (fixes.lat == 0.0) & (fixes.lon == 0.0)
    return (fixes.status >= min_status) & finite & in_range & ~placeholder


def filter_fixes(fixes: FixArrays, min_status: int = STATUS_FIX) -> FixArrays:
    """
    Keep usable fixes, sorted by stamp, with repeated stamps removed.

    Args:
        fixes: All fixes in any order.
        min_status: Lowest NavSatStatus.status accepted.

    Returns:
        The usable fixes in strictly increasing stamp order.

    """
    usable = fixes.take(usable_fix_mask(fixes, min_status))
    order = np.argsort(usable.stamp_ns, kind='stable')
    usable = usable.take(order)
    # np.interp needs increasing sample points; a duplicate stamp carries no extra timing.
    first = np.ones(len(usable), dtype=bool)
    first[1:] = np.diff(usable.stamp_ns) > 0
    return usable.take(first)


def _bracket(sample_ns: np.ndarray, query_ns: np.ndarray, max_gap_ns: int) -> tuple:
    """
    Classify each query by the samples just before and after it.

    Args:
        sample_ns: Strictly increasing sample stamps.
        query_ns: Query stamps.
        max_gap_ns: Largest allowed distance to the neighbour on each side.

    Returns:
        (inside, covered): inside = a sample on both sides; covered = inside and both
        neighbours within max_gap_ns.

    """
    if sample_ns.size == 0:
        empty = np.zeros(query_ns.shape, dtype=bool)
        return empty, empty
    prev_idx = np.searchsorted(sample_ns, query_ns, side='right') - 1
    next_idx = np.searchsorted(sample_ns, query_ns, side='left')
    inside = (prev_idx >= 0) & (next_idx < sample_ns.size)
    prev_gap = query_ns - sample_ns[np.clip(prev_idx, 0, None)]
    next_gap = sample_ns[np.clip(next_idx, None, sample_ns.size - 1)] - query_ns
    covered = inside & (prev_gap <= max_gap_ns) & (next_gap <= max_gap_ns)
    return inside, covered


def _seconds(stamp_ns: np.ndarray, ref_ns: int) -> np.ndarray:
    """Seconds since a reference; relative first so float64 keeps nanosecond precision."""
    return (np.asarray(stamp_ns, dtype=np.int64) - ref_ns).astype(np.float64) * 1e-9


def heading_from_poses(stamp_ns: np.ndarray, poses: PoseArrays, max_gap_s: float) -> np.ndarray:
    """
    Interpolate pose yaw at the given stamps.

    Args:
        stamp_ns: Query stamps (int64 ns).
        poses: Poses in any order.
        max_gap_s: Largest distance to the pose before and after a stamp.

    Returns:
        Yaw in (-pi, pi] per stamp; NaN where the poses do not cover the stamp.

    """
    stamp_ns = np.asarray(stamp_ns, dtype=np.int64)
    ok = np.isfinite(poses.yaw)
    order = np.argsort(poses.stamp_ns[ok], kind='stable')
    pose_ns, yaw = poses.stamp_ns[ok][order], poses.yaw[ok][order]
    keep = np.ones(pose_ns.size, dtype=bool)
    keep[1:] = np.diff(pose_ns) > 0
    pose_ns, yaw = pose_ns[keep], yaw[keep]
    _, covered = _bracket(pose_ns, stamp_ns, int(round(max_gap_s * 1e9)))
    result = np.full(stamp_ns.shape, np.nan)
    if pose_ns.size:
        # Unwrap so that 179 deg -> -179 deg interpolates through 180, not through 0.
        t0 = int(pose_ns[0])
        value = np.interp(_seconds(stamp_ns, t0), _seconds(pose_ns, t0), np.unwrap(yaw))
        result[covered] = _wrap_angle(value[covered])
    return result


def _wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap radians into (-pi, pi]."""
    return np.pi - np.mod(np.pi - angle, 2.0 * np.pi)


def heading_from_motion(
    stamp_ns: np.ndarray, fix_ns: np.ndarray, east: np.ndarray, north: np.ndarray,
    window_s: float, min_speed_mps: float,
) -> np.ndarray:
    """
    Direction of travel from interpolated positions half a window before and after each stamp.

    Args:
        stamp_ns: Query stamps (int64 ns).
        fix_ns: Strictly increasing fix stamps.
        east: Fix east coordinates (m).
        north: Fix north coordinates (m).
        window_s: Time span used for the displacement, clipped to the fixes' time range.
        min_speed_mps: Below this horizontal speed the heading is unknown (GNSS noise dominates).

    Returns:
        Heading in radians ENU per stamp; NaN when too slow or no time span is available.

    """
    stamp_ns = np.asarray(stamp_ns, dtype=np.int64)
    if fix_ns.size < 2:
        return np.full(stamp_ns.shape, np.nan)
    t0 = int(fix_ns[0])
    fix_s = _seconds(fix_ns, t0)
    query_s = _seconds(stamp_ns, t0)
    start = np.clip(query_s - window_s / 2.0, fix_s[0], fix_s[-1])
    stop = np.clip(query_s + window_s / 2.0, fix_s[0], fix_s[-1])
    d_east = np.interp(stop, fix_s, east) - np.interp(start, fix_s, east)
    d_north = np.interp(stop, fix_s, north) - np.interp(start, fix_s, north)
    span = stop - start
    with np.errstate(divide='ignore', invalid='ignore'):
        speed = np.hypot(d_east, d_north) / span
    moving = (span > 0) & (speed >= min_speed_mps) & (np.hypot(d_east, d_north) > 0)
    return np.where(moving, np.arctan2(d_north, d_east), np.nan)


def _check_params(max_gap_s: float, heading_window_s: float, min_speed_mps: float) -> None:
    """
    Validate geotagging parameters.

    Raises:
        ConfigError: If a parameter is out of range.

    """
    if not max_gap_s > 0:
        raise ConfigError(f'max_gap_s must be > 0, got {max_gap_s}')
    if not heading_window_s > 0:
        raise ConfigError(f'heading_window_s must be > 0, got {heading_window_s}')
    if not min_speed_mps >= 0:
        raise ConfigError(f'min_speed_mps must be >= 0, got {min_speed_mps}')


def geotag_images(
    image_stamp_ns: np.ndarray,
    fixes: FixArrays,
    *,
    max_gap_s: float = 1.0,
    poses: PoseArrays | None = None,
    min_speed_mps: float = 0.5,
    heading_window_s: float = 2.0,
    min_status: int = STATUS_FIX,
    origin: tuple[float, float, float] | None = None,
) -> Geotags:
    """
    Give each image stamp a WGS84/ENU position and heading, dropping uncovered images.

    Args:
        image_stamp_ns: Image stamps (int64 ns), any order.
        fixes: Raw fixes; unusable ones are filtered here.
        max_gap_s: Largest time to the usable fix before and after an image.
        poses: Odometry/pose yaw source for the heading; None to use GNSS motion.
        min_speed_mps: Minimum speed for a GNSS-motion heading.
        heading_window_s: Time span for the GNSS-motion heading.
        min_status: Lowest NavSatStatus.status accepted.
        origin: ENU origin (lat, lon, alt); default: the first usable fix.

    Returns:
        Geotags of the covered images, in input order, and the drop counts.

    Raises:
        ConfigError: If a parameter is out of range.

    """
    _check_params(max_gap_s, heading_window_s, min_speed_mps)
    stamps = np.asarray(image_stamp_ns, dtype=np.int64).reshape(-1)
    usable = filter_fixes(fixes, min_status)
    inside, covered = _bracket(usable.stamp_ns, stamps, int(round(max_gap_s * 1e9)))
    if origin is None and len(usable):
        origin = (float(usable.lat[0]), float(usable.lon[0]), float(usable.alt[0]))
    index = np.flatnonzero(covered).astype(np.int64)
    kept_ns = stamps[index]
    if len(usable) and index.size and origin is not None:  # origin is set when fixes are
        e, n, u = (
            np.asarray(v, dtype=np.float64).reshape(-1)
            for v in wgs84_to_enu(usable.lat, usable.lon, usable.alt, *origin)
        )
        t0 = int(usable.stamp_ns[0])
        fix_s, query_s = _seconds(usable.stamp_ns, t0), _seconds(kept_ns, t0)
        east, north, up = (np.interp(query_s, fix_s, v) for v in (e, n, u))
        lat, lon, alt = (
            np.asarray(v, dtype=np.float64).reshape(-1)
            for v in enu_to_wgs84(east, north, up, *origin)
        )
        if poses is not None:
            heading = heading_from_poses(kept_ns, poses, max_gap_s)
        else:
            heading = heading_from_motion(
                kept_ns, usable.stamp_ns, e, n, heading_window_s, min_speed_mps
            )
    else:
        east = north = up = lat = lon = alt = heading = np.zeros(0)
    return Geotags(
        image_index=index, stamp_ns=kept_ns, lat=lat, lon=lon, alt=alt, east=east,
        north=north, up=up, heading=heading, origin=origin,
        n_dropped_gap=int(np.count_nonzero(inside & ~covered)),
        n_dropped_outside=int(np.count_nonzero(~inside)),
        n_usable_fixes=len(usable),
    )


def filter_poses(poses: PoseArrays) -> PoseArrays:
    """
    Keep the poses with a finite position, sorted by stamp, with repeated stamps removed.

    Args:
        poses: Poses in any order.

    Returns:
        The usable poses in strictly increasing stamp order.

    """
    finite = np.isfinite(poses.x) & np.isfinite(poses.y) & np.isfinite(poses.z)
    usable = poses.take(finite)
    usable = usable.take(np.argsort(usable.stamp_ns, kind='stable'))
    first = np.ones(len(usable), dtype=bool)
    first[1:] = np.diff(usable.stamp_ns) > 0
    return usable.take(first)


def pose_tag_images(image_stamp_ns: np.ndarray, poses: PoseArrays, *,
                    max_gap_s: float = 1.0) -> Geotags:
    """
    Give each image stamp a position in the poses' own frame, dropping uncovered images.

    The rules are those of :func:`geotag_images` with poses in place of fixes: linear
    interpolation in time, a usable pose at most ``max_gap_s`` before and after the image, no
    extrapolation. ``east``, ``north``, ``up`` hold the frame's x, y, z (metres), ``heading``
    the interpolated yaw (NaN where the yaw is not finite); lat, lon, alt are NaN.

    Args:
        image_stamp_ns: Image stamps (int64 ns), any order.
        poses: Raw poses; those without a finite position are skipped here.
        max_gap_s: Largest time to the usable pose before and after an image.

    Returns:
        Geotags of the covered images, in input order (origin None), and the drop counts.

    Raises:
        ConfigError: If ``max_gap_s`` is not positive.

    """
    if not max_gap_s > 0:
        raise ConfigError(f'max_gap_s must be > 0, got {max_gap_s}')
    stamps = np.asarray(image_stamp_ns, dtype=np.int64).reshape(-1)
    usable = filter_poses(poses)
    inside, covered = _bracket(usable.stamp_ns, stamps, int(round(max_gap_s * 1e9)))
    index = np.flatnonzero(covered).astype(np.int64)
    kept_ns = stamps[index]
    if index.size:
        t0 = int(usable.stamp_ns[0])
        pose_s, query_s = _seconds(usable.stamp_ns, t0), _seconds(kept_ns, t0)
        east, north, up = (np.interp(query_s, pose_s, v) for v in (usable.x, usable.y, usable.z))
        heading = heading_from_poses(kept_ns, usable, max_gap_s)
    else:
        east = north = up = heading = np.zeros(0)
    nan = np.full(index.size, np.nan)
    return Geotags(
        image_index=index, stamp_ns=kept_ns, lat=nan, lon=nan.copy(), alt=nan.copy(),
        east=east, north=north, up=up, heading=heading, origin=None,
        n_dropped_gap=int(np.count_nonzero(inside & ~covered)),
        n_dropped_outside=int(np.count_nonzero(~inside)),
        n_usable_fixes=len(usable),
    )
