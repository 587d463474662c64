#!/usr/bin/env python3
"""Load test of dtp-serve against the in-process Segmenter on the same model and images.

For each concurrency (closed loop: each client sends its next request when the last one is
answered) it measures throughput and p50/p90/p99 latency of: the in-process Segmenter (threads
sharing one instance), and Triton over gRPC with dynamic batching on and off. Prints a table
and writes JSON.

    python scripts/bench_serve.py --clients 1 4 16 --requests 8 --json build/bench_serve.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from dtp_deploy.client import Client
from dtp_deploy.data.synthetic import SyntheticScenes
from dtp_deploy.runtime import Segmenter
from dtp_deploy.serve import ServingOptions, TritonServer, write_repository
from dtp_deploy.serve.loadtest import load_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="exported .onnx (default: the built-in dtop-vit-t, exported)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=8, help="timed requests per client")
    parser.add_argument("--size", type=int, nargs=2, default=[192, 192], metavar=("H", "W"))
    parser.add_argument("--max-queue-delay-us", type=int, default=5000)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dtp-bench-serve-") as scratch:
        model = args.model
        if model is None:
            from dtp_deploy.serve.repository import resolve_model

            model = resolve_model("dtop-vit-t", Path(scratch))
        images = [scene for scene, _ in SyntheticScenes(8, *args.size, seed=0)]
        rows = []
        local = Segmenter.open(model)
        for clients in args.clients:
            rows.append({"setup": "in-process Segmenter", **load_test(
                local.predict, images, clients=clients, requests=args.requests)})
        for batching in (True, False):
            repo = Path(scratch) / f"repo-{batching}"
            write_repository(model, repo, serving=ServingOptions(
                dynamic_batching=batching, max_queue_delay_us=args.max_queue_delay_us))
            with TritonServer.start(repo, exit_timeout=2) as server:
                url = server.endpoints.grpc if args.protocol == "grpc" else server.endpoints.http
                client = Client(url)
                for clients in args.clients:
                    rows.append({"setup": f"Triton {args.protocol}, dynamic batching {'on' if batching else 'off'}",
                                 **load_test(client.predict, images, clients=clients, requests=args.requests)})
                rows[-1]["batch_sizes"] = sorted(int(b["batch_size"]) for b in client.statistics()["batch_stats"])
    print(f"{'setup':42s} {'clients':>7s} {'img/s':>7s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s}")
    for row in rows:
        print(f"{row['setup']:42s} {row['clients']:7d} {row['throughput']:7.1f} {row['p50_ms']:8.1f} "
              f"{row['p90_ms']:8.1f} {row['p99_ms']:8.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(args.model or "dtop-vit-t (built-in)"),
                                         "size": args.size, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
