#!/usr/bin/env bash
# Installs tralgo and what it needs into the interpreter chosen by scripts/_python.sh (the
# project's .venv unless PYTHON or a virtualenv says otherwise). Idempotent.
#   bash scripts/setup.sh               # the library + the experiment harness (what the demo needs)
#   bash scripts/setup.sh test          # + everything the test suite needs (JAX/optax, Lightning, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_python.sh
PY=$(project_python)
extras=${1:-experiments}
# The local CPU build of torch: an unpinned `torch` would pull a multi-GB CUDA build. A torch
# that is already installed (say a CUDA build you chose) is kept.
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[$extras]"
