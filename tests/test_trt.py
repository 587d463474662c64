"""dtp_deploy.trt: plugin-library lookup, dtp-build's CLI contract, and (with TensorRT) engines."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from dtp_deploy.trt import plugins
from dtp_deploy.trt.build import ShapeProfile, parse_shape, shapes_from_onnx
from dtp_deploy.trt.cli import EXIT_NO_TRT, main

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def _tiny_onnx(path: Path, *, symbolic: bool, input_size=(64, 96)) -> Path:
    dims = ["batch", 3, "height", "width"] if symbolic else [2, 3, 32, 48]
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["scores"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if input_size is not None:
        helper.set_model_props(model, {"dtp.input_size": f"[{input_size[0]}, {input_size[1]}]"})
    onnx.save(model, str(path))
    return path


# -- plugin library lookup ------------------------------------------------------------------------
def test_missing_env_library_names_path_variable_and_fix(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "libdtp_plugins.so"
    monkeypatch.setenv(plugins.ENV_VAR, str(missing))
    with pytest.raises(plugins.PluginLibraryNotFound) as err:
        plugins.find_plugin_library()
    message = str(err.value)
    assert str(missing) in message and "$DTP_PLUGIN_LIB" in message
    assert "scripts/build_plugins.sh" in message


def test_explicit_path_wins_over_env(tmp_path, monkeypatch):
    library = tmp_path / "libdtp_plugins.so"
    library.write_bytes(b"\x7fELF")
    monkeypatch.setenv(plugins.ENV_VAR, str(tmp_path / "other.so"))
    assert plugins.find_plugin_library(library) == library.resolve()
    monkeypatch.setenv(plugins.ENV_VAR, str(library))
    assert plugins.find_plugin_library() == library.resolve()


def test_default_location_is_the_build_directory(monkeypatch):
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    expected = Path(__file__).resolve().parents[1] / "build" / "plugins" / "libdtp_plugins.so"
    assert plugins.default_library_path() == expected
    if expected.is_file():
        assert plugins.find_plugin_library() == expected.resolve()
    else:
        with pytest.raises(plugins.PluginLibraryNotFound, match="default build location"):
            plugins.find_plugin_library()


class _FakeRegistry:
    """TensorRT's plugin registry as it behaves: a library's creators register once."""

    def __init__(self, registered: bool):
        self.registered = registered
        self.loads = 0

    def get_creator(self, name, version, namespace):
        known = self.registered and name in plugins.PLUGIN_NAMES and (version, namespace) == ("1", "dtp")
        return object() if known else None

    def load_library(self, path):
        self.loads += 1
        if self.registered:
            return None  # the same creators cannot be registered twice
        self.registered = True
        return object()


@pytest.mark.parametrize("registered, loads", [(False, 1), (True, 0)],
                         ids=["loads-once", "already-registered-by-the-application"])
def test_plugin_library_loaded_once_per_process(tmp_path, monkeypatch, registered, loads):
    from types import SimpleNamespace

    library = tmp_path / "libdtp_plugins.so"
    library.write_bytes(b"")
    monkeypatch.setattr(plugins, "_LOADED", {})
    registry = _FakeRegistry(registered)
    trt = SimpleNamespace(get_plugin_registry=lambda: registry)
    for _ in range(2):  # two engines in one process
        assert plugins.load_plugin_library(trt, library) == library.resolve()
    assert registry.loads == loads


def test_trt_package_imports_without_tensorrt_or_cuda_bindings():
    code = ("import sys, dtp_deploy.trt, dtp_deploy.trt.cli, dtp_deploy.trt.engine, "
            "dtp_deploy.trt.build, dtp_deploy.trt.kernels_ext; "
            "bad = [m for m in ('tensorrt', 'pycuda', 'cuda', 'torch') if m in sys.modules]; "
            "sys.exit(f'imported at module import time: {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# -- shapes -----------------------------------------------------------------------------------
def test_trt_modules_import_in_one_direction():
    """build -> engine -> plugins: no module of the package imports one that imports it."""
    import ast

    package = Path(__file__).resolve().parents[1] / "dtp_deploy" / "trt"
    edges = {}
    for path in package.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dtp_deploy.trt."):
                found.add(node.module.rsplit(".", 1)[1])
            elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                found.add(node.module)
        edges[path.stem] = found
    assert "engine" in edges["build"]
    for module, imports in edges.items():
        for other in imports:
            assert module not in edges.get(other, set()), f"{module} and {other} import each other"


@pytest.mark.parametrize("bounds, refused", [((0, 0), ["split_2"]), ((144, 144), []), ((0, 144), [])],
                         ids=["dynamic-shape-export", "fixed-export", "first-split-may-use-its-width"])
def test_chained_splits_need_max_tokens(bounds, refused):
    from dtp_deploy.trt.build import check_split_bounds

    nodes = []
    for number, bound in enumerate(bounds, start=1):
        attrs = {"max_tokens": bound} if bound else {}
        nodes.append(helper.make_node("TokenSplit", ["t", "c", "l", "i"], ["kt", "ki"], name=f"split_{number}",
                                      domain="dtp", threshold=0.9, **attrs))
    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    if refused:
        with pytest.raises(ValueError, match="split_2 have no max_tokens.*without --dynamic-shape"):
            check_split_bounds(model, "m.onnx")
    else:
        check_split_bounds(model, "m.onnx")


def test_parse_shape():
    assert parse_shape("8x3x512X512") == (8, 3, 512, 512)
    for bad in ("1x3x512", "1x3x512xa", "0x3x8x8"):
        with pytest.raises(ValueError, match="BxCxHxW"):
            parse_shape(bad)


def test_shape_profile_must_be_ordered():
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile((2, 3, 64, 64), (1, 3, 64, 64), (4, 3, 64, 64))


def test_shapes_from_onnx_metadata(tmp_path):
    profile = shapes_from_onnx(_tiny_onnx(tmp_path / "m.onnx", symbolic=True))
    assert profile.min == profile.opt == profile.max == (1, 3, 64, 96)
    fixed = shapes_from_onnx(_tiny_onnx(tmp_path / "f.onnx", symbolic=False))
    assert fixed.max == (2, 3, 32, 48)
    with pytest.raises(ValueError, match="--min/--opt/--max"):
        shapes_from_onnx(_tiny_onnx(tmp_path / "n.onnx", symbolic=True, input_size=None))


# -- dtp-build CLI ------------------------------------------------------------------------------
@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_dtp_build_without_tensorrt_exits_with_clear_message(tmp_path):
    model = _tiny_onnx(tmp_path / "m.onnx", symbolic=False)
    result = CliRunner().invoke(main, [str(model), "-o", str(tmp_path / "m.engine")])
    assert result.exit_code == EXIT_NO_TRT
    assert "TensorRT is not installed" in result.output
    assert not (tmp_path / "m.engine").exists()


def test_dtp_build_rejects_partial_and_malformed_shapes(tmp_path):
    model = _tiny_onnx(tmp_path / "m.onnx", symbolic=True)
    runner = CliRunner()
    partial = runner.invoke(main, [str(model), "-o", str(tmp_path / "e"), "--min", "1x3x64x64"])
    assert partial.exit_code == 2 and "--min, --opt and --max" in partial.output
    bad = runner.invoke(main, [str(model), "-o", str(tmp_path / "e"), "--min", "1x3x64",
                               "--opt", "1x3x64x64", "--max", "1x3x64x64"])
    assert bad.exit_code == 2 and "BxCxHxW" in bad.output


def test_dtp_build_is_a_console_script():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'dtp-build = "dtp_deploy.trt.cli:main"' in text


# -- TensorRT (skipped without it) ----------------------------------------------------------------
def _library_or_skip() -> Path:
    try:
        return plugins.find_plugin_library()
    except plugins.PluginLibraryNotFound as err:
        pytest.skip(str(err))


@pytest.mark.trt
@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt does not import")
def test_plugin_library_registers_both_creators():
    import tensorrt as trt

    plugins.load_plugin_library(trt, _library_or_skip())
    registry = trt.get_plugin_registry()
    for name in plugins.PLUGIN_NAMES:
        assert registry.get_creator(name, "1", "dtp") is not None, name


def _split_reconstruct_onnx(path: Path, b: int, n: int, c: int) -> Path:
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("tokens", f, [b, n, c]),
              helper.make_tensor_value_info("confidence", f, [b, n]),
              helper.make_tensor_value_info("label", TensorProto.INT32, [b, n]),
              helper.make_tensor_value_info("index", TensorProto.INT32, [b, n]),
              helper.make_tensor_value_info("base", f, [b, n, c])]
    split = helper.make_node("TokenSplit", ["tokens", "confidence", "label", "index"],
                             ["kept_tokens", "kept_index"], domain="dtp", threshold=0.9,
                             context_topk=5, num_classes=7, plugin_namespace="dtp",
                             plugin_version="1")
    rec = helper.make_node("TokenReconstruct", ["base", "kept_tokens", "kept_index"], ["out"],
                           domain="dtp", plugin_namespace="dtp", plugin_version="1")
    out = helper.make_tensor_value_info("out", f, [b, n, c])
    graph = helper.make_graph([split, rec], "split_reconstruct", inputs, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("dtp", 1)])
    onnx.save(model, str(path))
    return path


@pytest.mark.trt
@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt does not import")
def test_plugin_engine_matches_reference(tmp_path):
    import torch

    from dtp_deploy.ops.reference import token_reconstruct, token_split
    from dtp_deploy.trt.build import build_engine
    from dtp_deploy.trt.engine import TrtEngine

    library = _library_or_skip()
    b, n, c = 2, 256, 64
    model = _split_reconstruct_onnx(tmp_path / "sr.onnx", b, n, c)
    engine_path = tmp_path / "sr.engine"
    record = build_engine(model, engine_path, plugin_lib=library)
    assert record["uses_plugins"] and record["plugin_library_sha256"]
    rng = np.random.default_rng(0)
    feeds = {"tokens": rng.standard_normal((b, n, c), dtype=np.float32),
             "confidence": rng.random((b, n), dtype=np.float32),
             "label": rng.integers(0, 7, (b, n), dtype=np.int32),
             "index": np.tile(np.arange(n, dtype=np.int32), (b, 1)),
             "base": rng.standard_normal((b, n, c), dtype=np.float32)}
    with TrtEngine(engine_path, library) as engine:
        got = engine.infer(feeds)["out"]
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    kept, kept_index = token_split(t["tokens"], t["confidence"], t["label"], t["index"],
                                   threshold=0.9, context_topk=5, num_classes=7)
    want = token_reconstruct(t["base"], kept, kept_index).numpy()
    np.testing.assert_array_equal(got, want)



# -- the exported two-split graph on TensorRT (GPU only; scripts/bench_gpu.sh runs these first) ----
@pytest.fixture(scope="module")
def builtin_plugin_engine(tmp_path_factory):
    """The built-in DToP model's plugin graph (two chained splits, batch 3) and its engine."""
    if not HAVE_TRT:
        pytest.skip("tensorrt does not import")
    library = _library_or_skip()
    from dtp_deploy.builtin import load_builtin_model
    from dtp_deploy.trt.build import build_engine
    from exporters.export import export_onnx

    root = tmp_path_factory.mktemp("trt-builtin")
    model = load_builtin_model(thresholds=(0.9, 0.9))  # both exits on (it ships with 0.5 / 1)
    onnx_path = root / "builtin-plugin.onnx"
    export_onnx(model, onnx_path, flavour="plugin", batch=3, check=False, progress=False)
    engine_path = root / "builtin-plugin.engine"
    build_engine(onnx_path, engine_path, plugin_lib=library)
    return model, onnx_path, engine_path, library


@pytest.mark.trt
def test_two_split_plugin_engine_matches_onnx_runtime(builtin_plugin_engine):
    """The first thing a GPU must prove: TensorRT builds the chained-split engine (size tensors
    bounded by max_tokens) and it computes what ONNX Runtime computes on the same graph."""
    pytest.importorskip("onnxruntime_extensions", reason="ONNX Runtime needs onnxruntime-extensions for plugin graphs")
    from dtp_deploy.trt.engine import TrtEngine
    from exporters.export import _check_images
    from exporters.ort_dtp_domain import create_session

    model, onnx_path, engine_path, library = builtin_plugin_engine
    images = _check_images(model, 3, *model.config.img_size).astype(np.float32)
    want_scores, want_keep = create_session(onnx_path).run(["scores", "keep_counts"], {"images": images})
    with TrtEngine(engine_path, plugin_lib=library) as engine:
        got = engine.infer({"images": images})
    assert (want_keep[:, -1] < want_keep[:, 0]).all(), "the check scenes must prune"
    np.testing.assert_array_equal(got["keep_counts"], want_keep)
    assert np.abs(got["scores"] - want_scores).max() <= 1e-3


@pytest.mark.trt
def test_cpp_runtime_on_the_plugin_engine(builtin_plugin_engine, tmp_path):
    """Second: the C++ runtime (plugin library loaded through Options::pluginLibrary) gives the
    labels the Python runtime gives on the same engine. Needs TensorRT_ROOT with include/ and lib/."""
    import os
    import shutil

    from PIL import Image

    from dtp_deploy.data import SyntheticScenes
    from dtp_deploy.runtime import Segmenter

    root = os.environ.get("TensorRT_ROOT")
    if not root or not (Path(root) / "include" / "NvInferRuntime.h").is_file() or shutil.which("cmake") is None:
        pytest.skip("set TensorRT_ROOT to a TensorRT install with include/ and lib/ (and install cmake)")
    model, _, engine_path, library = builtin_plugin_engine
    build = Path(__file__).resolve().parents[1] / "build" / "runtime-trt"
    runtime = Path(__file__).resolve().parents[1] / "plugins" / "runtime"
    subprocess.run(["cmake", "-S", str(runtime), "-B", str(build), f"-DTensorRT_ROOT={root}"], check=True,
                   capture_output=True, text=True)
    subprocess.run(["cmake", "--build", str(build), "-j4", "--target", "dtp_segment_image"], check=True,
                   capture_output=True, text=True)
    height, width = model.config.img_size
    rgb = SyntheticScenes(1, height, width, seed=7)[0][0]
    (tmp_path / "scene.ppm").write_bytes(f"P6 {width} {height} 255\n".encode() + rgb.tobytes())
    done = subprocess.run([str(build / "dtp_segment_image"), str(engine_path), str(tmp_path / "scene.ppm"),
                           str(tmp_path / "labels.png"), "--plugins", str(library)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    want = Segmenter.open(engine_path, plugin_lib=str(library)).predict(rgb).labels
    with Image.open(tmp_path / "labels.png") as png:
        np.testing.assert_array_equal(np.asarray(png), want)
