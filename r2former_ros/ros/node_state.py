"""
The localization node's plumbing that needs no ROS: mailbox, hand-off, loader thread, counters.

Three kinds of thread touch the node's state, and each piece below has one job in keeping them
apart:

* the executor's callbacks put frames into a one-slot :class:`Mailbox` (the worker takes the
  newest) and stamp each with the map generation it was received under;
* parameter changes, ``reset_filter`` and map swaps reach the worker through one
  :class:`Handoff` (one lock): the worker takes, per frame, one consistent :class:`Serving`
  (localizer, the parameters it was built with, the map's id and generation), the latest
  accepted parameters (it rebuilds the localizer itself when they differ) and whether to restart
  the filter first; nothing but the worker ever touches the localizer it uses;
* the heavy part of a map swap (opening the map, building its localizer and the places cloud)
  runs on one :class:`JobThread`, in request order, off the executor, so image reception and
  counting never pause, and the old map keeps serving until the swap is complete.

:class:`Stats` holds the counters reported in /diagnostics and at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
import queue
import threading
import time
from typing import Any, Generic, TypeVar

T = TypeVar('T')
P = TypeVar('P')  # the node's parameters type

STAGES = ('decode', 'extract', 'retrieve', 'rerank', 'total')


@dataclass
class Frame:
    """An image message waiting for the worker."""

    msg: Any  # sensor_msgs Image or CompressedImage
    received: float  # time.perf_counter() at the callback
    generation: int = 0  # Handoff.generation when it was received: which map it belongs to


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


@dataclass(frozen=True)
class Serving(Generic[P]):
    """What the worker localizes with; replaced whole, never changed in place."""

    localizer: Any  # core Localizer
    params: P  # the node parameters the localizer was built with
    map_id: str
    generation: int  # increases with every map swap


class Handoff(Generic[P]):
    """
    The one locked hand-off to the worker: the serving localizer, the latest parameters, resets.

    Writers (the executor's callbacks, the loader thread) replace the :class:`Serving` whole or
    raise the reset flag; the worker takes all of it at once per frame (:meth:`for_frame`), so
    it never sees half a change, and a change is never lost between a read and a clear.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serving: Serving[P] | None = None
        self._latest: P | None = None  # the latest accepted parameters (maybe not built yet)
        self._reset = False

    @property
    def generation(self) -> int:
        """The map generation frames received now belong to."""
        with self._lock:
            return -1 if self._serving is None else self._serving.generation

    def serving(self) -> Serving[P] | None:
        """Return the current serving state (None when unconfigured)."""
        with self._lock:
            return self._serving

    def latest_params(self) -> P | None:
        """Return the latest accepted parameters (serving, or newer and being applied)."""
        with self._lock:
            return self._latest

    def start(self, serving: Serving[P]) -> None:
        """Configure: the first serving state."""
        with self._lock:
            self._serving, self._latest, self._reset = serving, serving.params, False

    def clear(self) -> None:
        """Cleanup: nothing serves."""
        with self._lock:
            self._serving = self._latest = None
            self._reset = False

    def accept_params(self, params: P) -> None:
        """Record newly accepted parameters (the worker applies them before its next frame)."""
        with self._lock:
            self._latest = params

    def request_reset(self) -> None:
        """Restart the sequence filter before the worker's next frame."""
        with self._lock:
            self._reset = True

    def swap_map(self, localizer: Any, params: P, map_id: str) -> Serving[P]:
        """Serve another map from now on; frames received before are not localized with it."""
        with self._lock:
            if self._serving is None:
                raise RuntimeError('the node was cleaned up while the map was loading')
            self._serving = Serving(localizer, params, map_id, self._serving.generation + 1)
            return self._serving

    def replace_localizer(self, before: Serving[P], localizer: Any,
                          params: P) -> Serving[P] | None:
        """
        Serve a localizer rebuilt for new parameters (same map) and return what serves now.

        When a map swap came first, that stays (it was built with the parameters of its time;
        newer ones are applied to it on the next frame).
        """
        with self._lock:
            if self._serving is before:
                self._serving = replace(before, localizer=localizer, params=params)
            return self._serving

    def for_frame(self) -> tuple[Serving[P] | None, P | None, bool]:
        """Take, for one frame, the serving state, the latest parameters and whether to reset."""
        with self._lock:
            reset, self._reset = self._reset, False
            return self._serving, self._latest, reset


class JobThread:
    """One background thread running submitted jobs in order; each job gets a Future."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = \
            queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue ``job``; its Future gets the return value or the exception."""
        future: Future[T] = Future()
        self._jobs.put((job, future))
        return future

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(err)

    def close(self, timeout: float) -> bool:
        """Cancel queued jobs, let the running one finish (up to ``timeout``); True if done."""
        pending = []
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                pending.append(item[1])
        for future in pending:
            future.cancel()
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


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
    dropped_at_swap: int = 0  # received before a map swap completed, so not localized after it
    odometry_fallbacks: int = 0  # frames whose filter step could not use the odometry
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
                     map_swaps=self.map_swaps, dropped_at_swap=self.dropped_at_swap,
                     odometry_fallbacks=self.odometry_fallbacks, max_total_ms=self.max_total_ms,
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
