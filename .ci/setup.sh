#!/usr/bin/env bash
# One-time set-up of a development/CI environment in ./.venv (idempotent; reruns take seconds):
#   1. a virtualenv with the pinned test requirements (.ci/requirements.txt) and this package
#      installed in editable mode;
#   2. the ROS 2 Jazzy rclpy wheels and a cmake build of our messages (.ci/ros_setup.sh), x86_64 only;
#   3. the ROS 2 Jazzy tooling (launch, launch_testing, ros2cli, colcon) from ../shared/ros2_tooling
#      (or $R2FORMER_ROS2_TOOLING) when it is there, so the launch tests run; skipped otherwise.
# Users who only want the ROS-free tools can instead `pip install .` into any environment.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
START=$SECONDS
log() { printf '[setup %3ds] %s\n' "$((SECONDS - START))" "$*"; }
pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.r2former_requirements
WANT=$(cat .ci/requirements.txt setup.py | sha256sum | cut -c1-16)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$WANT" ]]; then
  # One line per step: the whole install takes minutes and pip -q prints nothing meanwhile.
  REQS=$(grep -vE '^\s*(#|$)' .ci/requirements.txt)
  HEAVY=$(grep -E '^(torch|torchvision)==' <<<"$REQS" || true)
  REST=$(grep -vE '^(torch|torchvision)==' <<<"$REQS" || true)
  if [[ -n $HEAVY ]]; then
    log "pip: $(tr '\n' ' ' <<<"$HEAVY")(the largest download, once)"
    # shellcheck disable=SC2086
    pip_install $HEAVY
  fi
  log "pip: $(wc -l <<<"$REST") more pinned packages from .ci/requirements.txt"
  # shellcheck disable=SC2086
  pip_install $REST
  log 'pip: this package, editable'
  pip_install --no-deps -e .
  echo "$WANT" > "$STAMP"
else
  log 'requirements already installed in .venv'
fi
log 'ROS 2 wheels and the package build (.ci/ros_setup.sh)'
bash .ci/ros_setup.sh .venv/bin/python

TOOLING=${R2FORMER_ROS2_TOOLING:-$ROOT/../shared/ros2_tooling}
if [[ $(uname -m) != x86_64 ]]; then
  log 'ROS 2 tooling: no ros-jazzy-* wheels on this machine; launch tests skip'
elif [[ -f $TOOLING/install.sh ]]; then
  log "ROS 2 tooling (launch, launch_testing, ros2cli, colcon) from $TOOLING"
  bash "$TOOLING/install.sh" .venv/bin/python
else
  log "ROS 2 tooling: $TOOLING not found; launch tests and the colcon build will skip"
fi
log "environment ready"
