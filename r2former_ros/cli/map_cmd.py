"""
`r2former map`: inspect and check map directories.

    r2former map info MAP_DIR [--json]     summary from the manifest (no data files read)
    r2former map verify MAP_DIR            full check: checksums, sizes, shapes, index, thumbnails
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from r2former_ros.core.errors import MapError
from r2former_ros.core.mapdb import map_info, verify_map
from r2former_ros.core.mapdb.verify import size_problems


def register(subparsers: Any) -> None:
    """Add the ``map`` verb and its ``info`` / ``verify`` actions to the umbrella parser."""
    parser = subparsers.add_parser('map', help='inspect or verify a map directory',
                                   description=__doc__.strip().split('\n')[0].split(': ', 1)[1])
    actions = parser.add_subparsers(dest='map_action', metavar='ACTION')
    actions.required = True
    info = actions.add_parser('info', help='summarise a map (places, size, model, sources)')
    info.add_argument('map_dir', metavar='MAP_DIR')
    info.add_argument('--json', action='store_true', help='machine-readable output')
    info.set_defaults(func=run_info)
    verify = actions.add_parser('verify', help='check every file of a map; exit 1 on problems')
    verify.add_argument('map_dir', metavar='MAP_DIR')
    verify.set_defaults(func=run_verify)


def _source_line(source: dict[str, Any]) -> str:
    """One line per source: where it came from and its counters."""
    where = source.get('bag') or source.get('images_dir') or source.get('name') or '?'
    topic = f' {source["image_topic"]}' if source.get('image_topic') else ''
    counters = [f'{key}={source[key]}' for key in (
        'images_read', 'kept', 'dropped_gps_gap', 'dropped_outside_fixes', 'dropped_pose_gap',
        'dropped_outside_poses', 'not_keyframe', 'undecodable_skipped') if key in source]
    return f'{source.get("kind", "?")} {where}{topic}' + (f' ({", ".join(counters)})'
                                                          if counters else '')


def _calibration_line(info: dict[str, Any]) -> str:
    """'yes: ECE ... (how, for which settings)' or 'no: why'."""
    summary = info.get('calibration') or {}
    if not info['calibrated']:
        return f'no: {summary.get("reason") or "no calibration stored"}'
    parts = []
    if isinstance(summary.get('ece'), (int, float)):
        parts.append(f'{summary.get("ece_kind", "")} ECE {summary["ece"]:.3f}'.strip())
    if isinstance(summary.get('ece_filtered'), (int, float)):
        parts.append(f'filtered ECE {summary["ece_filtered"]:.3f}')
    settings = summary.get('settings') or {}
    fitted = ', '.join(str(settings[key]) for key in ('backbone', 'ranking') if key in settings)
    if 'threshold_m' in settings:
        fitted += f', {settings["threshold_m"]:g} m'
    if settings.get('filters'):
        fitted += f', filters {"/".join(settings["filters"])}'
    if 'hmm' in (settings.get('filters') or []):
        fitted += (f', {"with" if settings.get("odometry") else "without"} odometry, max speed '
                   f'{settings.get("max_speed_mps")} m/s')
    where = f'fitted on {summary["source"]}' if summary.get('source') else 'fitted'
    line = 'yes' + (f': {", ".join(parts)}' if parts else '') + \
        f' ({where}{"; " + fitted if fitted else ""})'
    for name, point in (summary.get('operating_points') or {}).items():
        if point.get('threshold') is not None:
            line += (f"; {'filter' if name == 'hmm' else 'single frame'} matches at confidence "
                     f">= {point['threshold']:.3f} (precision {point['certified_precision']:.3f}"
                     f" certified, target {point['target_precision']:g})")
    return line


def _index_line(info: dict[str, Any]) -> str:
    """Describe the index type and how its search parameter was tuned (by build_map)."""
    tuning = info.get('index_tuning')
    if not tuning:
        return str(info['index_type'])
    measured = (f'recall@{tuning["top_k"]} {tuning["recall"]:.3f} vs exact, '
                f'{tuning["ms_per_query"]:.2f} ms/query')
    if tuning.get('fell_back_to_exact'):
        return (f'exact ({tuning["requested_type"]} not used: {tuning["reason"]}; exact '
                f'{tuning["exact_ms_per_query"]:.2f} ms/query)')
    return (f'{info["index_type"]}, {tuning["param"]} {tuning["value"]} tuned on '
            f'{tuning["queries"]} map images: {measured} (exact '
            f'{tuning["exact_ms_per_query"]:.2f} ms)')


# Decimals shown per origin field: 1e-7 degrees is about 1 cm, altitude to the centimetre; the
# stored value is a float64 ENU round trip (30.000000000931323), whose last digits mean nothing.
ORIGIN_DECIMALS = {'lat': 7, 'lon': 7, 'alt': 2}


def _origin_text(origin: dict[str, Any]) -> str:
    """'lat 48.1234567, lon 11.1234567, alt 30.00', or 'none' (a map in a pose frame)."""
    parts = [f'{key} {float(origin[key]):.{decimals}f}'
             for key, decimals in ORIGIN_DECIMALS.items() if origin.get(key) is not None]
    return ', '.join(parts) or 'none'


def _positions_text(info: dict[str, Any]) -> str:
    """Say what the places' positions are: GPS (WGS84, ENU about the origin) or a pose frame."""
    frame = info.get('position_frame') or 'wgs84'
    if frame == 'wgs84':
        return 'wgs84 (GPS; east, north, up in metres about the origin)'
    return (f'{frame} (x, y, z of poses in frame {frame!r}, metres; no GPS: latitude, '
            'longitude and UTM are NaN)')


def format_info(info: dict[str, Any]) -> str:
    """Human-readable form of :func:`map_info`."""
    origin = info.get('origin') or {}
    rows = [
        ('map', info['path']),
        ('map id', f'{info["map_id"]} (uuid {info["map_uuid"]}, manifest sha256 '
                   f'{info["manifest_sha256"]})'),
        ('places', info['num_places']),
        ('bytes/place', f'{info["bytes_per_place"]:.0f}'),
        ('format', f'{info["format_version"]} (tool {info.get("tool_version")}, '
                   f'created {info.get("created")})'),
        ('model', f'{info["backbone"]} {info["input_hw"][0]}x{info["input_hw"][1]}, '
                  f'{info["num_local"]} local x {info["local_dim"]}, global {info["global_dim"]}'),
        ('checkpoint', f"{info['checkpoint']} (sha256 {info['checkpoint_sha256']})"),
        ('local format', info['local_format']),
        ('index', _index_line(info)),
        ('positions', _positions_text(info)),
        ('origin', _origin_text(origin)),
        ('thumbnails', 'yes' if info['has_thumbnails'] else 'no'),
        ('calibrated', _calibration_line(info)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f'{name:<{width}}  {value}' for name, value in rows]
    for i, source in enumerate(info.get('sources') or []):
        lines.append(f'{"source " + str(i):<{width}}  {_source_line(source)}')
    return '\n'.join(lines)


def run_info(args: argparse.Namespace) -> int:
    """Print the summary of a map; a missing or truncated file is an error (exit 2)."""
    problems = size_problems(args.map_dir)
    if problems:
        more = f' (and {len(problems) - 1} more problem(s))' if len(problems) > 1 else ''
        raise MapError(f'{problems[0]}{more}; `r2former map verify {args.map_dir}` lists '
                       'every problem')
    info = map_info(args.map_dir)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check a map completely; list every problem and return 1 when there is any."""
    problems = verify_map(args.map_dir)
    if problems:
        print(f'{args.map_dir}: {len(problems)} problem(s):')
        for problem in problems:
            print(f'  - {problem}')
        return 1
    info = map_info(args.map_dir)
    print(f'{args.map_dir}: OK ({info["num_places"]} places; checksums, sizes, shapes, index '
          'and thumbnails match the manifest)')
    return 0
