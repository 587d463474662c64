"""The benchmark: dense vs pruned from the same weights, interleaved, on every backend.

For every model x backend x input size x batch size, the dense and the pruned variant run in
alternation in one process (dense-pruned, then pruned-dense, ...), so that a noisy machine slows
both alike and their ratio holds. Each iteration takes the next batch from a pool of
pre-generated, pre-normalised images (synthetic scenes or ``--data``), because the keep ratios
depend on the content. See ``docs/bench.md`` for the JSON this produces.
"""

from __future__ import annotations

import collections
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
from .backends import BACKENDS, PRECISIONS, BackendUnavailable, get_backend, host_peak_rss_mb

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
    precisions: Sequence[str] = ("fp32",)  # fp32, bf16, int8 (rows: backend x precision)
    calibration: int = 32  # calibration images for int8 (dtp-calibrate's scenes or --data)
    agreement_batches: int = 4  # pool batches on which graph rows are compared with fp32 PyTorch
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


def input_pool(model, count: int, height: int, width: int, *, seed: int = 0, dataset=None,
               with_masks: bool = False):
    """``count`` normalised images ``(count, 3, H, W)`` float32 and where they came from (and
    their label masks, at each sample's own size, with ``with_masks``)."""
    cfg = model.config
    if dataset is not None and len(dataset) > 0:
        samples = [dataset[i % len(dataset)] for i in range(count)]
        source = f"{getattr(dataset, 'name', 'folder')} ({min(count, len(dataset))} images)"
    else:
        scenes = SyntheticScenes(count, height, width, seed=seed)
        samples = [scenes[i] for i in range(count)]
        source = f"synthetic scenes ({count})"
    raw = np.stack([resize_image(image, height, width) for image, _ in samples])
    images = to_tensor(raw, cfg.mean, cfg.std)
    if with_masks:
        return images, source, [np.asarray(mask) for _, mask in samples]
    return images, source


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
    # Placeholders below 1, so that forward runs every head (at 1 no token could exit, and the
    # head would be skipped); each is replaced by its quantile before its split reads it.
    thresholds = [0.0] * aux
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
    ``ms``, ``keep`` rows, ``input`` (the pool position timed) and ``cuda_peak`` bytes (when the
    variant reports them), and ``first_ms``: the untimed first pass over its input pool.

    Every timed call directly follows an untimed call of the same variant, on the pool input
    before the timed one. Without it a variant would be timed just after another one has
    evicted its weights and activations from the caches and parked its thread pool, and which
    variant follows which is fixed by the order: with the order flipped each round, the first
    and last variants follow themselves at every turn while the others never do. On the 2-core
    development machine that alone raised eager PyTorch's pruned / dense by 0.05-0.07. A
    deployed process runs one model, so each variant is timed warm, as it would run there; the
    input still changes from call to call, as in a stream of images.

    The warm-up is ``warmup`` rounds but at least one pass over the pool: a pruned graph's
    token counts depend on the image, and backends that specialise kernels per shape (OpenVINO's
    CPU plugin compiles them on first sight, several ms each on the built-in model) would
    otherwise be timed compiling for every batch not yet seen, which dense graphs never do.
    """
    names = list(variants)
    out = {n: {"ms": [], "keep": [], "input": [], "cuda_peak": [], "first_ms": []} for n in names}
    first_pass = max(len(inputs[n]) for n in names) if names else 0
    warmup = max(warmup, first_pass)
    i, timed, started = 0, 0, None
    while True:
        measuring = i >= warmup
        if measuring and started is None:
            started = time.perf_counter()
        for name in (names if i % 2 == 0 else names[::-1]):
            variant, pool = variants[name], inputs[name]
            if measuring:
                variant.timed(pool[(i - 1) % len(pool)])  # the warm lead-in, see above
            if variant.cuda_memory:  # the peak of the timed input, not the lead-in's
                torch.cuda.reset_peak_memory_stats()
            ms, keep = variant.timed(pool[i % len(pool)])
            if i < len(pool):
                out[name]["first_ms"].append(ms)
            if measuring:
                out[name]["ms"].append(ms)
                out[name]["keep"].append(keep)
                out[name]["input"].append(i % len(pool))
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
                   pruned: bool, thresholds: Sequence[Sequence[float] | None] | None = None
                   ) -> dict[str, Any]:
    """``thresholds``: those each pool batch ran with (one set for all, or one per batch; None:
    the model's). They say which auxiliary heads ran, so which count in the GMACs."""
    ms = samples["ms"]
    keep = np.concatenate(samples["keep"])
    tokens = grid[0] * grid[1]
    per_image, padded = [], []
    for rows, position in zip(samples["keep"], samples["input"]):
        used = thresholds[position % len(thresholds)] if thresholds else None
        per_image.append(gmacs(model, rows, grid, pruned, thresholds=used))
        # a batch pads every image to its largest keep count per stage: the heads compute at
        # that width (the blocks run each image on its own rows), which is what a batch costs
        widths = np.broadcast_to(np.asarray(rows).max(0), np.shape(rows))
        padded.append(gmacs(model, rows, grid, pruned, widths, used))
    per_image = np.concatenate(per_image)
    lat = percentiles(ms)
    # The pool's inputs keep different token counts, so the median call is not the average
    # one; the GMACs are averaged over the pool. The time for the same work: the mean over the
    # pool of each input's median (the median drops the outliers of a noisy machine).
    by_input = collections.defaultdict(list)
    for position, value in zip(samples["input"], ms):
        by_input[position].append(value)
    return {
        "pool_mean_ms": float(np.mean([np.median(v) for v in by_input.values()])),
        "gmacs_padded_per_image": float(np.concatenate(padded).mean()),
        "iterations": len(ms),
        "latency_ms": lat,
        # the first sight of each pool batch (untimed warm-up): per-shape compilation shows here
        "first_pass_ms": percentiles(samples["first_ms"]) if samples.get("first_ms") else None,
        "latency_per_image_ms": {k: v / batch for k, v in lat.items()},
        "throughput_img_s": batch * 1e3 / lat["median"],
        "gmacs_per_image": float(per_image.mean()),
        "keep_counts_mean": keep.mean(0).tolist(),
        "keep_ratios": (keep.mean(0) / tokens).tolist(),
        "peak_cuda_memory_mb": (max(samples["cuda_peak"]) / 2**20) if samples["cuda_peak"] else None,
    }


def _row_key(backend: str, precision: str, variant: str) -> str:
    return f"{backend}/{precision}/{variant}"


def precision_agreement(model, outputs: list[tuple[np.ndarray, np.ndarray]],
                        reference: list[tuple[np.ndarray, np.ndarray]],
                        masks: Sequence[np.ndarray]) -> dict[str, Any]:
    """How a row's ``(scores, keep_counts)`` batches compare with the fp32 PyTorch reference on
    the same inputs: images whose keep counts all agree, token labels that agree, mIoU on the
    inputs' masks (both, and the change), and the mean absolute score difference."""
    from ..metrics import ConfusionMatrix
    from ..report import labels_from_scores

    k = model.config.num_classes
    cm, cm_ref = ConfusionMatrix(k), ConfusionMatrix(k)
    keep_same = images = label_same = tokens = 0
    diff = []
    i = 0
    for (scores, keep), (ref_scores, ref_keep) in zip(outputs, reference):
        keep_same += int((np.asarray(keep) == np.asarray(ref_keep)).all(axis=1).sum())
        images += len(keep)
        label_same += int((scores.argmax(1) == ref_scores.argmax(1)).sum())
        tokens += scores[:, 0].size
        diff.append(float(np.abs(scores - ref_scores).mean()))
        for j in range(len(scores)):
            mask = masks[i % len(masks)]
            i += 1
            cm.update(mask, labels_from_scores(torch.from_numpy(scores[j:j + 1]), mask.shape)[0])
            cm_ref.update(mask, labels_from_scores(torch.from_numpy(ref_scores[j:j + 1]), mask.shape)[0])
    return {"images": images, "keep_agreement": keep_same / max(images, 1),
            "label_agreement": label_same / max(tokens, 1), "miou": cm.miou(),
            "miou_fp32": cm_ref.miou(), "miou_change": cm.miou() - cm_ref.miou(),
            "mean_abs_score_diff": float(np.mean(diff)) if diff else None}


def run_benchmark(models: Sequence[tuple[str, Any]], options: BenchOptions, *,
                  progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Time every model on every requested backend and precision; a JSON-ready dict (schema in
    docs/bench.md).

    For each model x input size x batch, the dense and pruned variants of *all* backend x
    precision rows run interleaved in one loop, so that rows compare as fairly as dense and
    pruned do; each row then reports its speed-up against the slowest dense row of that
    configuration (``speedup_vs_slowest_dense``). Graph rows (ort, openvino) also report their
    agreement with the fp32 PyTorch model on the first ``options.agreement_batches`` pool
    batches (``accuracy_vs_fp32``).

    ``models`` are ``(label, model)`` pairs; ``progress(description, done, total)`` is called
    as iterations complete. Unavailable rows give results with ``status: "unavailable"``.
    """
    if options.threads:
        torch.set_num_threads(options.threads)
    names = list(options.backends or BACKENDS)
    backends = {n: get_backend(n) for n in names}
    for backend in backends.values():
        backend.threads = options.threads
    precisions = ["fp16"] if options.fp16 else list(dict.fromkeys(options.precisions))
    for precision in precisions:
        if precision not in (*PRECISIONS, "fp16"):
            raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)} (or --fp16)")
    reasons = {(n, pr): b.unavailable(options.device, options.fp16, "fp32" if pr == "fp16" else pr)
               for n, b in backends.items() for pr in precisions}
    rows = list(reasons)
    if options.backends is None:  # "all": those that can run here
        rows = [r for r in rows if reasons[r] is None] or [("torch", precisions[0])]
    report: dict[str, Any] = {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(options.device),
        "settings": {**{k: v for k, v in asdict(options).items() if k != "data_pool"},
                     "interleaved": True, "warm_lead_in": True,
                     "precision": "fp16" if options.fp16 else "fp32"},
        "backends": {n: {"available": reasons[(n, precisions[0])] is None,
                         "reason": reasons[(n, precisions[0])], "version": backends[n].version()}
                     for n in names},
        "models": [], "results": [],
    }
    for key in ("batches", "sizes", "backends", "keep_schedule", "precisions"):
        value = report["settings"][key]
        report["settings"][key] = None if value is None else [list(v) if isinstance(v, tuple) else v for v in value]

    configs = []
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
                configs.append((label, model, height, width, int(batch)))
    total = len(configs) * options.iterations if options.duration is None else len(configs)

    done = 0
    with tempfile.TemporaryDirectory(prefix="dtp-bench-") as workdir:
        pools: dict[tuple, tuple[torch.Tensor, str, list]] = {}
        for label, model, height, width, batch in configs:
            desc = f"{label} b{batch} {height}x{width}"
            if progress:
                progress(f"{desc}: building", done, total)
            tokens = (height // model.config.patch_size) * (width // model.config.patch_size)
            results = {}
            for name, precision in rows:
                results[(name, precision)] = {
                    "model": label, "backend": name, "device": options.device,
                    "device_name": report["environment"]["device_name"], "precision": precision,
                    "batch": batch, "height": height, "width": width, "tokens": tokens,
                    "keep_schedule": list(options.keep_schedule) if options.keep_schedule else None,
                    "status": "ok", "reason": reasons[(name, precision)]}
            key = (id(model), height, width)
            count = max(options.pool, 2 * batch)
            if key not in pools or pools[key][0].shape[0] < count:
                pools[key] = input_pool(model, count, height, width, seed=options.seed,
                                        dataset=options.data_pool, with_masks=True)
            images, source, masks = pools[key]
            n = images.shape[0]
            picks = [(np.arange(batch) + j * batch) % n for j in range(max(1, n // batch))]
            batches = [images[idx] for idx in picks]
            batch_masks = [[masks[i] for i in idx] for idx in picks]
            fixed = None  # graphs (ONNX, OpenVINO, TensorRT) bake thresholds in: one set for the pool
            if options.keep_schedule and any(name != "torch" for name, _ in rows):
                fixed = schedule_thresholds(model, images[:4], options.keep_schedule)
            calibration = None
            if any(pr == "int8" and reasons[(n_, pr)] is None for n_, pr in rows):
                from .quantize import calibration_images

                calibration = calibration_images(model, height, width, count=options.calibration,
                                                 dataset=options.data_pool)
            variants: dict[str, Any] = {}
            inputs: dict[str, list[Any]] = {}
            for (name, precision), result in results.items():
                if result["reason"]:
                    result["status"] = "unavailable"
                    continue
                backend = backends[name]
                result["inputs"] = source
                try:
                    if progress:
                        progress(f"{desc}: building {name} {precision}", done, total)
                    with _thresholds(model, fixed):
                        built = {v: backend.variant(model, pruned=v == "pruned", batch=batch, height=height,
                                                    width=width, device=options.device, fp16=options.fp16,
                                                    workdir=workdir, precision=precision,
                                                    calibration=calibration)
                                 for v in ("dense", "pruned")}
                    schedules = [None] * len(batches)
                    if name == "torch" and options.keep_schedule:
                        # on the timed module (device, precision), so the schedule matches what runs
                        module = backend.module(model, options.device, options.fp16)
                        dtype = next(module.parameters()).dtype
                        schedules = [schedule_thresholds(module, b.to(options.device, dtype),
                                                         options.keep_schedule) for b in batches]
                        result["scheduled_thresholds"] = schedules
                    elif fixed is not None:
                        result["scheduled_thresholds"] = [fixed]
                    placed = {"dense": [built["dense"].place(b) for b in batches],
                              "pruned": [built["pruned"].place(b, t) for b, t in zip(batches, schedules)]}
                except BackendUnavailable as err:
                    result.update(status="unavailable", reason=str(err))
                    continue
                for v in ("dense", "pruned"):
                    variants[_row_key(name, precision, v)] = built[v]
                    inputs[_row_key(name, precision, v)] = placed[v]

            base = done

            def tick(timed: int, base=base, desc=desc) -> None:
                if progress:
                    progress(desc, base + (timed if options.duration is None else 0), total)

            samples = interleave(variants, inputs, warmup=options.warmup, iterations=options.iterations,
                                 duration=options.duration, tick=tick) if variants else {}
            grid = (height // model.config.patch_size, width // model.config.patch_size)
            reference = None
            for (name, precision), result in results.items():
                if result["status"] != "ok":
                    continue
                dense = _variant_stats(model, samples[_row_key(name, precision, "dense")], batch, grid,
                                       pruned=False)
                pruned = _variant_stats(model, samples[_row_key(name, precision, "pruned")], batch, grid,
                                        pruned=True, thresholds=result.get("scheduled_thresholds"))
                result.update({
                    "dense": dense, "pruned": pruned,
                    "speedup": dense["latency_ms"]["median"] / pruned["latency_ms"]["median"],
                    "latency_ratio": pruned["latency_ms"]["median"] / dense["latency_ms"]["median"],
                    "pool_latency_ratio": pruned["pool_mean_ms"] / dense["pool_mean_ms"],
                    "gmacs_ratio": pruned["gmacs_per_image"] / dense["gmacs_per_image"],
                    "gmacs_padded_ratio": pruned["gmacs_padded_per_image"] / dense["gmacs_per_image"],
                    "peak_host_rss_mb": host_peak_rss_mb()})
                if name != "torch" and options.agreement_batches and options.device == "cpu":
                    if progress:
                        progress(f"{desc}: accuracy of {name} {precision} vs fp32", done, total)
                    count = min(options.agreement_batches, len(batches))
                    if reference is None:
                        reference = _torch_reference(model, batches[:count], fixed)
                    result["accuracy_vs_fp32"] = {
                        v: precision_agreement(
                            model, [variants[_row_key(name, precision, v)].outputs(x)
                                    for x in inputs[_row_key(name, precision, v)][:count]],
                            reference[v], [m for ms in batch_masks[:count] for m in ms])
                        for v in ("dense", "pruned")}
            ok = [r for r in results.values() if r["status"] == "ok"]
            if ok:
                slowest = max(ok, key=lambda r: r["dense"]["latency_ms"]["median"])
                base_ms = slowest["dense"]["latency_ms"]["median"]
                for r in ok:
                    r["baseline"] = f"{slowest['backend']} {slowest['precision']} dense"
                    r["speedup_vs_slowest_dense"] = {
                        v: base_ms / r[v]["latency_ms"]["median"] for v in ("dense", "pruned")}
            done += options.iterations if options.duration is None else 1
            if progress:
                progress(desc, done, total)
            report["results"].extend(results.values())
    for model, pruning, thresholds in saved_states:  # the torch variants toggle these
        model.pruning, model.thresholds = pruning, thresholds
    return report


def _torch_reference(model, batches: Sequence[torch.Tensor], thresholds) -> dict[str, list]:
    """fp32 PyTorch ``(scores, keep_counts)`` of dense and pruned on ``batches`` (CPU)."""
    out: dict[str, list] = {"dense": [], "pruned": []}
    saved = model.pruning, model.thresholds
    try:
        with _thresholds(model, thresholds), torch.inference_mode():
            for v in ("dense", "pruned"):
                model.pruning = v == "pruned"
                for b in batches:
                    scores, keep = model(b.float())
                    out[v].append((scores.float().numpy(), keep.numpy()))
    finally:
        model.pruning, model.thresholds = saved
    return out


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
