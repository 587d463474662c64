"""Build the CUDA token kernels as a PyTorch extension (for GPU tests and micro-benchmarks).

This is a test/bench helper, not a runtime path: deployment uses the TensorRT plugin library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
SOURCES = (
    "tests/torch_binding.cpp",
    "tokenSplitPlugin/tokenSplitKernel.cu",
    "tokenReconstructPlugin/tokenReconstructKernel.cu",
)


def load_kernels(verbose: bool = False) -> Any:
    """Compile (cached by torch) and import the extension; needs nvcc and a CUDA build of torch."""
    from torch.utils.cpp_extension import load

    missing = [s for s in SOURCES if not (PLUGINS_DIR / s).is_file()]
    if missing:
        raise FileNotFoundError(f"kernel sources missing under {PLUGINS_DIR}: {missing} "
                                "(needs a source checkout)")
    return load(
        name="dtp_token_kernels_ext",
        sources=[str(PLUGINS_DIR / s) for s in SOURCES],
        extra_include_paths=[str(PLUGINS_DIR)],
        extra_cflags=["-O2", "-std=c++17"],
        extra_cuda_cflags=["-O3", "-std=c++17"],
        verbose=verbose,
    )
