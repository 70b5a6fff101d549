#!/usr/bin/env bash
# One-time set-up of a development/CI environment in ./.venv (idempotent; reruns take seconds):
#   1. a virtualenv with the pinned test requirements (.ci/requirements.txt) and this package
#      installed in editable mode;
#   2. the ROS 2 Jazzy rclpy wheels and a cmake build of our messages (.ci/ros_setup.sh), x86_64 only.
# Users who only want the ROS-free tools can instead `pip install .` into any environment.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
START=$SECONDS
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.r2former_requirements
WANT=$(cat .ci/requirements.txt setup.py | sha256sum | cut -c1-16)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$WANT" ]]; then
  echo "[setup] installing pinned requirements into .venv (torch alone is a few GB; once)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r .ci/requirements.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$WANT" > "$STAMP"
fi
bash .ci/ros_setup.sh .venv/bin/python
echo "[setup] environment ready in $((SECONDS - START)) s"
