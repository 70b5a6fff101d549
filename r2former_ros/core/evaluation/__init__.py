"""
Recall@N, per-stage latency and trust of what is published, for datasets, query bags and replays.

Split by job; this module re-exports the public names (``from r2former_ros.core import
evaluation`` then ``evaluation.evaluate_dataset(...)``):

* :mod:`.engine`: the one engine: frames that went through the node's step, scored against
  their truth into the evaluation JSON (one meaning per key);
* :mod:`.loop`: settings and the loop that localizes a dataset's or a bag's queries;
* :mod:`.replay`: the node's pipeline over a bag, writing a result bag (``localize-bag``, demo);
* :mod:`.metrics`: recall@N, precision-recall, average precision, ROC AUC, latency statistics;
* :mod:`.datasets`: VG / VPR-Bench dataset loaders, query bags, the temporary dataset map;
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
from r2former_ros.core.evaluation.engine import (
    CURVE_MAX_N,
    MOSAIC_MAX_ROWS,
    MOSAIC_TOP,
    EvalResult,
    LocalizedFrame,
    summarize,
)
from r2former_ros.core.evaluation.loop import (
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
    'LocalizedFrame',
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
    'summarize',
    'weights_kind',
    'write_dataset_map',
    'write_plots',
]
