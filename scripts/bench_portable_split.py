"""Time the portable (standard-ONNX) TokenSplit on ONNX Runtime, today's lowering against the one
of an older git revision, side by side in one run.

Example (ViT-B-like token count, ADE20K classes, DToP's context rule)::

    PYTHONPATH=. .venv/bin/python scripts/bench_portable_split.py --before d12b022 \\
        --tokens 1024 --channels 768 --classes 150 --json split.json

Each graph holds one split exported with ``torch.onnx.export`` exactly as in a model; both run on
the same inputs, their outputs are compared, and timings are interleaved so that load on the
machine hits both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _lowering_at(revision: str):
    """``exporters.lowering`` as it was at ``revision`` (loaded beside today's, same package)."""
    source = subprocess.run(["git", "show", f"{revision}:exporters/lowering.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    name = f"exporters._lowering_{revision}"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "exporters"
    exec(compile(source, f"{revision}:exporters/lowering.py", "exec"), module.__dict__)
    sys.modules[name] = module
    return module


def _export(lowering, args) -> bytes:
    import torch

    import dtp_deploy.ops.library  # noqa: F401  (registers torch.ops.dtp.*)

    class Split(torch.nn.Module):
        def forward(self, tokens, confidence, label, index):
            return torch.ops.dtp.token_split(tokens, confidence, label, index, args.threshold,
                                             args.topk, args.classes)

    b, n, c = args.batch, args.tokens, args.channels
    example = (torch.zeros(b, n, c), torch.zeros(b, n), torch.zeros(b, n, dtype=torch.int32),
               torch.zeros(b, n, dtype=torch.int32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Split(), example, dynamo=True, opset_version=18,
                                    input_names=["tokens", "confidence", "label", "index"],
                                    custom_translation_table=lowering.translation_table("portable"),
                                    verbose=False)
    return program.model_proto.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="git revision whose lowering to compare against")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=768)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--present", type=int, default=15,
                        help="distinct classes predicted in an image (labels drawn among them)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--confident", type=float, default=0.6, help="share above the threshold")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from exporters import lowering

    graphs = {"today": lowering}
    if args.before:
        graphs[f"at {args.before}"] = _lowering_at(args.before)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {name: ort.InferenceSession(_export(module, args), options,
                                           providers=["CPUExecutionProvider"])
                for name, module in graphs.items()}

    rng = np.random.default_rng(0)
    b, n = args.batch, args.tokens
    high = rng.random((b, n)) < args.confident
    confidence = np.where(high, rng.uniform(args.threshold, 1.0, (b, n)) + 1e-3,
                          rng.uniform(0.0, args.threshold, (b, n))).astype(np.float32)
    feeds = {"tokens": rng.standard_normal((b, n, args.channels), dtype=np.float32),
             "confidence": confidence,
             "label": rng.choice(rng.choice(args.classes, min(args.present, args.classes),
                                            replace=False), (b, n)).astype(np.int32),
             "index": np.tile(np.arange(n, dtype=np.int32), (b, 1))}
    outputs = {name: s.run(None, feeds) for name, s in sessions.items()}  # also the warm-up
    first = next(iter(outputs.values()))
    for name, out in outputs.items():
        for got, want in zip(out, first):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} disagrees")
    times = {name: [] for name in sessions}
    for _ in range(args.runs):
        for name, session in sessions.items():  # interleaved
            start = time.perf_counter()
            session.run(None, feeds)
            times[name].append((time.perf_counter() - start) * 1e3)

    kept = int((first[1] >= 0).sum())
    results = {"batch": b, "tokens": n, "channels": args.channels, "classes": args.classes,
               "present": args.present,
               "topk": args.topk, "threshold": args.threshold, "kept": kept,
               "threads": args.threads, "runs": args.runs, "onnxruntime": ort.__version__,
               "graphs": {name: {"median_ms": float(np.median(t)),
                                 "p90_ms": float(np.percentile(t, 90))}
                          for name, t in times.items()}}
    print(f"portable TokenSplit, B={b} N={n} C={args.channels} K={args.classes} "
          f"({args.present} present) top-k={args.topk}, kept {kept} of {b * n}, "
          f"ORT {ort.__version__}, "
          f"{args.threads} thread(s), {args.runs} runs")
    print(f"{'lowering':<16}{'median ms':>12}{'p90 ms':>12}{'ratio':>10}")
    base = results["graphs"]["today"]["median_ms"]
    for name, row in results["graphs"].items():
        print(f"{name:<16}{row['median_ms']:>12.3f}{row['p90_ms']:>12.3f}"
              f"{row['median_ms'] / base:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
