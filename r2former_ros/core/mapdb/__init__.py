"""
The on-disk map: one directory of numpy arrays, a manifest and a faiss index.

The package is split by job; this module re-exports the public names, so importers use
``from r2former_ros.core.mapdb import MapDatabase, MapWriter, ...``:

* :mod:`.schema`: file names, dtypes, the place table, the manifest (read, check, compare);
* :mod:`.npy`: .npy files grown block by block, the int8 descriptor code and its error bound;
* :mod:`.atomic`: fsync, world-readable temporary directories, the atomic directory swap;
* :mod:`.thumbnails`: JPEG previews and the one image resizer for previews;
* :mod:`.writer` (:class:`MapWriter`), :mod:`.reader` (:class:`MapDatabase`);
* :mod:`.verify` (`verify_map`, `map_info`), :mod:`.manifest_edit` (`write_calibration`);
* :mod:`.handle`: reading one opened map directory, whatever happens at its path meanwhile;
* :mod:`.locking`: the change lock and version check of manifest edits and swaps;
* :mod:`.index`: the faiss indexes. It lives here, not in ``localize/``, because an approximate
  index is part of the stored map (``index.faiss``), and the map store must not depend on the
  localizer that uses it.
"""

from r2former_ros.core.mapdb.manifest_edit import write_calibration
from r2former_ros.core.mapdb.npy import (
    INT8_MAX_ABS_ERROR,
    INT8_SCALE,
    dequantize_int8,
    quantize_int8,
)
from r2former_ros.core.mapdb.reader import MapDatabase
from r2former_ros.core.mapdb.schema import (
    ARRAY_FILES,
    FORMAT_VERSION,
    IDENTITY_KEYS,
    LOCAL_FORMATS,
    MANIFEST_NAME,
    MODEL_KEYS,
    PLACE_DTYPE,
    SUPPORTED_FORMAT_VERSIONS,
    THUMBNAIL_DIR,
    MapIdentity,
    PlaceRecord,
    map_identity,
)
from r2former_ros.core.mapdb.thumbnails import DEFAULT_THUMBNAIL_WIDTH, resize_to_width
from r2former_ros.core.mapdb.verify import map_info, verify_map
from r2former_ros.core.mapdb.writer import MapWriter

__all__ = [
    'ARRAY_FILES',
    'DEFAULT_THUMBNAIL_WIDTH',
    'FORMAT_VERSION',
    'IDENTITY_KEYS',
    'INT8_MAX_ABS_ERROR',
    'INT8_SCALE',
    'LOCAL_FORMATS',
    'MANIFEST_NAME',
    'MODEL_KEYS',
    'PLACE_DTYPE',
    'SUPPORTED_FORMAT_VERSIONS',
    'THUMBNAIL_DIR',
    'MapDatabase',
    'MapIdentity',
    'MapWriter',
    'PlaceRecord',
    'dequantize_int8',
    'map_identity',
    'map_info',
    'quantize_int8',
    'resize_to_width',
    'verify_map',
    'write_calibration',
]
