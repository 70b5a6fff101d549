"""Progress bars appear on a terminal only: logs and pipes get no redrawn bar lines."""

import io
import sys

from r2former_ros.core.progress import terminal_bar


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
