#!/usr/bin/env bash
# GPU run, in the order that finds a broken build fastest:
#   1. the checks only a GPU with TensorRT can do (tests marked `trt`): the plugin library
#      registers both creators; the built-in model's two-split plugin graph builds into an engine
#      that matches ONNX Runtime; the C++ runtime on that engine gives the Python runtime's labels
#      (needs TensorRT_ROOT with include/ and lib/). A failure stops the script; skips are listed
#      with their reason in OUTDIR/gpu-checks.txt. SKIP_CHECKS=1 goes straight to the timings.
#   2. the timings below.
#
# PyTorch CUDA benchmark of random-weight DToP ViT-B (512x512) and ViT-L (640x640), batch 1/8/32,
# fp32 and fp16, dense vs pruned interleaved. Installs nothing: run it in an environment where
# dtp-deploy (with torch and matplotlib) is already installed.
#
# Random weights do not prune like a trained model, so the pruned variant uses a DToP-like keep
# schedule: per batch, each auxiliary head's threshold is set to the confidence quantile that
# keeps the scheduled fraction of tokens (docs/bench.md, "--keep-schedule").
#
# Usage: scripts/bench_gpu.sh [OUTDIR]      (default: $OUT, else ./bench-gpu)
# Env:   KEEP_SCHEDULE=0.7,0.5  DURATION=10 (seconds per configuration)  DEVICE=cuda
#        MODELS="random:dtop-vit-b@512 random:dtop-vit-l@640"  BATCHES="1 8 32"  PRECISIONS="fp32 fp16"
# Exit:  non-zero if any run failed; each run's JSON and PNG are kept.
set -euo pipefail

outdir="${1:-${OUT:-bench-gpu}}"
keep="${KEEP_SCHEDULE:-0.7,0.5}"
duration="${DURATION:-10}"
device="${DEVICE:-cuda}"
models="${MODELS:-random:dtop-vit-b@512 random:dtop-vit-l@640}"
batches="${BATCHES:-1 8 32}"
precisions="${PRECISIONS:-fp32 fp16}"
python="${PYTHON:-python}"

mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"
cd "$(dirname "$0")/.."  # the checks name tests and build folders of the repository
"$python" - "$device" <<'EOF'
import sys
import torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("bench_gpu.sh: torch sees no CUDA device (set DEVICE=cpu for a dry run)")
EOF

if [ "${SKIP_CHECKS:-0}" != 1 ]; then
    if command -v nvcc >/dev/null 2>&1 && [ ! -f build/plugins/libdtp_plugins.so ]; then
        CUDAARCHS="${CUDAARCHS:-native}" scripts/build_plugins.sh
    fi
    echo "== GPU checks (TensorRT): plugin library, two-split engine vs ONNX Runtime, C++ runtime"
    "$python" -m pytest -q -p no:cacheprovider -x -rs -m trt \
        tests/test_trt.py::test_plugin_library_registers_both_creators \
        tests/test_trt.py::test_two_split_plugin_engine_matches_onnx_runtime \
        tests/test_trt.py::test_cpp_runtime_on_the_plugin_engine 2>&1 | tee "$outdir/gpu-checks.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "bench_gpu.sh: GPU checks failed (see $outdir/gpu-checks.txt)" >&2; exit 1; }
fi

batch_args=()
for b in $batches; do batch_args+=(--batch "$b"); done

status=0
for spec in $models; do
    model="${spec%@*}"
    size="${spec##*@}"
    name="${model#random:}-${size}"
    for precision in $precisions; do
        extra=()
        if [[ "$precision" == "fp16" ]]; then
            if [[ "$device" != "cuda" ]]; then continue; fi
            extra+=(--fp16)
        fi
        stem="$outdir/${name}-${precision}"
        echo "== $model ${size}x${size} $precision on $device, keep schedule $keep"
        "$python" -m dtp_deploy.bench "$model" --backend torch --device "$device" --size "$size" \
            "${batch_args[@]}" "${extra[@]}" --keep-schedule "$keep" --duration "$duration" \
            --warmup 5 --pool 64 --scenes 0 --json-out "$stem.json" --plot "$stem.png" \
            --markdown "$stem.md" || status=1
    done
done
echo "results in $outdir"
exit $status
