"""Builds ``plugins/runtime`` with its OpenVINO backend (and the ``plugins/openvino`` extension)
for the ``test_cpp_openvino*`` tests: once per build folder under ``build/``, kept between runs
(cmake rebuilds only what changed) and locked, so test files running in parallel wait for one
build instead of racing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def openvino_cmake_dir() -> Path:
    """Where the openvino Python package keeps OpenVINOConfig.cmake (the documented one-liner)."""
    ov = pytest.importorskip("openvino", reason="the openvino package is needed (pip install 'dtp-deploy[openvino]')")
    return Path(ov.__file__).parent / "cmake"


def build_runtime(name: str = "runtime-openvino", *, sanitize: bool = False, targets: tuple[str, ...] = ()) -> Path:
    """Configure and build ``plugins/runtime`` (``targets``, default all) into ``build/<name>``;
    returns that folder."""
    if shutil.which("cmake") is None or not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("cmake and a C++ compiler are needed to build plugins/runtime")
    folder = ROOT / "build" / name
    folder.mkdir(parents=True, exist_ok=True)
    configure = ["cmake", "-S", str(ROOT / "plugins" / "runtime"), "-B", str(folder), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DOpenVINO_DIR={openvino_cmake_dir()}", f"-DPython3_EXECUTABLE={sys.executable}",
                 f"-DDTP_RUNTIME_SANITIZE={'ON' if sanitize else 'OFF'}"]
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "CMakeCache.txt").is_file():
            done = subprocess.run(configure, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
            assert "OpenVINO backend ON" in done.stdout, done.stdout[-4000:]
        target_args = ["--target", *targets] if targets else []
        done = subprocess.run(["cmake", "--build", str(folder), "-j2", *target_args], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return folder


def extension_path(folder: Path) -> Path:
    return folder / "openvino" / ("libdtp_openvino_ops.so" if os.name != "nt" else "dtp_openvino_ops.dll")
