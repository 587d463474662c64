"""INT8 quantization of portable graphs (``dtp_deploy.bench.quantize``) through the real
quantizers, on a graph small enough to read: what the quantized file holds, not only that it runs.
The end-to-end accuracy of INT8 rows is in ``test_bench.py``."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dtp_deploy.bench.quantize import quantize_onnxruntime


def _matmul_graph(path, weights: np.ndarray) -> None:
    """images (1, 3, 4, 4) -> flatten -> MatMul(weights) -> scores."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "weights"], ["scores"])],
        "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, weights.shape[1]])],
        [numpy_helper.from_array(np.array([1, 48], np.int64), "shape"),
         numpy_helper.from_array(weights, "weights")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_onnxruntime_int8_weights_use_seven_bits(tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    weights = np.random.default_rng(0).normal(size=(48, 8)).astype(np.float32)
    _matmul_graph(tmp_path / "f32.onnx", weights)
    images = np.random.default_rng(1).normal(size=(4, 3, 4, 4)).astype(np.float32)
    out = quantize_onnxruntime(tmp_path / "f32.onnx", tmp_path / "int8.onnx", images, 1)
    model = onnx.load(out)
    int8 = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.INT8]
    assert int8, "the MatMul weights should be stored as int8"
    # per output channel, the largest weight maps to the top of the (reduced) range
    top = np.abs(np.concatenate([w.ravel() for w in int8])).max()
    assert top == 64, f"weights span +-{top}: 8-bit weights saturate on CPUs without VNNI"


def test_onnxruntime_quantizer_advice_is_not_printed(tmp_path, caplog):
    pytest.importorskip("onnxruntime.quantization")
    _matmul_graph(tmp_path / "f32.onnx", np.ones((48, 8), np.float32))
    images = np.ones((2, 3, 4, 4), np.float32)
    with caplog.at_level("WARNING"):
        quantize_onnxruntime(tmp_path / "f32.onnx", tmp_path / "int8.onnx", images, 1)
    assert not [r for r in caplog.records if "pre-process" in r.getMessage()]
