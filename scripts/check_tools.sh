#!/usr/bin/env bash
# Stop `make venv` early, naming what this machine lacks, instead of failing deep inside a build.
set -u
python=${1:-python3}
missing=()
command -v "$python" >/dev/null 2>&1 || missing+=("$python (Python 3.10 or newer)")
command -v cmake >/dev/null 2>&1 || missing+=("cmake (apt-get install cmake)")
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing+=("a C++ compiler (apt-get install g++)")
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || missing+=("a C compiler (apt-get install gcc)")
command -v make >/dev/null 2>&1 || missing+=("make (apt-get install make)")
if command -v "$python" >/dev/null 2>&1; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || missing+=("Python 3.10 or newer (found $("$python" --version 2>&1))")
  "$python" -c 'import venv, ensurepip' 2>/dev/null || missing+=("Python's venv module with ensurepip (apt-get install python3-venv)")
  "$python" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing+=("the Python development headers, Python.h (apt-get install python3-dev)")
fi
if ((${#missing[@]})); then
  echo "make venv: this machine is missing:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
