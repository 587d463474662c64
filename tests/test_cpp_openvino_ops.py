"""The native OpenVINO ``dtp::TokenSplit`` / ``dtp::TokenReconstruct`` (``plugins/openvino``)
against the PyTorch reference (``dtp_deploy.ops.reference``), on ONNX graphs read through
OpenVINO's ONNX frontend with the extension loaded: random inputs drawn by Hypothesis with the
contract's edges (DESIGN.md section 2), the chain split -> split -> reconstruct the exported
graphs use, and nodes carrying the attributes the exporter and the TensorRT parser see.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from cpp_openvino_build import build_runtime, extension_path
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from dtp_deploy.ops import reference

ov = pytest.importorskip("openvino", reason="the openvino package is needed (pip install 'dtp-deploy[openvino]')")

PLUGIN_ATTRS = {"plugin_namespace": "dtp", "plugin_version": "1"}
# (threshold, context_topk, num_classes) of the compiled split graphs.
SPLITS = {"dtop": (0.5, 2, 4), "no-context": (0.5, 0, 0), "low": (-1.0, 1, 4)}


@pytest.fixture(scope="module")
def core():
    core = ov.Core()
    core.add_extension(str(extension_path(build_runtime())))
    return core


def _model(nodes, inputs, outputs) -> bytes:
    graph = helper.make_graph(nodes, "dtp_ops", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dtp", 1)])
    return model.SerializeToString()


def _tensor(name, dtype, dims):
    return helper.make_tensor_value_info(name, dtype, dims)


def split_graph(threshold, context_topk, num_classes, extra=None) -> bytes:
    node = helper.make_node("TokenSplit", ["tokens", "confidence", "label", "index"], ["kept", "kept_index"],
                            domain="dtp", threshold=threshold, context_topk=context_topk, num_classes=num_classes,
                            **PLUGIN_ATTRS, **(extra or {}))
    return _model([node],
                  [_tensor("tokens", TensorProto.FLOAT, ["B", "N", "C"]), _tensor("confidence", TensorProto.FLOAT, ["B", "N"]),
                   _tensor("label", TensorProto.INT32, ["B", "N"]), _tensor("index", TensorProto.INT32, ["B", "N"])],
                  [_tensor("kept", TensorProto.FLOAT, ["B", "M", "C"]), _tensor("kept_index", TensorProto.INT32, ["B", "M"])])


def compile_bytes(core, data: bytes):
    return core.compile_model(core.read_model(data, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


@pytest.fixture(scope="module")
def splits(core):
    return {name: compile_bytes(core, split_graph(*args)) for name, args in SPLITS.items()}


def run(compiled, *arrays):
    out = compiled.create_infer_request().infer(list(arrays))
    return [np.array(out[o]) for o in compiled.outputs]


def reference_split(tokens, confidence, label, index, threshold, context_topk, num_classes):
    """The reference, with the contract's NaN and out-of-range label edges written through it:
    a NaN confidence is not confident and takes no context slot, exactly like -inf (which
    ranks last in its label, so it never takes a slot from another token); a token whose
    label lies outside [0, num_classes) takes no context slot, so it is ranked as padding and
    kept on the threshold alone."""
    conf = torch.from_numpy(np.where(np.isnan(confidence), -np.inf, confidence).astype(np.float32))
    lab, idx = torch.from_numpy(label), torch.from_numpy(index)
    outside = (lab < 0) | (lab >= num_classes) if context_topk else torch.zeros_like(lab, dtype=torch.bool)
    keep = reference.keep_mask(conf, lab, torch.where(outside, -1, idx), threshold=threshold,
                               context_topk=context_topk)
    keep |= outside & (idx >= 0) & (conf <= threshold)
    # token_split with the keep decision above: kept rows compacted stably, the rest padding.
    forced = torch.where(keep, torch.full_like(conf, -np.inf), torch.full_like(conf, np.inf))
    kept, kept_index = reference.token_split(torch.from_numpy(tokens), forced, lab, idx, threshold=0.0)
    return kept.numpy(), kept_index.numpy()


def check_split(compiled, args, tokens, confidence, label, index):
    kept, kept_index = run(compiled, tokens, confidence, label, index)
    want, want_index = reference_split(tokens, confidence, label, index, *args)
    np.testing.assert_array_equal(kept_index, want_index)
    np.testing.assert_array_equal(kept, want)


@st.composite
def split_inputs(draw):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(1, 24))
    c = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # Few distinct values: ties and equality with the thresholds (0.5, -1.0) are common.
    values = np.array([0.0, 0.25, 0.5, 0.75, 1.0, -1.0, np.nan, np.inf, -np.inf], np.float32)
    confidence = values[rng.integers(0, len(values), (b, n))]
    label = rng.integers(-1, 6, (b, n)).astype(np.int32)  # -1, 4, 5: outside [0, 4)
    index = np.where(rng.random((b, n)) < 0.15, -1, np.arange(n) + 100).astype(np.int32)
    tokens = rng.standard_normal((b, n, c)).astype(np.float32)
    return tokens, confidence, label, index


@pytest.mark.parametrize("name", list(SPLITS))
@settings(max_examples=60, deadline=None)
@given(inputs=split_inputs())
def test_split_matches_reference(splits, name, inputs):
    check_split(splits[name], SPLITS[name], *inputs)


@pytest.mark.parametrize("case", ["all-pruned", "all-padding", "all-kept", "mixed-batch"])
def test_split_edges(splits, case):
    """M = 0 (nothing kept anywhere), every token kept, and images with different kept counts."""
    b, n, c = 2, 9, 3
    tokens = np.arange(b * n * c, dtype=np.float32).reshape(b, n, c) + 1
    label = np.zeros((b, n), np.int32)
    index = np.tile(np.arange(n, dtype=np.int32), (b, 1))
    confidence = np.full((b, n), 0.9, np.float32)
    if case == "all-padding":
        index[:] = -1
        confidence[:] = 0.0
    elif case == "all-kept":
        confidence[:] = 0.5  # equal to the threshold: stays
    elif case == "mixed-batch":
        confidence[0, ::2] = 0.1
    kept, kept_index = run(splits["no-context"], tokens, confidence, label, index)
    expected_width = {"all-pruned": 0, "all-padding": 0, "all-kept": n, "mixed-batch": 5}[case]
    assert kept.shape == (b, expected_width, c) and kept_index.shape == (b, expected_width)
    check_split(splits["no-context"], SPLITS["no-context"], tokens, confidence, label, index)
    if case == "mixed-batch":
        assert (kept[1] == 0).all() and (kept_index[1] == -1).all()


def test_unknown_attributes_are_ignored(core):
    """A node with an INT attribute a newer exporter may add (e.g. the grid's token count for
    TensorRT's size-tensor bound) still loads and splits the same."""
    compiled = compile_bytes(core, split_graph(0.5, 2, 4, extra={"max_tokens": 24}))
    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((2, 24, 3)).astype(np.float32)
    confidence = rng.random((2, 24)).astype(np.float32)
    label = rng.integers(0, 4, (2, 24)).astype(np.int32)
    index = np.tile(np.arange(24, dtype=np.int32), (2, 1))
    check_split(compiled, SPLITS["dtop"], tokens, confidence, label, index)


def test_missing_threshold_is_refused(core):
    node = helper.make_node("TokenSplit", ["t", "c", "l", "i"], ["k", "ki"], domain="dtp", context_topk=0)
    data = _model([node], [_tensor("t", TensorProto.FLOAT, [1, 4, 2]), _tensor("c", TensorProto.FLOAT, [1, 4]),
                           _tensor("l", TensorProto.INT32, [1, 4]), _tensor("i", TensorProto.INT32, [1, 4])],
                  [_tensor("k", TensorProto.FLOAT, None), _tensor("ki", TensorProto.INT32, None)])
    with pytest.raises(RuntimeError, match="threshold"):
        core.read_model(data, b"")


def chain_graph() -> bytes:
    """split -> split -> reconstruct, as the exported graphs chain them: the second split's
    confidence and label are channels 0 and 1 of the kept tokens (exact copies, so that no
    rounding decides a threshold), its index is the first split's kept_index."""
    def channel(src, k, name):
        return helper.make_node("Gather", [src, k], [name], axis=2)

    nodes = [
        helper.make_node("TokenSplit", ["tokens", "confidence", "label", "index"], ["kept1", "index1"], domain="dtp",
                         threshold=0.5, context_topk=1, num_classes=3, **PLUGIN_ATTRS),
        channel("kept1", "zero", "conf2"),
        channel("kept1", "one", "label2f"),
        helper.make_node("Cast", ["label2f"], ["label2"], to=TensorProto.INT32),
        helper.make_node("TokenSplit", ["kept1", "conf2", "label2", "index1"], ["kept2", "index2"], domain="dtp",
                         threshold=0.3, context_topk=1, num_classes=3, **PLUGIN_ATTRS),
        helper.make_node("TokenReconstruct", ["tokens", "kept2", "index2"], ["out"], domain="dtp", **PLUGIN_ATTRS),
    ]
    graph = helper.make_graph(
        nodes, "chain",
        [_tensor("tokens", TensorProto.FLOAT, ["B", "N", 3]), _tensor("confidence", TensorProto.FLOAT, ["B", "N"]),
         _tensor("label", TensorProto.INT32, ["B", "N"]), _tensor("index", TensorProto.INT32, ["B", "N"])],
        [_tensor("out", TensorProto.FLOAT, ["B", "N", 3]), _tensor("index2", TensorProto.INT32, ["B", "M"])],
        initializer=[helper.make_tensor("zero", TensorProto.INT64, [], [0]),
                     helper.make_tensor("one", TensorProto.INT64, [], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dtp", 1)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 3), n=st.integers(1, 30))
def test_chain_matches_reference(core, seed, b, n):
    compiled = getattr(test_chain_matches_reference, "_compiled", None)
    if compiled is None:
        compiled = test_chain_matches_reference._compiled = compile_bytes(core, chain_graph())
    rng = np.random.default_rng(seed)
    tokens = np.stack([rng.choice([0.1, 0.3, 0.6, 0.9], (b, n)), rng.integers(0, 3, (b, n)),
                       rng.standard_normal((b, n))], axis=-1).astype(np.float32)
    confidence = rng.choice(np.float32([0.2, 0.5, 0.7, 0.95]), (b, n))
    label = rng.integers(0, 3, (b, n)).astype(np.int32)
    index = np.tile(np.arange(n, dtype=np.int32), (b, 1))
    out, index2 = run(compiled, tokens, confidence, label, index)

    t = torch.from_numpy(tokens)
    kept1, idx1 = reference.token_split(t, torch.from_numpy(confidence), torch.from_numpy(label),
                                        torch.from_numpy(index), threshold=0.5, context_topk=1, num_classes=3)
    kept2, idx2 = reference.token_split(kept1, kept1[..., 0].contiguous(), kept1[..., 1].to(torch.int32), idx1,
                                        threshold=0.3, context_topk=1, num_classes=3)
    want = reference.token_reconstruct(t, kept2, idx2)
    np.testing.assert_array_equal(index2, idx2.numpy())
    np.testing.assert_array_equal(out, want.numpy())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 3), n=st.integers(1, 20), m=st.integers(0, 20),
       d=st.integers(1, 4))
def test_reconstruct_matches_reference(core, seed, b, n, m, d):
    compiled = getattr(test_reconstruct_matches_reference, "_compiled", None)
    if compiled is None:
        node = helper.make_node("TokenReconstruct", ["base", "updates", "index"], ["out"], domain="dtp", **PLUGIN_ATTRS)
        data = _model([node], [_tensor("base", TensorProto.FLOAT, ["B", "N", "D"]),
                               _tensor("updates", TensorProto.FLOAT, ["B", "M", "D"]),
                               _tensor("index", TensorProto.INT32, ["B", "M"])],
                      [_tensor("out", TensorProto.FLOAT, ["B", "N", "D"])])
        compiled = test_reconstruct_matches_reference._compiled = compile_bytes(core, data)
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((b, n, d)).astype(np.float32)
    updates = rng.standard_normal((b, m, d)).astype(np.float32)
    # Distinct positions per row (as a split writes them), some padding.
    index = np.stack([np.where(rng.random(m) < 0.2, -1, rng.permutation(max(n, m))[:m]) for _ in range(b)])
    index = np.where(index < n, index, -1).astype(np.int32)
    (out,) = run(compiled, base, updates, index)
    want = reference.token_reconstruct(torch.from_numpy(base), torch.from_numpy(updates), torch.from_numpy(index))
    np.testing.assert_array_equal(out, want.numpy())


def test_split_half_tokens(core):
    """FP16 graphs carry half tokens (confidence stays float): the rows move unchanged."""
    node = helper.make_node("TokenSplit", ["tokens", "confidence", "label", "index"], ["kept", "kept_index"],
                            domain="dtp", threshold=0.5, context_topk=1, num_classes=3, **PLUGIN_ATTRS)
    data = _model([node], [_tensor("tokens", TensorProto.FLOAT16, ["B", "N", "C"]),
                           _tensor("confidence", TensorProto.FLOAT, ["B", "N"]),
                           _tensor("label", TensorProto.INT32, ["B", "N"]), _tensor("index", TensorProto.INT32, ["B", "N"])],
                  [_tensor("kept", TensorProto.FLOAT16, ["B", "M", "C"]),
                   _tensor("kept_index", TensorProto.INT32, ["B", "M"])])
    compiled = compile_bytes(core, data)
    rng = np.random.default_rng(3)
    tokens = rng.standard_normal((2, 17, 5)).astype(np.float16)
    confidence = rng.choice(np.float32([0.1, 0.5, 0.8, 0.9]), (2, 17))
    label = rng.integers(0, 3, (2, 17)).astype(np.int32)
    index = np.tile(np.arange(17, dtype=np.int32), (2, 1))
    kept, kept_index = run(compiled, tokens, confidence, label, index)
    want, want_index = reference.token_split(torch.from_numpy(tokens), torch.from_numpy(confidence),
                                             torch.from_numpy(label), torch.from_numpy(index), threshold=0.5,
                                             context_topk=1, num_classes=3)
    np.testing.assert_array_equal(kept_index, want_index.numpy())
    np.testing.assert_array_equal(kept.astype(np.float16), want.numpy())
