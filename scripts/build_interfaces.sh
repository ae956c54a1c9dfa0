#!/usr/bin/env bash
# Generate msg/ into a virtual environment that got ROS 2 from PyPI wheels (no system ROS).
# Usage: build_interfaces.sh VENV BUILD_DIR [PREFIX]   (PREFIX defaults to VENV)
# Fails loudly, and the venv's stamp stays unset, if anything in the chain is broken: the last step
# imports and serialises the generated types in a fresh interpreter.
set -euo pipefail
venv=$(cd "$1" && pwd)
build=$2
prefix=${3:-$venv}
py="$venv/bin/python"
src=$(cd "$(dirname "$0")/.." && pwd)

# The wheels' exported CMake files hard-code the include folders of the machine that built them.
py_include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$py" -c 'import numpy; print(numpy.get_include())')
mapfile -t exports < <(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+/' "$venv/share" --include='*.cmake' || true)
if ((${#exports[@]})); then
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_include}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_include}#g" \
    "${exports[@]}"
fi

rm -rf "$build"
mkdir -p "$build"
export AMENT_PREFIX_PATH="$venv"
export PATH="$venv/bin:$PATH"
cmake -S "$src" -B "$build" \
  -DVSEG_INTERFACES_ONLY=ON \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCMAKE_PREFIX_PATH="$venv" \
  -DPython3_EXECUTABLE="$py" \
  -DBUILD_TESTING=OFF >"$build/cmake.log" 2>&1 || { cat "$build/cmake.log" >&2; echo "build_interfaces: cmake configure failed" >&2; exit 1; }
cmake --build "$build" -j"$(nproc)" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log" >&2; echo "build_interfaces: message build failed" >&2; exit 1; }
cmake --install "$build" >"$build/install.log" 2>&1 || { tail -50 "$build/install.log" >&2; echo "build_interfaces: install failed" >&2; exit 1; }

[[ "$prefix" == "$venv" ]] || exit 0
"$py" - <<'PY' || { echo "build_interfaces: the generated messages do not import; the venv is not usable" >&2; exit 1; }
from rclpy.serialization import deserialize_message, serialize_message
from vseg.msg import SegmentationClasses, SegmentationInfo

info = SegmentationInfo(model="check", frames_processed=3)
assert deserialize_message(serialize_message(info), SegmentationInfo).frames_processed == 3
SegmentationClasses(names=["a"], colors=[1, 2, 3], ignore_index=-1)
print("vseg messages: built and importable")
PY
