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
from r2former_ros.core.mapdb.atomic import fsync_files, fsync_path
from r2former_ros.core.mapdb.handle import MapDirectory
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


def decode_thumbnail(data: bytes | None) -> NDArray[np.uint8] | None:
    """Decode a thumbnail's JPEG bytes to RGB; None when there are none or they are not a JPEG."""
    if not data:
        return None
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def thumbnail_names(directory: MapDirectory) -> list[str]:
    """Sorted names of the .jpg files in the map's ``thumbnails/`` (none when it is absent)."""
    return [name for name in directory.list(THUMBNAIL_DIR) if name.endswith('.jpg')]


def thumbnail_digest(entries: Mapping[str, str]) -> str:
    """One sha256 over the sorted (name, file sha256) pairs."""
    lines = ''.join(f'{name} {entries[name]}\n' for name in sorted(entries))
    return hashlib.sha256(lines.encode('ascii')).hexdigest()


def check_thumbnails(directory: MapDirectory, manifest: Mapping[str, Any]) -> list[str]:
    """Problems with a map's thumbnails against its manifest (count, bytes, digest)."""
    block = manifest.get('thumbnails')
    if not block:
        return []
    folder = directory.shown(THUMBNAIL_DIR)
    names = thumbnail_names(directory)
    problems = []
    if len(names) != int(block['count']):
        problems.append(f'{folder}: {len(names)} thumbnails, manifest says {block["count"]}')
    total = sum(directory.size(f'{THUMBNAIL_DIR}/{name}') or 0 for name in names)
    if total != int(block['bytes']):
        problems.append(f'{folder}: thumbnails hold {total} bytes, manifest says '
                        f'{block["bytes"]}')
    elif thumbnail_digest({n: directory.sha256(f'{THUMBNAIL_DIR}/{n}')
                           for n in names}) != block['sha256']:
        problems.append(f'{folder}: thumbnail checksum differs from the manifest (corrupted)')
    return problems


class MapThumbnails:
    """
    The thumbnails of an opened map: copied into memory (few) or read through its handle.

    Either way they are the opened map's: a map rebuilt at the same path meanwhile never lends
    its pictures. Read through the handle, a thumbnail of a map whose directory was replaced
    and deleted is gone (None), not the new map's.
    """

    def __init__(self, copies: dict[str, bytes] | None, directory: MapDirectory | None) -> None:
        """Use :meth:`load` (or :meth:`none`)."""
        self._copies = copies
        self._directory = directory

    @classmethod
    def none(cls) -> MapThumbnails:
        """Return the thumbnails of a map that has none."""
        return cls({}, None)

    @classmethod
    def load(cls, directory: MapDirectory, manifest: Mapping[str, Any],
             copy_max_bytes: int) -> MapThumbnails:
        """Copy the thumbnails when they total at most ``copy_max_bytes``, else keep the handle."""
        block = manifest.get('thumbnails')
        if not block:
            return cls.none()
        if int(block.get('bytes', 0)) <= copy_max_bytes:
            return cls({name: directory.read_bytes(f'{THUMBNAIL_DIR}/{name}')
                        for name in thumbnail_names(directory)}, None)
        return cls(None, directory)

    def holds(self, directory: MapDirectory) -> bool:
        """Whether reads go through ``directory`` (which must then stay open)."""
        return self._directory is directory

    def names(self) -> list[str]:
        """Sorted file names of the thumbnails (``{id:08d}.jpg``)."""
        if self._copies is not None:
            return sorted(self._copies)
        return thumbnail_names(self._directory) if self._directory is not None else []

    def data(self, name: str) -> bytes | None:
        """Return the JPEG bytes of one thumbnail file; None when there is no such thumbnail."""
        if self._copies is not None:
            return self._copies.get(name)
        if self._directory is None:
            return None
        try:
            return self._directory.read_bytes(f'{THUMBNAIL_DIR}/{name}')
        except OSError:  # none for this place, or the opened directory was deleted
            return None

    def image(self, place_id: int) -> NDArray[np.uint8] | None:
        """RGB thumbnail of a place; None when there is none."""
        return decode_thumbnail(self.data(thumbnail_name(place_id)))

    def close(self) -> None:
        """Release the directory handle (copies stay readable)."""
        if self._directory is not None:
            self._directory.close()


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

    def copy_from(self, source: MapThumbnails) -> None:
        """Copy every thumbnail of an opened map."""
        for name in source.names():
            data = source.data(name)
            if data is not None:
                self.add_bytes(name, data)

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
