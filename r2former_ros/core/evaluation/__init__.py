"""
Recall@N, per-stage latency and confidence quality, for image datasets and query bags.

Split by job; this module re-exports the public names (``from r2former_ros.core import
evaluation`` then ``evaluation.evaluate_dataset(...)``):

* :mod:`.metrics`: recall@N, precision-recall, average precision, ROC AUC, latency statistics;
* :mod:`.datasets`: VG / VPR-Bench dataset loaders, query bags, the temporary dataset map;
* :mod:`.loop`: settings, the evaluation loop over the node's Localizer, the JSON summary;
* :mod:`.plots` (matplotlib figures), :mod:`.mosaic` (wrong top-1s beside their candidates),
  :mod:`.tables` (the model banner and the text report).
"""

from r2former_ros.core.evaluation.datasets import (
    ENCODE_BATCH,
    LAYOUTS,
    DatasetSpec,
    EvalQuery,
    Progress,
    bag_queries,
    load_dataset,
    load_vg_dataset,
    load_vprbench_dataset,
    write_dataset_map,
)
from r2former_ros.core.evaluation.loop import (
    CURVE_MAX_N,
    MOSAIC_MAX_ROWS,
    MOSAIC_TOP,
    EvalResult,
    EvalSettings,
    evaluate_bag,
    evaluate_dataset,
    evaluate_map,
)
from r2former_ros.core.evaluation.metrics import (
    RECALL_NS,
    average_precision,
    latency_stats,
    precision_recall_curve,
    recall_at_n,
    roc_auc,
)
from r2former_ros.core.evaluation.mosaic import failure_mosaic
from r2former_ros.core.evaluation.plots import (
    plot_precision_recall,
    plot_recall,
    plot_reliability,
    write_plots,
)
from r2former_ros.core.evaluation.tables import format_table, model_banner, weights_kind

__all__ = [
    'CURVE_MAX_N',
    'ENCODE_BATCH',
    'LAYOUTS',
    'MOSAIC_MAX_ROWS',
    'MOSAIC_TOP',
    'RECALL_NS',
    'DatasetSpec',
    'EvalQuery',
    'EvalResult',
    'EvalSettings',
    'Progress',
    'average_precision',
    'bag_queries',
    'evaluate_bag',
    'evaluate_dataset',
    'evaluate_map',
    'failure_mosaic',
    'format_table',
    'latency_stats',
    'load_dataset',
    'load_vg_dataset',
    'load_vprbench_dataset',
    'model_banner',
    'plot_precision_recall',
    'plot_recall',
    'plot_reliability',
    'precision_recall_curve',
    'recall_at_n',
    'roc_auc',
    'weights_kind',
    'write_dataset_map',
    'write_plots',
]
