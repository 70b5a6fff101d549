#!/usr/bin/env bash
# The ROS-layer tests (test/ros, without the launch test) against ROS 2 Kilted: the PyPI
# ros-kilted-* wheels (rclpy 9.1, Fast DDS 3.2) in a second small venv, _ci/kilted/venv, with our
# messages built against them into _ci/kilted. The heavy non-ROS packages (torch, faiss, ...) are
# not installed twice: _ci/kilted/venv reads them from .venv through a .pth file placed *after* its
# own site-packages, so every ROS module comes from the Kilted wheels.
# Runs after .ci/setup.sh; x86_64 only (like the wheels). Not covered: launch/launch_testing and
# ros2cli on Kilted (no Kilted build of the tooling bundle).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${1:-} != --clean-env ]]; then
  # Start from a clean environment: the caller may have sourced the Jazzy env files.
  exec env -i HOME="$HOME" PATH=/usr/local/bin:/usr/bin:/bin TMPDIR="${TMPDIR:-/tmp}" \
    LANG=C.UTF-8 bash "${BASH_SOURCE[0]}" --clean-env
fi
cd "$ROOT"
START=$SECONDS
log() { printf '[kilted %3ds] %s\n' "$((SECONDS - START))" "$*"; }
if [[ $(uname -m) != x86_64 ]]; then
  log "SKIP: no ros-kilted-* wheels for $(uname -m)"
  exit 0
fi
MAIN_SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [[ ! -x _ci/kilted/venv/bin/python ]]; then
  log 'creating _ci/kilted/venv'
  "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv _ci/kilted/venv
fi
KILTED_SITE=$(_ci/kilted/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The Kilted wheels go in while .venv is out of sight: pip would otherwise count .venv's Jazzy
# packages (the wheels' loader, numpy, ...) as installed and leave them out.
PTH=$KILTED_SITE/zz_r2former_main_venv.pth
rm -f "$PTH"
log 'ROS 2 Kilted wheels and the package build (.ci/ros_setup.sh)'
R2FORMER_ROS_DISTRO=kilted R2FORMER_ROS_CI_DIR=$ROOT/_ci/kilted \
  R2FORMER_ROS_PREFIX=$ROOT/_ci/kilted/install bash .ci/ros_setup.sh _ci/kilted/venv/bin/python
# "zz": site.py reads .pth files in name order; .venv's packages go after everything else.
echo "$MAIN_SITE" >"$PTH"
_ci/kilted/venv/bin/python -c 'import rclpy, importlib.metadata as m, sys
print("[kilted] rclpy", m.version("ros-kilted-rclpy"), "from", rclpy.__file__)
sys.exit("_ci/kilted/venv" not in rclpy.__file__)'
. _ci/kilted/ros_env.sh
export ROS_DISTRO=kilted  # as /opt/ros/kilted/setup.bash sets it (picks the Fast DDS 3 variable)
log 'tests: test/ros on Kilted (launch test excluded: the tooling bundle is Jazzy)'
_ci/kilted/venv/bin/python -m pytest -q -p no:cacheprovider -p no:launch_testing -p no:launch_ros \
  test/ros --ignore=test/ros/test_launch.py
log 'done'
