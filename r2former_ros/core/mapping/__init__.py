"""
Map building: recorded bags (or geotagged image folders) -> a map directory.

One module per pipeline step (see :mod:`.build` for the whole pipeline); this module re-exports
the public names (``from r2former_ros.core.mapping import BuildOptions, build_map``):

* :mod:`.options`: BuildOptions (the ``build_map`` flags), BuildReport, the up-front checks;
* :mod:`.plan`: geotagging and keyframing without decoding pixels;
* :mod:`.prefetch`: the bounded background iterator; :mod:`.extract`: decode, encode, write;
* :mod:`.build`: ``build_map`` itself, and the calibration that follows it.
"""

from r2former_ros.core.mapping.build import build_map, read_topics
from r2former_ros.core.mapping.extract import PREFETCH_BATCHES
from r2former_ros.core.mapping.options import (
    CALIBRATION_THRESHOLD_M,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_GPS_GAP_S,
    DEFAULT_MIN_DISTANCE_M,
    INDEX_TYPES,
    BuildOptions,
    BuildReport,
)

__all__ = [
    'CALIBRATION_THRESHOLD_M',
    'DEFAULT_BATCH_SIZE',
    'DEFAULT_MAX_GPS_GAP_S',
    'DEFAULT_MIN_DISTANCE_M',
    'INDEX_TYPES',
    'PREFETCH_BATCHES',
    'BuildOptions',
    'BuildReport',
    'build_map',
    'read_topics',
]
