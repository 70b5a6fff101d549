"""
In-place edits of a finished map's manifest: the confidence calibration block.

The calibration is fitted in ``localize/`` (which also owns the block's layout); the map store
only swaps the manifest file atomically, leaving the data files and their checksums alone.
"""

from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path
from typing import Any

from r2former_ros.core.mapdb.atomic import fsync_path, unique_sibling, write_json_synced
from r2former_ros.core.mapdb.schema import MANIFEST_NAME, read_manifest, utc_now


def write_calibration(path: str | Path, calibration: Mapping[str, Any] | None) -> None:
    """
    Store a confidence calibration in a map's manifest, atomically.

    Only ``manifest.json`` is replaced (write, fsync, rename); the data files and their
    checksums are unaffected.
    """
    root = Path(path)
    manifest = read_manifest(root)
    manifest['calibration'] = None if calibration is None else dict(calibration)
    manifest['modified'] = utc_now()
    tmp = unique_sibling(root / MANIFEST_NAME, 'tmp')
    try:
        write_json_synced(tmp, manifest)
        os.replace(tmp, root / MANIFEST_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(root)
