#!/usr/bin/env bash
# Create .venv and install dtp-deploy with everything its CLIs and tests need.
#
# PyTorch is installed first, and which build you get depends on where it comes from:
#   DTP_TORCH=cpu   (default) the CPU-only build from PyTorch's CPU index
#                   (https://download.pytorch.org/whl/cpu, a few hundred MB). If that index
#                   cannot be reached, torch comes from the package index instead (see "index").
#   DTP_TORCH=cuda  torch from the package index on purpose: from PyPI on Linux x86-64 that is
#                   the CUDA build, with several GB of NVIDIA libraries. For machines with a GPU.
#   DTP_TORCH=index whatever the configured package index gives (pip's config, PIP_* variables,
#                   local wheels): the CUDA build from plain PyPI on Linux, a CPU build elsewhere.
# TORCH_VERSION pins the version (default 2.13.0). The end of the output says which build was
# installed. The lean runtime (dtp-run, no torch) needs only: pip install 'dtp-deploy[ort]'.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
torch_build="${DTP_TORCH:-cpu}"
torch_spec="torch==${TORCH_VERSION:-2.13.0}"
cpu_index="https://download.pytorch.org/whl/cpu"
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

[ -x .venv/bin/python ] || "$python" -m venv .venv
case "$torch_build" in
  cpu)
    if .venv/bin/python -c "import urllib.request as u; u.urlopen('$cpu_index/torch/', timeout=10)" \
        >/dev/null 2>&1 && "${pip[@]}" --index-url "$cpu_index" "$torch_spec"; then
      echo "torch: the CPU build from $cpu_index"
    else
      echo "torch: $cpu_index cannot be reached (or has no $torch_spec); installing $torch_spec" \
           "from the configured package index instead. From plain PyPI on Linux x86-64 that is" \
           "the CUDA build (several GB); the last line below says which build this is." >&2
      "${pip[@]}" "$torch_spec"
    fi ;;
  cuda|index)
    "${pip[@]}" "$torch_spec" ;;
  *)
    echo "DTP_TORCH=$torch_build: use cpu, cuda or index" >&2
    exit 2 ;;
esac
"${pip[@]}" -e ".[dev]"
# The tritonserver binary for dtp-serve and its tests, without the numpy<2 pin of its Python API.
"${pip[@]}" --no-deps "nvidia-pytriton>=0.7"
.venv/bin/python - <<'EOF'
import torch

build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
print(f"dtp-deploy installed in .venv: torch {torch.__version__} ({build})")
EOF
