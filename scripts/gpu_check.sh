#!/usr/bin/env bash
# One-shot GPU check (< 8 min on one GPU): the CUDA-parametrized tests, the step-cost table on
# CUDA (eager, torch fused, fused="compiled") and ResNet-18 batch-8 steps/s, SGD vs TRSGD.
# Run it with the python whose torch has CUDA:  PYTHON=/path/to/python bash scripts/gpu_check.sh
# Without CUDA it says so and exits 2 (nothing else is run): there is nothing to check on a CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False); nothing run" >&2
  exit 2
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name())'
status=0

echo "== 1/3 CUDA tests (parity, fused/compiled incl. inductor, low precision, hooks)"
timeout 300 "$PY" -m pytest -q -rs -k cuda tests/test_parity.py tests/test_fused.py tests/test_low_precision.py \
  || status=1
timeout 120 "$PY" -m pytest -q tests/test_hooks.py tests/test_fsdp.py || status=1

echo "== 2/3 step cost on CUDA: python benchmarks/step_overhead.py --device cuda --rounds 30"
timeout 180 "$PY" benchmarks/step_overhead.py --device cuda --rounds 30 || status=1

echo "== 3/3 ResNet-18 batch 8 on CUDA: python benchmarks/resnet_throughput.py --device cuda --steps 50 --repeats 3"
timeout 120 "$PY" benchmarks/resnet_throughput.py --device cuda --steps 50 --repeats 3 || status=1

exit $status
