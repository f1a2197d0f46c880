#!/usr/bin/env bash
# The one-command GPU check (within 8 minutes on one H100/H200; gpu.py skips its
# optional sections when its --budget runs low):
#   bash bench/gpu.sh [BR35H_FOLDER] [extra bench/gpu.py options]
# Needs CUDA torch, torchvision, efficientnet-pytorch and this project importable
# (pip install -e . or PYTHONPATH=src). Writes gpu_check.txt/.json to $OUT or ".".
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/br35h}
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 470 python bench/gpu.py --data "$DATA" --budget 420 "$@"
