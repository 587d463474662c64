#!/usr/bin/env bash
# The test command: builds the CUDA kernels when nvcc is present, then runs the test suite.
# GPU and TensorRT tests skip with their reason on machines without them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "no .venv: run scripts/setup.sh first" >&2
  exit 2
fi
if [ -x scripts/build_plugins.sh ] && command -v nvcc >/dev/null 2>&1; then
  scripts/build_plugins.sh
fi
# Test files run in parallel, one file per worker, so each file exports its models once.
exec .venv/bin/python -m pytest -n "${DTP_TEST_WORKERS:-auto}" --dist loadfile "$@"
