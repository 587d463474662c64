"""Run plugin-flavour graphs (``dtp::TokenSplit`` / ``dtp::TokenReconstruct`` nodes) on the CPU
with ONNX Runtime, without TensorRT and without torch.

**A reference and test path, not a fast one.** The two ops run as Python callbacks
(onnxruntime-extensions "PyOps") on the numpy semantics of :mod:`dtp_deploy.ops.numpy_ref`;
every other node runs in ONNX Runtime as usual. It exists so that plugin graphs can be checked
against PyTorch on any machine. To deploy on CPU, export the portable flavour; on GPU, use
TensorRT with the plugins.

How: PyOps live in the ``ai.onnx.contrib`` domain and take float32 only (the Python custom-op
API has no float16), so :func:`to_pyop_graph` returns a *copy* of the graph whose ``dtp``
nodes are renamed to ``DtpTokenSplit`` / ``DtpTokenReconstruct`` in that domain (attributes
kept); in FP16 graphs their row inputs and outputs are cast to float32 and back, which is
exact because the ops only move data. The file on disk is never changed. Data-dependent output
widths, including ``M = 0``, come straight from the returned numpy arrays.

Needs ``onnxruntime`` and ``onnxruntime-extensions`` (``pip install onnxruntime-extensions``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from dtp_deploy.ops import numpy_ref

from .schemas import DTP_DOMAIN, MAX_TOKENS, register_dtp_schemas

_ROW_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
_ROW_INPUTS = {"TokenSplit": (0,), "TokenReconstruct": (0, 1)}  # row inputs; output 0 is rows
_registered = False


def _register_pyops() -> str:
    """Register the PyOps once per process; return the onnxruntime-extensions library path."""
    global _registered
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as err:
        raise RuntimeError(
            "running a plugin-flavour graph in ONNX Runtime needs onnxruntime-extensions "
            "(pip install onnxruntime-extensions); or export the portable flavour "
            "(dtp-export --flavour portable)") from err
    if _registered:
        return get_library_path()
    text, i32 = PyCustomOpDef.dt_string, PyCustomOpDef.dt_int32
    plugin_attrs = {"plugin_namespace": text, "plugin_version": text}
    split_attrs = {"threshold": PyCustomOpDef.dt_float, "context_topk": PyCustomOpDef.dt_int64,
                   "num_classes": PyCustomOpDef.dt_int64, MAX_TOKENS: PyCustomOpDef.dt_int64,
                   **plugin_attrs}

    def split(tokens, confidence, label, index, **attrs):
        return numpy_ref.token_split(tokens, confidence, label, index,
                                     threshold=float(attrs["threshold"]),
                                     context_topk=int(attrs["context_topk"]),
                                     num_classes=int(attrs["num_classes"]))

    def reconstruct(base, updates, index, **_attrs):
        return numpy_ref.token_reconstruct(base, updates, index)

    f32 = PyCustomOpDef.dt_float
    onnx_op(op_type="DtpTokenSplit", inputs=[f32, f32, i32, i32], outputs=[f32, i32],
            attrs=split_attrs)(split)
    onnx_op(op_type="DtpTokenReconstruct", inputs=[f32, f32, i32], outputs=[f32],
            attrs=plugin_attrs)(reconstruct)
    _registered = True
    return get_library_path()


def pyops_available() -> bool:
    """True when onnxruntime-extensions is installed, i.e. plugin graphs can run here."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime_extensions") is not None


def uses_dtp_domain(model: onnx.ModelProto) -> bool:
    """True when the graph has ``dtp`` nodes (a plugin-flavour graph)."""
    return any(node.domain == DTP_DOMAIN for node in model.graph.node)


def _load(model: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_model_from_string(model)
    return onnx.load(os.fspath(model))


def to_pyop_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose ``dtp`` nodes are the float32 PyOps of this module."""
    from onnxruntime_extensions import default_opset_domain

    register_dtp_schemas()
    typed = onnx.shape_inference.infer_shapes(model)
    elem_types = {v.name: v.type.tensor_type.elem_type
                  for v in (*typed.graph.input, *typed.graph.value_info, *typed.graph.output)}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    for number, node in enumerate(out.graph.node):
        if node.domain != DTP_DOMAIN:
            nodes.append(node)
            continue
        elem_type = elem_types.get(node.input[0], onnx.TensorProto.UNDEFINED)
        if elem_type not in _ROW_TYPES:
            raise ValueError(f"dtp::{node.op_type} node {node.name!r}: rows of type "
                             f"{onnx.TensorProto.DataType.Name(elem_type)} are not supported "
                             "(float or float16)")
        half = elem_type == onnx.TensorProto.FLOAT16
        tag = f"__dtp_pyop{number}"
        if half:
            for slot in _ROW_INPUTS[node.op_type]:
                name = f"{node.input[slot]}{tag}_in{slot}"
                nodes.append(onnx.helper.make_node("Cast", [node.input[slot]], [name],
                                                   to=onnx.TensorProto.FLOAT))
                node.input[slot] = name
        if node.op_type == "TokenSplit" and all(a.name != MAX_TOKENS for a in node.attribute):
            # Optional in the op (0 = unknown), but a PyOp needs every declared attribute.
            node.attribute.append(onnx.helper.make_attribute(MAX_TOKENS, 0))
        node.op_type, node.domain = f"Dtp{node.op_type}", default_opset_domain()
        nodes.append(node)
        if half:
            rows = node.output[0]
            node.output[0] = f"{rows}{tag}_out"
            nodes.append(onnx.helper.make_node("Cast", [node.output[0]], [rows],
                                               to=onnx.TensorProto.FLOAT16))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    imports = [o for o in out.opset_import if o.domain != DTP_DOMAIN]
    imports.append(onnx.helper.make_opsetid(default_opset_domain(), 1))
    del out.opset_import[:]
    out.opset_import.extend(imports)
    return out


def create_session(model: str | os.PathLike | bytes | onnx.ModelProto,
                   providers: Sequence[str] = ("CPUExecutionProvider",),
                   sess_options: Any = None):
    """An ``onnxruntime.InferenceSession`` for a graph of either flavour.

    Portable graphs are passed through unchanged; plugin graphs run their ``dtp`` nodes as
    the numpy PyOps (see the module docstring).
    """
    import onnxruntime as ort

    proto = _load(model)
    options = sess_options or ort.SessionOptions()
    if uses_dtp_domain(proto):
        options.register_custom_ops_library(_register_pyops())
        proto = to_pyop_graph(proto)
    return ort.InferenceSession(proto.SerializeToString(), sess_options=options,
                                providers=list(providers))


def run(model: str | os.PathLike | bytes | onnx.ModelProto, feeds: dict[str, np.ndarray],
        output_names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Run a graph once on the CPU (convenience for tests and checks)."""
    return create_session(model).run(None if output_names is None else list(output_names), feeds)
