"""Progress: a bar on a terminal only; logs and pipes get a plain line every period instead."""

import io
import sys

from r2former_ros.core.progress import LineProgress, terminal_bar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_is_silent_when_stderr_is_not_a_terminal(monkeypatch):
    piped = io.StringIO()
    monkeypatch.setattr(sys, 'stderr', piped)
    assert list(terminal_bar(True, iterable=range(5), desc='work')) == [0, 1, 2, 3, 4]
    assert piped.getvalue() == ''


def test_bar_draws_on_a_terminal_unless_disabled(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, 'stderr', terminal)
    assert list(terminal_bar(False, iterable=range(3), desc='quiet')) == [0, 1, 2]
    assert terminal.getvalue() == ''
    assert list(terminal_bar(True, iterable=range(3), desc='loud')) == [0, 1, 2]
    assert 'loud' in terminal.getvalue()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_off_a_terminal_a_long_step_prints_a_line_per_period(monkeypatch):
    piped = io.StringIO()
    monkeypatch.setattr(sys, 'stderr', piped)
    clock = FakeClock()
    with terminal_bar(True, total=100, unit='img', desc='extracting') as bar:
        bar.clock, bar.started, bar._last_line = clock, clock.now, clock.now
        for _ in range(10):
            clock.now += 10.0  # 10 s per 10 images: 1 image/s
            bar.update(10)
    lines = piped.getvalue().splitlines()
    # a line after 30, 60 and 90 s, and the final count
    assert lines == ['extracting: 30/100 img (30%), 1.0 img/s, about 70 s left',
                     'extracting: 60/100 img (60%), 1.0 img/s, about 40 s left',
                     'extracting: 90/100 img (90%), 1.0 img/s, about 10 s left',
                     'extracting: 100/100 img (100%), 1.0 img/s, done in 100 s']
    assert '\r' not in piped.getvalue()


def test_a_step_that_ends_on_a_period_prints_its_last_line_once():
    out = io.StringIO()
    clock = FakeClock()
    with LineProgress(total=2, desc='extracting', unit='img', file=out, period_s=30.0,
                      clock=clock) as bar:
        for _ in range(2):
            clock.now += 30.0
            bar.update(1)
    assert out.getvalue().splitlines() == [
        'extracting: 1/2 img (50%), 30 s per img, about 30 s left',
        'extracting: 2/2 img (100%), 30 s per img, done in 60 s']


def test_line_progress_iterates_and_names_long_durations():
    out = io.StringIO()
    clock = FakeClock()
    progress = LineProgress(iterable=range(4), desc='calibrating', unit='query', file=out,
                            period_s=60.0, clock=clock)
    seen = []
    for item in progress:
        seen.append(item)
        clock.now += 3600.0  # an hour per query
    assert seen == [0, 1, 2, 3]
    assert out.getvalue().splitlines()[0] == \
        'calibrating: 1/4 query (25%), 60 min per query, about 3.0 h left'
    assert out.getvalue().splitlines()[-1].endswith('done in 4.0 h')
