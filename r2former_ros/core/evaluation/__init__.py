"""
Recall@N, per-stage latency and confidence quality, for image datasets and query bags.

Convention (the field's): a query is correct at N if any of its first N places is a true match.
A true match lies within ``threshold_m`` of the query (datasets with positions: the VG layout,
query bags) or is one of the listed positives (the VPR-Bench layout, index ground truth).
Global-only (cosine of the global descriptors) and reranked recall come from the same
retrieval, side by side.

Every query goes through :class:`~r2former_ros.core.localize.localizer.Localizer`, the code the
node runs, so the numbers are those of the node. Latency is measured per stage for batch-1
queries: extract (preprocess + network), retrieve (faiss), rerank.

Confidence: the probability that the top-1 place is a true match. Its quality is reported as
the expected calibration error (ECE, 10 bins), the precision-recall curve of "accept the top-1
when confidence >= t" with its average precision, and the ROC AUC. Maps without a stored
calibration are calibrated in memory on their own images
(:mod:`r2former_ros.core.localize.calibration`), and the uncalibrated confidence (the clipped
top score) is reported next to it.

Datasets without a map (image folders) get a temporary map written with
:class:`r2former_ros.core.mapdb.MapWriter`, so retrieval and reranking use the real map code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
import json
import logging
import math
import os
from pathlib import Path
import tempfile
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.geo.coords import utm_to_wgs84
from r2former_ros.core.io.folders import image_files
from r2former_ros.core.io.vprbench import load_vprbench, read_rgb
from r2former_ros.core.localize.calibration import (
    expected_calibration_error,
    fit_map_calibration,
    reliability_table,
)
from r2former_ros.core.localize.confidence import ConfidenceModel, confidence_features
from r2former_ros.core.localize.localizer import Localizer, LocalizerConfig
from r2former_ros.core.mapdb import MapDatabase, MapWriter, PlaceRecord
from r2former_ros.core.places.base import PlaceModel
from r2former_ros.core.types import PlacePosition

LOG = logging.getLogger(__name__)

RECALL_NS = (1, 5, 10, 20)
CURVE_MAX_N = 20
MOSAIC_TOP = 5
MOSAIC_MAX_ROWS = 12
THUMB_W = 160
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


@dataclass
class EvalSettings:
    """What to measure and how."""

    threshold_m: float = 25.0
    rerank_top_n: int = 100
    retrieval_top_k: int = 100
    confidence_threshold: float = 0.5
    calibrate: bool = True  # calibrate maps that have none, in memory
    max_queries: int | None = None

    def localizer_config(self, has_reranker: bool) -> LocalizerConfig:
        top_k = max(self.retrieval_top_k, CURVE_MAX_N, self.rerank_top_n)
        return LocalizerConfig(retrieval_top_k=top_k,
                               rerank_top_n=self.rerank_top_n if has_reranker else 0,
                               result_top_k=min(top_k, CURVE_MAX_N),
                               confidence_threshold=self.confidence_threshold,
                               threshold_m=self.threshold_m).validate()


@dataclass
class EvalResult:
    """Per-query outcomes and the summary written as JSON."""

    summary: dict[str, Any]
    global_correct: NDArray[np.bool_]  # (Q, CURVE_MAX_N) correct at rank i (not cumulative)
    reranked_correct: NDArray[np.bool_]
    confidence: NDArray[np.float64]  # (Q,) confidence the localizer publishes
    confidence_uncalibrated: NDArray[np.float64]
    top1_correct: NDArray[np.bool_]
    failures: list[dict[str, Any]] = field(default_factory=list)  # wrong top-1s, for the mosaic

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary, indent=2) + '\n', encoding='utf-8')
        return path


# ------------------------------------------------------------------------------- metrics


def recall_at_n(correct: NDArray[np.bool_], ns: Sequence[int] = RECALL_NS) -> dict[str, float]:
    """
    Recall@N from per-rank correctness: a query counts if any of its first N is correct.

    Args:
        correct: (Q, R) bool, True where the candidate at rank r is a true match; rows
            shorter than N (small maps) simply have fewer chances.
        ns: the N values.
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ConfigError(f'correct must be (queries, ranks), got shape {correct.shape}')
    if correct.shape[0] == 0:
        return {str(n): 0.0 for n in ns}
    return {str(n): float(np.mean(correct[:, :n].any(axis=1))) for n in ns}


def precision_recall_curve(scores: NDArray[np.floating],
                           labels: NDArray[np.bool_]) -> dict[str, list[float]]:
    """
    Precision and recall of "accept when score >= t" for every distinct threshold t.

    Returns:
        thresholds (descending), precision, recall (lists of equal length).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    order = np.argsort(-s, kind='stable')
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.zeros(0, int)
    positives = max(int(y.sum()), 1)
    precision = tp[last] / np.maximum(tp[last] + fp[last], 1)
    recall = tp[last] / positives
    return {'thresholds': s[last].tolist(), 'precision': precision.tolist(),
            'recall': recall.tolist()}


def average_precision(scores: NDArray[np.floating], labels: NDArray[np.bool_]) -> float | None:
    """Area under the precision-recall curve (step-wise, as sklearn's average_precision)."""
    y = np.asarray(labels, dtype=bool)
    if not y.any():
        return None
    curve = precision_recall_curve(scores, y)
    recall = np.r_[0.0, curve['recall']]
    return float(np.sum(np.diff(recall) * np.asarray(curve['precision'])))


def roc_auc(scores: NDArray[np.floating], labels: NDArray[np.bool_]) -> float | None:
    """ROC AUC by the rank-sum statistic (ties count half); None without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind='mergesort')
    ranks = np.empty(s.size)
    sorted_s = s[order]
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def latency_stats(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Mean, median and 90th percentile (ms) of each stage."""
    out = {}
    for stage, values in samples.items():
        if values:
            arr = np.asarray(values)
            out[stage] = {'mean_ms': float(arr.mean()), 'median_ms': float(np.median(arr)),
                          'p90_ms': float(np.percentile(arr, 90)), 'count': int(arr.size)}
    return out


def weights_kind(model: PlaceModel) -> str:
    """'random', 'checkpoint' (R2Former) or 'pretrained-fallback' (e.g. DINOv2)."""
    seeded = model.identity().get('checkpoint') == 'seeded-random'
    if getattr(model, 'random_weights', False) or seeded:
        return 'random'
    return 'checkpoint' if model.name == 'r2former' else 'pretrained-fallback'


def model_banner(model: PlaceModel) -> str:
    """One line naming the backbone and what its weights are (and that random means nothing)."""
    kind = weights_kind(model)
    hw = 'x'.join(str(v) for v in model.input_hw)
    if kind == 'random':
        return (f'backbone: {model.name} ({hw}), weights are RANDOM: numbers mean nothing '
                '(pass --checkpoint CVPR23_DeitS_Rerank.pth for real results)')
    if kind == 'pretrained-fallback':
        return (f'backbone: {model.name} ({hw}), pretrained fallback weights: this is NOT '
                'R2Former accuracy')
    return f'backbone: {model.name} ({hw}), checkpoint {model.identity().get("checkpoint")}'


# ----------------------------------------------------------------------------- datasets


def parse_vg_name(name: str) -> tuple[float, float, int | None, bool | None]:
    """
    UTM east, north, zone and hemisphere from a VG-benchmark file name.

    The layout is ``@utm_east@utm_north@zone_number@zone_letter@lat@lon@...`` (fields after
    north may be empty). Returns (east, north, zone or None, northern or None).
    """
    parts = Path(name).name.split('@')
    try:
        east, north = float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise ConfigError(f'{name}: not a VG-benchmark file name (@utm_east@utm_north@...)') \
            from None
    zone = northern = None
    if len(parts) > 4 and parts[3].strip().isdigit():
        zone = int(parts[3])
        letter = parts[4].strip().upper()
        northern = letter >= 'N' if letter else None
    return east, north, zone, northern


def _vg_folders(root: Path) -> tuple[Path, Path]:
    for base in (root, root / 'images' / 'test'):
        if (base / 'database').is_dir() and (base / 'queries').is_dir():
            return base / 'database', base / 'queries'
    raise ConfigError(f'{root}: VG layout needs database/ and queries/ folders '
                      '(or images/test/database and images/test/queries)')


def _utm_position(east: float, north: float, zone: int | None, northern: bool | None,
                  origin_e: float, origin_n: float) -> PlacePosition:
    lat = lon = math.nan
    if zone is not None and northern is not None:
        lat, lon = (float(v) for v in utm_to_wgs84(zone, northern, east, north))
    return PlacePosition(lat, lon, 0.0, east - origin_e, north - origin_n, 0.0, zone or 0,
                         bool(northern), east, north)


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
    origin_e, origin_n = parsed[0][0], parsed[0][1]
    positions = [_utm_position(e, n, z, h, origin_e, origin_n) for e, n, z, h in parsed]
    queries = []
    for path in q_files:
        east, north, _, _ = parse_vg_name(path.name)
        queries.append(EvalQuery(path.name, lambda p=path: read_rgb(p), east - origin_e,
                                 north - origin_n))
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
        queries.append(EvalQuery(path.name, lambda p=path: read_rgb(p), east,
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
            images = [read_rgb(p) for p in files]
            records = [PlaceRecord(stamp_ns=0, position=spec.map_positions[start + i],
                                   msg_index=start + i) for i in range(len(files))]
            writer.add(model.encode_rgb(images), records, images)
            if progress:
                progress(f'encoded {start + len(files)}/{len(spec.map_files)} map images')
    return Path(map_dir)


def bag_queries(bag_paths: str | Path | Sequence[str | Path], image_topic: str,
                gps_topic: str, origin: tuple[float, float, float], max_gap_s: float = 1.0,
                every: int = 1) -> tuple[Iterator[EvalQuery], dict[str, int]]:
    """
    Query images of a bag with their GPS positions in the map's ENU frame.

    Images the GPS does not cover (no usable fix within ``max_gap_s`` on both sides) are
    skipped and counted in the returned stats (filled while iterating).
    """
    from r2former_ros.core.geo.geotag import filter_fixes, geotag_images  # noqa: PLC0415
    from r2former_ros.core.io import bags  # noqa: PLC0415 - rosbags only when a bag is evaluated

    fixes = filter_fixes(bags.read_navsat(bag_paths, gps_topic))
    stats = {'images': 0, 'skipped_no_gps': 0, 'usable_fixes': len(fixes)}

    def generate() -> Iterator[EvalQuery]:
        for record in bags.iter_images(bag_paths, image_topic):
            stats['images'] += 1
            if (stats['images'] - 1) % every:
                continue
            tags = geotag_images(np.array([record.stamp_ns]), fixes, max_gap_s=max_gap_s,
                                 origin=origin)
            if tags.image_index.size == 0:
                stats['skipped_no_gps'] += 1
                continue
            rgb = record.rgb
            yield EvalQuery(f'{Path(record.bag_path).name}#{record.index}', lambda im=rgb: im,
                            float(tags.east[0]), float(tags.north[0]))

    return generate(), stats


# ---------------------------------------------------------------------------- evaluation


def _thumb(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    import cv2  # noqa: PLC0415

    height = max(1, round(rgb.shape[0] * THUMB_W / rgb.shape[1]))
    return cv2.resize(rgb, (THUMB_W, height), interpolation=cv2.INTER_AREA)


def _is_true(query: EvalQuery, ids: NDArray[np.int64], east: NDArray[np.float64],
             north: NDArray[np.float64], threshold_m: float) -> NDArray[np.bool_]:
    if query.positives is not None:
        return np.isin(ids, query.positives)
    dist = np.hypot(east[ids] - query.east, north[ids] - query.north)
    return dist <= threshold_m


def _pad(row: NDArray[np.bool_], width: int) -> NDArray[np.bool_]:
    out = np.zeros(width, dtype=bool)
    out[:min(width, row.size)] = row[:width]
    return out


def evaluate_map(model: PlaceModel, database: MapDatabase, queries: Iterable[EvalQuery],
                 settings: EvalSettings | None = None, progress: Progress | None = None,
                 extra: dict[str, Any] | None = None) -> EvalResult:
    """
    Evaluate queries against an open map; see the module docstring for the metrics.

    Args:
        model: the place model the map was built with.
        database: the map.
        queries: queries with ground truth (positions in the map's ENU frame or positive ids).
        settings: thresholds, rerank depth, in-memory calibration.
        progress: called with a short line every few queries.
        extra: merged into the summary (dataset name, layout, notes).
    """
    settings = settings or EvalSettings()
    config = settings.localizer_config(model.has_reranker)
    localizer = Localizer(model, database, config)
    stored = localizer.confidence
    calibration_source = 'map manifest' if stored.calibrated else 'none'
    calibration_info: dict[str, Any] = dict(stored.info)
    if not stored.calibrated and settings.calibrate:
        fitted = fit_map_calibration(database, model, settings.threshold_m,
                                     localizer_config=config)
        calibration_info = dict(fitted.info)
        if fitted.calibrated:
            localizer.confidence = fitted
            calibration_source = 'fitted in memory on the map images'
    uncalibrated = ConfidenceModel(threshold_m=settings.threshold_m)
    east = np.asarray(database.places['east'], dtype=np.float64)
    north = np.asarray(database.places['north'], dtype=np.float64)
    timings: dict[str, list[float]] = {'extract': [], 'retrieve': [], 'rerank': [], 'total': []}
    g_rows, r_rows, conf, conf_raw, names = [], [], [], [], []
    failures: list[dict[str, Any]] = []
    reranked = bool(config.rerank_top_n)
    for count, query in enumerate(queries):
        if settings.max_queries is not None and count >= settings.max_queries:
            break
        rgb = query.load()
        start = time.perf_counter()
        features = model.encode_rgb([rgb])
        extract_ms = (time.perf_counter() - start) * 1e3
        ids, global_scores, rerank_scores, stage_ms = localizer.rank(features.global_desc[0],
                                                                     features.local_feats[0])
        global_ids = ids[np.argsort(-global_scores, kind='stable')]
        ranking = rerank_scores if rerank_scores is not None else global_scores
        feats = confidence_features(ranking, east[ids[:len(ranking)]], north[ids[:len(ranking)]],
                                    settings.threshold_m) if ids.size else None
        conf.append(localizer.confidence.predict(feats) if feats is not None else 0.0)
        conf_raw.append(uncalibrated.predict(feats) if feats is not None else 0.0)
        g_true = _is_true(query, global_ids[:CURVE_MAX_N], east, north, settings.threshold_m)
        r_true = _is_true(query, ids[:CURVE_MAX_N], east, north, settings.threshold_m)
        g_rows.append(_pad(g_true, CURVE_MAX_N))
        r_rows.append(_pad(r_true, CURVE_MAX_N))
        names.append(query.name)
        timings['extract'].append(extract_ms)
        timings['retrieve'].append(stage_ms.get('retrieve', 0.0))
        if 'rerank' in stage_ms:
            timings['rerank'].append(stage_ms['rerank'])
        timings['total'].append(extract_ms + sum(stage_ms.values()))
        if not r_true[:1].any() and len(failures) < MOSAIC_MAX_ROWS:
            failures.append({'name': query.name, 'thumb': _thumb(rgb),
                             'ids': [int(v) for v in ids[:MOSAIC_TOP]],
                             'correct': [bool(v) for v in r_true[:MOSAIC_TOP]],
                             'confidence': conf[-1]})
        if progress and (count + 1) % 10 == 0:
            progress(f'{count + 1} queries')
    g_correct = np.asarray(g_rows, dtype=bool).reshape(-1, CURVE_MAX_N)
    r_correct = np.asarray(r_rows, dtype=bool).reshape(-1, CURVE_MAX_N)
    conf_arr, raw_arr = np.asarray(conf), np.asarray(conf_raw)
    top1 = r_correct[:, 0] if r_correct.size else np.zeros(0, dtype=bool)
    summary = _summary(model, database, settings, config, reranked, g_correct, r_correct,
                       conf_arr, raw_arr, top1, timings, calibration_source, calibration_info)
    summary.update(extra or {})
    for failure in failures:
        failure['thumbs'] = [database.thumbnail(i) for i in failure['ids']]
    return EvalResult(summary, g_correct, r_correct, conf_arr, raw_arr, top1, failures)


def _summary(model: PlaceModel, database: MapDatabase, settings: EvalSettings,
             config: LocalizerConfig, reranked: bool, g_correct: NDArray[np.bool_],
             r_correct: NDArray[np.bool_], conf: NDArray[np.float64],
             raw: NDArray[np.float64], top1: NDArray[np.bool_],
             timings: dict[str, list[float]], calibration_source: str,
             calibration_info: dict[str, Any]) -> dict[str, Any]:
    accepted = conf >= settings.confidence_threshold
    curve_ns = list(range(1, CURVE_MAX_N + 1))
    return {
        'backbone': model.name,
        'weights': weights_kind(model),
        'banner': model_banner(model),
        'model': model.identity(),
        'num_queries': int(top1.size),
        'num_map_places': database.num_places,
        'threshold_m': settings.threshold_m,
        'reranked': reranked,
        'rerank_top_n': int(config.rerank_top_n),
        'retrieval_top_k': int(config.retrieval_top_k),
        'recall_global': recall_at_n(g_correct),
        'recall_reranked': recall_at_n(r_correct),
        'recall_curve': {'n': curve_ns,
                         'global': list(recall_at_n(g_correct, curve_ns).values()),
                         'reranked': list(recall_at_n(r_correct, curve_ns).values())},
        'latency_ms': latency_stats(timings),
        'ece': expected_calibration_error(conf, top1),
        'ece_uncalibrated': expected_calibration_error(raw, top1),
        'confidence': {
            'calibration': calibration_source,
            'calibration_info': {k: v for k, v in calibration_info.items()
                                 if not isinstance(v, np.ndarray)},
            'threshold': settings.confidence_threshold,
            'average_precision': average_precision(conf, top1),
            'roc_auc': roc_auc(conf, top1),
            'average_precision_uncalibrated': average_precision(raw, top1),
            'roc_auc_uncalibrated': roc_auc(raw, top1),
            'accepted_fraction': float(accepted.mean()) if accepted.size else 0.0,
            'precision_when_accepted': float(top1[accepted].mean()) if accepted.any() else None,
            'recall_when_accepted': (float((top1 & accepted).sum() / top1.sum())
                                     if top1.any() else None),
            'reliability': reliability_table(conf, top1),
            'reliability_uncalibrated': reliability_table(raw, top1),
        },
    }


def evaluate_dataset(model: PlaceModel, root: str | Path, layout: str,
                     settings: EvalSettings | None = None, work_dir: str | Path | None = None,
                     progress: Progress | None = None) -> EvalResult:
    """
    Evaluate an image dataset ('vg' or 'vprbench' layout) with a temporary map of its database.

    Args:
        model: the place model.
        root: the dataset directory.
        layout: 'vg' or 'vprbench'.
        settings: thresholds, rerank depth, calibration.
        work_dir: where the temporary map goes (default: a fresh temp dir, removed after).
        progress: called with a short line now and then.
    """
    settings = settings or EvalSettings()
    spec = load_dataset(root, layout, settings.threshold_m)
    with tempfile.TemporaryDirectory(prefix='r2former-eval-', dir=work_dir) as tmp:
        map_dir = write_dataset_map(spec, model, Path(tmp) / 'map', progress)
        database = MapDatabase.open(map_dir)
        extra = {'dataset': str(Path(root)), 'layout': layout, 'name': spec.name,
                 'notes': spec.notes}
        return evaluate_map(model, database, spec.queries, settings, progress, extra)


def evaluate_bag(model: PlaceModel, map_dir: str | Path,
                 bag_paths: str | Path | Sequence[str | Path], image_topic: str,
                 gps_topic: str, settings: EvalSettings | None = None, every: int = 1,
                 max_gap_s: float = 1.0, progress: Progress | None = None) -> EvalResult:
    """Evaluate a query bag against a map; ground truth is the query bag's GPS."""
    settings = settings or EvalSettings()
    database = MapDatabase.open(map_dir)
    origin_block = database.manifest['origin']
    origin = (float(origin_block['lat']), float(origin_block['lon']), float(origin_block['alt']))
    queries, stats = bag_queries(bag_paths, image_topic, gps_topic, origin, max_gap_s, every)
    paths = [bag_paths] if isinstance(bag_paths, (str, os.PathLike)) else list(bag_paths)
    result = evaluate_map(model, database, queries, settings, progress,
                          {'map': str(map_dir), 'bags': [str(p) for p in paths],
                           'image_topic': image_topic, 'gps_topic': gps_topic})
    result.summary['bag_images'] = dict(stats)
    if result.summary['num_queries'] == 0:
        raise ConfigError(f'no query image of {image_topic} has a GPS position from {gps_topic} '
                          f'({stats})')
    return result


# ---------------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as err:
        raise ConfigError('plots need matplotlib: pip install "r2former_ros[eval]" '
                          '(or pip install matplotlib)') from err
    return plt


def _title(summary: dict[str, Any], what: str) -> str:
    weights = summary.get('weights', '?')
    note = ' - RANDOM weights, meaningless' if weights == 'random' else \
        (' - fallback, not R2Former' if weights == 'pretrained-fallback' else '')
    return f'{what}: {summary.get("backbone", "?")}{note}\n{summary.get("name", "")} ' \
           f'({summary.get("num_queries", 0)} queries, {summary.get("threshold_m")} m)'


def _finish(fig: Any, ax: Any, result: EvalResult, what: str, path: Path) -> Path:
    """Grid, legend and title every plot shares; save and close the figure."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_title(result.summary, what), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_recall(result: EvalResult, path: Path) -> Path:
    plt = _pyplot()
    curve = result.summary['recall_curve']
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve['n'], curve['global'], 'o-', label='global only')
    if result.summary['reranked']:
        ax.plot(curve['n'], curve['reranked'], 's-', label='reranked')
    ax.set_xlabel('N')
    ax.set_ylabel('recall@N')
    ax.set_ylim(0, 1.02)
    ax.set_xticks([1, 5, 10, 15, 20])
    return _finish(fig, ax, result, 'recall@N', path)


def plot_precision_recall(result: EvalResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for scores, label in ((result.confidence, 'confidence'),
                          (result.confidence_uncalibrated, 'uncalibrated (top score)')):
        if result.top1_correct.any():
            curve = precision_recall_curve(scores, result.top1_correct)
            ax.step(curve['recall'], curve['precision'], where='post', label=label)
    ax.axhline(float(result.top1_correct.mean()) if result.top1_correct.size else 0.0,
               color='grey', ls=':', label='top-1 accuracy (accept all)')
    ax.set_xlabel('recall (correct top-1s accepted)')
    ax.set_ylabel('precision (accepted top-1s correct)')
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, result, 'precision-recall of the confidence', path)


def plot_reliability(result: EvalResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color='grey', ls=':', label='perfect')
    conf = result.summary['confidence']
    for key, label, marker in (('reliability', f'confidence (ECE {result.summary["ece"]:.3f})',
                                'o-'),
                               ('reliability_uncalibrated',
                                f'uncalibrated (ECE {result.summary["ece_uncalibrated"]:.3f})',
                                's--')):
        rows = [r for r in conf[key] if r['count']]
        ax.plot([r['mean_prob'] for r in rows], [r['frequency'] for r in rows], marker,
                label=label)
    ax.set_xlabel('predicted probability top-1 is right')
    ax.set_ylabel('observed frequency')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, result, 'reliability', path)


def _fit_cell(image: NDArray[np.uint8] | None, height: int, width: int,
              border: tuple[int, int, int] | None) -> NDArray[np.uint8]:
    import cv2  # noqa: PLC0415

    cell = np.full((height, width, 3), 64, dtype=np.uint8)
    if image is not None:
        scale = min(height / image.shape[0], width / image.shape[1])
        h, w = max(1, int(image.shape[0] * scale)), max(1, int(image.shape[1] * scale))
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        top, left = (height - h) // 2, (width - w) // 2
        cell[top:top + h, left:left + w] = small
    if border is not None:
        cell[:4], cell[-4:], cell[:, :4], cell[:, -4:] = border, border, border, border
    return cell


def failure_mosaic(result: EvalResult, path: Path, cell_hw: tuple[int, int] = (120, 160)
                   ) -> Path | None:
    """Rows of query | top-5 (green border = true match, red = false) for wrong top-1s."""
    import cv2  # noqa: PLC0415

    if not result.failures:
        return None
    height, width = cell_hw
    label_h = 18
    rows = []
    for failure in result.failures:
        cells = [_fit_cell(failure['thumb'], height, width, (255, 255, 255))]
        for thumb, ok in zip(failure['thumbs'], failure['correct'], strict=False):
            cells.append(_fit_cell(thumb, height, width, (0, 200, 0) if ok else (220, 0, 0)))
        while len(cells) < 1 + MOSAIC_TOP:
            cells.append(_fit_cell(None, height, width, None))
        row = np.concatenate(cells, axis=1)
        label = np.full((label_h, row.shape[1], 3), 255, dtype=np.uint8)
        text = (f'query {failure["name"]}  confidence {failure["confidence"]:.2f}  '
                f'top-5 ids {failure["ids"]}')
        cv2.putText(label, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        rows.append(np.concatenate([label, row], axis=0))
    mosaic = np.concatenate(rows, axis=0)
    if not cv2.imwrite(str(path), cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f'cannot write {path}')
    return path


def write_plots(result: EvalResult, out_dir: str | Path) -> list[Path]:
    """Recall curve, confidence precision-recall, reliability diagram and the failure mosaic."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_recall(result, out / 'recall_at_n.png'),
             plot_precision_recall(result, out / 'confidence_pr.png'),
             plot_reliability(result, out / 'reliability.png')]
    mosaic = failure_mosaic(result, out / 'wrong_top1_mosaic.png')
    if mosaic is not None:
        paths.append(mosaic)
    return paths


def format_table(summary: dict[str, Any]) -> str:
    """Format the short text report: banner, recall table, latency, confidence."""
    lines = [summary['banner'],
             f'{summary["num_queries"]} queries vs {summary["num_map_places"]} places, '
             f'true match within {summary["threshold_m"]:g} m'
             + (' (index ground truth)' if summary.get('layout') == 'vprbench' else ''),
             f'{"":10}' + ''.join(f'{"R@" + n:>8}' for n in summary['recall_global'])]
    for key, label in (('recall_global', 'global'), ('recall_reranked', 'reranked')):
        if key == 'recall_reranked' and not summary['reranked']:
            lines.append(f'{"reranked":10}  (no reranking: rerank top-N is 0 or no reranker)')
            continue
        lines.append(f'{label:10}' + ''.join(f'{v:8.3f}' for v in summary[key].values()))
    lat = summary['latency_ms']
    lines.append('latency ms (mean / p90): ' + ', '.join(
        f'{stage} {lat[stage]["mean_ms"]:.1f} / {lat[stage]["p90_ms"]:.1f}'
        for stage in ('extract', 'retrieve', 'rerank', 'total') if stage in lat))
    conf = summary['confidence']
    ap = conf['average_precision']
    lines.append(f'confidence ({conf["calibration"]}): ECE {summary["ece"]:.3f} '
                 f'(uncalibrated {summary["ece_uncalibrated"]:.3f}), AP '
                 f'{"n/a" if ap is None else f"{ap:.3f}"}, accepted at >= {conf["threshold"]:g}: '
                 f'{conf["accepted_fraction"]:.2f}')
    return '\n'.join(lines)
