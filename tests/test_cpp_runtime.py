"""The C++ runtime (``plugins/runtime``) against the Python runtime.

The C++ library and its test driver are built with the system compiler (no CUDA, no TensorRT)
into ``build/runtime``, which is kept between runs. The driver runs ``dtp::Segmenter`` on a
backend that replays the window scores the Python runtime computed, so both sides see the same
network outputs: the network inputs the C++ side prepared must equal the Python ones, and so
must the labels.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_runtime import MEAN, PATCH, STD, make_toy_model, scene

from dtp_deploy.runtime import Segmenter, processing

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "runtime"


@pytest.fixture(scope="module")
def driver():
    if shutil.which("cmake") is None or not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        pytest.skip("cmake and a C++ compiler are needed to build plugins/runtime")
    configure = ["cmake", "-S", str(ROOT / "plugins" / "runtime"), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"]
    if not (BUILD / "CMakeCache.txt").is_file():
        subprocess.run(configure, check=True, capture_output=True, text=True)
    done = subprocess.run(["cmake", "--build", str(BUILD), "-j2", "--target", "dtp_runtime_check",
                           "dtp_runtime_test"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return BUILD / "dtp_runtime_check"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-cpp")
    return {"fixed": make_toy_model(root / "fixed.onnx"),
            "fixed_b3": make_toy_model(root / "fixed_b3.onnx", batch=3),
            "dynamic": make_toy_model(root / "dynamic.onnx", batch=None, size=None)}


def window_outputs(seg, image, plan):
    """The network inputs and outputs of every window, as the Python runtime computes them."""
    canvas = processing.prepare(image, plan, seg.metadata.mean, seg.metadata.std)
    inputs = processing.crops(canvas, plan)
    scores, keep = [], []
    for window in inputs:
        batch = np.zeros((seg.backend.batch or 1, *window.shape), np.float32)
        batch[0] = window
        s, k = seg.backend.run(batch)
        scores.append(s[0])
        keep.append(k[0])
    return np.stack(inputs), np.stack(scores).astype(np.float32), np.stack(keep).astype(np.int32)


CASES = [
    pytest.param("fixed", (64, 64), "whole", {}, id="fixed-exact"),
    pytest.param("fixed", (40, 57), "whole", {}, id="fixed-padded"),
    pytest.param("fixed", (150, 100), "whole", {}, id="fixed-downscaled"),
    pytest.param("fixed", (75, 200), "whole", {"color": "bgr"}, id="fixed-downscaled-bgr"),
    pytest.param("fixed_b3", (150, 100), "slide", {}, id="fixed-batch3-slide"),
    pytest.param("dynamic", (90, 130), "whole", {}, id="dynamic-whole"),
    pytest.param("dynamic", (90, 130), "slide", {}, id="dynamic-slide-default"),
    pytest.param("dynamic", (200, 120), "slide", {"crop": (64, 48), "stride": (32, 16)}, id="dynamic-slide-rect"),
]


@pytest.mark.parametrize("model,size,mode,kwargs", CASES)
def test_cpp_labels_equal_python(driver, models, tmp_path, model, size, mode, kwargs):
    seg = Segmenter.open(models[model])
    image = scene(*size, seed=4)
    color = kwargs.get("color", "rgb")
    crop, stride = kwargs.get("crop"), kwargs.get("stride")
    expected = seg.predict(image, mode=mode, color=color, crop=crop, stride=stride)
    plan = seg.plan(*size, mode=mode, crop=crop, stride=stride)
    rgb = image[..., ::-1] if color == "bgr" else image
    inputs, scores, keep = window_outputs(seg, np.ascontiguousarray(rgb), plan)
    np.save(tmp_path / "image.npy", np.ascontiguousarray(image))
    np.save(tmp_path / "scores.npy", scores)
    np.save(tmp_path / "keep.npy", keep)
    meta = seg.metadata
    cmd = [str(driver), "predict", "--image", str(tmp_path / "image.npy"), "--scores", str(tmp_path / "scores.npy"),
           "--keep", str(tmp_path / "keep.npy"), "--labels", str(tmp_path / "labels.npy"),
           "--inputs", str(tmp_path / "inputs.npy"), "--keep-ratio", str(tmp_path / "ratio.npy"),
           "--mean", ",".join(map(repr, meta.mean)), "--std", ",".join(map(repr, meta.std)),
           "--patch", str(meta.patch_size), "--mode", mode, "--trained", ",".join(map(str, meta.trained_size))]
    if seg.input_size:
        cmd += ["--input", ",".join(map(str, seg.input_size))]
    if seg.backend.batch and seg.backend.batch > 1:
        cmd += ["--fixed-batch", str(seg.backend.batch)]
    if crop:
        cmd += ["--crop", ",".join(map(str, crop)), "--stride", ",".join(map(str, stride))]
    if color == "bgr":
        cmd += ["--bgr"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "inputs.npy"), inputs.reshape(len(inputs), -1))
    labels = np.load(tmp_path / "labels.npy")
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_allclose(np.load(tmp_path / "ratio.npy"), expected.keep_ratio, rtol=1e-6)


def test_cpp_refuses_bad_windows(driver, tmp_path):
    np.save(tmp_path / "image.npy", scene(64, 64))
    np.save(tmp_path / "scores.npy", np.zeros((1, 2, 4, 4), np.float32))
    np.save(tmp_path / "keep.npy", np.zeros((1, 3), np.int32))
    done = subprocess.run([str(driver), "predict", "--image", str(tmp_path / "image.npy"),
                           "--scores", str(tmp_path / "scores.npy"), "--keep", str(tmp_path / "keep.npy"),
                           "--labels", str(tmp_path / "l.npy"), "--mode", "slide", "--crop", "60,64"],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "not a positive multiple of the patch size 16; use 48" in done.stderr


@pytest.mark.parametrize("shape", [(37, 53), (20, 31, 3), (300, 250, 3)], ids=["gray", "rgb", "rgb-multiblock"])
def test_png_writer(driver, tmp_path, shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    done = subprocess.run([str(driver), "png", "--pixels", str(tmp_path / "pixels.npy"), "--out", str(tmp_path / "x.png")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "x.png") as png:
        np.testing.assert_array_equal(np.asarray(png), pixels)


def test_c_api_reports_errors(driver):
    done = subprocess.run([str(driver), "c-api"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # The message depends on the build, which the driver reports: check the one that applies.
    if "tensorrt: no" in done.stdout:
        assert "create: cannot open missing.engine: this dtp runtime was built without TensorRT" in done.stdout
    else:
        assert "tensorrt: yes" in done.stdout
        assert "create: cannot read the engine missing.engine" in done.stdout


def test_runtime_with_a_test_backend(driver):
    """plugins/runtime/tests/runtime_test.cpp: options reach the backend, every engine tensor is
    bound or refused, the plugin library is loaded once, errors cross the C API as messages, a
    second Segmenter in one process works (also run by ctest)."""
    done = subprocess.run([str(driver.parent / "dtp_runtime_test")], capture_output=True, text=True)
    assert done.returncode == 0 and "0 check(s) failed" in done.stdout, done.stdout[-4000:] + done.stderr


def test_plan_constants_match():
    """The defaults the C++ Options carry are DToP's, like the toy models' metadata."""
    header = (ROOT / "plugins" / "runtime" / "include" / "dtp" / "segmenter.h").read_text()
    for value in (*MEAN, *STD):
        assert f"{value}F" in header
    assert f"patchSize{{{PATCH}}}" in header
