"""The dev environment script lets a node started by `ros2 launch` or `ros2 run` find our msgs."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


def test_a_process_started_from_the_env_script_imports_the_messages(tmp_path):
    prefix = os.environ.get('R2FORMER_ROS_PREFIX')
    if not prefix:
        pytest.skip('source _ci/ros_env.sh first (written by .ci/ros_setup.sh)')
    env_file = Path(prefix).parent / 'ros_env.sh'  # .ci/ros_setup.sh writes both in its CI_DIR
    assert env_file.is_file(), env_file
    # A fresh shell, outside the checkout (as `ros2 launch` starts the installed node script):
    # the source tree is not on the path there, only what the script exports.
    clean = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    probe = 'import r2former_ros.msg, r2former_ros.srv; print(r2former_ros.msg.PlaceRecognition)'
    done = subprocess.run(['bash', '-c', f'. "{env_file}" && "{sys.executable}" -c "{probe}"'],
                          cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'PlaceRecognition' in done.stdout
