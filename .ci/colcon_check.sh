#!/usr/bin/env bash
# The package as users build it: `colcon build` in a temporary workspace (BUILD_TESTING on, so
# ament_lint_auto is configured), `ros2 pkg` / `ros2 launch --show-args` on the result, then the
# launch test (test/ros/test_launch.py) against that workspace's install.
# Needs the ROS 2 tooling that .ci/setup.sh installs from ../shared/ros2_tooling; skips without it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
START=$SECONDS
log() { printf '[colcon %3ds] %s\n' "$((SECONDS - START))" "$*"; }
if [[ ! -f $VENV/ros2_tooling_env.sh ]]; then
  log 'SKIP: the ROS 2 tooling is not installed in .venv (.ci/setup.sh installs it when'
  log '      ../shared/ros2_tooling exists); colcon build and the launch tests did not run'
  exit 0
fi
set +u  # the env files read unset variables
. "$VENV/ros2_tooling_env.sh"
set -u
WS=$(mktemp -d "${TMPDIR:-/tmp}/r2former_ros_ws.XXXXXX")
trap 'rm -rf "$WS"' EXIT
mkdir -p "$WS/src/r2former_ros"
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - \
  CMakeLists.txt package.xml msg srv r2former_ros scripts launch config rviz \
  | tar -C "$WS/src/r2former_ros" -xf -
log "colcon $(colcon version-check 2>/dev/null | grep -m1 -o 'colcon-core [0-9.]*' || true)"
log "colcon build --packages-select r2former_ros (BUILD_TESTING=ON) in $WS"
(cd "$WS" && colcon build --packages-select r2former_ros \
  --cmake-args -DBUILD_TESTING=ON -DPython3_EXECUTABLE="$VENV/bin/python") >"$WS/colcon.log" 2>&1 \
  || { tail -n 60 "$WS/colcon.log"; exit 1; }
grep -E '^(Finished|Summary)' "$WS/colcon.log" | sed 's/^/  /'
set +u
. "$WS/install/setup.bash"
set -u
log "ros2 pkg executables: $(ros2 pkg executables r2former_ros | tr '\n' ' ')"
log "ros2 launch --show-args: $(ros2 launch r2former_ros localize.launch.py --show-args \
  | grep -c "^    '") launch arguments"
log 'launch test against the colcon install (test/ros/test_launch.py)'
cd "$ROOT"
R2FORMER_ROS_PREFIX=$WS/install/r2former_ros "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  -s test/ros/test_launch.py
log 'done'
