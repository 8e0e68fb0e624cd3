#!/usr/bin/env bash
# Set up a virtual environment in .venv with flatkit and its dev tools (idempotent).
# Installs the CPU build of torch 2.13.0 first so pip never pulls several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
# compat: a path entry, not an import hook, so a script run beside a checkout folder named flatkit/ still imports
# this package (the hook loses to the empty namespace package such a folder looks like)
python -m pip install -q -e ".[dev]" --config-settings editable_mode=compat
# byte-compile flatkit: an editable install does not, and where PYTHONDONTWRITEBYTECODE is set (CI) every flatkit
# process would compile the modules it imports again, about 1 s of each command
python -m compileall -q flatkit >/dev/null
