"""Progress of long core steps (map building, calibration): a bar on a terminal, else lines."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
import sys
import time
from typing import IO, Any

from tqdm import tqdm

# Seconds between two progress lines when stderr is not a terminal: often enough that a log shows
# the job is alive (a map build runs for minutes to hours), rare enough to stay readable.
LINE_PERIOD_S = 30.0


class LineProgress:
    """
    Progress as plain lines, at most one every ``period_s`` seconds, for logs and pipes.

    The first line comes after ``period_s`` (a step that ends sooner prints nothing) and, when any
    line was printed, a last one at the end. Supports what the callers use of tqdm: iteration,
    ``update``, ``close`` and ``with``.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None,
                 desc: str = '', unit: str = 'it', period_s: float = LINE_PERIOD_S,
                 file: IO[str] | None = None, clock: Callable[[], float] = time.monotonic,
                 **_tqdm_only: Any) -> None:
        if total is None and iterable is not None and hasattr(iterable, '__len__'):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc.strip()
        self.unit = unit
        self.period_s = period_s
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.n = 0
        self.started = clock()
        self._last_line = self.started
        self._lines = 0
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError('LineProgress made without an iterable')
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done; print a line when ``period_s`` passed since the last one."""
        self.n += n
        now = self.clock()
        finished = self.total is not None and 0 < self.total <= self.n  # close() prints it
        if now - self._last_line >= self.period_s and not finished:
            self._write(now)

    def close(self) -> None:
        """Print the final count, if a line was printed before."""
        if not self._closed and self._lines:
            self._write(self.clock(), final=True)
        self._closed = True

    def line(self, now: float, final: bool = False) -> str:
        """Return e.g. 'extracting: 120/5000 img (2%), 2.0 img/s, about 41 min left'."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.n / elapsed
        count = f'{self.n}/{self.total}' if self.total else f'{self.n}'
        parts = [f'{self.desc}: {count} {self.unit}' if self.desc else f'{count} {self.unit}']
        if self.total:
            parts[0] += f' ({100 * self.n / self.total:.0f}%)'
        # slow steps (seconds per query on a CPU) read better as time per item
        parts.append(f'{rate:.1f} {self.unit}/s' if rate >= 1 or not self.n
                     else f'{_duration(1 / rate)} per {self.unit}')
        if final:
            parts.append(f'done in {_duration(elapsed)}')
        elif self.total and rate > 0:
            parts.append(f'about {_duration((self.total - self.n) / rate)} left')
        return ', '.join(parts)

    def _write(self, now: float, final: bool = False) -> None:
        print(self.line(now, final), file=self.file, flush=True)
        self._last_line = now
        self._lines += 1


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f'{seconds:.0f} s'
    if seconds < 120 * 60:
        return f'{seconds / 60:.0f} min'
    return f'{seconds / 3600:.1f} h'


def terminal_bar(enabled: bool = True, **kwargs: Any) -> tqdm | LineProgress:
    """
    Make progress on stderr: a tqdm bar on a terminal, else a line every LINE_PERIOD_S seconds.

    Redrawn bars in a log file or a pipe (CI, ``ros2 launch``, ``2> build.log``) are hundreds of
    carriage-return lines of noise, yet a step that runs for minutes must show it is alive, so
    anything but a terminal gets periodic plain lines (:class:`LineProgress`). ``kwargs`` go to
    tqdm (``iterable``, ``total``, ``desc``, ``unit``, ``leave``, ...).
    """
    if enabled and not sys.stderr.isatty():
        return LineProgress(file=sys.stderr, **kwargs)
    kwargs.setdefault('dynamic_ncols', True)
    return tqdm(disable=not enabled, file=sys.stderr, **kwargs)
