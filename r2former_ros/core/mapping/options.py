"""What a build is asked to do (BuildOptions: the ``build_map`` flags), what it did, checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from r2former_ros.core.errors import ConfigError, MapError
from r2former_ros.core.io import folders as image_sources
from r2former_ros.core.mapdb import LOCAL_FORMATS, MANIFEST_NAME
from r2former_ros.core.mapdb.tuning import DEFAULT_TARGET_RECALL, DEFAULT_TOP_K, TuneSettings
from r2former_ros.core.mapping.decode_pool import DEFAULT_DECODE_THREADS
from r2former_ros.core.progress import LineProgress, terminal_bar

DEFAULT_MIN_DISTANCE_M = 2.0
DEFAULT_MAX_GPS_GAP_S = 1.0
DEFAULT_BATCH_SIZE = 16
CALIBRATION_THRESHOLD_M = 25.0
INDEX_TYPES = ('auto', 'exact', 'ivf', 'hnsw')


@dataclass
class BuildOptions:
    """
    Everything :func:`build_map` needs besides the model; mirrors the ``build_map`` flags.

    Exactly one source: ``bags`` (with ``image_topic``, and ``gps_topic`` for a GPS map or
    ``pose_topic`` alone for a map in the poses' frame), or ``images_dir`` with
    ``layout='vg'`` or ``csv_file``. With both topics the poses only give the heading.
    """

    out: str | os.PathLike[str]
    bags: Sequence[str | os.PathLike[str]] = ()
    image_topic: str | None = None
    gps_topic: str | None = None
    pose_topic: str | None = None  # the heading beside GPS, or the positions without it
    images_dir: str | os.PathLike[str] | None = None
    csv_file: str | os.PathLike[str] | None = None
    layout: str | None = None
    min_distance_m: float | None = DEFAULT_MIN_DISTANCE_M
    min_interval_s: float | None = None
    all_frames: bool = False
    max_gps_gap_s: float = DEFAULT_MAX_GPS_GAP_S
    stamp_source: str = 'header'
    batch_size: int = DEFAULT_BATCH_SIZE
    decode_threads: int = DEFAULT_DECODE_THREADS  # images decoded in parallel (cv2 frees the GIL)
    append: bool = False
    overwrite: bool = False
    local_format: str = 'int8'
    index_type: str | None = None  # None: 'auto' for a new map, the stored choice on append
    # An IVF/HNSW index is tuned to this recall@index_top_k vs exact (mapdb.tuning), else exact.
    index_top_k: int = DEFAULT_TOP_K  # the localizer's retrieval.top_k default
    index_target_recall: float = DEFAULT_TARGET_RECALL
    index_budget_ms: float | None = None  # None: the exact scan's own ms per query
    thumbnails: bool = True
    calibrate: bool = True
    # Map images used as self-calibration queries (evenly spread); each costs one rerank of
    # the top candidates, seconds on a CPU. None: as many as fit in half the build's own time
    # (at least a minute), up to 2000 (calibration.self_calibration's
    # SELF_CALIBRATION_MAX_QUERIES, not imported here: it pulls in torch).
    calibration_queries: int | None = None
    progress: bool = True
    backbone: str = 'r2former'
    checkpoint: str | os.PathLike[str] | None = None
    device: str = 'auto'
    input_hw: tuple[int, int] | None = None
    num_local: int | None = None
    precision: str = 'fp32'  # opt-in bf16/fp16 on CUDA


@dataclass
class BuildReport:
    """What a build did: the map, the places added, per-source counters and where time went."""

    path: Path
    num_places: int  # in the map, earlier places included when appending
    added: int
    sources: list[dict[str, Any]]  # the sources added by this build, as in the manifest
    calibrated: bool
    seconds: dict[str, float] = field(default_factory=dict)


def check_options(opts: BuildOptions) -> None:
    """
    Reject inconsistent options before any bag is read or model loaded.

    Raises:
        ConfigError: Conflicting or out-of-range options.
        MapError: The output exists without overwrite/append, or append has no map.

    """
    if bool(opts.bags) == (opts.images_dir is not None):
        raise ConfigError('give either bags (--bag) or an image folder (--images), not both '
                          'and not neither')
    if opts.bags and not (opts.image_topic and (opts.gps_topic or opts.pose_topic)):
        raise ConfigError('bags need --image-topic, and --gps-topic (NavSatFix) or, without '
                          "GPS, --pose-topic (positions in the poses' frame); see --list-topics")
    if opts.images_dir is not None and (opts.layout is None) == (opts.csv_file is None):
        raise ConfigError('an image folder needs exactly one of --csv FILE or --layout vg')
    if opts.layout is not None and opts.layout not in image_sources.LAYOUTS:
        raise ConfigError(f'layout {opts.layout!r} is not one of '
                          f'{", ".join(image_sources.LAYOUTS)}')
    if opts.append and opts.overwrite:
        raise ConfigError('--append and --overwrite exclude each other')
    if opts.batch_size < 1:
        raise ConfigError(f'batch size must be >= 1, got {opts.batch_size}')
    if opts.calibration_queries is not None and opts.calibration_queries < 1:
        raise ConfigError(f'calibration queries must be >= 1, got {opts.calibration_queries}')
    if opts.decode_threads < 1:
        raise ConfigError(f'decode threads must be >= 1, got {opts.decode_threads}')
    if not opts.max_gps_gap_s > 0:
        raise ConfigError(f'max GPS gap must be > 0 s, got {opts.max_gps_gap_s}')
    if not opts.all_frames and opts.min_distance_m is None and opts.min_interval_s is None:
        raise ConfigError('keyframing needs --min-distance or --min-interval (or --all-frames)')
    for name, value in (('min distance', opts.min_distance_m),
                        ('min interval', opts.min_interval_s)):
        if value is not None and not value >= 0:
            raise ConfigError(f'{name} must be >= 0, got {value}')
    if opts.local_format not in LOCAL_FORMATS:
        raise ConfigError(f'local format {opts.local_format!r} is not one of '
                          f'{", ".join(LOCAL_FORMATS)}')
    if opts.index_type is not None and opts.index_type not in INDEX_TYPES:
        raise ConfigError(f'index type {opts.index_type!r} is not one of {", ".join(INDEX_TYPES)}')
    tune_settings(opts).check()
    out = Path(opts.out)
    is_map = (out / MANIFEST_NAME).is_file()
    if opts.append and not is_map:
        raise MapError(f'{out}: no map to append to (no {MANIFEST_NAME})')
    if not (opts.append or opts.overwrite) and is_map:
        raise MapError(f'{out}: a map already exists; pass --overwrite to replace it or '
                       '--append to add to it')
    if out.exists() and not out.is_dir():
        raise MapError(f'{out}: exists and is not a directory')
    if out.is_dir() and not is_map and any(out.iterdir()):
        raise MapError(f'{out}: exists, is not empty and is not a map; refusing to write there')


def tune_settings(opts: BuildOptions) -> TuneSettings:
    """How the map's approximate index (if any) is tuned."""
    return TuneSettings(top_k=opts.index_top_k, target_recall=opts.index_target_recall,
                        budget_ms=opts.index_budget_ms)


def progress_bar(opts: BuildOptions, **kwargs: Any) -> tqdm | LineProgress:
    """Make progress on stderr unless not asked for: a bar on a terminal, else periodic lines."""
    return terminal_bar(opts.progress, smoothing=0.1, **kwargs)
