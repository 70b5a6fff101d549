"""The benchmark timing rule: one warm-up call, then >= 5 repeats; median, min, all repeats."""

import pytest
import torch

from r2former_ros.bench import MIN_REPEATS, Timings, main, timed


def test_timed_reports_median_min_and_every_repeat_after_a_warm_up():
    calls = []
    timing = timed(lambda: calls.append(1), torch.device('cpu'), repeats=7, per=2)
    assert len(calls) == 8  # one warm-up call is not timed
    assert len(timing['repeats_ms']) == 7
    assert timing['min_ms'] == min(timing['repeats_ms'])
    assert timing['median_ms'] == sorted(timing['repeats_ms'])[3]


def test_fewer_than_five_repeats_are_refused(capsys):
    with pytest.raises(ValueError, match='at least 5'):
        timed(lambda: None, torch.device('cpu'), repeats=MIN_REPEATS - 1)
    with pytest.raises(SystemExit) as info:
        main(['--repeats', '3'])
    assert info.value.code == 2
    assert '--repeats and --batch-repeats must be at least 5' in capsys.readouterr().err


def test_timings_put_the_median_in_the_result_and_the_details_under_timings():
    result = {}
    measure = Timings(result, torch.device('cpu'), MIN_REPEATS)
    median = measure('work_ms', lambda: sum(range(1000)))
    assert result['work_ms'] == median == result['timings']['work_ms']['median_ms']
    assert len(result['timings']['work_ms']['repeats_ms']) == MIN_REPEATS
