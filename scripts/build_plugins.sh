#!/usr/bin/env bash
# Configure and build the CUDA token kernels, their test binary and (when TensorRT headers are
# found) the TensorRT plugin library libdtp_plugins.so into build/plugins.
#
#   scripts/build_plugins.sh                       # kernels (+ plugins if TensorRT is installed)
#   TensorRT_ROOT=/opt/TensorRT scripts/build_plugins.sh
#   CUDAARCHS=90 scripts/build_plugins.sh          # fewer architectures, faster build
#   BUILD_DIR=build/other scripts/build_plugins.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build/plugins}"
if ! command -v nvcc >/dev/null 2>&1; then
  echo "build_plugins: nvcc not found on PATH; install the CUDA toolkit to build the kernels" >&2
  exit 2
fi
args=(-S plugins -B "$build_dir")
if [ -n "${TensorRT_ROOT:-}" ]; then
  args+=("-DTensorRT_ROOT=${TensorRT_ROOT}")
fi
if [ -n "${CMAKE_BUILD_TYPE:-}" ]; then
  args+=("-DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE}")
fi
start=$(date +%s)
cmake "${args[@]}" "$@"
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"
echo "build_plugins: built into $build_dir in $(( $(date +%s) - start ))s"
