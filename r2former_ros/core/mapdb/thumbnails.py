"""
Thumbnails: small JPEG previews of map places (``thumbnails/{id:08d}.jpg``), optional.

The manifest records their count, width, total bytes and one digest over (name, sha256) pairs,
which keeps it small for 100k thumbnails. :func:`resize_to_width` is the one resizer every
tool uses for previews (map thumbnails, evaluation mosaics).
"""

from __future__ import annotations

from collections.abc import Mapping
import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import MapError
from r2former_ros.core.hashing import file_sha256
from r2former_ros.core.mapdb.atomic import fsync_files, fsync_path
from r2former_ros.core.mapdb.schema import THUMBNAIL_DIR

DEFAULT_THUMBNAIL_WIDTH = 160
_JPEG_QUALITY = 85


def resize_to_width(rgb: NDArray[np.uint8], width: int) -> NDArray[np.uint8]:
    """Shrink an (H, W, 3) image to ``width`` pixels wide, keeping its aspect (area filter)."""
    height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    return np.asarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))


def thumbnail_name(place_id: int) -> str:
    """File name of a place's thumbnail inside ``thumbnails/``."""
    return f'{int(place_id):08d}.jpg'


def read_thumbnail(file: Path) -> NDArray[np.uint8] | None:
    """Decode a thumbnail to RGB; None when the file is missing or not a JPEG."""
    if not file.is_file():
        return None
    bgr = cv2.imdecode(np.fromfile(file, dtype=np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def thumbnail_names(directory: Path) -> list[str]:
    """Sorted names of the .jpg files in ``directory`` (none when it does not exist)."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.suffix == '.jpg')


def thumbnail_digest(entries: Mapping[str, str]) -> str:
    """One sha256 over the sorted (name, file sha256) pairs."""
    lines = ''.join(f'{name} {entries[name]}\n' for name in sorted(entries))
    return hashlib.sha256(lines.encode('ascii')).hexdigest()


def check_thumbnails(path: Path, manifest: Mapping[str, Any]) -> list[str]:
    """Problems with a map's thumbnails against its manifest (count, bytes, digest)."""
    block = manifest.get('thumbnails')
    if not block:
        return []
    directory = path / THUMBNAIL_DIR
    names = thumbnail_names(directory)
    problems = []
    if len(names) != int(block['count']):
        problems.append(f'{directory}: {len(names)} thumbnails, manifest says {block["count"]}')
    total = sum((directory / name).stat().st_size for name in names)
    if total != int(block['bytes']):
        problems.append(f'{directory}: thumbnails hold {total} bytes, manifest says '
                        f'{block["bytes"]}')
    elif thumbnail_digest({n: file_sha256(directory / n) for n in names}) != block['sha256']:
        problems.append(f'{directory}: thumbnail checksum differs from the manifest (corrupted)')
    return problems


class ThumbnailStore:
    """The thumbnails a MapWriter writes into its temporary directory, and their bookkeeping."""

    def __init__(self, map_dir: Path, width: int, where: Path) -> None:
        self.directory = map_dir / THUMBNAIL_DIR
        self.width = int(width)
        self._where = where
        self._hashes: dict[str, str] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._hashes)

    def add_image(self, place_id: int, rgb: NDArray[np.uint8]) -> None:
        """Shrink, JPEG-encode and store one place's image."""
        image = np.asarray(rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MapError(f'{self._where}: thumbnails must be (H, W, 3) uint8 RGB, got '
                           f'{image.dtype} {image.shape}')
        small = resize_to_width(image, self.width)
        ok, buf = cv2.imencode('.jpg', cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise MapError(f'{self._where}: JPEG encoding of a thumbnail failed')
        self.add_bytes(thumbnail_name(place_id), buf.tobytes())

    def add_bytes(self, name: str, data: bytes) -> None:
        """Store an already encoded thumbnail (used when copying an existing map's)."""
        self.directory.mkdir(exist_ok=True)
        # No fsync per file here: sync() syncs them all at commit, in parallel.
        (self.directory / name).write_bytes(data)
        self._hashes[name] = hashlib.sha256(data).hexdigest()
        self._bytes += len(data)

    def copy_from(self, map_dir: Path) -> None:
        """Copy every thumbnail of an existing map."""
        source = map_dir / THUMBNAIL_DIR
        for name in thumbnail_names(source):
            self.add_bytes(name, (source / name).read_bytes())

    def sync(self) -> None:
        """Flush every thumbnail and their directory to disk (nothing when there are none)."""
        if self._hashes:
            fsync_files(self.directory / name for name in self._hashes)
            fsync_path(self.directory)

    def manifest_block(self) -> dict[str, Any] | None:
        """Return the manifest's ``thumbnails`` block, or None without thumbnails."""
        if not self._hashes:
            return None
        return {'count': len(self._hashes), 'width': self.width, 'bytes': self._bytes,
                'sha256': thumbnail_digest(self._hashes)}
