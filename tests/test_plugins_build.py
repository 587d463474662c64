"""The CMake build of the kernels and the plugin library (run after scripts/build_plugins.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "plugins"
NO_DEVICE_EXIT = 77  # kernel_test's "skipped: no CUDA device"

needs_build = pytest.mark.skipif(not (BUILD / "CMakeCache.txt").is_file(),
                                 reason="build/plugins missing: run scripts/build_plugins.sh")


def _has_cuda_device() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@needs_build
def test_kernel_test_binary_built_and_runs():
    binary = BUILD / "dtp_kernel_test"
    assert binary.is_file() and os.access(binary, os.X_OK), f"{binary} was not built"
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    if _has_cuda_device():
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 case(s) failed" in result.stdout
    else:
        assert result.returncode == NO_DEVICE_EXIT, result.stdout + result.stderr
        assert "no CUDA device" in result.stdout


@needs_build
def test_plugin_library_exports_and_smoke():
    library = BUILD / "libdtp_plugins.so"
    smoke = BUILD / "dtp_plugin_smoke"
    if not library.is_file():
        pytest.skip("libdtp_plugins.so not built (no TensorRT headers at configure time)")
    result = subprocess.run([str(smoke), str(library)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 check(s) failed" in result.stdout
    nm = shutil.which("nm")
    if nm:
        symbols = subprocess.run([nm, "-D", "--defined-only", str(library)], capture_output=True,
                                 text=True, check=True).stdout.split()
        assert "getCreators" in symbols and "setLoggerFinder" in symbols
        undefined = subprocess.run([nm, "-D", "--undefined-only", str(library)],
                                   capture_output=True, text=True, check=True).stdout
        assert "nvinfer1" not in undefined and "getPluginRegistry" not in undefined


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("cmake") is None,
                    reason="needs nvcc and cmake")
def test_configure_without_tensorrt_says_how_to_get_plugins(tmp_path):
    result = subprocess.run(
        ["cmake", "-S", str(ROOT / "plugins"), "-B", str(tmp_path / "b"),
         f"-DTensorRT_ROOT={tmp_path / 'no-tensorrt'}", "-DTensorRT_INCLUDE_DIR=TensorRT_INCLUDE_DIR-NOTFOUND",
         "-DCMAKE_CUDA_ARCHITECTURES=80"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    if "TensorRT headers:" in result.stdout:
        pytest.skip("TensorRT headers are installed system-wide here")
    assert "TensorRT headers not found" in result.stdout
    assert "-DTensorRT_ROOT=" in result.stdout
