"""The two token ops exported alone, in both flavours, against the torch reference, the
hand-worked edge table and the per-token loop of ``op_cases``.

Portable graphs run in plain ONNX Runtime; plugin graphs through the CPU test domain
(``exporters.ort_dtp_domain``). ``exported`` runs the whole ``torch.onnx.export`` path (symbolic
batch and token count) once per configuration; ``split_graph`` records just the split with the
exporter's own recorder, cheap enough to build one graph per attribute set that the edge table
and Hypothesis need.
"""

import functools
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from op_cases import (
    EDGE_CASES,
    assert_split_equal,
    edge_inputs,
    loop_kept_positions,
    split_arrays,
    split_from_positions,
)
from torch import nn

import dtp_deploy.ops.library  # noqa: F401  (registers torch.ops.dtp.*)
from dtp_deploy.ops import reference
from exporters.lowering import token_split_plugin, token_split_portable, translation_table
from exporters.ort_dtp_domain import create_session
from exporters.schemas import DTP_DOMAIN, register_dtp_schemas

NUM_CLASSES = 4
INPUT_NAMES = ["tokens", "confidence", "label", "index", "base"]
# (threshold, context_topk) of the fully exported graphs: DToP's context rule and M = 0 (M = N
# goes through whole-model exports with nothing exiting). The keep rule's other edges are
# covered per attribute set by ``split_graph`` below.
CONFIGS = {"context5": (0.5, 5), "all-exit": (-1.0, 0)}


class SplitReconstruct(nn.Module):
    """One split, then the kept rows written back over ``base``: both ops in one graph."""

    def __init__(self, threshold: float, context_topk: int) -> None:
        super().__init__()
        self.threshold, self.context_topk = threshold, context_topk

    def forward(self, tokens, confidence, label, index, base):
        kept, kept_index = torch.ops.dtp.token_split(tokens, confidence, label, index,
                                                     self.threshold, self.context_topk,
                                                     NUM_CLASSES)
        return kept, kept_index, torch.ops.dtp.token_reconstruct(base, kept, kept_index)


def make_inputs(batch, n, *, levels=1000, pad=0.0, scale=None, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    confidence = torch.randint(0, levels, (batch, n), generator=gen).float() / levels
    if scale is not None:  # a different confidence range per image: different keep counts
        confidence = (confidence * torch.tensor(scale)[:, None]).clamp(max=1.0)
    label = torch.randint(0, NUM_CLASSES, (batch, n), dtype=torch.int32, generator=gen)
    index = torch.stack([torch.randperm(n, generator=gen) for _ in range(batch)]).to(torch.int32)
    index = torch.where(torch.rand(batch, n, generator=gen) < pad, -1, index).to(torch.int32)
    tokens = torch.randn(batch, n, 6, generator=gen).to(dtype)
    base = torch.randn(batch, n, 6, generator=gen).to(dtype)
    return tokens, confidence, label, index, base


CASES = {
    "batch3-different-counts": dict(batch=3, n=40, scale=[0.3, 0.9, 1.4], seed=1),
    "ties": dict(batch=2, n=30, levels=3, seed=2),
    "padding": dict(batch=3, n=25, pad=0.3, seed=3),
    "batch1": dict(batch=1, n=17, seed=4),
    "one-token": dict(batch=2, n=1, seed=5),
}


@functools.cache
def exported(flavour: str, config: str, dtype: torch.dtype = torch.float32,
             opset: int = 18) -> onnx.ModelProto:
    threshold, topk = CONFIGS[config]
    batch, tokens = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("n", min=1, max=4096)
    rows, pairs = {0: batch, 1: tokens}, {0: batch, 1: tokens}
    dynamic = {"tokens": rows, "confidence": pairs, "label": pairs, "index": pairs, "base": rows}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            SplitReconstruct(threshold, topk), make_inputs(2, 8, dtype=dtype), dynamo=True,
            opset_version=opset, input_names=INPUT_NAMES,
            output_names=["kept_tokens", "kept_index", "out"], dynamic_shapes=dynamic,
            custom_translation_table=translation_table(flavour), verbose=False)
    return program.model_proto


def run_graph(flavour, proto, inputs):
    feeds = {name: value.numpy() for name, value in zip(INPUT_NAMES, inputs)}
    if flavour == "portable":  # plain ONNX Runtime, nothing registered
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    else:
        pytest.importorskip("onnxruntime_extensions", reason="plugin graphs run on the CPU "
                            "through onnxruntime-extensions PyOps")
        session = create_session(proto)
    return session.run(None, feeds)


def expected(config, inputs):
    threshold, topk = CONFIGS[config]
    tokens, confidence, label, index, base = inputs
    kept, kept_index = reference.token_split(tokens, confidence, label, index, threshold=threshold,
                                             context_topk=topk, num_classes=NUM_CLASSES)
    return kept, kept_index, reference.token_reconstruct(base, kept, kept_index)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("flavour", ["plugin", "portable"])
def test_ops_match_reference(flavour, config, case):
    inputs = make_inputs(**CASES[case])
    got = run_graph(flavour, exported(flavour, config), inputs)
    want = expected(config, inputs)
    for name, g, w in zip(["kept_tokens", "kept_index", "out"], got, want):
        assert g.shape == tuple(w.shape), name
        np.testing.assert_array_equal(g, w.numpy(), err_msg=name)
    width = want[1].shape[1]
    if config == "all-exit":
        assert width == 0


def test_batch_case_really_has_different_counts():
    inputs = make_inputs(**CASES["batch3-different-counts"])
    _, kept_index, _ = expected("context5", inputs)
    counts = (kept_index >= 0).sum(dim=1)
    assert len(set(counts.tolist())) == 3 and 0 < counts.min()


_SPLITS = {"plugin": token_split_plugin, "portable": token_split_portable}


@functools.cache
def split_graph(flavour: str, threshold: float, topk: int, num_classes: int,
                dtype: str = "float32", opset: int = 18) -> ort.InferenceSession:
    """A session over one split node lowered for ``flavour``, recorded by the same tracer that
    ``torch.onnx.export`` calls the lowering with (no torch.export round, which costs seconds)."""
    import onnx_ir as ir
    import onnxscript
    from onnxscript.values import Opset
    from torch.onnx._internal.exporter import _building, _tensors

    register_dtp_schemas()  # onnxscript looks the dtp ops up in onnx's schema registry
    default = Opset("", opset)
    tracer = _building.OpRecorder(default, {})
    specs = [("tokens", ir.DataType.from_numpy(np.dtype(dtype)), ["B", "N", "C"]),
             ("confidence", ir.DataType.FLOAT, ["B", "N"]),
             ("label", ir.DataType.INT32, ["B", "N"]), ("index", ir.DataType.INT32, ["B", "N"])]
    inputs = [_tensors.SymbolicTensor(default, name=name, shape=ir.Shape(shape),
                                      type=ir.TensorType(kind)) for name, kind, shape in specs]
    with onnxscript.evaluator.default_as(tracer):
        outputs = _SPLITS[flavour](*inputs, threshold, topk, num_classes)
    for value, name in zip(outputs, ["kept_tokens", "kept_index"]):
        value.name = name
    graph = ir.Graph(inputs, outputs, nodes=tracer.nodes,
                     opset_imports={"": opset, DTP_DOMAIN: 1})
    proto = ir.serde.serialize_model(ir.Model(graph, ir_version=10))
    if flavour == "portable":
        return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    pytest.importorskip("onnxruntime_extensions", reason="plugin graphs run on the CPU "
                        "through onnxruntime-extensions PyOps")
    return create_session(proto)


def _run_split(flavour, threshold, topk, num_classes, tokens, confidence, label, index):
    session = split_graph(flavour, threshold, topk, num_classes, str(tokens.dtype))
    return session.run(None, {"tokens": tokens, "confidence": confidence, "label": label,
                              "index": index})


@pytest.mark.parametrize("name", list(EDGE_CASES))
@pytest.mark.parametrize("flavour", ["plugin", "portable"])
def test_split_edge_cases(flavour, name):
    case = EDGE_CASES[name]
    tokens, confidence, label, index = edge_inputs(case)
    got = _run_split(flavour, case.threshold, case.topk, case.num_classes,
                     tokens, confidence, label, index)
    assert_split_equal(*got, *split_from_positions(tokens, index, case.kept))


@settings(max_examples=120, deadline=None)
@given(split_arrays(thresholds=(0.0, 0.5, 0.9), topks=(0, 1, 3))
       | split_arrays(thresholds=(0.5,), topks=(2,), dtype=np.float16))
def test_portable_split_matches_loop(case):
    tokens, confidence, label, index, threshold, topk, k = case
    got = _run_split("portable", threshold, topk, k, tokens, confidence, label, index)
    want = split_from_positions(tokens, index, loop_kept_positions(confidence, label, index,
                                                                   threshold, topk, k))
    assert_split_equal(*got, *want)


@pytest.mark.parametrize("flavour", ["plugin", "portable"])
def test_fp16_rows(flavour):
    inputs = make_inputs(**CASES["batch3-different-counts"], dtype=torch.float16)
    got = run_graph(flavour, exported(flavour, "context5", torch.float16), inputs)
    want = expected("context5", inputs)
    assert got[0].dtype == np.float16 and got[2].dtype == np.float16
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.numpy())


@pytest.mark.parametrize("flavour", ["plugin", "portable"])
def test_newest_supported_opset(flavour):
    from exporters.export import SUPPORTED_OPSETS

    opset = SUPPORTED_OPSETS[-1]
    proto = exported(flavour, "context5", opset=opset)
    assert {o.domain: o.version for o in proto.opset_import}[""] == opset
    inputs = make_inputs(**CASES["ties"])
    for got, want in zip(run_graph(flavour, proto, inputs), expected("context5", inputs)):
        np.testing.assert_array_equal(got, want.numpy())


def _attributes(node):
    return {a.name: (onnx.AttributeProto.AttributeType.Name(a.type), onnx.helper.get_attribute_value(a))
            for a in node.attribute}


def test_plugin_graph_has_exactly_the_dtp_nodes():
    proto = exported("plugin", "context5")
    dtp_nodes = [n for n in proto.graph.node if n.domain == DTP_DOMAIN]
    assert sorted(n.op_type for n in dtp_nodes) == ["TokenReconstruct", "TokenSplit"]
    assert all(n.domain in ("", "ai.onnx", DTP_DOMAIN) for n in proto.graph.node)
    assert {(o.domain, o.version) for o in proto.opset_import if o.domain == DTP_DOMAIN} == {("dtp", 1)}
    split = next(n for n in dtp_nodes if n.op_type == "TokenSplit")
    reconstruct = next(n for n in dtp_nodes if n.op_type == "TokenReconstruct")
    assert len(split.input) == 4 and len(split.output) == 2
    attrs = _attributes(split)
    assert attrs == {"threshold": ("FLOAT", pytest.approx(0.5)), "context_topk": ("INT", 5),
                     "num_classes": ("INT", NUM_CLASSES), "plugin_namespace": ("STRING", b"dtp"),
                     "plugin_version": ("STRING", b"1")}
    assert _attributes(reconstruct) == {"plugin_namespace": ("STRING", b"dtp"),
                                        "plugin_version": ("STRING", b"1")}
    assert len(reconstruct.input) == 3 and len(reconstruct.output) == 1


@pytest.mark.parametrize("config", ["context5", "all-exit"])
def test_portable_graph_is_standard_onnx(config):
    proto = exported("portable", config)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert all(o.domain in ("", "ai.onnx") for o in proto.opset_import)


def test_checker_and_strict_shape_inference_in_a_fresh_process(tmp_path):
    paths = []
    for flavour in ("plugin", "portable"):
        paths.append(tmp_path / f"{flavour}.onnx")
        onnx.save(exported(flavour, "context5"), paths[-1])
    script = textwrap.dedent("""
        import sys
        import onnx
        from exporters.schemas import register_dtp_schemas
        register_dtp_schemas()
        for path in sys.argv[1:]:
            onnx.checker.check_model(path, full_check=True)
            inferred = onnx.shape_inference.infer_shapes(onnx.load(path), strict_mode=True,
                                                         check_type=True)
            kept = {v.name: v for v in inferred.graph.output}["kept_tokens"]
            dims = kept.type.tensor_type.shape.dim
            assert len(dims) == 3 and dims[1].dim_param, dims  # M is symbolic
            print("ok", path)
    """)
    result = subprocess.run([sys.executable, "-c", script, *map(str, paths)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok") == 2


def test_schema_inference_names_m_and_keeps_types():
    register_dtp_schemas()
    node = onnx.helper.make_node("TokenSplit", ["t", "c", "l", "i"], ["kt", "ki"], name="split0",
                                 domain=DTP_DOMAIN, threshold=0.9, context_topk=5, num_classes=3)
    graph = onnx.helper.make_graph(
        [node], "g",
        [onnx.helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT16, ["B", 10, 8]),
         onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, ["B", 10]),
         onnx.helper.make_tensor_value_info("l", onnx.TensorProto.INT32, ["B", 10]),
         onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT32, ["B", 10])],
        [onnx.helper.make_tensor_value_info("kt", onnx.TensorProto.UNDEFINED, None),
         onnx.helper.make_tensor_value_info("ki", onnx.TensorProto.UNDEFINED, None)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18),
                                                         onnx.helper.make_opsetid(DTP_DOMAIN, 1)])
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = {v.name: v.type.tensor_type for v in inferred.graph.output}
    assert out["kt"].elem_type == onnx.TensorProto.FLOAT16
    assert [d.dim_param or d.dim_value for d in out["kt"].shape.dim] == ["B", "split0_M", 8]
    assert out["ki"].elem_type == onnx.TensorProto.INT32
    bad = onnx.helper.make_node("TokenSplit", ["t", "c", "l", "i"], ["kt", "ki"], domain=DTP_DOMAIN,
                                threshold="high", context_topk=5, num_classes=3)
    del graph.node[:]
    graph.node.append(bad)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(onnx.helper.make_model(graph, opset_imports=model.opset_import),
                                 full_check=True)
