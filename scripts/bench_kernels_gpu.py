#!/usr/bin/env python
"""Micro-benchmark of the CUDA token kernels vs the PyTorch reference ops (needs a CUDA GPU).

Times TokenSplit and TokenReconstruct at ViT-B/L sizes with CUDA events (warm-up, then median
over many runs) and reports the achieved bandwidth against the bytes each op must move:

  split:        read confidence/label/index (12 B/token) + kept rows, write kept rows + indices
  reconstruct:  read index + B*N rows (each from base or updates), write B*N rows

    python scripts/bench_kernels_gpu.py --json out/bench_kernels.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dtp_deploy.ops.reference import token_reconstruct, token_split  # noqa: E402
from dtp_deploy.trt.kernels_ext import load_kernels  # noqa: E402


def time_ms(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def inputs(b, n, c, dtype, keep, threshold=0.9, classes=150):
    tokens = torch.randn(b, n, c, device="cuda", dtype=dtype)
    low = torch.rand(b, n, device="cuda") < keep
    conf = torch.where(low, threshold * torch.rand(b, n, device="cuda"),
                       threshold + 1e-3 + (1 - threshold - 1e-3) * torch.rand(b, n, device="cuda"))
    label = torch.randint(0, classes, (b, n), device="cuda", dtype=torch.int32)
    index = torch.arange(n, device="cuda", dtype=torch.int32).expand(b, n).contiguous()
    return tokens, conf, label, index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--channels", type=int, nargs="+", default=[768, 1024])
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--keep", type=float, default=0.5, help="share of tokens below threshold")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=100)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_kernels_gpu: no CUDA device", file=sys.stderr)
        return 2
    ext = load_kernels()
    dtype = getattr(torch, args.dtype)
    rows = []
    for b in args.batches:
        for n in args.tokens:
            for c in args.channels:
                tokens, conf, label, index = inputs(b, n, c, dtype, args.keep)
                kept, kept_index, _, max_count = ext.token_split_raw(tokens, conf, label, index,
                                                                     0.9, 5, 150, False)
                m = int(max_count.item())
                kept_rows = int((kept_index.view(-1)[: b * m] >= 0).sum())
                elem = tokens.element_size()
                # metadata in + kept rows read + all B*M output rows (kept or zero) and indices written
                split_bytes = b * n * 12 + kept_rows * c * elem + b * m * (c * elem + 4)
                rec_kept = kept.view(-1)[: b * m * c].view(b, m, c)
                rec_index = kept_index.view(-1)[: b * m].view(b, m)
                base = torch.randn_like(tokens)
                rec_bytes = b * m * 4 + 2 * b * n * c * elem
                split_ms = time_ms(partial(ext.token_split_raw, tokens, conf, label, index, 0.9, 5, 150,
                                           False), args.warmup, args.iters)
                ref_split_ms = time_ms(partial(token_split, tokens, conf, label, index, threshold=0.9,
                                               context_topk=5, num_classes=150),
                                       args.warmup, args.iters)
                rec_ms = time_ms(partial(ext.token_reconstruct, base, rec_kept, rec_index),
                                 args.warmup, args.iters)
                ref_rec_ms = time_ms(partial(token_reconstruct, base, rec_kept, rec_index),
                                     args.warmup, args.iters)
                rows.append({
                    "B": b, "N": n, "C": c, "dtype": args.dtype, "M": m,
                    "split_ms": split_ms, "split_ref_ms": ref_split_ms,
                    "split_GBps": split_bytes / split_ms / 1e6,
                    "reconstruct_ms": rec_ms, "reconstruct_ref_ms": ref_rec_ms,
                    "reconstruct_GBps": rec_bytes / rec_ms / 1e6,
                })
    header = (f"{'B':>3} {'N':>5} {'C':>5} {'M':>5} | {'split ms':>9} {'ref ms':>8} {'GB/s':>7} | "
              f"{'recon ms':>9} {'ref ms':>8} {'GB/s':>7}")
    print(f"device: {torch.cuda.get_device_name()}  dtype: {args.dtype}  keep: {args.keep}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['B']:>3} {r['N']:>5} {r['C']:>5} {r['M']:>5} | {r['split_ms']:>9.4f} "
              f"{r['split_ref_ms']:>8.3f} {r['split_GBps']:>7.1f} | {r['reconstruct_ms']:>9.4f} "
              f"{r['reconstruct_ref_ms']:>8.3f} {r['reconstruct_GBps']:>7.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(),
                                         "torch": torch.__version__, "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
