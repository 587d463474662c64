"""The OpenVINO backend of the runtime on the exported built-in models, against ONNX Runtime
and PyTorch; skipped when the ``openvino`` package (extra ``[openvino]``) is missing."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from dtp_deploy.builtin import load_builtin_model
from dtp_deploy.data.synthetic import SyntheticScenes
from dtp_deploy.preprocess import to_tensor
from dtp_deploy.runtime import RuntimeSetupError, Segmenter
from dtp_deploy.runtime.backends import missing_precision

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'dtp-deploy[openvino]')")

from test_runtime_e2e import ROOT, builtin_graph, random_plugin_onnx  # noqa: E402, F401

BUILTINS = ("dtop-vit-t", "dovit-vit-t")


@pytest.fixture(scope="module", params=BUILTINS)
def builtin(request):
    """(name, portable graph with a dynamic batch, PyTorch model) of a built-in model."""
    name = request.param
    path = builtin_graph(name)
    return name, path, load_builtin_model(name)


def scenes(count, height=192, width=192, seed=21):
    data = SyntheticScenes(count, height, width, seed=seed)
    return [data[i][0] for i in range(count)]


def test_f32_matches_onnxruntime_and_pytorch(builtin):
    """Four scenes in one batch: per-image keep counts differ, so the batch is padded after
    each split; OpenVINO f32 must give ONNX Runtime's scores and PyTorch's keep counts."""
    name, path, model = builtin
    images = scenes(4)
    ov = Segmenter.open(path, backend="openvino", threads=2)
    ort = Segmenter.open(path, backend="ort")
    assert ov.backend.name == "openvino" and ov.backend.precision == "f32"
    assert ov.backend.batch is None and ov.metadata.arch == name
    got = ov.predict_batch(images, return_scores=True)
    ref = ort.predict_batch(images, return_scores=True)
    with torch.inference_mode():
        _, torch_keep = model(to_tensor(np.stack(images), model.config.mean, model.config.std))
    keep = np.stack([g.keep_counts[0] for g in got])
    np.testing.assert_array_equal(keep, np.stack([r.keep_counts[0] for r in ref]))
    np.testing.assert_array_equal(keep, torch_keep.numpy())
    assert len({tuple(k) for k in keep}) > 1, "the scenes should keep different token counts"
    assert keep[:, -1].min() < keep[:, 0].min(), "the built-in model should prune"
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g.scores, r.scores, atol=1e-4, rtol=0)
        assert (g.labels != r.labels).mean() < 1e-3


def test_slide_windows_match_onnxruntime(builtin):
    """A frame larger than the crop: several windows batched together, stitched."""
    _, path, _ = builtin
    image = scenes(1, 256, 448, seed=4)[0]
    got = Segmenter.open(path, backend="openvino").predict(image, mode="slide")
    ref = Segmenter.open(path, backend="ort").predict(image, mode="slide")
    assert got.windows == ref.windows > 1
    np.testing.assert_array_equal(got.keep_counts, ref.keep_counts)
    assert (got.labels != ref.labels).mean() < 1e-3


def test_thread_safe(builtin):
    """Each thread gets its own infer request: concurrent predictions equal sequential ones."""
    from concurrent.futures import ThreadPoolExecutor

    _, path, _ = builtin
    seg = Segmenter.open(path, backend="openvino", threads=1)
    images = scenes(4, seed=8)
    expected = [seg.predict(i).labels for i in images]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: seg.predict(i).labels, images * 2))
    for g, e in zip(got, expected * 2):
        np.testing.assert_array_equal(g, e)


def test_plugin_graph_is_refused_with_the_fix(random_plugin_onnx, tmp_path, monkeypatch):  # noqa: F811
    """Without the dtp extension a plugin-flavour graph is refused, naming how to build and
    load the extension; an extension that cannot be loaded is named (argument or variable)."""
    monkeypatch.delenv("DTP_OPENVINO_EXTENSION", raising=False)
    with pytest.raises(RuntimeSetupError, match="plugin-flavour.*plugins/openvino/README.md.*plugin_lib.*"
                                                "DTP_OPENVINO_EXTENSION.*--flavour portable"):
        Segmenter.open(random_plugin_onnx, backend="openvino")
    missing = tmp_path / "missing.so"
    with pytest.raises(RuntimeSetupError, match=f"cannot load the dtp OpenVINO extension {missing}"):
        Segmenter.open(random_plugin_onnx, backend="openvino", plugin_lib=missing)
    monkeypatch.setenv("DTP_OPENVINO_EXTENSION", str(missing))
    with pytest.raises(RuntimeSetupError, match=f"cannot load the dtp OpenVINO extension {missing}"):
        Segmenter.open(random_plugin_onnx, backend="openvino")


def test_bad_options_are_refused(builtin):
    _, path, _ = builtin
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        Segmenter.open(path, backend="openvino", precision="int4")
    with pytest.raises(ValueError, match="unknown performance hint"):
        Segmenter.open(path, backend="openvino", performance_hint="fast")
    with pytest.raises(ValueError, match="backend='openvino' only"):
        Segmenter.open(path, backend="ort", precision="bf16")
    with pytest.raises(RuntimeSetupError, match="runs on the CPU"):
        Segmenter.open(path, backend="openvino", device="cuda")


def test_bf16_is_refused_or_runs_as_asked(builtin):
    """bf16 where the CPU has it natively (reported, never a silent f32), a clear error where not."""
    _, path, _ = builtin
    reason = missing_precision("bf16")
    if reason:
        with pytest.raises(RuntimeSetupError, match="no native bf16.*precision='f32'"):
            Segmenter.open(path, backend="openvino", precision="bf16")
        pytest.skip(f"bf16 not run: {reason}")
    seg = Segmenter.open(path, backend="openvino", precision="bf16")
    assert seg.backend.precision == "bf16"
    image = scenes(1)[0]
    ref = Segmenter.open(path, backend="openvino").predict(image)
    assert (seg.predict(image).labels == ref.labels).mean() > 0.98


def test_openvino_never_imports_torch(builtin, tmp_path):
    _, path, _ = builtin
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "torch.py").write_text("raise AssertionError('the runtime imported torch')\n")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from dtp_deploy.runtime import Segmenter
        seg = Segmenter.open({str(path)!r}, backend="openvino")
        seg.predict(np.full((100, 150, 3), 90, np.uint8), mode="slide")
        assert "torch" not in sys.modules
        print("ok")
    """)
    env = {"PYTHONPATH": f"{fake}{os.pathsep}{ROOT}", "PATH": os.environ.get("PATH", "")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_dtp_run_backend_openvino(builtin, tmp_path):
    """dtp-run passes --backend openvino, --threads and --precision through to Segmenter.open."""
    import json

    from click.testing import CliRunner
    from PIL import Image

    from dtp_deploy.runtime.cli import main

    _, path, _ = builtin
    image = scenes(1, 160, 224, seed=6)[0]
    Image.fromarray(image).save(tmp_path / "scene.png")
    args = [str(path), str(tmp_path / "scene.png"), "-o", str(tmp_path / "out"), "--json"]
    done = CliRunner().invoke(main, [*args, "--backend", "openvino", "--threads", "1", "--precision", "f32"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["backend"] == "openvino" and summary["segmented"] == 1
    expected = Segmenter.open(path, backend="ort").predict(image).labels
    labels = np.asarray(Image.open(tmp_path / "out" / "scene_labels.png"))
    assert (labels != expected).mean() < 1e-3
    done = CliRunner().invoke(main, [*args, "--backend", "ort", "--precision", "bf16"])
    assert done.exit_code == 2 and "backend='openvino' only" in done.output
