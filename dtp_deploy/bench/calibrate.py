"""Threshold sweeps (mIoU vs GMACs) and per-stage threshold calibration.

A token exits when its confidence is *above* its stage's threshold, and confidences are at most
1, so a threshold of 1.0 means "nothing exits at this stage" and lowering a threshold prunes
more. Both functions score settings with :class:`~.accuracy.Evaluator` on one calibration set.

Calibration is a greedy coordinate descent over a threshold grid:

1. start with every auxiliary stage at 1.0 (the dense accuracy; DToP then runs no auxiliary
   head, DoViT runs its heads for nothing);
2. for each stage, try lowering only its threshold to the next grid value and score the set;
3. take the move that loses the least mIoU per GMAC saved (free moves first), skipping moves
   whose mIoU drop from dense would exceed ``max_miou_drop``;
4. repeat until the GMACs reach ``target_gmacs`` (if given) or no allowed move is left;
5. switch off (back to 1.0) any exit whose removal saves GMACs at no mIoU cost (or within
   ``max_miou_drop``).

It needs ``stages x (grid + 1)`` evaluations at most; it is not guaranteed to find the best
setting, but every step is measured on the calibration set. (A DToP stage's first step from
1.0 adds its head, so it can cost GMACs before its exits save them.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .accuracy import Evaluator

DEFAULT_GRID = (1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.93, 0.9, 0.87, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)
SWEEP_GRID = (1.0, 0.99, 0.97, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4)


def _point(ev: Evaluator, thresholds: Sequence[float], **extra: Any) -> dict[str, Any]:
    dense = ev.dense()
    result = ev.run(True, thresholds)
    miou = result["cm"].miou()
    return {**extra, "thresholds": [float(t) for t in thresholds],
            "gmacs_per_image": result["gmacs_per_image"],
            "gmacs_ratio": result["gmacs_per_image"] / dense["gmacs_per_image"],
            "keep_ratios": result["keep_ratios"], "miou": miou,
            "miou_drop": dense["cm"].miou() - miou, "agreement": ev.agreement(result)}


def sweep(model, dataset, size: tuple[int, int], *, grid: Sequence[float] = SWEEP_GRID,
          per_stage: bool = False, batch: int = 8, evaluator: Evaluator | None = None,
          progress: Callable[[int, int], None] | None = None, protocol: str = "grid") -> dict[str, Any]:
    """mIoU and GMACs over a grid of thresholds.

    ``mode == "uniform"`` points use the same threshold at every auxiliary stage; with
    ``per_stage`` there are also ``mode == "stage"`` points that vary one stage (``stage``)
    while the others stay at 1.0 (no exits), showing what each stage contributes.
    """
    ev = evaluator or Evaluator(model, dataset, size, batch=batch, protocol=protocol)
    aux = model.config.num_stages - 1
    settings: list[tuple[dict[str, Any], list[float]]] = [
        ({"mode": "uniform", "stage": None}, [t] * aux) for t in grid]
    if per_stage:
        for stage in range(aux):
            for t in grid:
                thresholds = [1.0] * aux
                thresholds[stage] = t
                settings.append(({"mode": "stage", "stage": stage}, thresholds))
    dense = ev.dense()
    points = []
    for i, (extra, thresholds) in enumerate(settings):
        points.append(_point(ev, thresholds, **extra))
        if progress:
            progress(i + 1, len(settings))
    return {"data": ev.data_name, "images": len(ev), "height": size[0], "width": size[1],
            "protocol": ev.describe_protocol(),
            "dense": {"gmacs_per_image": dense["gmacs_per_image"], "miou": dense["cm"].miou()},
            "points": points}


def calibrate(model, dataset, size: tuple[int, int], *, target_gmacs: float | None = None,
              max_miou_drop: float | None = None, grid: Sequence[float] = DEFAULT_GRID,
              batch: int = 8, evaluator: Evaluator | None = None,
              progress: Callable[[str], None] | None = None, protocol: str = "grid") -> dict[str, Any]:
    """Per-stage thresholds for a GMACs target and/or an mIoU-drop budget (greedy, see module).

    Returns ``thresholds``, the reached ``gmacs_per_image`` / ``miou`` / ``miou_drop``, the
    dense figures, ``reached`` (whether ``target_gmacs`` was met; True when none was asked) and
    every accepted ``steps`` point. The model's own thresholds are left unchanged.
    """
    if target_gmacs is None and max_miou_drop is None:
        raise ValueError("give --target-gmacs, --max-miou-drop or both")
    grid = sorted({float(t) for t in grid} | {1.0}, reverse=True)
    ev = evaluator or Evaluator(model, dataset, size, batch=batch, protocol=protocol)
    dense = ev.dense()
    dense_gmacs = dense["gmacs_per_image"]
    aux = model.config.num_stages - 1
    position = [0] * aux  # index into grid per stage
    cache: dict[tuple[float, ...], dict[str, Any]] = {}

    def score(pos: Sequence[int]) -> dict[str, Any]:
        key = tuple(grid[p] for p in pos)
        if key not in cache:
            cache[key] = _point(ev, key)
        return cache[key]

    current = score(position)
    steps = [current]

    def done(point: dict[str, Any]) -> bool:
        return target_gmacs is not None and point["gmacs_per_image"] <= target_gmacs

    while not done(current):
        moves = []
        for stage in range(aux):
            if position[stage] + 1 >= len(grid):
                continue
            trial = list(position)
            trial[stage] += 1
            point = score(trial)
            if max_miou_drop is not None and point["miou_drop"] > max_miou_drop:
                continue
            saved = current["gmacs_per_image"] - point["gmacs_per_image"]
            cost = point["miou_drop"] - current["miou_drop"]
            rank = (saved <= 0, cost / saved if saved > 0 else cost, -saved)
            moves.append((rank, stage, trial, point))
        if not moves:
            break
        _, stage, position, current = min(moves, key=lambda m: m[0])
        steps.append(current)
        if progress:
            progress(f"stage {stage} -> {grid[position[stage]]:g}: "
                     f"{current['gmacs_per_image']:.3f} GMACs, mIoU drop {current['miou_drop']:+.4f}")
    # Lowering thresholds one stage at a time can leave an exit that no longer pays: once an
    # earlier stage takes the easy tokens, its head may cost more than its split saves. Switch
    # such an exit off (1.0: DToP then runs no head) where that costs no mIoU, or stays within
    # max_miou_drop when one is given.
    for stage in range(aux):
        if position[stage] == 0:
            continue
        trial = list(position)
        trial[stage] = 0
        point = score(trial)
        allowed = point["miou_drop"] <= (current["miou_drop"] if max_miou_drop is None
                                         else max(current["miou_drop"], max_miou_drop))
        if point["gmacs_per_image"] < current["gmacs_per_image"] and allowed:
            position, current = trial, point
            steps.append(current)
            if progress:
                progress(f"stage {stage} -> off: {current['gmacs_per_image']:.3f} GMACs, "
                         f"mIoU drop {current['miou_drop']:+.4f}")
    return {"thresholds": current["thresholds"], "gmacs_per_image": current["gmacs_per_image"],
            "gmacs_ratio": current["gmacs_per_image"] / dense_gmacs, "miou": current["miou"],
            "miou_drop": current["miou_drop"], "keep_ratios": current["keep_ratios"],
            "dense": {"gmacs_per_image": dense_gmacs, "miou": dense["cm"].miou()},
            "target_gmacs": target_gmacs, "max_miou_drop": max_miou_drop,
            "reached": target_gmacs is None or done(current), "evaluations": len(cache),
            "data": ev.data_name, "images": len(ev), "height": size[0], "width": size[1],
            "protocol": ev.describe_protocol(), "steps": steps}
