"""
Stopping a node on SIGINT/SIGTERM in the order that never races: executor, node, context.

With rclpy's own signal handling, SIGINT shuts the context down at once, from another thread,
while the executor may be building its next wait set on it; that raises ``RCLError: failed to
initialize wait set: the given context is not valid`` instead of a clean stop (ros2/rclpy#1166
and ros2/ros2cli#854 discuss it). Here a signal only sets an event; the spinning loop sees it
within one poll, and the caller then shuts down the executor, the node and the context, in that
order. Use with ``rclpy.init(signal_handler_options=SignalHandlerOptions.NO)``.

A process that then leaves with ``os._exit`` (the node does: interpreter teardown of torch and
the DDS libraries is slow) must finalize its context first (:func:`release_context`): only
that deletes the DDS participant, whose Fast DDS shared-memory segment (64 MiB with the
large-image profile) otherwise stays in /dev/shm after every run until the machine reboots.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import gc
import signal
import threading
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.1  # how long a stop request waits at most for the loop to notice it


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Make SIGINT and SIGTERM set the yielded event (main thread only); restore on exit."""
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def spin_until(executor: Any, stop: threading.Event, context: Any) -> None:
    """Spin ``executor`` until ``stop`` is set or ``context`` is shut down by someone else."""
    while not stop.is_set() and context.ok():
        executor.spin_once(timeout_sec=POLL_S)


def release_context(context: Any) -> None:
    """
    Finalize a shut-down context now: its DDS participant and shared-memory segment go with it.

    Call it after destroying the node and the executor and dropping every reference to them:
    the collection frees their handles on the context, which is only finalized once unused.
    """
    gc.collect()
    context.destroy()
