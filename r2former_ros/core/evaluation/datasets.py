"""
Where evaluation queries come from: image datasets (VG and VPR-Bench layouts) and query bags.

A true match lies within ``threshold_m`` of the query (datasets with positions: the VG layout,
query bags) or is one of the listed positives (the VPR-Bench layout, index ground truth).
Datasets without a map (image folders) get a temporary map written with
:class:`r2former_ros.core.mapdb.MapWriter`, so retrieval and reranking use the real map code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.geo.coords import utm_to_wgs84
from r2former_ros.core.io.folders import VgName, image_files, parse_vg_name
from r2former_ros.core.io.images import read_image_file
from r2former_ros.core.io.vprbench import load_vprbench
from r2former_ros.core.mapdb import MapWriter, PlaceRecord
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.types import PlacePosition

if TYPE_CHECKING:
    from r2former_ros.core.io.bag_truth import TruthTrack  # rosbags only when a bag is read

ENCODE_BATCH = 16
LAYOUTS = ('vg', 'vprbench')

Progress = Callable[[str], Any]


@dataclass
class EvalQuery:
    """One query: a loader for its image and its ground truth (a position or positive ids)."""

    name: str
    load: Callable[[], NDArray[np.uint8]]
    east: float | None = None  # position in the map's ENU frame (metres)
    north: float | None = None
    positives: NDArray[np.int64] | None = None  # index ground truth (VPR-Bench)
    stamp_s: float | None = None  # capture time (bags); None: one frame after the previous


def _holding(rgb: NDArray[np.uint8]) -> Callable[[], NDArray[np.uint8]]:
    """Return a query loader for an image already in memory (bag images decode as they come)."""
    return lambda: rgb


def _vg_folders(root: Path) -> tuple[Path, Path]:
    for base in (root, root / 'images' / 'test'):
        if (base / 'database').is_dir() and (base / 'queries').is_dir():
            return base / 'database', base / 'queries'
    raise ConfigError(f'{root}: VG layout needs database/ and queries/ folders '
                      '(or images/test/database and images/test/queries)')


def _utm_position(vg: VgName, origin_e: float, origin_n: float) -> PlacePosition:
    # Evaluation measures 2-D UTM distances, as the benchmarks do; lat/lon (NaN without a zone)
    # only describe the place.
    lat = lon = math.nan
    if vg.utm_zone is not None and vg.northern is not None:
        lat, lon = (float(v) for v in utm_to_wgs84(vg.utm_zone, vg.northern, vg.utm_east,
                                                   vg.utm_north))
    return PlacePosition(lat, lon, 0.0, vg.utm_east - origin_e, vg.utm_north - origin_n, 0.0,
                         vg.utm_zone or 0, bool(vg.northern), vg.utm_east, vg.utm_north)


@dataclass
class DatasetSpec:
    """An image dataset ready for evaluation: map images with positions, and the queries."""

    name: str
    layout: str
    map_files: list[Path]
    map_positions: list[PlacePosition]
    origin: tuple[float, float, float]
    queries: list[EvalQuery]
    notes: list[str] = field(default_factory=list)


def load_vg_dataset(root: str | Path) -> DatasetSpec:
    """Open a dataset in the VG-benchmark layout: UTM in the file names, 2-D distances in UTM."""
    root = Path(root).expanduser()
    db_dir, q_dir = _vg_folders(root)
    db_files, q_files = image_files(db_dir), image_files(q_dir)
    parsed = [parse_vg_name(p.name) for p in db_files]
    origin_e, origin_n = parsed[0].utm_east, parsed[0].utm_north
    positions = [_utm_position(vg, origin_e, origin_n) for vg in parsed]
    queries = []
    for path in q_files:
        vg = parse_vg_name(path.name)
        queries.append(EvalQuery(path.name, partial(read_image_file, path),
                                 vg.utm_east - origin_e, vg.utm_north - origin_n))
    first = positions[0]
    return DatasetSpec(root.name, 'vg', db_files, positions,
                       (first.latitude, first.longitude, 0.0), queries,
                       ['distances are 2-D in UTM (one zone assumed, as the benchmark does)'])


def load_vprbench_dataset(root: str | Path, threshold_m: float = 25.0) -> DatasetSpec:
    """
    Open a VPR-Bench dataset: recall from the index ground truth; positions are synthetic.

    Map places need positions for the confidence's spatial agreement and its calibration. Reference
    i is placed ``i * spacing`` metres along a straight line, with the spacing chosen so that the
    ground truth's typical half-window of indices spans ``threshold_m`` (corridor: +-2 -> 12.5 m).
    """
    data = load_vprbench(root)
    half = [0.5 * float(p.max() - p.min()) for p in data.positives if p.size]
    half_window = max(float(np.median(half)) if half else 1.0, 0.5)
    spacing = threshold_m / half_window
    positions = [PlacePosition(math.nan, math.nan, 0.0, i * spacing, 0.0, 0.0, 0, True,
                               i * spacing, 0.0) for i in range(data.num_refs)]
    queries = []
    for i, path in enumerate(data.query_files):
        pos = data.positives[i]
        east = float(pos.mean()) * spacing if pos.size else None
        queries.append(EvalQuery(path.name, partial(read_image_file, path), east,
                                 0.0 if east is not None else None, pos))
    return DatasetSpec(data.name, 'vprbench', list(data.ref_files), positions, (0.0, 0.0, 0.0),
                       queries, [f'recall from ground_truth_new.npy; positions synthetic '
                                 f'({spacing:.3g} m per reference index) for the confidence'])


def load_dataset(root: str | Path, layout: str, threshold_m: float = 25.0) -> DatasetSpec:
    """Open an image dataset in the 'vg' or 'vprbench' layout."""
    if layout == 'vg':
        return load_vg_dataset(root)
    if layout == 'vprbench':
        return load_vprbench_dataset(root, threshold_m)
    raise ConfigError(f"layout '{layout}' is not one of {', '.join(LAYOUTS)}")


def write_dataset_map(spec: DatasetSpec, model: PlaceModel, map_dir: str | Path,
                      progress: Progress | None = None) -> Path:
    """Encode the dataset's map images (batched) into a map directory with thumbnails."""
    with MapWriter(map_dir, model.identity(), local_format='fp16', index_type='exact',
                   origin={'lat': spec.origin[0], 'lon': spec.origin[1], 'alt': spec.origin[2]},
                   sources=[{'kind': 'dataset', 'layout': spec.layout, 'name': spec.name}],
                   overwrite=True) as writer:
        for start in range(0, len(spec.map_files), ENCODE_BATCH):
            files = spec.map_files[start:start + ENCODE_BATCH]
            images = [read_image_file(p) for p in files]
            records = [PlaceRecord(stamp_ns=0, position=spec.map_positions[start + i],
                                   msg_index=start + i) for i in range(len(files))]
            writer.add(model.encode_rgb(images), records, images)
            if progress:
                progress(f'encoded {start + len(files)}/{len(spec.map_files)} map images')
    return Path(map_dir)


def bag_queries(bag_paths: str | Path | Sequence[str | Path], image_topic: str,
                truth: TruthTrack, max_gap_s: float = 1.0,
                every: int = 1) -> tuple[Iterator[EvalQuery], dict[str, int]]:
    """
    Query images of a bag with their true positions in the map's frame.

    The truth is the bag's GPS (a GPS map: ENU metres about its origin) or its poses (a map in
    the poses' frame), read by :meth:`~r2former_ros.core.io.bag_truth.TruthSource.read_for`.
    Images the truth does not cover (no usable fix or pose within ``max_gap_s`` on both sides)
    are skipped and counted in the returned stats (filled while iterating).
    """
    # rosbags only when a bag is evaluated.
    from r2former_ros.core.io.bag_geotag import geotagged_bag_images  # noqa: PLC0415

    images, stats = geotagged_bag_images(bag_paths, image_topic, truth, max_gap_s, every)
    queries = (EvalQuery(image.name, _holding(image.record.rgb), image.east, image.north,
                         stamp_s=image.record.stamp_ns * 1e-9) for image in images)
    return queries, stats
