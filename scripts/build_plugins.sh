#!/usr/bin/env bash
# Configure and build the CUDA token kernels, their test binary and (when TensorRT headers are
# found) the TensorRT plugin library libdtp_plugins.so into build/plugins.
#
# TensorRT headers come from TensorRT_ROOT, else a system install. Beside them, the public
# headers of each TensorRT release in ../shared/third_party/tensorrt/<version>/include (when the
# repository sits in that layout) are compiled too: the glue and the C++ runtime's TensorRT
# backend are checked against every major version on each build.
#
#   scripts/build_plugins.sh                       # kernels (+ plugins if TensorRT headers are found)
#   TensorRT_ROOT=/opt/TensorRT scripts/build_plugins.sh
#   CUDAARCHS=90 scripts/build_plugins.sh          # fewer architectures, faster build
#   DTP_WERROR=1 RUN_CTEST=1 scripts/build_plugins.sh   # CI: warnings are errors, then ctest
#   BUILD_DIR=build/other scripts/build_plugins.sh
# Exit: 2 without nvcc; non-zero when the build or (RUN_CTEST=1) a test fails.
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
if [ "${DTP_WERROR:-0}" = 1 ]; then
  args+=(-DDTP_WERROR=ON)
fi
# Header versions of the repository layout (never copied into the project).
roots="${DTP_TRT_HEADER_ROOTS:-}"
layout="$(cd .. && pwd)/shared/third_party/tensorrt"
if [ -z "$roots" ] && [ -d "$layout" ]; then
  for header in "$layout"/*/include/NvInferRuntime.h; do
    [ -f "$header" ] || continue
    roots="${roots:+$roots;}$(dirname "$(dirname "$header")")"
  done
fi
args+=("-DDTP_TRT_HEADER_ROOTS=${roots}")
start=$(date +%s)
cmake "${args[@]}" "$@"
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"
echo "build_plugins: built into $build_dir in $(( $(date +%s) - start ))s"
if ! ls "$build_dir"/libdtp_plugins.so >/dev/null 2>&1; then
  echo "build_plugins: no TensorRT headers found (TensorRT_ROOT unset, none installed, no $layout):" \
       "built the kernels only; pass TensorRT_ROOT=<dir with include/NvInferRuntime.h> for the plugins" >&2
fi
if [ "${RUN_CTEST:-0}" = 1 ]; then
  ctest --test-dir "$build_dir" --output-on-failure
fi
