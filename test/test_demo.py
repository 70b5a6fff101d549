"""`r2former demo` end to end on the bundled data (reduced image count and size)."""

import json
from pathlib import Path

from model_factory import TINY_CONFIG

from r2former_ros.cli.main import main


def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path / 'empty-cache'))
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)
    out = tmp_path / 'demo'
    code = main(['demo', '--out', str(out), '--max-images', '8', '--backbone', 'auto',
                 '--no-fetch',
                 '--input-size', 'x'.join(map(str, TINY_CONFIG.input_hw)),
                 '--num-local', str(TINY_CONFIG.num_local), '--device', 'cpu'])
    assert code == 0
    text = capsys.readouterr().out
    # No checkpoint and no cached fallback: random weights, said plainly, with the way out.
    assert 'weights are random: numbers mean nothing' in text
    assert '--checkpoint CVPR23_DeitS_Rerank.pth' in text
    assert 'R@1' in text and 'latency' in text
    summary = json.loads((out / 'demo_summary.json').read_text())
    assert summary['backbone'] == 'r2former' and summary['weights'] == 'random'
    result = json.loads((out / 'eval.json').read_text())
    assert result['num_queries'] == 8 and result['num_map_places'] == 8
    assert set(result['recall_reranked']) == {'1', '5', '10', '20'}
    for key in ('matches_png', 'matches_html'):
        assert Path(summary[key]).stat().st_size > 0
    assert len(summary['plots']) >= 3 and all(Path(p).is_file() for p in summary['plots'])
    assert (out / 'map' / 'manifest.json').is_file()
    if summary['result_bag'] is not None:
        assert (out / 'result_bag' / 'metadata.yaml').is_file()
