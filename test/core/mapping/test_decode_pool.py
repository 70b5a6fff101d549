"""The decoding thread pool: input order, errors handed back, real parallelism, clean stop."""

import threading

import numpy as np
import pytest

from r2former_ros.core.errors import ConfigError, ImageError
from r2former_ros.core.mapping.decode_pool import decode_in_order


def fake_decode(job: int) -> np.ndarray:
    if job % 5 == 3:
        raise ImageError(f'job {job} is corrupt')
    return np.full((2, 2, 3), job, np.uint8)


@pytest.mark.parametrize('threads', [1, 2, 4])
def test_results_keep_input_order_and_errors_are_yielded(threads):
    results = list(decode_in_order(range(40), fake_decode, threads))
    assert [job for job, _ in results] == list(range(40))
    for job, result in results:
        if job % 5 == 3:
            assert isinstance(result, ImageError) and f'job {job}' in str(result)
        else:
            assert int(result[0, 0, 0]) == job


def test_other_exceptions_reach_the_caller():
    def broken(job):
        raise RuntimeError('decoder crashed')

    with pytest.raises(RuntimeError, match='decoder crashed'):
        list(decode_in_order(range(3), broken, 2))


def test_two_images_are_decoded_at_the_same_time():
    """Both decodes must be inside at once: a barrier of 2 fails if they ran one by one."""
    barrier = threading.Barrier(2, timeout=20)

    def decode(job):
        barrier.wait()
        return np.zeros((1, 1, 3), np.uint8)

    assert len(list(decode_in_order(range(4), decode, 2))) == 4


def test_closing_early_stops_the_pool():
    before = {t.name for t in threading.enumerate()}
    started = []

    def decode(job):
        started.append(job)
        return np.zeros((1, 1, 3), np.uint8)

    stream = decode_in_order(range(10_000), decode, 2)
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate()
                if t.name.startswith('map-decode') and t.name not in before]
    # Bounded look-ahead: far from all 10k jobs were started.
    assert len(started) < 100


def test_bad_thread_count():
    with pytest.raises(ConfigError, match='decode threads'):
        list(decode_in_order([1], fake_decode, 0))
