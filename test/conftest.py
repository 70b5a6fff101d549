"""Session-wide test settings (loaded before any test module imports torch)."""

import logging
import os

# Parity against the stored reference needs MKL's reproducible AVX2 path (r2former_ros/parity.py);
# it must be chosen before torch loads MKL.
os.environ.setdefault('MKL_CBWR', 'AVX2')

# launch_testing's pytest plugin (when installed) makes every later logger a LaunchLogger that does
# not propagate, which would hide our modules' records from caplog; use the standard class again.
logging.setLoggerClass(logging.Logger)
