"""`r2former eval` with the global-only msls_v2_deits layout: global recall, reranked null."""

import json

from model_factory import TINY_CONFIG, seeded_model
from official_format import save_official_format
from test_eval_cli import TINY_FLAGS, write_vg_dataset

from r2former_ros.cli.main import main


def test_eval_with_a_global_only_checkpoint(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path / 'empty-cache'))
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)
    write_vg_dataset(tmp_path / 'ds', num_places=6)
    checkpoint = tmp_path / 'msls_v2_deits.pth'
    save_official_format(seeded_model(TINY_CONFIG), checkpoint, global_only=True)
    out = tmp_path / 'res.json'
    code = main(['eval', '--dataset', str(tmp_path / 'ds'), '--layout', 'vg', *TINY_FLAGS,
                 '--checkpoint', str(checkpoint), '--json', str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary['recall_reranked'] is None and summary['reranked'] is False
    assert summary['rerank_top_n'] == 0
    assert set(summary['recall_global']) == {'1', '5', '10', '20'}
    captured = capsys.readouterr()
    said = captured.out + captured.err + caplog.text
    assert said.count('reranking is unavailable') == 1
    assert 'reranked    (no reranking' in captured.out  # the table has no reranked recall
