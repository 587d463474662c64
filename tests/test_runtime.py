"""The torch-free runtime (``dtp_deploy.runtime``) on small hand-made ONNX graphs.

The toy graph has the exported graphs' interface and metadata: ``images (B, 3, H, W)`` ->
``scores (B, K, H/16, W/16)`` (16x16 average pooling and a 1x1 convolution) and
``keep_counts (B, 3)`` = ``(N, N // 2, N // 4)`` of the N tokens of the input. Its exact
output is easy to compute in numpy, so the runtime's pre/post-processing is checked against an
independent reference here; the exported models are checked in ``test_runtime_e2e.py``.
"""

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dtp_deploy.data.synthetic import SYNTHETIC_CLASSES, SyntheticScenes
from dtp_deploy.metadata import ModelMetadata
from dtp_deploy.runtime import RuntimeSetupError, Segmenter, processing
from dtp_deploy.runtime.segmenter import Timing

PATCH = 16
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
K = len(SYNTHETIC_CLASSES)


def toy_weights(k: int = K) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(0, 1, (k, 3)).astype(np.float32), rng.normal(0, 0.1, k).astype(np.float32)


def toy_metadata(input_size, flavour="portable", trained=(64, 64), precision="fp32") -> ModelMetadata:
    return ModelMetadata(
        version="0.1.0", arch="toy", method="dtop", flavour=flavour, dense=False,
        class_names=SYNTHETIC_CLASSES, mean=MEAN, std=STD, patch_size=PATCH,
        input_layout="NCHW float32 normalised RGB", input_size=input_size, trained_size=trained,
        stage_ends=(1, 2, 3), thresholds=(0.9, 0.9), context_topk=5, precision=precision,
        outputs=("scores", "keep_counts"))


def make_toy_model(path: Path, *, batch=1, size=(64, 64), props=None, flavour="portable") -> Path:
    """The toy graph; ``batch`` / ``size`` None make those dimensions symbolic."""
    weight, bias = toy_weights()
    dims = [batch if batch else "batch", 3, *(size if size else ("height", "width"))]
    out_dims = [dims[0], K, *((s // PATCH for s in size) if size else ("gh", "gw"))]
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[PATCH, PATCH],
                         strides=[PATCH, PATCH]),
        helper.make_node("Conv", ["pooled", "weight", "bias"], ["scores"]),
        helper.make_node("Shape", ["scores"], ["shape"]),
        helper.make_node("Slice", ["shape", "two", "four"], ["grid"]),
        helper.make_node("ReduceProd", ["grid"], ["tokens"], keepdims=1),
        helper.make_node("Div", ["tokens", "divisors"], ["counts64"]),
        helper.make_node("Cast", ["counts64"], ["counts"], to=TensorProto.INT32),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "three"], ["keep_shape"], axis=0),
        helper.make_node("Expand", ["counts", "keep_shape"], ["keep_counts"]),
    ]
    inits = [
        helper.make_tensor("weight", TensorProto.FLOAT, [K, 3, 1, 1], weight.ravel()),
        helper.make_tensor("bias", TensorProto.FLOAT, [K], bias),
        helper.make_tensor("divisors", TensorProto.INT64, [3], [1, 2, 4]),
        *(helper.make_tensor(n, TensorProto.INT64, [1], [v])
          for n, v in (("zero", 0), ("one", 1), ("two", 2), ("three", 3), ("four", 4))),
    ]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, out_dims),
         helper.make_tensor_value_info("keep_counts", TensorProto.INT32, [dims[0], 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    meta = props if props is not None else toy_metadata(tuple(size) if size else None, flavour).to_props()
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def toy_window_scores(window: np.ndarray) -> np.ndarray:
    """``(3, h, w)`` normalised input -> ``(K, h/16, w/16)``: what the toy graph computes."""
    weight, bias = toy_weights()
    c, h, w = window.shape
    pooled = window.reshape(c, h // PATCH, PATCH, w // PATCH, PATCH).mean((2, 4))
    return np.einsum("kc,chw->khw", weight, pooled) + bias[:, None, None]


def reference_labels(image: np.ndarray, plan: processing.Plan) -> np.ndarray:
    """Labels from an independent float64 implementation: scores of each window upsampled to
    pixels by explicit bilinear weights, averaged on the token grid, argmax."""
    canvas = processing.prepare(image, plan, MEAN, STD)
    p = plan.patch
    total = np.zeros((K, plan.canvas[0] // p, plan.canvas[1] // p))
    count = np.zeros(total.shape[1:])
    for y, x in plan.windows:
        s = toy_window_scores(canvas[:, y:y + plan.crop[0], x:x + plan.crop[1]])
        total[:, y // p:y // p + s.shape[1], x // p:x // p + s.shape[2]] += s
        count[y // p:y // p + s.shape[1], x // p:x // p + s.shape[2]] += 1
    grid = total / count
    h, w = plan.image

    def taps(n_out, n_in, covered):
        src = np.maximum((np.arange(n_out) + 0.5) * covered / (n_out * p) - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        weights = np.zeros((n_out, n_in))
        weights[np.arange(n_out), i0] += 1 - (src - i0)
        weights[np.arange(n_out), np.minimum(i0 + 1, n_in - 1)] += src - i0
        return weights

    ry, rx = taps(h, grid.shape[1], plan.resized[0]), taps(w, grid.shape[2], plan.resized[1])
    return np.einsum("yh,khw,xw->kyx", ry, grid, rx).argmax(0)


def assert_labels_close(labels, expected, max_mismatch=1e-3):
    """Labels equal except at rare float ties between the two implementations."""
    assert labels.shape == expected.shape
    assert (labels != expected).mean() <= max_mismatch


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return {
        "fixed": make_toy_model(root / "fixed.onnx"),
        "fixed_b3": make_toy_model(root / "fixed_b3.onnx", batch=3),
        "dynamic": make_toy_model(root / "dynamic.onnx", batch=None, size=None),
    }


def scene(height, width, seed=0):
    return SyntheticScenes(1, height, width, seed=seed)[0][0]


# -- geometry ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size,crop,stride,expected", [
    pytest.param((64, 64), (64, 64), (32, 32), [(0, 0)], id="image-is-crop"),
    pytest.param((50, 30), (64, 64), (32, 32), [(0, 0)], id="small-image-padded"),
    pytest.param((100, 64), (64, 64), (32, 32), [(0, 0), (32, 0), (48, 0)], id="last-window-clamped"),
    pytest.param((1024, 2048), (512, 512), (336, 336), None, id="cityscapes-512"),
])
def test_slide_plan(size, crop, stride, expected):
    plan = processing.make_plan(*size, mode="slide", patch=PATCH, input_size=None, crop=crop, stride=stride)
    if expected is not None:
        assert list(plan.windows) == expected
    covered = np.zeros(plan.canvas, bool)
    for y, x in plan.windows:
        assert y % PATCH == 0 and x % PATCH == 0
        assert y + crop[0] <= plan.canvas[0] and x + crop[1] <= plan.canvas[1]
        covered[y:y + crop[0], x:x + crop[1]] = True
    assert covered.all()


def test_default_stride_is_two_thirds_on_the_patch():
    assert processing.default_stride((512, 512), 16) == (336, 336)  # DToP: 341
    assert processing.default_stride((192, 192), 16) == (128, 128)
    assert processing.default_stride((16, 32), 16) == (16, 16)


def test_resample_matches_align_corners_false():
    """Upsampling a grid by 16 follows F.interpolate(bilinear, align_corners=False): known values."""
    grid = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
    out = processing.resample(grid, (4, 4), (0.5, 0.5))
    np.testing.assert_allclose(out[0, 0], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.5, 1.5, 2.0])


@pytest.mark.parametrize("kwargs,message", [
    pytest.param(dict(crop=(60, 64)), "multiple of the patch", id="crop-not-patch"),
    pytest.param(dict(stride=(20, 16)), "multiple of the patch", id="stride-not-patch"),
    pytest.param(dict(stride=(80, 80), crop=(64, 64)), "larger than the crop", id="stride-over-crop"),
])
def test_bad_windows_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        processing.make_plan(100, 100, mode="slide", patch=PATCH, input_size=None,
                             **{"crop": (64, 64), **kwargs})


# -- predictions against the reference --------------------------------------------------------
@pytest.mark.parametrize("model,size,mode", [
    pytest.param("fixed", (64, 64), "whole", id="fixed-exact-size"),
    pytest.param("fixed", (40, 57), "whole", id="fixed-padded"),
    pytest.param("fixed", (150, 100), "whole", id="fixed-downscaled"),
    pytest.param("fixed", (150, 100), "slide", id="fixed-slide"),
    pytest.param("fixed_b3", (150, 100), "slide", id="fixed-batch3-slide"),
    pytest.param("dynamic", (90, 130), "whole", id="dynamic-whole"),
    pytest.param("dynamic", (90, 130), "slide", id="dynamic-slide"),
])
def test_labels_match_reference(models, model, size, mode):
    seg = Segmenter.open(models[model])
    image = scene(*size)
    result = seg.predict(image, mode=mode, return_scores=True)
    plan = seg.plan(*size, mode=mode)
    assert result.labels.shape == size and result.labels.dtype == np.int32
    assert result.scores.shape == (K, *size)
    np.testing.assert_array_equal(result.scores.argmax(0), result.labels)
    assert result.windows == len(plan.windows)
    assert_labels_close(result.labels, reference_labels(image, plan))


def test_slide_equals_whole_on_a_crop_sized_image(models):
    seg = Segmenter.open(models["dynamic"])
    image = scene(64, 64, seed=3)
    whole = seg.predict(image, return_scores=True)
    slide = seg.predict(image, mode="slide", return_scores=True)
    np.testing.assert_array_equal(whole.scores, slide.scores)


def test_keep_ratio_and_timing(models):
    seg = Segmenter.open(models["dynamic"])
    result = seg.predict(scene(64, 128))
    assert result.keep_ratio == (1.0, 0.5, 0.25)
    assert result.keep_counts.tolist() == [[32, 16, 8]]
    started = time.perf_counter()
    t = seg.predict(scene(64, 128)).timing
    wall_ms = (time.perf_counter() - started) * 1e3
    # The phases are measured inside the call: each is positive and together they fit in it.
    assert t.inference_ms > 0 and min(t.preprocess_ms, t.postprocess_ms) >= 0
    assert t.total_ms <= wall_ms
    hand = Timing(preprocess_ms=1.5, inference_ms=2.25, postprocess_ms=0.25)
    assert hand.total_ms == 4.0
    assert hand.to_dict() == {"preprocess_ms": 1.5, "inference_ms": 2.25, "postprocess_ms": 0.25,
                              "total_ms": 4.0}


def test_bgr_is_rgb_reversed(models):
    seg = Segmenter.open(models["fixed"])
    image = scene(64, 64, seed=1)
    np.testing.assert_array_equal(seg.predict(image).labels,
                                  seg.predict(np.ascontiguousarray(image[..., ::-1]), color="bgr").labels)


def test_predict_batch_equals_predict(models):
    seg = Segmenter.open(models["dynamic"], max_batch=2)
    images = [scene(64, 64, 0), scene(80, 48, 1), scene(64, 64, 2), scene(64, 64, 3)]
    batch = seg.predict_batch(images, mode="slide")
    for image, result in zip(images, batch):
        np.testing.assert_array_equal(result.labels, seg.predict(image, mode="slide").labels)


def test_thread_safe(models):
    seg = Segmenter.open(models["fixed_b3"])
    images = [scene(70 + 9 * i, 100 - 5 * i, seed=i) for i in range(6)]
    expected = [seg.predict(im, mode="slide").labels for im in images]
    results: dict[int, list[np.ndarray]] = {}
    errors = []

    def work(t):
        try:
            results[t] = [seg.predict(images[(t + j) % 6], mode="slide").labels for j in range(6)]
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for t, labels in results.items():
        for j, got in enumerate(labels):
            np.testing.assert_array_equal(got, expected[(t + j) % 6])


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("image,message", [
    pytest.param(np.zeros((32, 32), np.uint8), r"expected shape \(H, W, 3\)", id="grayscale"),
    pytest.param(np.zeros((32, 32, 4), np.uint8), "RGBA", id="rgba"),
    pytest.param(np.zeros((32, 32, 3), np.float32), "uint8", id="float"),
    pytest.param(np.zeros((0, 32, 3), np.uint8), "empty", id="empty"),
])
def test_bad_images_are_refused(models, image, message):
    seg = Segmenter.open(models["fixed"])
    with pytest.raises(ValueError, match=message):
        seg.predict(image)


def test_open_errors(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Segmenter.open(tmp_path / "missing.onnx")
    other = tmp_path / "model.bin"
    other.write_bytes(models["fixed"].read_bytes())
    with pytest.raises(ValueError, match="suffix"):
        Segmenter.open(other)
    assert Segmenter.open(other, backend="ort").metadata.arch == "toy"
    with pytest.raises(ValueError, match="unknown device"):
        Segmenter.open(models["fixed"], device="gpu")
    with pytest.raises(RuntimeSetupError, match="onnxruntime-gpu"):
        Segmenter.open(models["fixed"], device="cuda:0")
    with pytest.raises(ValueError, match="differs from the graph's fixed input size"):
        Segmenter.open(models["fixed"]).predict(scene(64, 64), mode="slide", crop=32)


def test_missing_metadata_names_the_fix(tmp_path):
    path = make_toy_model(tmp_path / "plain.onnx", props={})
    with pytest.raises(ValueError, match="re-export it with dtp-export"):
        Segmenter.open(path)


def test_engine_without_tensorrt_is_a_clear_error(models, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(RuntimeSetupError, match="GPU"):
        Segmenter.open(engine, device="cpu")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeSetupError, match="TensorRT|tensorrt"):
            Segmenter.open(engine)


# -- never torch ----------------------------------------------------------------------------------
def test_runtime_never_imports_torch(models, tmp_path):
    """A fresh interpreter whose ``torch`` raises on import opens and runs the models."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "torch.py").write_text("raise AssertionError('the runtime imported torch')\n")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from dtp_deploy.runtime import Segmenter
        for path in {[str(p) for p in models.values()]!r}:
            seg = Segmenter.open(path)
            seg.predict(np.zeros((70, 90, 3), np.uint8), mode="slide")
        assert "torch" not in sys.modules
        print("ok")
    """)
    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": f"{fake}:{root}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_cityscapes_frame_slides_with_a_512_crop(models):
    """A 1024x2048 frame on a dynamic graph with 512 windows every 336 pixels: 3 x 6 windows."""
    seg = Segmenter.open(models["dynamic"])
    image = np.random.default_rng(0).integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    result = seg.predict(image, mode="slide", crop=512)
    assert result.windows == 18 and result.labels.shape == (1024, 2048)
    plan = seg.plan(1024, 2048, mode="slide", crop=512)
    assert {y for y, _ in plan.windows} == {0, 336, 512} and max(x for _, x in plan.windows) == 1536


def test_engine_sidecar_metadata(tmp_path):
    """The ``<engine>.json`` that dtp-build writes carries the ONNX metadata under "metadata"."""
    import json

    from dtp_deploy.runtime.backends import engine_props

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"")
    props = toy_metadata((64, 64)).to_props()
    (tmp_path / "m.engine.json").write_text(json.dumps({"precision": "fp32", "metadata": props}))
    assert ModelMetadata.from_props(engine_props(engine)) == toy_metadata((64, 64))
