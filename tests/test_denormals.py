"""ONNX Runtime runs with denormals flushed to zero, and the application's thread keeps its own mode."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dtp_deploy.runtime.backends import OrtBackend
from dtp_deploy.runtime.denormals import FlushDenormals

pytestmark = pytest.mark.skipif(not FlushDenormals.available(), reason="no fegetenv/fesetenv here")

# The smallest normal float32 is 1.18e-38: a quarter of 2.4e-38 is a denormal unless flushed.
NORMAL = np.float32(2.4e-38)
QUARTER = np.float32(0.25)
ROOT = Path(__file__).resolve().parents[1]


def _quartering_graph(path):
    """``scores = images * 0.25``, ``keep_counts = shape(images)``: the outputs a backend needs."""
    nodes = [helper.make_node("Constant", [], ["q"], value=helper.make_tensor("q", TensorProto.FLOAT, [], [0.25])),
             helper.make_node("Mul", ["images", "q"], ["scores"]),
             helper.make_node("Shape", ["images"], ["keep_counts"])]
    graph = helper.make_graph(nodes, "quarter", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 1, 1, 1])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("keep_counts", TensorProto.INT64, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.mark.parametrize("threads", [1, 2])
def test_runs_flush_denormals(tmp_path, threads):
    backend = OrtBackend(_quartering_graph(tmp_path / "q.onnx"), threads=threads)
    scores, _ = backend.run(np.full((1, 1, 1, 1), NORMAL, np.float32))
    assert scores.item() == 0.0


def test_the_calling_thread_keeps_its_mode(tmp_path):
    # ONNX Runtime switches the mode on in the thread that creates the process's first session,
    # so this needs a process of its own
    script = f"""
import numpy as np
from dtp_deploy.runtime.backends import OrtBackend
normal, quarter = np.float32({NORMAL!r}), np.float32({QUARTER!r})
assert normal * quarter != 0
backend = OrtBackend({str(_quartering_graph(tmp_path / "q.onnx"))!r}, threads=1)
assert normal * quarter != 0, "creating the session changed this thread's mode"
assert backend.run(np.full((1, 1, 1, 1), normal, np.float32))[0].item() == 0
assert normal * quarter != 0, "running the session changed this thread's mode"
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)


def test_runs_from_other_threads_flush_too(tmp_path):
    backend = OrtBackend(_quartering_graph(tmp_path / "q.onnx"), threads=1)
    results = []

    def run():
        results.append(backend.run(np.full((1, 1, 1, 1), NORMAL, np.float32))[0].item())
        results.append(bool(NORMAL * QUARTER != 0))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert results == [0.0, True]
