#!/usr/bin/env bash
# Create .venv and install dtp-deploy with everything its CLIs and tests need (CPU).
# torch is pinned to a CPU build first: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
echo "dtp-deploy installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
