"""DoViT models through the same exporter and runtime as DToP, against PyTorch.

DoViT needs no exporter or runtime special case: its stop rule reaches the graph as the same
``TokenSplit`` (``context_topk=0``) and its frozen tokens come back with ``TokenReconstruct``.
The random model is a shallow dovit-vit-t (3 blocks, width 64) with sharpened auxiliary heads,
so that its confidences spread out and each image of a batch stops a different number of tokens.
"""

import functools

import numpy as np
import onnx
import pytest
import torch
from test_export_model import NEEDS_PYOPS, TOLERANCE, images, run, torch_outputs

from dtp_deploy.metadata import ModelMetadata
from dtp_deploy.models import build_model, preset
from exporters import export_onnx
from exporters.ort_dtp_domain import create_session, pyops_available

SIZE = (128, 160)
MIXED = [0.4, 0.6]
SHALLOW = dict(depth=3, stage_ends=(1, 2, 3), embed_dim=64, num_heads=2, head_dim=64,
               head_heads=2, extra={**preset("dovit-vit-t").extra, "aux_channels": 32})


@functools.cache
def random_dovit():
    torch.manual_seed(0)
    model = build_model("dovit-vit-t", num_classes=5, img_size=SIZE, **SHALLOW).eval()
    with torch.no_grad():
        for head in model.aux_heads:
            head.conv_seg.weight.mul_(8)
    return model


@functools.cache
def exported(cache, flavour, thresholds, dynamic=True):
    """The random DoViT's graph, exported once per test run (``export_cache`` in conftest);
    static (batch 3 at ``SIZE``) where a test feeds one shape only."""
    def export(path):
        return export_onnx(random_dovit(), path, flavour=flavour, thresholds=list(thresholds),
                           dynamic_batch=dynamic, dynamic_shape=dynamic, batch=3, check=False,
                           progress=False)

    key = f"dovit-shallow-{flavour}-{'-'.join(map(str, thresholds))}-{dynamic}"
    path, report = cache(key, export)
    runnable = flavour == "portable" or pyops_available()
    return path, report, create_session(path) if runnable else None


@pytest.mark.parametrize("flavour", ["plugin", "portable"])
def test_graph_matches_pytorch_with_different_keep_counts(export_cache, flavour):
    path, report, session = exported(export_cache, flavour, tuple(MIXED))
    # One split per auxiliary stage; a reconstruction before each of the 3 heads and, for the
    # class-token update (agg_rate), one after each split.
    assert report.dtp_nodes == ({"TokenSplit": 2, "TokenReconstruct": 3 + 2} if flavour == "plugin"
                                else {})
    meta = ModelMetadata.from_props({p.key: p.value for p in onnx.load(path).metadata_props})
    assert (meta.method, meta.context_topk, meta.flavour) == ("dovit", 0, flavour)
    for batch, height, width in [(3, *SIZE), (2, 96, 208)]:  # the second is another grid shape
        x = images(batch, height, width)
        scores, counts = run(session, x)
        want_scores, want_counts = torch_outputs(random_dovit(), MIXED, x)
        np.testing.assert_array_equal(counts, want_counts)
        assert np.abs(scores - want_scores).max() <= TOLERANCE["fp32"]
    x = images(3, *SIZE)
    counts = run(session, x)[1]
    assert len(set(counts[:, -1].tolist())) == 3, "each image must stop a different count"


@pytest.mark.parametrize("flavour, thresholds", [("plugin", (2.0, 2.0)), ("portable", (-1.0, -1.0))],
                         ids=["plugin-nothing-stops", "portable-everything-stops"])
def test_extreme_thresholds(export_cache, flavour, thresholds):
    _, _, session = exported(export_cache, flavour, thresholds, dynamic=False)
    x = images(3, *SIZE, seed=1)
    scores, counts = run(session, x)
    want_scores, want_counts = torch_outputs(random_dovit(), list(thresholds), x)
    np.testing.assert_array_equal(counts, want_counts)
    assert np.abs(scores - want_scores).max() <= TOLERANCE["fp32"]
    n = SIZE[0] * SIZE[1] // 256
    assert (counts[:, 1:] == (n if thresholds[0] > 1 else 0)).all()


def test_runtime_runs_dovit_unchanged(export_cache):
    """The runtime reads a DoViT graph's metadata like any other and agrees with PyTorch."""
    from dtp_deploy.data.synthetic import SyntheticScenes
    from dtp_deploy.runtime import Segmenter

    if not pyops_available():
        pytest.skip(NEEDS_PYOPS)
    path, _, _ = exported(export_cache, "plugin", tuple(MIXED))
    seg = Segmenter.open(path)
    assert seg.metadata.method == "dovit"
    image, _ = SyntheticScenes(1, *SIZE, seed=4)[0]
    result = seg.predict(image)
    cfg = random_dovit().config
    x = torch.from_numpy(((image - np.array(cfg.mean)) / np.array(cfg.std)).astype(np.float32))
    scores, counts = torch_outputs(random_dovit(), MIXED, x.permute(2, 0, 1)[None])
    full = torch.nn.functional.interpolate(torch.from_numpy(scores), size=SIZE, mode="bilinear",
                                           align_corners=False)
    assert (result.labels != full.argmax(1)[0].numpy()).mean() < 1e-3
    assert result.keep_ratio == pytest.approx(tuple(counts[0] / counts[0, 0]))


@pytest.mark.slow
def test_builtin_dovit_exports_and_checks(tmp_path):
    from dtp_deploy.builtin import load_builtin_model

    pytest.importorskip("onnxruntime_extensions", reason=NEEDS_PYOPS)
    report = export_onnx(load_builtin_model("dovit-vit-t"), tmp_path / "dovit.onnx", batch=3,
                         progress=False)
    assert report.checked and report.keep_counts_match
    assert report.max_abs_diff <= TOLERANCE["fp32"]
    counts = np.array(report.keep_counts)
    assert (counts[:, -1] < counts[:, 0]).all(), "synthetic scenes must stop tokens early"
