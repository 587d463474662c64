"""The benchmark: dense vs pruned from the same weights, interleaved, on every backend.

For every model x backend x input size x batch size, the dense and the pruned variant run in
alternation in one process (dense-pruned, then pruned-dense, ...), so that a noisy machine slows
both alike and their ratio holds. Each iteration takes the next batch from a pool of
pre-generated, pre-normalised images (synthetic scenes or ``--data``), because the keep ratios
depend on the content. See ``docs/bench.md`` for the JSON this produces.
"""

from __future__ import annotations

import contextlib
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data import SyntheticScenes
from ..preprocess import to_tensor
from .accuracy import gmacs, resize_image
from .backends import BACKENDS, BackendUnavailable, get_backend, host_peak_rss_mb

SCHEMA = "dtp-bench/1"


@dataclass
class BenchOptions:
    """What to time. ``sizes`` entries of None mean the model's trained size."""

    backends: Sequence[str] | None = None  # None: every backend that is available
    device: str = "cpu"
    batches: Sequence[int] = (1,)
    sizes: Sequence[tuple[int, int] | None] = (None,)
    iterations: int = 20
    duration: float | None = None  # seconds of timed iterations per configuration (overrides)
    warmup: int = 3
    fp16: bool = False
    pool: int = 16  # images in the input pool (at least two batches are generated)
    keep_schedule: Sequence[float] | None = None
    seed: int = 0
    threads: int | None = None
    data_pool: Any = field(default=None, repr=False)  # a dataset to draw timing inputs from


def percentiles(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "min": float(a.min()),
            "max": float(a.max())}


def device_name(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict[str, Any]:
    versions = {"dtp_deploy": __version__, "torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    for name in ("onnxruntime", "tensorrt"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"device": device, "device_name": device_name(device), "platform": platform.platform(),
            "cpu_count": __import__("os").cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda if device == "cuda" else None, "versions": versions}


def input_pool(model, count: int, height: int, width: int, *, seed: int = 0,
               dataset=None) -> tuple[torch.Tensor, str]:
    """``count`` normalised images ``(count, 3, H, W)`` float32 and where they came from."""
    cfg = model.config
    if dataset is not None and len(dataset) > 0:
        raw = np.stack([resize_image(dataset[i % len(dataset)][0], height, width) for i in range(count)])
        source = f"{getattr(dataset, 'name', 'folder')} ({min(count, len(dataset))} images)"
    else:
        scenes = SyntheticScenes(count, height, width, seed=seed)
        raw = np.stack([scenes[i][0] for i in range(count)])
        source = f"synthetic scenes ({count})"
    return to_tensor(raw, cfg.mean, cfg.std), source


def schedule_thresholds(model, images: torch.Tensor, schedule: Sequence[float]) -> list[float]:
    """Thresholds that make this batch keep about ``schedule[s] * N`` tokens per image when
    entering stage ``s + 1``: each auxiliary head's threshold is set to the quantile of the
    active tokens' confidences that leaves that many (``context_topk`` tokens per class stay
    on top, so the kept counts come out slightly above the schedule).

    Run untimed, once per pool batch; the timed pruned runs then use these fixed thresholds, so
    the timing includes no quantile and no extra synchronisation.
    """
    aux = model.config.num_stages - 1
    if len(schedule) != aux or not all(0 < r <= 1 for r in schedule):
        raise ValueError(f"--keep-schedule needs {aux} ratios in (0, 1] for {model.config.arch}, "
                         f"got {list(schedule)}")
    thresholds = [1.0] * aux
    original = model.run_head  # the bound method; an instance attribute shadows it below
    tokens_total = None

    def run_head(stage, tokens, index, bias, state, grid):
        nonlocal tokens_total
        state, confidence, label = original(stage, tokens, index, bias, state, grid)
        if stage < aux:
            active = index >= 0
            if tokens_total is None:
                tokens_total = int(active.shape[1])
            wanted = schedule[stage] * tokens_total * index.shape[0]
            conf = confidence[active].float()
            q = min(1.0, wanted / max(1, conf.numel()))
            thresholds[stage] = 1.0 if q >= 1.0 else float(torch.quantile(conf, q))
            model.thresholds = tuple(thresholds)  # forward reads it right after this hook
        return state, confidence, label

    saved_pruning, saved_thresholds = model.pruning, model.thresholds
    model.pruning, model.thresholds = True, tuple(thresholds)
    model.run_head = run_head
    try:
        with torch.inference_mode():
            model(images)
    finally:
        del model.run_head
        model.pruning, model.thresholds = saved_pruning, saved_thresholds
    return thresholds


@contextlib.contextmanager
def _thresholds(model, thresholds: Sequence[float] | None):
    """``model`` with ``thresholds`` for the duration (unchanged when None)."""
    saved = model.thresholds
    if thresholds is not None:
        model.thresholds = tuple(thresholds)
    try:
        yield model
    finally:
        model.thresholds = saved


def interleave(variants: dict[str, Any], inputs: dict[str, list[Any]], *, warmup: int,
               iterations: int, duration: float | None,
               tick: Callable[[int], None] | None = None) -> dict[str, dict[str, list]]:
    """Alternate the variants (order flipped every iteration); per variant the timed samples
    ``ms``, ``keep`` rows and ``cuda_peak`` bytes (when the variant reports them)."""
    names = list(variants)
    out = {n: {"ms": [], "keep": [], "cuda_peak": []} for n in names}
    i, timed, started = 0, 0, None
    while True:
        measuring = i >= warmup
        if measuring and started is None:
            started = time.perf_counter()
        for name in (names if i % 2 == 0 else names[::-1]):
            variant, pool = variants[name], inputs[name]
            if variant.cuda_memory:
                torch.cuda.reset_peak_memory_stats()
            ms, keep = variant.timed(pool[i % len(pool)])
            if measuring:
                out[name]["ms"].append(ms)
                out[name]["keep"].append(keep)
                if variant.cuda_memory:
                    out[name]["cuda_peak"].append(torch.cuda.max_memory_allocated())
        i += 1
        if measuring:
            timed += 1
            if tick:
                tick(timed)
            if duration is not None:
                if time.perf_counter() - started >= duration and timed >= 3:
                    break
            elif timed >= iterations:
                break
    return out


def _variant_stats(model, samples: dict[str, list], batch: int, grid: tuple[int, int],
                   pruned: bool) -> dict[str, Any]:
    ms = samples["ms"]
    keep = np.concatenate(samples["keep"])
    tokens = grid[0] * grid[1]
    per_image = gmacs(model, keep, grid, pruned)
    lat = percentiles(ms)
    return {
        "iterations": len(ms),
        "latency_ms": lat,
        "latency_per_image_ms": {k: v / batch for k, v in lat.items()},
        "throughput_img_s": batch * 1e3 / lat["median"],
        "gmacs_per_image": float(per_image.mean()),
        "keep_counts_mean": keep.mean(0).tolist(),
        "keep_ratios": (keep.mean(0) / tokens).tolist(),
        "peak_cuda_memory_mb": (max(samples["cuda_peak"]) / 2**20) if samples["cuda_peak"] else None,
    }


def run_benchmark(models: Sequence[tuple[str, Any]], options: BenchOptions, *,
                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Time every model on every requested backend; a JSON-ready dict (schema in docs/bench.md).

    ``models`` are ``(label, model)`` pairs; ``progress(description, done, total)`` is called
    as iterations complete. Unavailable backends give results with ``status: "unavailable"``.
    """
    if options.threads:
        torch.set_num_threads(options.threads)
    names = list(options.backends or BACKENDS)
    backends = {n: get_backend(n) for n in names}
    for backend in backends.values():
        backend.threads = options.threads
    reasons = {n: b.unavailable(options.device, options.fp16) for n, b in backends.items()}
    if options.backends is None:  # "all": those that can run here
        names = [n for n in names if reasons[n] is None] or ["torch"]
    report: dict[str, Any] = {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(options.device),
        "settings": {**{k: v for k, v in asdict(options).items() if k != "data_pool"},
                     "interleaved": True, "precision": "fp16" if options.fp16 else "fp32"},
        "backends": {n: {"available": r is None, "reason": r, "version": backends[n].version()}
                     for n, r in reasons.items()},
        "models": [], "results": [],
    }
    for key in ("batches", "sizes", "backends", "keep_schedule"):
        value = report["settings"][key]
        report["settings"][key] = None if value is None else [list(v) if isinstance(v, tuple) else v for v in value]

    work = []
    saved_states: list[tuple[Any, bool, tuple[float, ...]]] = []
    for label, model in models:
        saved_states.append((model, model.pruning, model.thresholds))
        cfg = model.config
        report["models"].append({"model": label, "arch": cfg.arch, "method": cfg.method,
                                 "params": sum(p.numel() for p in model.parameters()),
                                 "num_classes": cfg.num_classes, "thresholds": list(model.thresholds),
                                 "stages": [[s + 1, e] for s, e in model.stage_ranges()]})
        for size in options.sizes:
            height, width = size or cfg.img_size
            if height % cfg.patch_size or width % cfg.patch_size:
                raise ValueError(f"--size {height}x{width} must be multiples of {cfg.patch_size}")
            for batch in options.batches:
                for name in names:
                    work.append((label, model, name, height, width, int(batch)))
    total = len(work) * options.iterations if options.duration is None else len(work)

    done = 0
    with tempfile.TemporaryDirectory(prefix="dtp-bench-") as workdir:
        pools: dict[tuple, tuple[torch.Tensor, str]] = {}
        for label, model, name, height, width, batch in work:
            desc = f"{label} {name} b{batch} {height}x{width}"
            result = {"model": label, "backend": name, "device": options.device,
                      "device_name": report["environment"]["device_name"],
                      "precision": "fp16" if options.fp16 else "fp32", "batch": batch,
                      "height": height, "width": width,
                      "tokens": (height // model.config.patch_size) * (width // model.config.patch_size),
                      "keep_schedule": list(options.keep_schedule) if options.keep_schedule else None,
                      "status": "ok", "reason": None}
            if progress:
                progress(desc, done, total)
            try:
                if reasons[name]:
                    raise BackendUnavailable(reasons[name])
                key = (id(model), height, width)
                count = max(options.pool, 2 * batch)
                if key not in pools or pools[key][0].shape[0] < count:
                    pools[key] = input_pool(model, count, height, width, seed=options.seed,
                                            dataset=options.data_pool)
                images, source = pools[key]
                result["inputs"] = source
                n = images.shape[0]
                batches = [images[(np.arange(batch) + j * batch) % n] for j in range(max(1, n // batch))]
                backend = backends[name]
                fixed = None  # graphs (ONNX, TensorRT) bake thresholds in: one set for the pool
                if options.keep_schedule and name != "torch":
                    fixed = schedule_thresholds(model, images[:4], options.keep_schedule)
                    result["scheduled_thresholds"] = [fixed]
                with _thresholds(model, fixed):
                    variants = {
                        variant: backend.variant(model, pruned=variant == "pruned", batch=batch,
                                                 height=height, width=width, device=options.device,
                                                 fp16=options.fp16, workdir=workdir)
                        for variant in ("dense", "pruned")}
                schedules = [None] * len(batches)
                if options.keep_schedule and fixed is None:
                    # on the timed module (device, precision), so the schedule matches what runs
                    module = backend.module(model, options.device, options.fp16)
                    dtype = next(module.parameters()).dtype
                    schedules = [schedule_thresholds(module, b.to(options.device, dtype),
                                                     options.keep_schedule) for b in batches]
                    result["scheduled_thresholds"] = schedules
                inputs = {"dense": [variants["dense"].place(b) for b in batches],
                          "pruned": [variants["pruned"].place(b, t) for b, t in zip(batches, schedules)]}
                base = done

                def tick(timed: int, base=base, desc=desc) -> None:
                    if progress:
                        progress(desc, base + (timed if options.duration is None else 0), total)

                samples = interleave(variants, inputs, warmup=options.warmup,
                                     iterations=options.iterations, duration=options.duration,
                                     tick=tick)
                grid = (height // model.config.patch_size, width // model.config.patch_size)
                dense = _variant_stats(model, samples["dense"], batch, grid, pruned=False)
                pruned = _variant_stats(model, samples["pruned"], batch, grid, pruned=True)
                result.update({
                    "dense": dense, "pruned": pruned,
                    "speedup": dense["latency_ms"]["median"] / pruned["latency_ms"]["median"],
                    "latency_ratio": pruned["latency_ms"]["median"] / dense["latency_ms"]["median"],
                    "gmacs_ratio": pruned["gmacs_per_image"] / dense["gmacs_per_image"],
                    "peak_host_rss_mb": host_peak_rss_mb()})
            except BackendUnavailable as err:
                result.update(status="unavailable", reason=str(err))
            done += options.iterations if options.duration is None else 1
            if progress:
                progress(desc, done, total)
            report["results"].append(result)
    for model, pruning, thresholds in saved_states:  # the torch variants toggle these
        model.pruning, model.thresholds = pruning, thresholds
    return report


def load_models(specs: Sequence[str], *, arch: str | None = None,
                thresholds: Sequence[float] | None = None, seed: int = 0,
                head_heads: int | None = None) -> list[tuple[str, Any]]:
    """``(label, model)`` for each spec: a checkpoint path, a built-in name (``dtop-vit-t``) or
    ``random:<preset>`` (random weights, seeded; for speed only). No spec: the built-in model."""
    from pathlib import Path

    from ..builtin import DEFAULT_BUILTIN, is_builtin_name, open_model
    from ..models import build_model

    out = []
    for spec in specs or [None]:
        if spec is None or is_builtin_name(spec):
            model, label = (open_model(spec, arch=arch, thresholds=thresholds, head_heads=head_heads),
                            f"built-in {spec or DEFAULT_BUILTIN}")
        elif spec.startswith("random:"):
            torch.manual_seed(seed)
            overrides = {} if head_heads is None else {"head_heads": head_heads}
            model, label = build_model(spec.split(":", 1)[1], **overrides).eval(), spec
            if thresholds is not None:
                model.set_thresholds(thresholds)
        else:
            model, label = (open_model(spec, arch=arch, thresholds=thresholds, head_heads=head_heads),
                            Path(spec).name)
        out.append((label, model.eval()))
    return out
