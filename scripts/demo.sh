#!/usr/bin/env bash
# The main job: set everything up (idempotent), then run the demo training comparison
# (Fashion-MNIST, batch size 8: SGD vs TRSGD, Adam vs TRAdam; about 10 minutes on 2 cores).
# Extra arguments go to `tralgo demo` (see `tralgo demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Fashion-MNIST comes from Debian's package where it is missing and we may install it.
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${TRALGO_DATA:-}" ] \
   && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)..."
  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
   || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
   || echo "Could not install dataset-fashion-mnist; the demo will say where else it looks."
fi
. scripts/_python.sh
exec "$(project_python)" -m tralgo demo "$@"
