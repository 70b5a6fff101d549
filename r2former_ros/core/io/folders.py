"""
Geotagged image folders as map sources, for mapping from datasets instead of bags.

Two layouts:
    * ``vg``: the VPR benchmark convention of the ``datasets_vg`` tools (Pitts30k, St Lucia,
      San Francisco, Tokyo 24/7 ...): every position is in the file name,
      ``@UTM_east@UTM_north@UTM_zone_number@UTM_zone_letter@lat@lon@pano_id@tile_num@heading@
      pitch@roll@height@timestamp@note@.jpg``. Only the UTM fields are required; lat/lon are
      used when present (they are what UTM was computed from), else they come from UTM. The
      zone letter gives the hemisphere (``N``..``X`` north). The heading field is ignored: its
      reference direction differs between datasets.
    * CSV: a folder plus a CSV with a header row and the columns ``file, lat, lon`` and
      optionally ``alt`` (metres, default 0) and ``heading`` (degrees clockwise from north, the
      compass convention most tools export; stored as radians ENU like everything else).
      ``file`` is relative to the folder, or absolute.

Folders have no timing, so every image is a place: datasets are already sampled, and file
order is not necessarily travel order, which the distance rule of keyframing needs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
import math
import os
from pathlib import Path

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.geo.coords import utm_to_wgs84

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.pgm', '.tif', '.tiff', '.webp')
LAYOUTS = ('vg',)
_NORTHERN_LETTERS = 'NPQRSTUVWX'
_SOUTHERN_LETTERS = 'CDEFGHJKLM'


@dataclass(frozen=True)
class FolderImage:
    """One image file with its position."""

    path: Path
    lat: float
    lon: float
    alt: float = 0.0
    heading: float | None = None  # radians ENU (0 = east, counter-clockwise)


def image_files(folder: Path) -> list[Path]:
    """
    Image files directly in a folder, sorted by name.

    Raises:
        ConfigError: If the folder does not exist or holds no images.

    """
    if not folder.is_dir():
        raise ConfigError(f'image folder {folder} does not exist or is not a directory')
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f'image folder {folder} holds no images ({", ".join(IMAGE_SUFFIXES)})')
    return files


def _number(text: str, what: str, where: str) -> float:
    """Parse a finite float or raise ConfigError naming the field and the place."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f'{where}: {what} {text!r} is not a number') from None
    if not math.isfinite(value):
        raise ConfigError(f'{where}: {what} {text!r} is not finite')
    return value


@dataclass(frozen=True)
class VgName:
    """
    The position fields of a file name in the VG-benchmark layout (see the module docstring).

    Attributes:
        name: the file name parsed.
        utm_east, utm_north: UTM easting and northing in metres (always present).
        utm_zone: UTM zone number, None when the name leaves it empty.
        northern: hemisphere from the zone letter (``N``..``X`` north, ``C``..``M`` south),
            None without a zone.
        lat, lon: the name's own WGS84 fields in degrees, None when empty.
    """

    name: str
    utm_east: float
    utm_north: float
    utm_zone: int | None
    northern: bool | None
    lat: float | None
    lon: float | None

    def latlon(self) -> tuple[float, float]:
        """
        Return the WGS84 position: the name's lat/lon fields, else converted from UTM.

        The name's own fields come first because UTM was computed from them.

        Raises:
            ConfigError: the name has neither lat/lon nor a UTM zone.
        """
        if self.lat is not None and self.lon is not None:
            return self.lat, self.lon
        if self.utm_zone is None or self.northern is None:
            raise ConfigError(f'{self.name}: neither lat/lon nor a UTM zone in the file name')
        lat, lon = utm_to_wgs84(self.utm_zone, self.northern, self.utm_east, self.utm_north)
        return float(lat), float(lon)


def parse_vg_name(name: str) -> VgName:
    """
    Parse a file name in the VG-benchmark layout, ``@east@north@zone@letter@lat@lon@...``.

    The one parser of these names: map building uses :meth:`VgName.latlon`, evaluation the UTM
    fields (distances in the benchmarks are 2-D in UTM). UTM east and north are required; the
    zone (number and letter together) and lat/lon (both) may be empty.

    Args:
        name: a file name (a path works too; only the name is used).

    Raises:
        ConfigError: the name does not follow the layout, or a field is not a valid number,
            zone or letter (the name and the field are named).
    """
    base = Path(name).name
    fields = base.split('@')
    if len(fields) < 5 or fields[0] != '':
        raise ConfigError(f'{base}: not a VG-benchmark file name (VPR benchmark layout '
                          '@UTM_east@UTM_north@zone@letter@lat@lon@...)')
    east = _number(fields[1], 'UTM easting', base)
    north = _number(fields[2], 'UTM northing', base)
    zone_text, letter = fields[3].strip(), fields[4].strip().upper()
    zone = northern = None
    if zone_text or letter:
        try:
            zone = int(zone_text)
        except ValueError:
            raise ConfigError(f'{base}: UTM zone {fields[3]!r} is not an integer') from None
        if len(letter) != 1 or letter not in _NORTHERN_LETTERS + _SOUTHERN_LETTERS:
            raise ConfigError(f'{base}: UTM zone letter {fields[4]!r} is not one of C..X')
        northern = letter in _NORTHERN_LETTERS
    lat = lon = None
    if len(fields) > 6 and fields[5].strip() and fields[6].strip():
        lat = _number(fields[5], 'latitude', base)
        lon = _number(fields[6], 'longitude', base)
        if abs(lat) > 90.0:
            raise ConfigError(f'{base}: latitude {lat} is outside [-90, 90]')
    return VgName(base, east, north, zone, northern, lat, lon)


def read_vg_folder(folder: str | os.PathLike[str]) -> list[FolderImage]:
    """
    List a folder of images named in the VPR benchmark layout.

    Args:
        folder: The image folder (e.g. ``pitts30k/images/test/database``).

    Returns:
        One FolderImage per file, sorted by file name.

    Raises:
        ConfigError: Missing/empty folder, or a file whose name does not parse (named).

    """
    result = []
    for path in image_files(Path(folder)):
        lat, lon = parse_vg_name(path.name).latlon()
        result.append(FolderImage(path, lat, lon))
    return result


def compass_to_enu(degrees: float) -> float:
    """
    Convert a compass heading (degrees clockwise from north) to radians ENU in (-pi, pi].

    Args:
        degrees: Compass heading.

    Returns:
        Heading in radians, 0 = east, counter-clockwise.

    """
    angle = math.radians(90.0 - degrees)
    return math.atan2(math.sin(angle), math.cos(angle))


def read_csv_folder(
    folder: str | os.PathLike[str], csv_file: str | os.PathLike[str]
) -> list[FolderImage]:
    """
    Read a CSV of image positions (see the module docstring for the columns).

    Args:
        folder: Folder the ``file`` column is relative to.
        csv_file: The CSV.

    Returns:
        One FolderImage per row, in file order.

    Raises:
        ConfigError: Missing CSV or folder, missing columns, a bad value or a missing image
            (named with its CSV line).

    """
    root, table = Path(folder), Path(csv_file)
    if not root.is_dir():
        raise ConfigError(f'image folder {root} does not exist or is not a directory')
    if not table.is_file():
        raise ConfigError(f'CSV file {table} does not exist')
    result = []
    with open(table, newline='', encoding='utf-8-sig') as fh:
        reader = csv.DictReader(fh)
        columns = {(c or '').strip().lower(): c for c in reader.fieldnames or []}
        missing = [c for c in ('file', 'lat', 'lon') if c not in columns]
        if missing:
            raise ConfigError(f'{table}: missing column(s) {", ".join(missing)}; need a header '
                              'row with file, lat, lon[, alt][, heading]')
        for row in reader:
            where = f'{table} line {reader.line_num}'

            def cell(name: str, row: dict = row) -> str:
                return (row.get(columns[name]) or '').strip() if name in columns else ''

            lat = _number(cell('lat'), 'lat', where)
            lon = _number(cell('lon'), 'lon', where)
            if abs(lat) > 90.0:
                raise ConfigError(f'{where}: latitude {lat} is outside [-90, 90]')
            alt = _number(cell('alt'), 'alt', where) if cell('alt') else 0.0
            heading = (compass_to_enu(_number(cell('heading'), 'heading', where))
                       if cell('heading') else None)
            name = cell('file')
            if not name:
                raise ConfigError(f'{where}: empty file column')
            path = Path(name) if Path(name).is_absolute() else root / name
            if not path.is_file():
                raise ConfigError(f'{where}: image {path} does not exist')
            result.append(FolderImage(path, lat, lon, alt, heading))
    if not result:
        raise ConfigError(f'{table}: no rows')
    return result
