"""The C++ runtime (``plugins/runtime``) running real models on OpenVINO, against the Python runtime.

The built-in DToP and DoViT models are exported as plugin-flavour graphs (the very files that
go to TensorRT), whose token ops run through the native extension (``plugins/openvino``). Both
runtimes run them on OpenVINO (CPU, f32): labels and keep ratios must be identical. The Python
side also runs them on ONNX Runtime (through the Python ``dtp`` domain): the agreement is
asserted loosely and printed. The C API is driven from a C program, the example program
segments an image file, the README's C++ example runs as written, and an engine's sidecar
gives its metadata. The sanitizer build is in ``test_cpp_openvino_asan.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cpp_openvino_build import ROOT, build_runtime, extension_path
from PIL import Image
from test_runtime_e2e import builtin_graph

from dtp_deploy.data.synthetic import SyntheticScenes
from dtp_deploy.metadata import ModelMetadata
from dtp_deploy.runtime import Segmenter

ov = pytest.importorskip("openvino", reason="the openvino package is needed (pip install 'dtp-deploy[openvino]')")


@pytest.fixture(scope="module")
def build():
    return build_runtime()


def _builtin(name: str, flavour: str) -> Path:
    return builtin_graph(name, flavour, dynamic_shape=True)


@pytest.fixture(scope="module")
def models():
    return {"dtop": _builtin("dtop-vit-t", "plugin"), "dovit": _builtin("dovit-vit-t", "plugin")}


def python_openvino(path: Path, build: Path) -> Segmenter:
    """The Python runtime's OpenVINO backend with the native extension loaded."""
    return Segmenter.open(path, backend="openvino", plugin_lib=extension_path(build))


def cpp_predict(build: Path, model: Path, image: np.ndarray, tmp_path: Path, *args: str, env=None):
    np.save(tmp_path / "image.npy", np.ascontiguousarray(image))
    done = subprocess.run([str(build / "dtp_model_check"), str(model), str(tmp_path / "image.npy"),
                           str(tmp_path / "labels.npy"), "--keep-ratio", str(tmp_path / "ratio.npy"), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    facts = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    return np.load(tmp_path / "labels.npy"), np.load(tmp_path / "ratio.npy"), facts


CASES = [
    pytest.param("dtop", (192, 192), "whole", id="dtop-whole-trained-size"),
    pytest.param("dtop", (150, 230), "whole", id="dtop-whole-odd"),
    pytest.param("dtop", (300, 420), "slide", id="dtop-slide"),
    pytest.param("dovit", (120, 200), "whole", id="dovit-whole"),
    pytest.param("dovit", (260, 330), "slide", id="dovit-slide"),
]


@pytest.mark.parametrize("model,size,mode", CASES)
def test_cpp_equals_python_on_openvino(build, models, tmp_path, model, size, mode):
    image = SyntheticScenes(1, *size, seed=sum(size))[0][0]
    seg = python_openvino(models[model], build)
    expected = seg.predict(image, mode=mode)
    labels, ratio, facts = cpp_predict(build, models[model], image, tmp_path, *(["--slide"] if mode == "slide" else []))
    assert int(facts["windows"]) == expected.windows
    assert facts["names"].split(",") == list(seg.class_names)  # read from the model, not passed
    np.testing.assert_array_equal(labels, expected.labels)
    np.testing.assert_array_equal(ratio, np.float32(expected.keep_ratio))
    assert min(expected.keep_ratio) < 1.0, "the scene should make the model prune"

    # The ONNX Runtime path of the Python runtime (the dtp ops in Python): reported, loosely held.
    ort = Segmenter.open(models[model]).predict(image, mode=mode)
    agreement = float((ort.labels == labels).mean())
    print(f"{model} {size} {mode}: C++ OpenVINO vs Python ONNX Runtime labels agree on {agreement:.4%}, "
          f"keep ratio {list(np.round(ratio, 4))} vs {list(np.round(ort.keep_ratio, 4))}")
    assert agreement > 0.98
    np.testing.assert_allclose(ratio, ort.keep_ratio, atol=0.02)


def test_native_ops_equal_portable_graph(build, models, tmp_path):
    """The plugin-flavour graph with the native ops and the portable graph (standard ONNX ops)
    of the same model give the same labels and keep ratios in the C++ runtime."""
    portable = _builtin("dtop-vit-t", "portable")
    image = SyntheticScenes(1, 176, 240, seed=5)[0][0]
    native, native_ratio, _ = cpp_predict(build, models["dtop"], image, tmp_path)
    plain, plain_ratio, _ = cpp_predict(build, portable, image, tmp_path)
    np.testing.assert_array_equal(native_ratio, plain_ratio)
    np.testing.assert_array_equal(native, plain)


def test_python_backend_runs_plugin_graph_natively(build, models, monkeypatch):
    """``Segmenter.open(..., backend="openvino", plugin_lib=...)`` runs the plugin-flavour graph on
    the native ops: labels and keep ratios identical to the portable graph of the same model on
    OpenVINO. ``DTP_OPENVINO_EXTENSION`` names the library as it does for the C++ runtime."""
    image = SyntheticScenes(1, 176, 240, seed=5)[0][0]
    native = python_openvino(models["dtop"], build)
    plain = Segmenter.open(_builtin("dtop-vit-t", "portable"), backend="openvino")
    assert native.backend.plugin_graph and not plain.backend.plugin_graph
    got, want = native.predict(image), plain.predict(image)
    np.testing.assert_array_equal(got.keep_ratio, want.keep_ratio)
    np.testing.assert_array_equal(got.labels, want.labels)
    assert min(want.keep_ratio) < 1.0, "the scene should make the model prune"
    monkeypatch.setenv("DTP_OPENVINO_EXTENSION", str(extension_path(build)))
    np.testing.assert_array_equal(Segmenter.open(models["dtop"], backend="openvino").predict(image).labels, got.labels)


def test_dtp_run_passes_the_extension(build, models, tmp_path, monkeypatch):
    """``dtp-run --backend openvino --plugin-lib`` runs the plugin-flavour graph; without the
    extension it fails with exit 3 and says how to get it."""
    from click.testing import CliRunner

    from dtp_deploy.runtime.cli import main

    monkeypatch.delenv("DTP_OPENVINO_EXTENSION", raising=False)
    image = SyntheticScenes(1, 128, 160, seed=3)[0][0]
    Image.fromarray(image).save(tmp_path / "scene.png")
    args = [str(models["dtop"]), str(tmp_path / "scene.png"), "-o", str(tmp_path / "out"), "--backend", "openvino"]
    done = CliRunner().invoke(main, [*args, "--plugin-lib", str(extension_path(build))])
    assert done.exit_code == 0, done.output
    labels = np.asarray(Image.open(tmp_path / "out" / "scene_labels.png"))
    np.testing.assert_array_equal(labels, python_openvino(models["dtop"], build).predict(image).labels)
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 3 and "plugins/openvino/README.md" in done.output, done.output


def test_threads_share_one_segmenter(build, models, tmp_path):
    image = SyntheticScenes(1, 150, 200, seed=8)[0][0]
    labels, _, _ = cpp_predict(build, models["dtop"], image, tmp_path, "--threads", "4", "--repeat", "3")
    expected = python_openvino(models["dtop"], build).predict(image)
    np.testing.assert_array_equal(labels, expected.labels)


def test_plugin_graph_without_extension_says_how(build, models, tmp_path):
    """With no extension to load, the plugin-flavour graph is refused with the fix."""
    image = SyntheticScenes(1, 64, 64, seed=1)[0][0]
    np.save(tmp_path / "image.npy", image)
    env = {**os.environ, "DTP_OPENVINO_EXTENSION": str(tmp_path / "missing.so")}
    done = subprocess.run([str(build / "dtp_model_check"), str(models["dtop"]), str(tmp_path / "image.npy"),
                           str(tmp_path / "labels.npy")], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "cannot load the dtp OpenVINO extension" in done.stderr and "missing.so" in done.stderr


def test_c_api_end_to_end(build, models, tmp_path):
    if not (build / "dtp_c_api_check").is_file():
        pytest.skip("no C compiler: the C driver was not built")
    height, width = 130, 170
    image = SyntheticScenes(1, height, width, seed=2)[0][0]
    image.tofile(tmp_path / "image.rgb")
    done = subprocess.run([str(build / "dtp_c_api_check"), str(models["dtop"]), str(tmp_path / "image.rgb"),
                           str(height), str(width), str(tmp_path / "labels.bin")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "missing model: model missing.onnx does not exist" in done.stdout
    assert "bad mode: dtp_segmenter_create: mode 7" in done.stdout
    assert "empty image:" in done.stdout and "NULL segmenter:" in done.stdout
    expected = python_openvino(models["dtop"], build).predict(image)
    labels = np.fromfile(tmp_path / "labels.bin", np.int32).reshape(height, width)
    np.testing.assert_array_equal(labels, expected.labels)
    ratios = [float(v) for v in done.stdout.split("keep_ratio", 1)[1].split()]
    np.testing.assert_allclose(ratios, expected.keep_ratio, rtol=1e-6)


def test_example_segments_an_image_file(build, models, tmp_path):
    """dtp_segment_image on a PNG converted to PPM (what the example reads), writing the label
    and overlay PNGs."""
    image, mask = SyntheticScenes(1, 200, 280, seed=9)[0]
    Image.fromarray(image).save(tmp_path / "street.png")
    Image.open(tmp_path / "street.png").save(tmp_path / "street.ppm")
    done = subprocess.run([str(build / "dtp_segment_image"), str(models["dtop"]), str(tmp_path / "street.ppm"),
                           str(tmp_path / "labels.png"), str(tmp_path / "overlay.png")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    labels = np.asarray(Image.open(tmp_path / "labels.png"))
    overlay = np.asarray(Image.open(tmp_path / "overlay.png"))
    assert labels.shape == (200, 280) and overlay.shape == (200, 280, 3)
    np.testing.assert_array_equal(labels, python_openvino(models["dtop"], build).predict(image).labels)
    assert (labels == mask).mean() > 0.85  # the built-in model segments its scenes


def _readme_cpp() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```cpp\n") + 7
    return text[start:text.index("```", start)]


def test_readme_cpp_example_runs(build, models, tmp_path):
    """The README's C++ example, as written, compiled against the runtime library and run on
    the exported built-in model on the CPU."""
    (tmp_path / "example.cpp").write_text(_readme_cpp())
    package = Path(ov.__file__).parent
    library = sorted((package / "libs").glob("libopenvino.so*"))[0]
    compiler = shutil.which("c++") or shutil.which("g++")
    done = subprocess.run([compiler, "-std=c++17", "-I", str(ROOT / "plugins" / "runtime" / "include"),
                           str(tmp_path / "example.cpp"), str(build / "libdtp_runtime.a"), str(library),
                           f"-Wl,-rpath,{library.parent}", "-pthread", "-o", str(tmp_path / "example")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    (tmp_path / "dtop-vit-t.onnx").symlink_to(models["dtop"])
    done = subprocess.run([str(tmp_path / "example")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    names = python_openvino(models["dtop"], build).class_names
    assert done.stdout.split("label at (0, 0): ")[1].split(",")[0] in names


@pytest.mark.parametrize("form", ["props", "plain-json", "stem"])
def test_engine_sidecar_metadata(build, models, tmp_path, form):
    """An engine's metadata from the sidecar in the layout dtp-build writes (``<engine>.json``
    with the model's ``dtp.*`` metadata_props under ``"metadata"``), the plain-JSON form
    ``engine_props`` also accepts, and ``<stem>.json``; the values are the exported model's."""
    import json

    import onnx

    props = {p.key: p.value for p in onnx.load(str(models["dovit"]), load_external_data=False).metadata_props
             if p.key.startswith("dtp.")}
    meta = ModelMetadata.from_props(props)
    table = props if form != "plain-json" else {k: json.loads(v) for k, v in props.items()}
    sidecar = tmp_path / ("m.json" if form == "stem" else "m.engine.json")
    sidecar.write_text(json.dumps({"engine": "m.engine", "uses_plugins": True, "metadata": table}, indent=2))
    done = subprocess.run([str(build / "dtp_model_check"), "sidecar", str(tmp_path / "m.engine")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    facts = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert int(facts["keys"]) == len(props)
    np.testing.assert_array_equal(np.float32(facts["mean"].split(",")), np.float32(meta.mean))
    np.testing.assert_array_equal(np.float32(facts["std"].split(",")), np.float32(meta.std))
    assert int(facts["patch"]) == meta.patch_size
    assert tuple(map(int, facts["trained"].split(","))) == tuple(meta.trained_size)
    assert tuple(facts["names"].split(",")) == meta.class_names


def test_engine_sidecar_bad_value_is_named(build, tmp_path):
    (tmp_path / "m.engine.json").write_text('{"metadata": {"dtp.mean": "[1, 2]"}}')
    done = subprocess.run([str(build / "dtp_model_check"), "sidecar", str(tmp_path / "m.engine")],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "dtp.mean is not a list of 3 numbers" in done.stderr and "m.engine" in done.stderr
