"""Text for people: the model banner (what the weights are) and the short report table."""

from __future__ import annotations

from typing import Any

from r2former_ros.core.places.base import PlaceModel


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


def format_table(summary: dict[str, Any]) -> str:
    """Format the short text report: banner, recall table, latency, confidence."""
    if summary.get('layout') == 'vprbench':
        # VPR-Bench lists the right references per query; no distance is involved.
        truth = 'true match: a reference listed for the query in ground_truth_new.npy'
    else:
        truth = f'true match within {summary["threshold_m"]:g} m'
        frame = summary.get('position_frame')
        if frame and frame != 'wgs84':
            truth += f' (positions in frame {frame})'
    lines = [summary['banner'],
             f'{summary["num_queries"]} queries vs {summary["num_map_places"]} places, {truth}',
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
    single = summary['single_frame']
    if summary.get('recall_filtered'):
        lines.append(f'{"filtered":10}' + ''.join(f'{v:8.3f}'
                                                  for v in summary['recall_filtered'].values())
                     + f'  (sequence filter, max speed {summary["max_speed_mps"]:g} m/s)')
    lines.append(f'confidence ({conf["calibration"]}): ECE {summary["ece"]:.3f}, AP '
                 f'{_number(conf["average_precision"])}'
                 + ('' if summary.get('calibrated', True) else ' (raw score: uncalibrated for '
                    'these settings)'))
    if summary.get('filter', 'none') != 'none':
        lines.append(f'single frame: ECE {single["ece"]:.3f} (uncalibrated '
                     f'{single["ece_uncalibrated"]:.3f}), matched {single["matched_fraction"]:.2f}'
                     f', {_number(single["matched_precision"])} of them right')
    else:
        lines[-1] += f' (uncalibrated score: ECE {single["ece_uncalibrated"]:.3f})'
    outside = summary['outside_map']
    source = conf.get('threshold_source', 'set')
    lines.append(f'published: matched {summary["matched_fraction"]:.2f} of queries at >= '
                 f'{conf["threshold"]:.3g}'
                 + (f' ({source})' if source != 'set' else '')
                 + f', {_number(summary["matched_precision"])} of them right'
                 + (f'; outside the map: {outside["num_queries"]} queries, matched '
                    f'{outside["matched_fraction"]:.2f}' if outside['num_queries'] else ''))
    pose = summary.get('pose_consistency') or {}
    if pose.get('num_published'):
        lines.append(f'published positions: {pose["within_95"]:.2f} within their own 95% '
                     f'ellipse, error median {pose["median_error_m"]:.1f} m, 90th percentile '
                     f'{pose["p90_error_m"]:.1f} m')
    return '\n'.join(lines)


def _number(value: float | None) -> str:
    return 'n/a' if value is None else f'{value:.3f}'
