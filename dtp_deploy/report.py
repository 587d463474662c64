"""Model summaries: parameters, stages, analytic GMACs dense vs pruned (for ``dtp-info``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .builtin import open_model
from .data import EVALUATION_SEED, SyntheticScenes
from .metrics import ConfusionMatrix
from .preprocess import to_tensor


def model_settings(model) -> dict[str, dict[str, Any]]:
    """Each setting a checkpoint provides, with where it came from (``model.sources``, set by
    :func:`~dtp_deploy.checkpoint.load_model`: preset, weights, checkpoint meta, config text,
    flag or dtp-deploy checkpoint)."""
    cfg = model.config
    sources = getattr(model, "sources", {})
    values = {
        "arch": cfg.arch, "num_classes": cfg.num_classes, "img_size": list(cfg.img_size),
        "class_names": list(cfg.class_names), "palette": [list(c) for c in cfg.palette],
        "mean": list(cfg.mean), "std": list(cfg.std), "thresholds": list(model.thresholds),
        "head_heads": cfg.head_heads, "protocol": dict(cfg.protocol),
    }
    if cfg.method == "dovit":
        values["low_conf_stop"] = cfg.extra.get("low_conf_stop", -1.0)
    out = {key: {"value": value, "from": sources.get(key, "preset")} for key, value in values.items()}
    if "config text" in sources:  # config text present but unreadable: say why
        out["config_text"] = {"value": None, "from": sources["config text"]}
    return out


def model_summary(path: str | None, *, arch: str | None = None,
                  size: tuple[int | None, int | None] = (None, None),
                  thresholds: list[float] | None = None, scenes: int = 8,
                  head_heads: int | None = None) -> dict[str, Any]:
    """A JSON-ready description of a model (with where each setting came from) and, when
    ``scenes > 0``, its measured keep ratios and pruned GMACs on synthetic scenes. GMACs are
    multiply-adds (fvcore's "GFLOPs")."""
    model = open_model(path, arch=arch, thresholds=thresholds, head_heads=head_heads)
    cfg = model.config
    height = size[0] or cfg.img_size[0]
    width = size[1] or cfg.img_size[1]
    if height % cfg.patch_size or width % cfg.patch_size:
        raise ValueError(f"--height/--width {height}x{width} must be multiples of {cfg.patch_size}")
    grid = (height // cfg.patch_size, width // cfg.patch_size)
    n = grid[0] * grid[1]
    model.pruning = False
    dense = model.macs([n] * cfg.num_stages, grid)
    model.pruning = True
    summary: dict[str, Any] = {
        "model": path or "built-in", "arch": cfg.arch, "method": cfg.method,
        "params": sum(p.numel() for p in model.parameters()),
        "num_classes": cfg.num_classes, "input": [height, width], "tokens": n,
        "stages": [{"blocks": [start + 1, end],
                    "threshold": model.thresholds[i] if i < len(model.thresholds) else None}
                   for i, (start, end) in enumerate(model.stage_ranges())],
        "gmacs_dense": dense["total"] / 1e9,
        "settings": model_settings(model),
    }
    if scenes > 0:
        summary.update(_measure_on_scenes(model, scenes, (height, width), summary["stages"]))
        summary["gmacs_ratio"] = summary["gmacs_pruned"] / summary["gmacs_dense"]
    return summary


def labels_from_scores(scores: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(B, K, h, w)`` scores -> ``(B, H, W)`` labels: bilinear upsampling, then argmax."""
    up = F.interpolate(scores.float(), size=size, mode="bilinear", align_corners=False)
    return up.argmax(dim=1).numpy()


def _measure_on_scenes(model, scenes: int, size: tuple[int, int], stages: list[dict],
                       batch: int = 8) -> dict[str, Any]:
    """Keep ratios, pruned GMACs and mIoU dense vs pruned on synthetic scenes."""
    cfg = model.config
    grid = (size[0] // cfg.patch_size, size[1] // cfg.patch_size)
    data = SyntheticScenes(scenes, *size, seed=EVALUATION_SEED)
    dense_cm, pruned_cm = ConfusionMatrix(cfg.num_classes), ConfusionMatrix(cfg.num_classes)
    counts, agree = [], []
    for start in range(0, scenes, batch):
        pairs = [data[i] for i in range(start, min(scenes, start + batch))]
        images = to_tensor(np.stack([p[0] for p in pairs]), cfg.mean, cfg.std)
        masks = np.stack([p[1] for p in pairs])
        with torch.inference_mode():
            model.pruning = True
            pruned, keep = model(images)
            model.pruning = False
            dense, _ = model(images)
            model.pruning = True
        pruned_labels, dense_labels = labels_from_scores(pruned, size), labels_from_scores(dense, size)
        pruned_cm.update(masks, pruned_labels)
        dense_cm.update(masks, dense_labels)
        agree.append((pruned_labels == dense_labels).mean(axis=(1, 2)))
        counts.append(keep)
    keep = torch.cat(counts)
    for stage, kept in zip(stages, keep.float().mean(0).tolist()):
        stage["keep_ratio"] = kept / (grid[0] * grid[1])
    per_image = [model.macs(row.tolist(), grid)["total"] for row in keep]
    return {
        "gmacs_pruned": float(np.mean(per_image)) / 1e9,
        "miou_dense": dense_cm.miou(), "miou_pruned": pruned_cm.miou(),
        "pruned_dense_agreement": float(np.concatenate(agree).mean()),
        "measured_on": f"{scenes} synthetic scenes",
    }


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 4 and not all(isinstance(v, (int, float)) for v in value):
        return f"{len(value)} entries: {', '.join(map(str, value[:3]))}, ..."
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return "-" if value in ([], None) else str(value)


def _settings_table(settings: dict[str, dict[str, Any]]):
    from rich.markup import escape
    from rich.table import Table

    table = Table("setting", "value", "from")
    for key, item in settings.items():  # values come from the file: never read as markup
        table.add_row(key, escape(_short(item["value"])), escape(str(item["from"])))
    return table


def print_summary(summary: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from .cli_common import console as wide_console

    console = wide_console()  # tables not cut at 80 columns when piped
    console.print(f"[bold]{summary['arch']}[/] ({summary['method']}) from {escape(str(summary['model']))}: "
                  f"{summary['params'] / 1e6:.2f} M parameters, {summary['num_classes']} classes, "
                  f"input {summary['input'][0]}x{summary['input'][1]} = {summary['tokens']} tokens")
    table = Table("stage", "blocks", "exit threshold", "tokens in (mean)")
    for i, stage in enumerate(summary["stages"]):
        ratio = stage.get("keep_ratio")
        table.add_row(str(i), f"{stage['blocks'][0]}-{stage['blocks'][1]}",
                      "final" if stage["threshold"] is None else f"{stage['threshold']:.3f}",
                      "-" if ratio is None else f"{ratio:.1%}")
    console.print(table)
    console.print(_settings_table(summary["settings"]))
    line = f"GMACs dense {summary['gmacs_dense']:.3f}"
    if "gmacs_pruned" in summary:
        line += (f", pruned {summary['gmacs_pruned']:.3f} ({summary['gmacs_ratio']:.1%} of dense, "
                 f"{summary['measured_on']})")
    console.print(line + "  [dim](multiply-adds, as fvcore counts)[/]")
    if "miou_dense" in summary:
        console.print(f"mIoU dense {summary['miou_dense']:.2%}, pruned {summary['miou_pruned']:.2%}; "
                      f"pruned agrees with dense on {summary['pruned_dense_agreement']:.2%} of pixels "
                      "[dim](synthetic scenes: meaningful for models trained on them)[/]")
