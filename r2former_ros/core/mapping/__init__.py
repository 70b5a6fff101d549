"""
Map building: recorded bags (or geotagged image folders) -> a map directory.

One module per pipeline step (see :mod:`.build` for the whole pipeline); this module re-exports
the public names (``from r2former_ros.core.mapping import BuildOptions, build_map``):

* :mod:`.options`: BuildOptions (the ``build_map`` flags), BuildReport, the up-front checks;
* :mod:`.plan`: geotagging and keyframing without decoding pixels;
* :mod:`.prefetch`: the bounded background iterator; :mod:`.extract`: decode, encode, write;
* :mod:`.build`: ``build_map`` itself, and the calibration that follows it.

The options are imported eagerly and the pipeline on first use: the pipeline loads torch (the
model), which ``build_map --help`` and option checks must not wait for.
"""

from typing import TYPE_CHECKING, Any

from r2former_ros.core.mapping.options import (
    CALIBRATION_THRESHOLD_M,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_GPS_GAP_S,
    DEFAULT_MIN_DISTANCE_M,
    INDEX_TYPES,
    BuildOptions,
    BuildReport,
)
from r2former_ros.core.mapping.plan import read_topics

if TYPE_CHECKING:
    from r2former_ros.core.mapping.build import build_map
    from r2former_ros.core.mapping.extract import PREFETCH_BATCHES

_LAZY = {'build_map': 'build', 'PREFETCH_BATCHES': 'extract'}

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


def __getattr__(name: str) -> Any:
    """Import the pipeline modules on first access of their names (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
