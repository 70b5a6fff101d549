"""
The localization node's plumbing that needs no ROS: the frame mailbox and the counters.

The executor thread puts frames into a one-slot :class:`Mailbox`; the worker thread takes the
newest. :class:`Stats` holds the counters reported in /diagnostics and at shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import threading
import time
from typing import Any

STAGES = ('decode', 'extract', 'retrieve', 'rerank', 'total')


@dataclass
class Frame:
    """An image message waiting for the worker."""

    msg: Any  # sensor_msgs Image or CompressedImage
    received: float  # time.perf_counter() at the callback


class Mailbox:
    """One slot: ``put`` replaces what is waiting (and says so), ``take`` blocks for the next."""

    def __init__(self) -> None:
        self._item: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: Frame) -> bool:
        """Store ``item``; True when it replaced an unprocessed one (a drop)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def take(self) -> Frame | None:
        """Return the newest item, waiting for one; None once closed."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def discard(self) -> bool:
        """Drop the waiting item (deactivation); True when there was one."""
        with self._cond:
            had, self._item = self._item is not None, None
            return had

    def close(self) -> None:
        """Wake the worker and make ``take`` return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class Stats:
    """Counters since start plus a window of per-frame figures since the last diagnostics."""

    frames_in: int = 0
    processed: int = 0
    drops: int = 0
    bad_inputs: int = 0
    errors: int = 0
    matched: int = 0
    map_swaps: int = 0
    window_in: int = 0
    window_out: int = 0
    window_bad: int = 0
    window_start: float = field(default_factory=time.monotonic)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    last_confidence: float = float('nan')
    last_place: int = -1
    max_total_ms: float = 0.0

    def totals(self) -> Stats:
        """Copy of the counters since start (no window)."""
        return Stats(frames_in=self.frames_in, processed=self.processed, drops=self.drops,
                     bad_inputs=self.bad_inputs, errors=self.errors, matched=self.matched,
                     map_swaps=self.map_swaps, max_total_ms=self.max_total_ms,
                     last_confidence=self.last_confidence, last_place=self.last_place)

    def take_window(self, now: float) -> tuple[float, dict[str, list[float]], int, int, int]:
        """Return (seconds, latencies, frames in, out, bad) of the window and start a new one."""
        elapsed = max(now - self.window_start, 1e-6)
        window = {name: list(values) for name, values in self.latencies.items()}
        counts = (self.window_in, self.window_out, self.window_bad)
        for values in self.latencies.values():
            values.clear()
        self.window_in = self.window_out = self.window_bad = 0
        self.window_start = now
        return (elapsed, window, *counts)


def stage_summary(window: dict[str, list[float]]) -> dict[str, str]:
    """``{stage_ms_mean: ..., stage_ms_max: ...}`` of one diagnostics window (NaN when empty)."""
    values = {}
    for stage in STAGES:
        samples = window.get(stage, [])
        mean = sum(samples) / len(samples) if samples else float('nan')
        values[f'{stage}_ms_mean'] = f'{mean:.2f}'
        values[f'{stage}_ms_max'] = f'{max(samples) if samples else float("nan"):.2f}'
    return values
