#!/usr/bin/env bash
# Installs everything tralgo's tests, demo and experiments need, from scratch. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The local CPU build of torch: an unpinned `torch` would pull a multi-GB CUDA build.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[test]"
