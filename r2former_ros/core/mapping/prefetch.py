"""A bounded background iterator: decoding overlaps inference while memory stays flat."""

from __future__ import annotations

from collections.abc import Iterator
import queue
import threading
from typing import Any, Generic, TypeVar

_T = TypeVar('_T')


class Prefetcher(Generic[_T]):
    """
    Runs an iterator in a background thread, at most ``depth`` items ahead of the consumer.

    Exceptions in the thread are re-raised in the consumer; closing (also on the consumer's
    errors and Ctrl-C) stops the thread after its current item and closes the iterator there,
    so the bag files it holds are released.
    """

    def __init__(self, items: Iterator[_T], depth: int) -> None:
        self._items = items
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='map-decode', daemon=True)

    def __enter__(self) -> Prefetcher[_T]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # Unblock a producer waiting on a full queue.
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put(('item', item)):
                    return
            self._put(('end', None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer thread
            self._put(('error', err))
        finally:
            close = getattr(self._items, 'close', None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[_T]:
        while True:
            kind, value = self._queue.get()
            if kind == 'end':
                return
            if kind == 'error':
                raise value
            yield value
