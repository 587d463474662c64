"""A bounded closed-loop load test: ``clients`` threads each send ``requests`` requests back to
back, to a served model (:class:`~dtp_deploy.client.Client`) or to an in-process
:class:`~dtp_deploy.runtime.Segmenter` (the baseline), and the latencies are summarised."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def load_test(predict: Callable[[np.ndarray], object], images: Sequence[np.ndarray], *, clients: int,
              requests: int, warmup: int = 2) -> dict[str, float]:
    """Run ``clients`` threads, each calling ``predict`` on ``requests`` images (cycling through
    ``images``) after ``warmup`` untimed calls of its own. Returns throughput (images/s over the
    timed wall time) and latency percentiles in milliseconds."""
    if clients < 1 or requests < 1:
        raise ValueError(f"clients ({clients}) and requests ({requests}) must be at least 1")
    start_line = threading.Barrier(clients)

    def client(index: int) -> tuple[float, float, list[float]]:
        for i in range(warmup):
            predict(images[(index + i) % len(images)])
        start_line.wait()
        first, spent = time.perf_counter(), []
        for i in range(requests):
            begin = time.perf_counter()
            predict(images[(index * requests + i) % len(images)])
            spent.append((time.perf_counter() - begin) * 1e3)
        return first, time.perf_counter(), spent

    with ThreadPoolExecutor(clients) as pool:
        runs = list(pool.map(client, range(clients)))
    wall = max(r[1] for r in runs) - min(r[0] for r in runs)
    latencies = np.concatenate([np.asarray(r[2]) for r in runs])
    return {"clients": clients, "requests": int(latencies.size), "throughput": latencies.size / wall,
            "p50_ms": float(np.percentile(latencies, 50)), "p90_ms": float(np.percentile(latencies, 90)),
            "p99_ms": float(np.percentile(latencies, 99))}
