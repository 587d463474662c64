"""Small CPU probes behind BENCHMARKS' explanations of where pruning stops paying.

    PYTHONPATH=. .venv/bin/python scripts/probe_cpu_overheads.py shape-change --precision bf16 \\
        --extension build/runtime-openvino/openvino/libdtp_openvino_ops.so
    PYTHONPATH=. .venv/bin/python scripts/probe_cpu_overheads.py gemm-chain
    PYTHONPATH=. .venv/bin/python scripts/probe_cpu_overheads.py gemm-rows
    PYTHONPATH=. .venv/bin/python scripts/probe_cpu_overheads.py softmax
    PYTHONPATH=. .venv/bin/python scripts/probe_cpu_overheads.py ort-vitb-batch8
    PYTHONPATH=. .venv/bin/python scripts/probe_cpu_overheads.py eager-fold

* ``shape-change``: OpenVINO on the built-in model's dense and pruned graphs (and the plugin
  graph on the native dtp ops, with ``--extension``): mean call time cycling through new scenes
  (the token count changes every call) vs repeating each scene (it does not).
* ``gemm-chain``: 8 ViT-B MLPs (16 GEMMs, 768 <-> 3072) on 1024 and 640 rows, with a static row
  count and with one chosen at run time by NonZero + Gather, on OpenVINO bf16/f32 and ONNX
  Runtime: does the time shrink with the rows?
* ``gemm-rows``: the same chain on OpenVINO bf16 and f32 at every row count from 512 to 1024
  (step 32): how the time follows the row count.
* ``softmax``: ONNX Runtime's own profile of the Softmax in a batch-8 ViT-B attention
  (``[8, 12, 1024, 1024]``) on logits whose exponentials stay normal floats, and on two kinds
  whose exponentials reach the denormal range (wide logits; keys masked by the padding bias),
  with denormals kept and flushed to zero; and OpenVINO's time for the whole attention graph
  in the same six cases.
* ``ort-vitb-batch8``: the same profile of the exported ViT-B 512 pruned graph (random weights,
  ``dtp-bench``'s keep schedule 0.6,0.5 on the batch; a dynamic batch, so attention after a
  split runs on the padded layout): every attention Softmax, in order, with denormals kept and
  flushed.
* ``eager-fold``: the built-in model in eager PyTorch, dense and pruned, with the heads plain
  and folded for inference in alternating rounds over the scenes (median of each round's
  per-scene median).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dtp_deploy.models.vit import PAD_BIAS  # noqa: E402 - after the path set-up


def _graph(nodes: list, inputs: list, initializers: list) -> bytes:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "probe", inputs, [out], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def _select_rows(src: str, axis: int) -> tuple[list, str]:
    """Nodes that keep the rows of ``src`` along ``axis`` where the input mask ``m`` is true."""
    return ([helper.make_node("NonZero", ["m"], ["nz"]),
             helper.make_node("Squeeze", ["nz", "zero"], ["rows"]),
             helper.make_node("Gather", [src, "rows"], ["picked"], axis=axis)], "picked")


def _median_ms(calls: int, run, *args) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def shape_change(args) -> None:
    import openvino as ov

    from dtp_deploy.builtin import load_builtin_model
    from dtp_deploy.data.synthetic import SyntheticScenes
    from dtp_deploy.preprocess import to_tensor
    from exporters import export_onnx

    model = load_builtin_model(args.model)
    h, w = model.config.img_size
    raw = SyntheticScenes(args.scenes, h, w, seed=5)
    scenes = to_tensor(np.stack([raw[i][0] for i in range(args.scenes)]), model.config.mean,
                       model.config.std).numpy()
    core = ov.Core()
    graphs = {"dense": {"flavour": "portable", "dense": True}, "pruned": {"flavour": "portable"}}
    if args.extension:
        core.add_extension(args.extension)
        graphs["pruned, native dtp ops"] = {"flavour": "plugin"}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in graphs.items():
            path = Path(tmp) / "graph.onnx"
            export_onnx(model, path, check=False, progress=False, **options)
            request = core.compile_model(str(path), "CPU", {
                "INFERENCE_PRECISION_HINT": args.precision, "INFERENCE_NUM_THREADS": args.threads,
                "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
            for x in scenes:  # first sight of every token count, untimed
                request.infer({0: x[None]})
            cycling, repeating = [], []
            for _ in range(5):
                for x in scenes:
                    start = time.perf_counter()
                    request.infer({0: x[None]})
                    cycling.append(time.perf_counter() - start)
            for x in scenes:
                request.infer({0: x[None]})
                for _ in range(4):
                    start = time.perf_counter()
                    request.infer({0: x[None]})
                    repeating.append(time.perf_counter() - start)
            print(f"{args.model} {args.precision} {name}: {np.mean(cycling) * 1e3:.2f} ms a call "
                  f"cycling through {args.scenes} scenes, {np.mean(repeating) * 1e3:.2f} ms repeating each")


_MLP_DIM, _MLP_HIDDEN = 768, 3072  # ViT-B


def _mlp_chain(data_dependent: bool) -> bytes:
    """8 ViT-B MLPs (16 GEMMs) on ``x`` ``[1, n, 768]``; ``data_dependent``: on the rows that
    the input mask ``m`` keeps (NonZero + Gather), as after a split."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal(shape) * 0.02).astype(np.float32), name)
               for name, shape in (("w1", (_MLP_DIM, _MLP_HIDDEN)), ("w2", (_MLP_HIDDEN, _MLP_DIM)))]
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    nodes, src = _select_rows("x", 1) if data_dependent else ([], "x")
    for i in range(8):
        nodes += [helper.make_node("MatMul", [src, "w1"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"]),
                  helper.make_node("MatMul", [f"r{i}", "w2"], [f"b{i}"]),
                  helper.make_node("Add", [src, f"b{i}"], [f"x{i}"])]
        src = f"x{i}"
    nodes.append(helper.make_node("Identity", [src], ["y"]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n", _MLP_DIM])]
    if data_dependent:
        inputs.append(helper.make_tensor_value_info("m", TensorProto.BOOL, ["n"]))
    return _graph(nodes, inputs, weights + [zero] * data_dependent)


def _openvino_request(graph: bytes, precision: str, threads: int):
    import openvino as ov

    core = ov.Core()
    return core.compile_model(core.read_model(graph, b""), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()


def gemm_rows(args) -> None:
    rng = np.random.default_rng(1)
    graph = _mlp_chain(data_dependent=False)
    for precision in ("bf16", "f32"):
        request = _openvino_request(graph, precision, args.threads)
        times = []
        for rows in range(args.start, args.stop + 1, args.step):
            feed = {"x": rng.standard_normal((1, rows, _MLP_DIM)).astype(np.float32)}
            request.infer(feed)
            times.append(f"{rows}: {_median_ms(10, request.infer, feed):.1f}")
        print(f"openvino {precision}, 16 GEMMs, ms by row count: " + ", ".join(times))


def gemm_chain(args) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    for data_dependent in (False, True):
        graph = _mlp_chain(data_dependent)
        for rows in (1024, 640):
            # data-dependent: 1024 rows in, the mask keeps `rows`; static: `rows` rows in
            x = rng.standard_normal((1, 1024 if data_dependent else rows, _MLP_DIM)).astype(np.float32)
            feed = {"x": x, "m": np.arange(1024) < rows} if data_dependent else {"x": x}
            kind = "data-dependent" if data_dependent else "static"
            for precision in ("bf16", "f32"):
                request = _openvino_request(graph, precision, args.threads)
                request.infer(feed)
                print(f"openvino {precision} {kind} {rows} rows: "
                      f"{_median_ms(10, request.infer, feed):.2f} ms")
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(graph, options)
            session.run(None, feed)
            print(f"onnxruntime fp32 {kind} {rows} rows: {_median_ms(5, session.run, None, feed):.2f} ms")


def _ort_session(graph, threads: int, flush: bool, profile_dir: str):
    """A profiling session and its denormal handling, as the runtime's ONNX Runtime backend sets
    them up (``flush``: denormals flushed to zero in every thread that runs it)."""
    import onnxruntime as ort

    from dtp_deploy.runtime.denormals import FlushDenormals

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(profile_dir) / "profile")
    denormals = FlushDenormals()
    if flush:
        denormals.enable(options)
    with denormals.creating():
        return ort.InferenceSession(graph, options), denormals


def _kernel_ms(session, op_type: str) -> list[tuple[str, list, float]]:
    """``(node, input shape, ms)`` of every run of every ``op_type`` node in the profile."""
    events = json.loads(Path(session.end_profiling()).read_text())
    return [(e["name"], next(iter(e["args"]["input_type_shape"][0].values())), e["dur"] / 1e3)
            for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
            and e["args"]["op_name"] == op_type]


def softmax(args) -> None:
    import openvino as ov

    x = np.random.default_rng(0).standard_normal((8, 12, 1024, 64)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["x", "xt"], ["s"]),
             helper.make_node("Mul", ["s", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "x"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 12, 1024, 64]),
              helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
              helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1024])]
    graph = _graph(nodes, inputs, [])
    padded = np.where(np.arange(1024) < 512, 0, PAD_BIAS).astype(np.float32)
    cases = {"logits scaled by 1/sqrt(d)": (0.125, np.zeros(1024, np.float32)),
             "logits unscaled (wider)": (1.0, np.zeros(1024, np.float32)),
             f"logits scaled, half the keys padded (bias {PAD_BIAS:g})": (0.125, padded)}
    for case, (scale, bias) in cases.items():
        for flush in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                session, denormals = _ort_session(graph, args.threads, flush, tmp)
                feed = {"x": x, "scale": np.array(scale, np.float32), "bias": bias}
                with denormals.running():
                    for _ in range(5):
                        session.run(None, feed)
                softmax = [ms for _, _, ms in _kernel_ms(session, "Softmax")][1:]  # first: warm-up
            print(f"onnxruntime Softmax [8, 12, 1024, 1024], {case}, denormals "
                  f"{'flushed' if flush else 'kept'}: median {np.median(softmax):.0f} ms")
        for flush in (False, True):
            request = ov.Core().compile_model(ov.Core().read_model(graph, b""), "CPU", {
                "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads,
                "CPU_DENORMALS_OPTIMIZATION": flush}).create_infer_request()
            request.infer(feed)
            print(f"openvino f32 whole attention, {case}, denormals {'flushed' if flush else 'kept'}: "
                  f"median {_median_ms(5, request.infer, feed):.0f} ms")


def ort_vitb_batch8(args) -> None:
    from dtp_deploy.bench.run import input_pool, load_models, schedule_thresholds
    from exporters import export_onnx

    model = load_models(["random:dtop-vit-b"])[0][1]
    images, _ = input_pool(model, 8, 512, 512)
    model.set_thresholds(schedule_thresholds(model, images, [0.6, 0.5]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pruned.onnx"
        export_onnx(model, path, flavour="portable", batch=8, dynamic_batch=True, check=False,
                    progress=False)
        runs = {}
        for flush in (False, True):
            session, denormals = _ort_session(str(path), args.threads, flush, tmp)
            with denormals.running():
                for _ in range(3):
                    outputs = session.run(None, {"images": images.numpy()})
            last = {}  # the last run of each node: warm
            for node, shape, ms in _kernel_ms(session, "Softmax"):
                if shape[1] == 12:  # the encoder's attention, not the heads' (6 heads)
                    last[node] = (shape, ms)
            runs[flush] = last
    print("keep counts per image and stage:", outputs[1].tolist())
    print(f"  {'Softmax node':28s} {'input shape':22s} denormals kept / flushed")
    for node, (shape, ms) in runs[False].items():
        print(f"  {node:28s} {str(shape):22s} {ms:7.0f} / {runs[True][node][1]:.0f} ms")


def eager_fold(args) -> None:
    import torch

    from dtp_deploy.bench.run import input_pool
    from dtp_deploy.builtin import load_builtin_model

    torch.set_num_threads(args.threads)
    model = load_builtin_model(args.model)
    height, width = model.config.img_size
    images, _ = input_pool(model, args.scenes, height, width)
    times: dict[tuple[bool, bool], list[float]] = {}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for folded in (False, True):
                if folded:
                    model.fold_for_inference()
                else:
                    for head in model.heads:
                        head.unfold()
                for pruning in (False, True):
                    model.pruning = pruning
                    calls = []
                    for image in images:
                        start = time.perf_counter()
                        model(image[None])
                        calls.append((time.perf_counter() - start) * 1e3)
                    times.setdefault((folded, pruning), []).append(float(np.median(calls)))
    for folded in (False, True):
        dense, pruned = (float(np.median(times[(folded, p)])) for p in (False, True))
        print(f"{'folded' if folded else 'plain '} heads: dense {dense:.2f} ms, pruned {pruned:.2f} ms, "
              f"pruned/dense {pruned / dense:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    probes = parser.add_subparsers(dest="probe", required=True)

    def probe(name: str, run, summary: str, threads: int = 2) -> argparse.ArgumentParser:
        sub = probes.add_parser(name, help=summary)
        sub.add_argument("--threads", type=int, default=threads)
        sub.set_defaults(run=run)
        return sub

    change = probe("shape-change", shape_change, "OpenVINO's cost of a token count change", threads=1)
    change.add_argument("--model", default="dtop-vit-t", help="built-in model name")
    change.add_argument("--precision", default="bf16", choices=["bf16", "f32"])
    change.add_argument("--scenes", type=int, default=16)
    change.add_argument("--extension", help="libdtp_openvino_ops.so: also time the native dtp ops")
    probe("gemm-chain", gemm_chain, "GEMM time vs rows, static and data-dependent")
    sweep = probe("gemm-rows", gemm_rows, "OpenVINO GEMM time over a range of row counts")
    sweep.add_argument("--start", type=int, default=512)
    sweep.add_argument("--stop", type=int, default=1024)
    sweep.add_argument("--step", type=int, default=32)
    probe("softmax", softmax, "attention Softmax with denormals kept and flushed")
    probe("ort-vitb-batch8", ort_vitb_batch8, "the same in the exported ViT-B batch-8 graph")
    fold = probe("eager-fold", eager_fold, "eager PyTorch with and without the heads folded", threads=1)
    fold.add_argument("--model", default="dtop-vit-t", help="built-in model name")
    fold.add_argument("--scenes", type=int, default=16)
    fold.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
