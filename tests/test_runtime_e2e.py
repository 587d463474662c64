"""The runtime on models exported with ``export_onnx``, against the PyTorch model.

Exports take tens of seconds, so each exported graph is cached under ``build/test-models``,
keyed by a hash of the weights, the model's config, the model and exporter sources and the
export arguments: the first run exports, later runs reuse the file until any of those change.
A file lock makes test files running in parallel wait for one export instead of repeating it.
The built-in model's tests are ``slow`` (a full-size export); the random model is shallow.
"""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_export_model import SHALLOW

from dtp_deploy.builtin import load_builtin_model
from dtp_deploy.data.synthetic import SyntheticScenes
from dtp_deploy.models import build_model
from dtp_deploy.preprocess import to_tensor
from dtp_deploy.runtime import Segmenter

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "test-models"


def _source_hash(*extra: str) -> str:
    digest = hashlib.sha256(torch.__version__.encode())
    for folder in ("exporters", "dtp_deploy/models", "dtp_deploy/ops"):
        for path in sorted((ROOT / folder).glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:16]


def _weights_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def exported_model(name: str, model_fn, **kwargs) -> Path:
    """``model_fn()`` exported with ``kwargs`` (cached; see the module docstring)."""
    from filelock import FileLock

    from exporters import export_onnx

    model = model_fn()
    key = _source_hash(name, repr(model.config), repr(sorted(kwargs.items())), _weights_hash(model))
    path = CACHE / f"{name}-{key}.onnx"
    CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            export_onnx(model, path, check=False, progress=False, **kwargs)
    return path


def builtin_graph(name: str = "dtop-vit-t", flavour: str = "portable", *, dynamic_shape: bool = False) -> Path:
    """A built-in model's graph as most runtime tests use it: the trained size with a dynamic
    batch (traced with 2), or with ``dynamic_shape`` any size at batch 1 (exporting both
    dynamic takes longer still, and no test needs it). One configuration per flavour and
    shape, so test files share the file instead of exporting near-identical graphs."""
    batching = {} if dynamic_shape else {"batch": 2, "dynamic_batch": True}
    return exported_model(f"builtin-{name}-{flavour}", lambda: load_builtin_model(name), flavour=flavour,
                          dynamic_shape=dynamic_shape, **batching)


def random_model():
    torch.manual_seed(0)  # shallow: the runtime path does not depend on depth
    return build_model("dtop-vit-t", num_classes=5, img_size=(128, 192), **SHALLOW).eval()


@pytest.fixture(scope="module")
def builtin_onnx():
    return builtin_graph()


@pytest.fixture(scope="module")
def random_plugin_onnx():
    # A low threshold, so that the random model prunes tokens and the dtp ops move data.
    return exported_model("random-plugin", random_model, flavour="plugin", thresholds=[0.3, 0.3])


def torch_prediction(model, image, thresholds=None):
    """Labels at the image size and keep ratios of the PyTorch model on one image."""
    if thresholds is not None:
        model.set_thresholds(thresholds)
    cfg = model.config
    with torch.inference_mode():
        scores, keep = model(to_tensor(image, cfg.mean, cfg.std))
        full = F.interpolate(scores, size=image.shape[:2], mode="bilinear", align_corners=False)
    tokens = scores.shape[2] * scores.shape[3]
    return full.argmax(1)[0].numpy(), tuple(keep[0].numpy() / tokens)


@pytest.mark.slow
def test_builtin_matches_pytorch(builtin_onnx):
    seg = Segmenter.open(builtin_onnx)
    assert seg.metadata.arch == "dtop-vit-t" and seg.input_size == (192, 192)
    model = load_builtin_model()
    for i in range(2):
        image, mask = SyntheticScenes(2, 192, 192, seed=5)[i]
        expected, keep = torch_prediction(model, image)
        whole = seg.predict(image)
        assert (whole.labels != expected).mean() < 1e-3
        assert whole.keep_ratio == pytest.approx(keep)
        assert whole.keep_ratio[-1] < 1.0, "the built-in model should prune"
        assert (whole.labels == mask).mean() > 0.85
        slide = seg.predict(image, mode="slide")
        np.testing.assert_array_equal(slide.labels, whole.labels)


@pytest.mark.slow
def test_builtin_slides_over_a_larger_frame(builtin_onnx):
    seg = Segmenter.open(builtin_onnx)
    image, mask = SyntheticScenes(1, 256, 512, seed=9)[0]
    result = seg.predict(image, mode="slide")
    assert result.windows == 2 * 4
    assert result.labels.shape == (256, 512)
    assert (result.labels == mask).mean() > 0.85


def test_random_plugin_graph_matches_pytorch(random_plugin_onnx):
    seg = Segmenter.open(random_plugin_onnx)
    assert seg.metadata.flavour == "plugin" and seg.backend.plugin_graph
    image, _ = SyntheticScenes(1, 128, 192, seed=2)[0]
    expected, keep = torch_prediction(random_model(), image, thresholds=[0.3, 0.3])
    result = seg.predict(image)
    assert result.keep_ratio == pytest.approx(keep)
    assert (result.labels != expected).mean() < 1e-3


def test_plugin_graph_runs_without_torch(random_plugin_onnx, tmp_path):
    """The plugin path (ONNX Runtime + the CPU dtp domain) imports no torch either."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "torch.py").write_text("raise AssertionError('the runtime imported torch')\n")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from dtp_deploy.runtime import Segmenter
        seg = Segmenter.open({str(random_plugin_onnx)!r})
        seg.predict(np.full((100, 150, 3), 90, np.uint8))
        assert "torch" not in sys.modules
        print("ok")
    """)
    env = {"PYTHONPATH": f"{fake}{os.pathsep}{ROOT}", "PATH": os.environ.get("PATH", "")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


def code_block(language: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"```{language}\n") + len(language) + 4
    return text[start:text.index("```", start)]


@pytest.mark.slow
def test_readme_python_example_runs(builtin_onnx, tmp_path, monkeypatch, capsys):
    """The README's Python embedding example, as written, on the exported built-in model."""
    (tmp_path / "dtop-vit-t.onnx").symlink_to(builtin_onnx)
    image, mask = SyntheticScenes(1, 256, 384, seed=11)[0]
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "street.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(code_block("python"), "README.md", "exec"), {})
    labels = np.asarray(Image.open(tmp_path / "street_labels.png"))
    assert labels.shape == (256, 384) and (labels == mask).mean() > 0.85
    assert "sky" in capsys.readouterr().out


@pytest.mark.usefixtures("one_torch_thread")
def test_builtin_multi_window_multi_chunk_labels_match_pytorch(builtin_onnx):
    """A 300x720 frame: 12 windows of 192, the last column flush with the edge, and labels in
    two row chunks (8 classes x 720 columns -> 182 rows per chunk), both protocols, against
    PyTorch written out here."""
    from test_protocol import mmseg_slide_reference

    seg = Segmenter.open(builtin_onnx)
    model = load_builtin_model()
    cfg = model.config
    image, mask = SyntheticScenes(1, 300, 720, seed=4)[0]

    mmseg = seg.predict(image, protocol="mmseg", test_scale="none")
    assert mmseg.windows == 2 * 6
    expected = mmseg_slide_reference(model, image, (192, 192), (128, 128))
    assert (mmseg.labels != expected).mean() < 1e-3
    assert (mmseg.labels == mask).mean() > 0.85

    # grid protocol: windows at token offsets (rows 0, 112; columns 0, 128, ..., 512, 528) on the
    # 304x720 canvas, averaged on the token grid, resampled once
    grid = seg.predict(image, mode="slide")
    assert grid.windows == 2 * 6
    canvas = np.zeros((304, 720, 3), np.uint8)
    canvas[:300] = image
    x = to_tensor(canvas, cfg.mean, cfg.std)
    x[:, :, 300:] = 0  # the runtime pads after normalising
    total, count = torch.zeros(1, cfg.num_classes, 19, 45), torch.zeros(1, 1, 19, 45)
    with torch.inference_mode():
        for y in (0, 112):
            for left in (0, 128, 256, 384, 512, 528):
                scores, _ = model(x[:, :, y:y + 192, left:left + 192])
                total[:, :, y // 16:y // 16 + 12, left // 16:left // 16 + 12] += scores
                count[:, :, y // 16:y // 16 + 12, left // 16:left // 16 + 12] += 1
        full = F.interpolate(total / count, size=(304, 720), mode="bilinear", align_corners=False)
    assert (grid.labels != full.argmax(1)[0, :300].numpy()).mean() < 1e-3
    # the two protocols agree on most pixels, not all: they average different things
    assert (grid.labels == mmseg.labels).mean() > 0.9
