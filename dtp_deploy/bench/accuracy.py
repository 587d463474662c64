"""Accuracy of dense vs pruned from the same weights: mIoU, per-class IoU, agreement, GMACs.

Images are resized to the evaluation size (one scale, no sliding window) and the predicted
scores are upsampled back to each mask's own size before scoring. This is a like-for-like
comparison of dense and pruned, not a reproduction of the papers' sliding-window protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..data import SyntheticScenes
from ..metrics import ConfusionMatrix
from ..preprocess import to_tensor
from ..report import labels_from_scores


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w, 3) uint8`` -> ``(height, width, 3)`` bilinear (a no-op at the same size)."""
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def gmacs(model, keep_rows: np.ndarray, grid: tuple[int, int], pruned: bool) -> np.ndarray:
    """Analytic GMACs (multiply-adds) of each image from its per-stage keep counts."""
    saved = model.pruning
    model.pruning = pruned  # the auxiliary heads count only when they run
    try:
        cache: dict[tuple[int, ...], float] = {}
        out = []
        for row in np.asarray(keep_rows).tolist():
            key = tuple(int(v) for v in row)
            if key not in cache:
                cache[key] = model.macs(list(key), grid)["total"] / 1e9
            out.append(cache[key])
        return np.asarray(out, np.float64)
    finally:
        model.pruning = saved


def describe_data(dataset) -> str:
    if isinstance(dataset, SyntheticScenes):
        return f"synthetic:{len(dataset)}"
    return f"{getattr(dataset, 'name', 'folder')}:{len(dataset)}"


class Evaluator:
    """Holds a preprocessed evaluation set so dense and many pruned settings can be scored on it.

    ``dataset[i]`` returns ``(image (h, w, 3) uint8, mask (h, w))``; ``size`` is the model input.
    """

    def __init__(self, model, dataset, size: tuple[int, int], *, batch: int = 8,
                 progress: Callable[[int, int], None] | None = None) -> None:
        cfg = model.config
        if getattr(dataset, "num_classes", cfg.num_classes) > cfg.num_classes:
            raise ValueError(f"the data has {dataset.num_classes} classes but {cfg.arch} predicts "
                             f"{cfg.num_classes}; evaluate a model trained on this dataset")
        self.model, self.size, self.batch = model, size, batch
        self.grid = (size[0] // cfg.patch_size, size[1] // cfg.patch_size)
        self.data_name = describe_data(dataset)
        self.images: list[torch.Tensor] = []
        self.masks: list[np.ndarray] = []
        for start in range(0, len(dataset), batch):
            samples = [dataset[i] for i in range(start, min(len(dataset), start + batch))]
            resized = np.stack([resize_image(img, *size) for img, _ in samples])
            self.images.append(to_tensor(resized, cfg.mean, cfg.std))
            self.masks.extend(mask for _, mask in samples)
            if progress:
                progress(min(len(dataset), start + batch), len(dataset))
        self._dense: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.masks)

    def run(self, pruned: bool, thresholds: Sequence[float] | None = None) -> dict[str, Any]:
        """Score one setting: confusion matrix, keep counts, GMACs and the predicted labels."""
        model = self.model
        saved_pruning, saved_thresholds = model.pruning, model.thresholds
        if thresholds is not None:
            model.set_thresholds(thresholds)
        model.pruning = pruned
        cm = ConfusionMatrix(model.config.num_classes)
        labels, keeps = [], []
        try:
            i = 0
            with torch.inference_mode():
                device = next(model.parameters()).device
                dtype = next(model.parameters()).dtype
                for images in self.images:
                    scores, keep = model(images.to(device, dtype))
                    scores = scores.float().cpu()
                    keeps.append(keep.cpu().numpy())
                    for j in range(scores.shape[0]):
                        mask = self.masks[i]
                        pred = labels_from_scores(scores[j:j + 1], mask.shape)[0]
                        cm.update(mask, pred)
                        labels.append(pred)
                        i += 1
            used = tuple(model.thresholds)
        finally:
            model.pruning, model.thresholds = saved_pruning, saved_thresholds
        keep = np.concatenate(keeps)
        per_image = gmacs(model, keep, self.grid, pruned)
        tokens = self.grid[0] * self.grid[1]
        return {"cm": cm, "labels": labels, "thresholds": list(used) if pruned else None,
                "gmacs_per_image": float(per_image.mean()),
                "keep_ratios": (keep.mean(0) / tokens).tolist()}

    def dense(self) -> dict[str, Any]:
        if self._dense is None:
            self._dense = self.run(False)
        return self._dense

    def agreement(self, result: dict[str, Any]) -> float:
        """Fraction of pixels where ``result`` predicts the same class as dense."""
        same = total = 0
        for a, b in zip(result["labels"], self.dense()["labels"]):
            same += int((a == b).sum())
            total += a.size
        return same / total if total else float("nan")


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON part of :meth:`Evaluator.run`'s result."""
    cm: ConfusionMatrix = result["cm"]
    return {"miou": cm.miou(), "pixel_accuracy": cm.accuracy(),
            "per_class_iou": [None if np.isnan(v) else float(v) for v in cm.iou()],
            "gmacs_per_image": result["gmacs_per_image"], "keep_ratios": result["keep_ratios"]}


def evaluate_accuracy(model, dataset, size: tuple[int, int], *, batch: int = 8,
                      evaluator: Evaluator | None = None) -> dict[str, Any]:
    """mIoU and per-class IoU dense vs pruned (the model's thresholds), and their agreement."""
    ev = evaluator or Evaluator(model, dataset, size, batch=batch)
    dense, pruned = ev.dense(), ev.run(True)
    out = {"data": ev.data_name, "images": len(ev), "height": size[0], "width": size[1],
           "num_classes": model.config.num_classes, "class_names": list(model.config.class_names),
           "thresholds": list(model.thresholds),
           "dense": summarise(dense), "pruned": summarise(pruned),
           "pruned_dense_agreement": ev.agreement(pruned)}
    out["miou_drop"] = out["dense"]["miou"] - out["pruned"]["miou"]
    out["gmacs_ratio"] = out["pruned"]["gmacs_per_image"] / out["dense"]["gmacs_per_image"]
    return out
