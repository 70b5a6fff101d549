"""Evaluation metrics, dataset layouts and an end-to-end run on the bundled corridor subset."""

from pathlib import Path

from model_factory import TINY_CONFIG, small_place_model
import numpy as np
import pytest

from r2former_ros.core.evaluation import (
    EvalSettings,
    average_precision,
    evaluate_dataset,
    format_table,
    precision_recall_curve,
    recall_at_n,
    roc_auc,
)
from r2former_ros.core.localize.settings import LocalizerConfig

CORRIDOR = Path(__file__).resolve().parents[3] / 'r2former_ros' / 'data' / 'demo' / 'corridor'


def test_recall_at_n_known_answers():
    correct = np.zeros((4, 20), dtype=bool)
    correct[0, 0] = True  # right at rank 1
    correct[1, 3] = True  # rank 4 -> counts from N=5
    correct[2, 7] = True  # rank 8 -> counts from N=10
    correct[2, 12] = True
    # query 3: never right
    assert recall_at_n(correct) == {'1': 0.25, '5': 0.5, '10': 0.75, '20': 0.75}
    # Short rows (a map of 3 places) have fewer chances; N beyond them changes nothing.
    short = np.array([[False, True, False], [False, False, False]])
    assert recall_at_n(short) == {'1': 0.0, '5': 0.5, '10': 0.5, '20': 0.5}
    assert recall_at_n(np.zeros((0, 20), dtype=bool))['1'] == 0.0


def test_confidence_ranking_metrics():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([True, False, True, False])
    curve = precision_recall_curve(scores, labels)
    assert curve['precision'] == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    assert curve['recall'] == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert average_precision(scores, labels) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    # 4 positive/negative pairs, 3 ordered correctly.
    assert roc_auc(scores, labels) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)
    assert roc_auc(scores, np.ones(4, dtype=bool)) is None
    assert average_precision(scores, np.zeros(4, dtype=bool)) is None


@pytest.mark.skipif(not (CORRIDOR / 'ground_truth_new.npy').is_file(),
                    reason='bundled corridor subset not present')
@pytest.mark.slow
def test_vprbench_layout_on_corridor_subset():
    model = small_place_model(TINY_CONFIG)  # 64x96 input: seconds on 2 cores
    settings = EvalSettings(LocalizerConfig(rerank_top_n=5), max_queries=12)
    result = evaluate_dataset(model, CORRIDOR, 'vprbench', settings)
    summary = result.summary
    assert summary['num_queries'] == 12 and summary['num_map_places'] == 60
    assert summary['backbone'] == 'r2former' and summary['weights'] == 'random'
    for key in ('recall_global', 'recall_reranked'):
        recall = summary[key]
        assert list(recall) == ['1', '5', '10', '20']
        assert all(0.0 <= v <= 1.0 for v in recall.values())
        assert recall['1'] <= recall['5'] <= recall['10'] <= recall['20']
    # Even random weights retrieve the +-2-frame neighbourhood above chance (5/60 at R@1).
    assert summary['recall_global']['20'] > 25 / 60
    assert set(summary['latency_ms']) >= {'extract', 'retrieve', 'rerank', 'total'}
    assert 0.0 <= summary['ece'] <= 1.0
    assert 'RANDOM' in format_table(summary).splitlines()[0]
