#!/usr/bin/env bash
# The test command: builds the CUDA kernels when nvcc is present, then runs the test suite.
# GPU and TensorRT tests skip with their reason on machines without them. Extra arguments go
# to pytest, e.g. the quick loop while editing, without the built-in model's full exports:
#   scripts/test.sh -m "not slow"
#   scripts/test.sh tests/test_ops_reference.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "no .venv: run scripts/setup.sh first" >&2
  exit 2
fi
if [ -x scripts/build_plugins.sh ] && command -v nvcc >/dev/null 2>&1; then
  # Kernels, plugin glue and the C++ runtime's TensorRT backend against every TensorRT header
  # version found, warnings as errors; then their host-side tests (a failure stops here). One
  # CUDA architecture keeps nvcc fast (set CUDAARCHS for more).
  CUDAARCHS="${CUDAARCHS:-80}" DTP_WERROR=1 RUN_CTEST=1 scripts/build_plugins.sh
fi
# Test files run in parallel, one file per worker, so each file exports its models once.
exec .venv/bin/python -m pytest -n "${DTP_TEST_WORKERS:-auto}" --dist loadfile "$@"
