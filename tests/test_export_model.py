"""Whole models exported with ``export_onnx`` and run in ONNX Runtime, against PyTorch.

Each graph is exported once per module (an export takes 10-20 s on two cores) and then run on
several inputs: batch 1 and batch 3 with a different keep count per image, the trained
non-square size and other sizes (dynamic graphs), and thresholds where nothing or everything
exits. The random model is a shallow dtop-vit-t (3 blocks, width 64) to keep exports quick;
the built-in dtop-vit-t is exported as shipped (``slow``). Graphs come from the run-wide
``export_cache`` (conftest), so a configuration is exported once whichever test asks first.
"""

import copy
import functools

import numpy as np
import onnx
import pytest
import torch

from dtp_deploy.metadata import ModelMetadata
from dtp_deploy.models import build_model
from exporters import ExportError, export_onnx
from exporters.export import METADATA_KEYS, count_dtp_nodes
from exporters.ort_dtp_domain import create_session, pyops_available

NEEDS_PYOPS = "plugin graphs run on the CPU through onnxruntime-extensions PyOps"

# Max |ONNX Runtime - PyTorch fp32| of the scores, per graph precision.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
SIZE = (128, 192)  # trained size of the random model: non-square
THRESHOLD = 0.3  # where the random model keeps a different number of tokens per image
# Above every confidence of the random model (at most ~0.46), so nothing exits, yet below 1: at
# 1 or more no token could exit and the export would leave the head and split out.
NOTHING_EXITS = 0.99
SHALLOW = dict(depth=3, stage_ends=(1, 2, 3), embed_dim=64, num_heads=2, head_dim=32,
               head_heads=2, head_layers=1)


@functools.cache
def random_model():
    torch.manual_seed(0)
    return build_model("dtop-vit-t", num_classes=5, img_size=SIZE, **SHALLOW).eval()


def images(batch, height, width, seed=0):
    """Noise with a different contrast per image, so each image keeps a different count."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.3, 1.0, 3.0][:batch] + [1.0] * max(0, batch - 3))
    return torch.randn(batch, 3, height, width, generator=gen) * scale[:, None, None, None]


def torch_outputs(model, thresholds, x):
    model = copy.deepcopy(model)
    model.set_thresholds(thresholds)
    with torch.inference_mode():
        return [t.numpy() for t in model(x)]


@functools.cache
def exported(cache, flavour, threshold, fp16=False, dynamic=False, batch=3):
    """The random model's graph for one configuration, exported once per test run
    (``export_cache`` in conftest), and a session on it. ``threshold``: one for both exits, or
    a tuple of one per exit."""
    thresholds = list(threshold) if isinstance(threshold, tuple) else [threshold] * 2

    def export(path):
        return export_onnx(random_model(), path, flavour=flavour, thresholds=thresholds,
                           fp16=fp16, dynamic_batch=dynamic, dynamic_shape=dynamic, batch=batch,
                           check=False, progress=False)

    name = "-".join(map(str, thresholds))
    path, report = cache(f"dtop-shallow-{flavour}-{name}-{fp16}-{dynamic}-{batch}", export)
    runnable = flavour == "portable" or pyops_available()
    return path, report, create_session(path) if runnable else None


def run(session, x, fp16=False):
    if session is None:
        pytest.skip(NEEDS_PYOPS)
    feed = x.numpy().astype(np.float16 if fp16 else np.float32)
    return session.run(["scores", "keep_counts"], {"images": feed})


@pytest.mark.parametrize("batch, height, width",
                         [(1, *SIZE), (3, *SIZE), (3, 160, 160), (2, 96, 224)],
                         ids=["b1-128x192", "b3-128x192", "b3-160x160", "b2-96x224"])
@pytest.mark.parametrize("flavour", ["plugin", "portable"])
def test_dynamic_graph_matches_pytorch(export_cache, flavour, batch, height, width):
    _, report, session = exported(export_cache, flavour, THRESHOLD, dynamic=True)
    assert report.input_shape[0] == "batch" and isinstance(report.input_shape[2], str)
    x = images(batch, height, width)
    scores, counts = run(session, x)
    want_scores, want_counts = torch_outputs(random_model(), [THRESHOLD] * 2, x)
    np.testing.assert_array_equal(counts, want_counts)
    assert scores.shape == (batch, 5, height // 16, width // 16)
    assert np.abs(scores - want_scores).max() <= TOLERANCE["fp32"]
    if batch == 3 and (height, width) == SIZE:  # the case must prune, differently per image
        assert len(set(counts[:, 1].tolist())) == 3 and (counts[:, -1] < counts[:, 0]).all()


# Only the all-exit portable graph: the DToP context rule alone carries tokens on. Nothing
# exiting is covered in FP16 by test_fp16_graph (plugin), M = 0 / M = N in both flavours by
# test_export_ops, and the everything-stops model graph by test_export_dovit.
@pytest.mark.parametrize("flavour, threshold", [("portable", -1.0)], ids=["portable-all-exit"])
def test_extreme_thresholds(export_cache, flavour, threshold):
    _, report, session = exported(export_cache, flavour, threshold)
    x = images(3, *SIZE, seed=1)
    scores, counts = run(session, x)
    want_scores, want_counts = torch_outputs(random_model(), [threshold] * 2, x)
    np.testing.assert_array_equal(counts, want_counts)
    assert np.abs(scores - want_scores).max() <= TOLERANCE["fp32"]
    assert (counts[:, 1:] <= 5 * 5).all()  # only the context tokens (5 per predicted class) go on


# The portable flavour's FP16 rows are covered by test_export_ops.test_fp16_rows; the FP16
# conversion of the rest of the graph does not depend on the flavour.
@pytest.mark.parametrize("flavour", ["plugin"])
def test_fp16_graph(export_cache, flavour):
    path, report, session = exported(export_cache, flavour, NOTHING_EXITS, fp16=True)
    proto = onnx.load(path, load_external_data=False)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    outputs = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert outputs == {"scores": onnx.TensorProto.FLOAT16, "keep_counts": onnx.TensorProto.INT32}
    x = images(3, *SIZE, seed=2)
    scores, counts = run(session, x, fp16=True)
    want_scores, want_counts = torch_outputs(random_model(), [NOTHING_EXITS] * 2, x)
    np.testing.assert_array_equal(counts, want_counts)
    assert np.abs(scores.astype(np.float32) - want_scores).max() <= TOLERANCE["fp16"]
    assert report.metadata["precision"] == "fp16"


def test_an_exit_switched_off_leaves_its_head_and_split_out(export_cache):
    """Threshold 1 on the second exit: no token can leave there, so the graph has one split and
    two reconstructs (the first and the final head), and still matches PyTorch."""
    path, _, session = exported(export_cache, "plugin", (THRESHOLD, 1.0))
    assert count_dtp_nodes(onnx.load(path)) == {"TokenSplit": 1, "TokenReconstruct": 2}
    if session is None:
        pytest.skip("onnxruntime-extensions is not installed: the plugin graph cannot run")
    x = images(3, *SIZE, seed=1)
    scores, counts = run(session, x)
    want_scores, want_counts = torch_outputs(random_model(), [THRESHOLD, 1.0], x)
    np.testing.assert_array_equal(counts, want_counts)
    assert (counts[:, 2] == counts[:, 1]).all() and (counts[:, 1] < counts[:, 0]).all()
    assert np.abs(scores - want_scores).max() <= TOLERANCE["fp32"]


def test_plugin_graph_nodes_and_metadata(export_cache):
    path, report, _ = exported(export_cache, "plugin", NOTHING_EXITS, fp16=True)
    proto = onnx.load(path)
    assert count_dtp_nodes(proto) == {"TokenSplit": 2, "TokenReconstruct": 3} == report.dtp_nodes
    thresholds = [a.f for n in proto.graph.node if n.op_type == "TokenSplit" for a in n.attribute
                  if a.name == "threshold"]
    assert thresholds == pytest.approx([NOTHING_EXITS] * 2)
    props = {p.key: p.value for p in proto.metadata_props}
    assert set(METADATA_KEYS.values()) <= set(props)
    meta = ModelMetadata.from_props(props)
    cfg = random_model().config
    assert (meta.flavour, meta.dense, meta.arch, meta.method) == ("plugin", False, cfg.arch, "dtop")
    assert meta.class_names == cfg.class_names and meta.mean == cfg.mean and meta.std == cfg.std
    assert meta.input_size == SIZE and meta.trained_size == SIZE
    assert meta.thresholds == (NOTHING_EXITS, NOTHING_EXITS)
    assert meta.stage_ends == cfg.stage_ends and meta.input_layout == "NCHW float16 normalised RGB"


def test_dense_and_argmax(tmp_path):
    path = tmp_path / "dense.onnx"
    report = export_onnx(random_model(), path, flavour="portable", dense=True,
                         postprocess="argmax", progress=False)
    assert report.checked and report.max_abs_diff <= TOLERANCE["fp32"] and report.keep_counts_match
    assert report.dtp_nodes == {} and report.outputs["labels"] == [1, *SIZE]
    x = images(1, *SIZE, seed=3)
    scores, counts, labels = create_session(path).run(None, {"images": x.numpy()})
    assert (counts == SIZE[0] * SIZE[1] // 256).all()
    full = torch.nn.functional.interpolate(torch.from_numpy(scores), size=SIZE, mode="bilinear",
                                           align_corners=False)
    assert labels.dtype == np.int32
    assert (labels == full.argmax(1).numpy()).mean() > 0.999  # exact up to float ties
    assert ModelMetadata.from_props({p.key: p.value for p in onnx.load(path).metadata_props}).dense


@pytest.mark.slow
def test_builtin_model_exports_and_checks(tmp_path):
    from dtp_deploy.builtin import load_builtin_model

    pytest.importorskip("onnxruntime_extensions", reason=NEEDS_PYOPS)
    model = load_builtin_model()
    report = export_onnx(model, tmp_path / "builtin.onnx", batch=3, progress=False)
    assert report.checked and report.keep_counts_match
    assert report.max_abs_diff <= TOLERANCE["fp32"]
    counts = np.array(report.keep_counts)
    assert (counts[:, -1] < counts[:, 0]).all(), "synthetic scenes must prune on the built-in model"


@pytest.mark.parametrize("kwargs, message", [
    (dict(height=100), "height 100 is not a positive multiple of the patch size 16; use e.g. 96"),
    (dict(flavour="tensorrt"), "unknown flavour 'tensorrt'"),
    (dict(opset=11), "opset 11 is not supported"),
    (dict(thresholds=[0.9]), "takes 2 threshold(s)"),
    (dict(postprocess="softmax"), "unknown postprocess"),
], ids=["size", "flavour", "opset", "thresholds", "postprocess"])
def test_bad_requests_fail_early_and_write_nothing(tmp_path, kwargs, message):
    target = tmp_path / "never.onnx"
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_onnx(random_model(), target, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    import types

    import exporters.export as export_module

    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    # No real export needed: a stand-in graph reaches the write and check steps at once.
    x = onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 128, 192])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["images"], ["scores"])],
                                   "stand_in", [x], [onnx.helper.make_tensor_value_info(
                                       "scores", onnx.TensorProto.FLOAT, [1, 3, 128, 192])])
    program = types.SimpleNamespace(model_proto=onnx.helper.make_model(graph))
    monkeypatch.setattr(export_module.torch.onnx, "export", lambda *a, **k: program)

    def broken(*args, **kwargs):
        raise onnx.checker.ValidationError("broken on purpose")

    monkeypatch.setattr(export_module.onnx.checker, "check_model", broken)
    with pytest.raises(ExportError, match="broken on purpose"):
        export_onnx(random_model(), target, flavour="portable", progress=False)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_exported_packed_block_runs_each_image_alone_an_empty_one_included(tmp_path):
    """A fixed-batch graph runs attention once per image on that image's rows (unrolled at
    export, row counts known only at run time). ONNX Runtime and OpenVINO run such a block on
    batches where an image has no rows left, or every image keeps all of them, as PyTorch does."""
    from dtp_deploy.models.vit import PackedRows

    block = random_model().encoder.blocks[0]

    class PackedBlock(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = block

        def forward(self, tokens, index):
            packed = PackedRows(index)
            return packed.unpack(self.block(packed.pack(tokens), None, packed))

    tokens = torch.randn(3, 4, block.attn.proj.in_features)
    cases = [torch.tensor([[0, 1, 2, -1], [-1, -1, -1, -1], [3, 1, -1, -1]], dtype=torch.int32),
             torch.full((3, 4), -1, dtype=torch.int32),
             torch.arange(4, dtype=torch.int32).expand(3, -1).contiguous()]
    width = torch.export.Dim("width", max=64)
    path = tmp_path / "packed_block.onnx"
    torch.onnx.export(PackedBlock().eval(), (tokens, cases[0]), path, dynamo=True,
                      dynamic_shapes=({1: width}, {1: width}))
    runners = {"onnxruntime": _ort_runner(path)}
    try:
        import openvino as ov
        request = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        runners["openvino"] = lambda feed: request.infer(feed)[0]
    except ImportError:
        pass
    for index in cases:
        with torch.inference_mode():
            want = PackedBlock()(tokens, index).numpy()
        for name, run in runners.items():
            got = run({"tokens": tokens.numpy(), "index": index.numpy()})
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{name}, index {index.tolist()}")


def _ort_runner(path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path))
    return lambda feed: session.run(None, feed)[0]
