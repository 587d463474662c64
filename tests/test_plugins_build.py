"""The CMake build of the kernels and the plugin library (run after scripts/build_plugins.sh), and
the plugin glue's host-side contract test on the nodes of a graph the exporter wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "plugins"
NO_DEVICE_EXIT = 77  # kernel_test's "skipped: no CUDA device"

needs_build = pytest.mark.skipif(not (BUILD / "CMakeCache.txt").is_file(),
                                 reason="build/plugins missing: run scripts/build_plugins.sh")


def _has_cuda_device() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _contract_tests() -> list[Path]:
    """One contract-test binary per TensorRT header version the build found."""
    return sorted(p for p in BUILD.rglob("dtp_plugin_contract_test*") if p.is_file() and os.access(p, os.X_OK))


@needs_build
def test_kernel_test_binary_runs_on_gpu():
    binary = BUILD / "dtp_kernel_test"
    assert binary.is_file() and os.access(binary, os.X_OK), f"{binary} was not built"
    result = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    if not _has_cuda_device():
        assert result.returncode == NO_DEVICE_EXIT, result.stdout + result.stderr
        assert "no CUDA device" in result.stdout
        pytest.skip("no CUDA device: dtp_kernel_test was built and exited 77 (skipped); kernels not run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 case(s) failed" in result.stdout


@needs_build
def test_plugin_library_exports_and_smoke():
    library = BUILD / "libdtp_plugins.so"
    smoke = BUILD / "dtp_plugin_smoke"
    if not library.is_file():
        pytest.skip("libdtp_plugins.so not built (no TensorRT headers at configure time)")
    result = subprocess.run([str(smoke), str(library)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 check(s) failed" in result.stdout
    nm = shutil.which("nm")
    if nm:
        symbols = subprocess.run([nm, "-D", "--defined-only", str(library)], capture_output=True,
                                 text=True, check=True).stdout.split()
        assert "getCreators" in symbols and "setLoggerFinder" in symbols
        undefined = subprocess.run([nm, "-D", "--undefined-only", str(library)],
                                   capture_output=True, text=True, check=True).stdout
        assert "nvinfer1" not in undefined and "getPluginRegistry" not in undefined


@needs_build
@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf")
def test_plugin_library_links_the_cuda_runtime_statically():
    """It must load beside a TensorRT built for another CUDA minor: no libcudart.so.N needed."""
    libraries = sorted(BUILD.rglob("libdtp_plugins.so"))
    if not libraries:
        pytest.skip("libdtp_plugins.so not built (no TensorRT headers at configure time)")
    for library in libraries:
        needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True,
                                check=True).stdout
        assert "libcudart" not in needed, f"{library} needs the shared CUDA runtime:\n{needed}"


# -- the contract test on an exported graph --------------------------------------------------------
@pytest.fixture(scope="module")
def exported_plugin_graph(tmp_path_factory):
    """The built-in DToP model's plugin-flavour graph, as dtp-export writes it, with both exits
    on (its shipped second threshold is 1, which exports no second split) so that the graph
    chains two splits."""
    from dtp_deploy.builtin import load_builtin_model
    from exporters.export import export_onnx

    model = load_builtin_model(thresholds=(0.9, 0.9))
    path = tmp_path_factory.mktemp("plugin-graph") / "builtin-plugin.onnx"
    export_onnx(model, path, flavour="plugin", check=False, progress=False)
    height, width = model.config.img_size
    return onnx.load(path), (height // model.config.patch_size, width // model.config.patch_size)


def _dump_dtp_nodes(model: onnx.ModelProto, grid: tuple[int, int], path: Path) -> Path:
    """The dtp nodes and their attributes in the text form plugin_contract_test.cpp reads."""
    lines = [f"grid {grid[0]} {grid[1]}"]
    for node in model.graph.node:
        if node.domain != "dtp":
            continue
        lines.append(f"node {node.op_type} {node.name}")
        for attr in node.attribute:
            value = onnx.helper.get_attribute_value(attr)
            if attr.type == onnx.AttributeProto.FLOAT:
                lines.append(f"attr {attr.name} FLOAT {float(value).hex()}")
            elif attr.type == onnx.AttributeProto.INT:
                lines.append(f"attr {attr.name} INT {value}")
            elif attr.type == onnx.AttributeProto.STRING:
                lines.append(f"attr {attr.name} STRING {value.decode()}")
            else:
                raise AssertionError(f"{node.name}: attribute {attr.name} of a type TensorRT's ONNX "
                                     "parser does not turn into a plugin field")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_exported_splits_carry_the_grid_bound(exported_plugin_graph):
    model, grid = exported_plugin_graph
    splits = [n for n in model.graph.node if n.domain == "dtp" and n.op_type == "TokenSplit"]
    assert len(splits) >= 2
    for node in splits:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("max_tokens") == grid[0] * grid[1], node.name


def _chained_splits(width: int | str) -> onnx.ModelProto:
    """Two chained TokenSplit nodes whose first sees `width` tokens (the second: its M)."""
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [1, width, 8]),
              helper.make_tensor_value_info("confidence", TensorProto.FLOAT, [1, width]),
              helper.make_tensor_value_info("label", TensorProto.INT32, [1, width]),
              helper.make_tensor_value_info("index", TensorProto.INT32, [1, width])]
    attrs = dict(domain="dtp", threshold=0.9, context_topk=0, num_classes=5, plugin_namespace="dtp",
                 plugin_version="1")
    first = helper.make_node("TokenSplit", ["tokens", "confidence", "label", "index"], ["t1", "i1"],
                             name="split_1", **attrs)
    conf = helper.make_node("Cast", ["i1"], ["c1"], to=TensorProto.FLOAT)
    second = helper.make_node("TokenSplit", ["t1", "c1", "i1", "i1"], ["t2", "i2"], name="split_2", **attrs)
    out = helper.make_tensor_value_info("t2", TensorProto.FLOAT, None)
    graph = helper.make_graph([first, conf, second], "chain", inputs, [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dtp", 1)])


@pytest.mark.parametrize("width, bound", [(145, 145), ("n", None)], ids=["grid-plus-class-token", "dynamic-shape"])
def test_split_bound_is_the_first_splits_static_width(width, bound):
    """max_tokens is the width of the sequence the first split sees (DoViT's class token
    included), written on every split; a dynamic width gives no bound."""
    from exporters.schemas import bound_token_splits

    model = _chained_splits(width)
    assert bound_token_splits(model) == bound
    written = [a.i for n in model.graph.node for a in n.attribute if a.name == "max_tokens"]
    assert written == ([bound, bound] if bound else [])


@needs_build
def test_plugin_contract_on_exported_nodes(exported_plugin_graph, tmp_path):
    """Every TokenSplit/TokenReconstruct node of the exported graph becomes a plugin through
    fields built as TensorRT's ONNX parser builds them, and the chain split -> split ->
    reconstruct passes the IExprBuilder rules, for each TensorRT header version built."""
    binaries = _contract_tests()
    if not binaries:
        pytest.skip("no dtp_plugin_contract_test built (no TensorRT headers at configure time)")
    nodes = _dump_dtp_nodes(*exported_plugin_graph, tmp_path / "nodes.txt")
    for binary in binaries:
        result = subprocess.run([str(binary), "--graph", str(nodes)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0 and "0 check(s) failed" in result.stdout, (
            f"{binary.name}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
        assert "ok   exported chain: no IExprBuilder rule broken" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("cmake") is None,
                    reason="needs nvcc and cmake")
def test_configure_without_tensorrt_says_how_to_get_plugins(tmp_path):
    base = ["cmake", "-S", str(ROOT / "plugins"), "-DCMAKE_CUDA_ARCHITECTURES=80"]
    result = subprocess.run(
        [*base, "-B", str(tmp_path / "a"), "-DTensorRT_INCLUDE_DIR=TensorRT_INCLUDE_DIR-NOTFOUND"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TensorRT_ROOT": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    if "TensorRT headers:" in result.stdout:
        pytest.skip("TensorRT headers are installed system-wide here")
    assert "TensorRT headers not found" in result.stdout
    assert "-DTensorRT_ROOT=" in result.stdout
    missing = tmp_path / "no-tensorrt"
    result = subprocess.run(
        [*base, "-B", str(tmp_path / "b"), f"-DTensorRT_ROOT={missing}",
         "-DTensorRT_INCLUDE_DIR=TensorRT_INCLUDE_DIR-NOTFOUND"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())  # CMake wraps long messages
    assert f"TensorRT_ROOT={missing} has no include/NvInferRuntime.h" in message
