"""`r2former demo` end to end on the bundled data (reduced image count and size)."""

import json
import logging
import re

from model_factory import TINY_CONFIG
import pytest

from r2former_ros.cli.main import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path / 'empty-cache'))
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)
    out = tmp_path / 'demo'
    with caplog.at_level(logging.INFO):
        code = main(['demo', '--out', str(out), '--max-images', '8', '--backbone', 'auto',
                     '--no-fetch',
                     '--input-size', 'x'.join(map(str, TINY_CONFIG.input_hw)),
                     '--num-local', str(TINY_CONFIG.num_local), '--device', 'cpu'])
    assert code == 0
    text = capsys.readouterr().out
    # No checkpoint and no cached fallback: random weights, said plainly, with the way out.
    assert 'weights are random: numbers mean nothing' in text
    assert '--checkpoint CVPR23_DeitS_Rerank.pth' in text
    # One table: recall rows, confidence quality, latency per stage.
    for row in ('global retrieval only', '+ reranking (single frame)',
                '+ sequence filter (published)', 'ECE', 'published as match',
                'latency per frame (ms)', 'extract', 'filter', 'total'):
        assert row in text, row
    # The query traverse is localized once (stage 3), then measured (stage 4).
    assert text.count('[3/4] localizing') == 1 and '[4/4] measuring' in text
    assert not any('fontManager' in r.getMessage() for r in caplog.records)
    summary = json.loads((out / 'demo_summary.json').read_text())
    assert summary['backbone'] == 'r2former' and summary['weights'] == 'random'
    result = json.loads((out / 'eval.json').read_text())
    assert result['num_queries'] == 8 and result['num_map_places'] == 8
    assert set(result['recall_reranked']) == {'1', '5', '10', '20'}
    # Exact hits are the query traverse's 1 m side offset away (the map's ENU origin is the
    # first GPS fix, half a frame before frame 0; distances must not carry that 5 m).
    hits = [d for d in result['track']['distance_m'] if d is not None and d < 5.0]
    assert all(abs(d - 1.0) < 0.05 for d in hits)
    page = (out / 'report.html').read_text()
    # Self-contained: every image is embedded, none is linked.
    assert re.findall(r'<img src="([^"]*)"', page)
    assert all(src.startswith('data:image/png;base64,') for src in
               re.findall(r'<img src="([^"]*)"', page))
    for caption in ('Recall@N', 'Reliability diagram', 'along the drive', 'query frame'):
        assert caption in page, caption
    assert list((out / 'matches').glob('match_*.png'))
    assert (out / 'map' / 'manifest.json').is_file()
    assert (out / 'result_bag' / 'metadata.yaml').is_file()


def test_demo_out_must_not_be_a_file(tmp_path, capsys):
    target = tmp_path / 'a_file'
    target.write_text('x')
    assert main(['demo', '--out', str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f'r2former demo: error: --out {target} is a file; give a directory (it is ' \
                  'created if missing)'


def test_pictures_show_wrong_answers_and_spread_the_rest():
    import numpy as np

    from r2former_ros.cli.demo_report import pick_pictures

    right = np.ones(10, dtype=bool)
    right[[1, 4]] = False
    picks = pick_pictures(right, count=4, wrong=2)
    assert {1, 4} <= set(picks) and len(picks) == 4 and picks == sorted(picks)
    assert len(pick_pictures(np.ones(3, dtype=bool), count=6)) <= 3


def test_a_failed_demo_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'<html>not a checkpoint</html>')
    out = tmp_path / 'demo'
    assert main(['demo', '--out', str(out), '--max-images', '4', '--backbone', 'r2former',
                 '--checkpoint', str(bad), '--device', 'cpu']) == 2
    assert not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
