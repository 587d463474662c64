"""Where OpenVINO spends a pruned graph's time on the CPU, next to its dense twin.

    PYTHONPATH=. .venv/bin/python scripts/profile_openvino.py --threads 1 --json ov-profile.json
    PYTHONPATH=. .venv/bin/python scripts/profile_openvino.py --model random:dtop-vit-b --size 512 \
        --keep-schedule 0.6,0.5 --precision bf16 --threads 2 --scenes 4 --repeat 5

Exports a model's portable graphs (dense and pruned; the built-in model at its trained size by
default) and compiles each with OpenVINO (latency hint, per-node counters on). Two
measurements per graph:

* first sight vs steady state: each of ``--scenes`` new synthetic scenes is run twice in a row
  of passes; the first pass pays for the kernels OpenVINO compiles per token count;
* per node type: OpenVINO's own counters, the minimum over ``--repeat`` calls of one scene per
  node (the minimum drops preemption on a shared machine), summed by node and kernel type.

``--keep-schedule`` sets the exit thresholds as ``dtp-bench --keep-schedule`` does (once, on
the scenes), for random weights whose confidences mean nothing.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dtp_deploy.bench.run import load_models, schedule_thresholds  # noqa: E402
from dtp_deploy.data.synthetic import SyntheticScenes  # noqa: E402
from dtp_deploy.preprocess import to_tensor  # noqa: E402
from exporters import export_onnx  # noqa: E402


def _ms(seconds: list[float]) -> float:
    return float(np.median(seconds) * 1e3)


def profile(path: Path, scenes: np.ndarray, threads: int, repeat: int, precision: str) -> dict:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    passes = []
    for _ in range(2):
        times = []
        for image in scenes:
            start = time.perf_counter()
            request.infer({0: image[None]})
            times.append(time.perf_counter() - start)
        passes.append(times)
    per_node = collections.defaultdict(list)
    for _ in range(repeat):
        request.infer({0: scenes[0][None]})
        for info in request.profiling_info:
            per_node[(info.node_name, info.node_type, info.exec_type)].append(
                info.real_time.total_seconds() * 1e3)
    by_type = collections.Counter()
    for (_, node_type, exec_type), values in per_node.items():
        by_type[f"{node_type} ({exec_type})"] += min(values)
    return {"first_pass_ms": _ms(passes[0]), "second_pass_ms": _ms(passes[1]),
            "nodes": len(per_node), "node_min_sum_ms": sum(by_type.values()),
            "by_type_ms": dict(by_type.most_common())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dtop-vit-t",
                        help="built-in model name, checkpoint or random:<preset> (as dtp-bench)")
    parser.add_argument("--size", type=int, help="square input size (default: the trained size)")
    parser.add_argument("--keep-schedule", help="keep ratios per auxiliary stage, e.g. 0.6,0.5")
    parser.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                        help="OpenVINO inference precision (bf16 where the CPU has it)")
    parser.add_argument("--scenes", type=int, default=24, help="new scenes for the first/second pass")
    parser.add_argument("--repeat", type=int, default=30, help="calls per node minimum")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8, help="node types printed per graph")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    model = load_models([args.model])[0][1]
    height, width = (args.size, args.size) if args.size else model.config.img_size
    raw = SyntheticScenes(args.scenes, height, width, seed=5)
    scenes = to_tensor(np.stack([raw[i][0] for i in range(args.scenes)]), model.config.mean,
                       model.config.std)
    if args.keep_schedule:
        schedule = [float(r) for r in args.keep_schedule.split(",")]
        model.set_thresholds(schedule_thresholds(model, scenes, schedule))
    scenes = scenes.numpy()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("dense", "pruned"):
            path = Path(tmp) / f"{kind}.onnx"
            export_onnx(model, path, flavour="portable", height=height, width=width,
                        dense=kind == "dense", check=False, progress=False)
            results[kind] = profile(path, scenes, args.threads, args.repeat, args.precision)
    for kind, r in results.items():
        print(f"{kind}: first pass {r['first_pass_ms']:.2f} ms, second pass {r['second_pass_ms']:.2f} ms; "
              f"{r['nodes']} nodes, per-node minima sum to {r['node_min_sum_ms']:.2f} ms")
        for name, ms in list(r["by_type_ms"].items())[:args.top]:
            print(f"    {name:44s} {ms:7.3f} ms")
    print(f"pruned / dense, second pass: {results['pruned']['second_pass_ms'] / results['dense']['second_pass_ms']:.1%}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "size": [height, width],
                                               "precision": args.precision, "threads": args.threads,
                                               "thresholds": list(model.thresholds), **results}, indent=2))


if __name__ == "__main__":
    main()
