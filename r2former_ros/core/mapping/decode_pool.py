"""
Decoding images in a thread pool, results in input order.

A 640x480 JPEG takes a few milliseconds to decode, longer than reading its message from a bag,
so one decoding thread caps a build at a few hundred images per second. cv2 releases the GIL
while it decodes (and converts colours), so threads decode in parallel while one thread keeps
reading the bag; no process pool, no pickling of image bytes. At most ``ahead`` images are in
flight, so memory stays flat for any bag size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
import os
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from r2former_ros.core.errors import ConfigError, ImageError

_Job = TypeVar('_Job')

DEFAULT_DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))
"""One decoding thread per core (up to 8): decoding is the CPU-bound part of reading a bag."""
_AHEAD_PER_THREAD = 4


def decode_in_order(
    jobs: Iterable[_Job], decode: Callable[[_Job], NDArray[np.uint8]],
    threads: int = DEFAULT_DECODE_THREADS,
) -> Generator[tuple[_Job, NDArray[np.uint8] | ImageError], None, None]:
    """
    Decode ``jobs`` with ``threads`` threads; yield ``(job, rgb or ImageError)`` in input order.

    An :class:`ImageError` is yielded, not raised, so the caller decides whether to skip the
    image; any other exception is raised in the caller. Closing the generator (the consumer
    stopped, failed or was interrupted) drops the queued work and waits for the running
    decodes, so no thread outlives it.
    """
    if threads < 1:
        raise ConfigError(f'decode threads must be >= 1, got {threads}')
    if threads == 1:
        for job in jobs:
            yield job, _decode_one(decode, job)
        return
    pending: deque[tuple[_Job, Future[NDArray[np.uint8] | ImageError]]] = deque()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix='map-decode')
    try:
        for job in jobs:
            pending.append((job, pool.submit(_decode_one, decode, job)))
            if len(pending) >= threads * _AHEAD_PER_THREAD:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decode_one(decode: Callable[[_Job], NDArray[np.uint8]],
                job: _Job) -> NDArray[np.uint8] | ImageError:
    try:
        return decode(job)
    except ImageError as err:
        return err
