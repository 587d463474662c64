"""Model summaries: parameters, stages, analytic GMACs dense vs pruned (for ``dtp-info``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .builtin import open_model
from .data import SyntheticScenes
from .preprocess import to_tensor


def model_summary(path: str | None, *, arch: str | None = None,
                  size: tuple[int | None, int | None] = (None, None),
                  thresholds: list[float] | None = None, scenes: int = 8) -> dict[str, Any]:
    """A JSON-ready description of a model and, when ``scenes > 0``, its measured keep ratios
    and pruned GMACs on synthetic scenes. GMACs are multiply-adds (fvcore's "GFLOPs")."""
    model = open_model(path, arch=arch, thresholds=thresholds)
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
    }
    if scenes > 0:
        data = SyntheticScenes(scenes, height, width, seed=1234)
        images = to_tensor(np.stack([data[i][0] for i in range(scenes)]), cfg.mean, cfg.std)
        with torch.inference_mode():
            _, counts = model(images)
        per_image = [model.macs(row.tolist(), grid)["total"] for row in counts]
        mean_counts = counts.float().mean(0)
        for stage, kept in zip(summary["stages"], mean_counts.tolist()):
            stage["keep_ratio"] = kept / n
        summary["gmacs_pruned"] = float(np.mean(per_image)) / 1e9
        summary["gmacs_ratio"] = summary["gmacs_pruned"] / summary["gmacs_dense"]
        summary["measured_on"] = f"{scenes} synthetic scenes"
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary['arch']}[/] ({summary['method']}) from {summary['model']}: "
                  f"{summary['params'] / 1e6:.2f} M parameters, {summary['num_classes']} classes, "
                  f"input {summary['input'][0]}x{summary['input'][1]} = {summary['tokens']} tokens")
    table = Table("stage", "blocks", "exit threshold", "tokens in (mean)")
    for i, stage in enumerate(summary["stages"]):
        ratio = stage.get("keep_ratio")
        table.add_row(str(i), f"{stage['blocks'][0]}-{stage['blocks'][1]}",
                      "final" if stage["threshold"] is None else f"{stage['threshold']:.3f}",
                      "-" if ratio is None else f"{ratio:.1%}")
    console.print(table)
    line = f"GMACs dense {summary['gmacs_dense']:.3f}"
    if "gmacs_pruned" in summary:
        line += (f", pruned {summary['gmacs_pruned']:.3f} ({summary['gmacs_ratio']:.1%} of dense, "
                 f"{summary['measured_on']})")
    console.print(line + "  [dim](multiply-adds, as fvcore counts)[/]")
