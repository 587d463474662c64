"""Accuracy of dense vs pruned from the same weights: mIoU, per-class IoU, agreement, GMACs.

Two protocols (docs/protocols.md):

* ``"grid"`` (default): images are resized to the evaluation size (one scale, no sliding
  window) and the predicted scores are upsampled back to each mask's own size before scoring.
  A fast like-for-like comparison of dense and pruned.
* ``"mmseg"``: the papers' test pipeline (:mod:`dtp_deploy.runtime.protocol`, the same code the
  runtime uses): keep-ratio resize to the test scale, slide windows at pixel offsets averaged
  in pixel space, scores resized back to the image. GMACs count every window.

mIoU is mmseg's (:class:`~dtp_deploy.metrics.ConfusionMatrix`) in both.
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
from ..runtime import protocol as mmseg


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w, 3) uint8`` -> ``(height, width, 3)`` bilinear (a no-op at the same size)."""
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def gmacs(model, keep_rows: np.ndarray, grid: tuple[int, int] | Sequence[tuple[int, int]],
          pruned: bool, widths: np.ndarray | None = None,
          thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Analytic GMACs (multiply-adds) of each network input from its per-stage keep counts;
    ``grid`` is the token grid of all rows, or one grid per row. ``widths``: each row's
    per-stage padded batch width (see ``TokenPruningSegmenter.macs``), default its keep counts.
    ``thresholds``: those the inputs ran with (default: the model's), which say which auxiliary
    heads ran."""
    rows = np.asarray(keep_rows).tolist()
    widths = rows if widths is None else np.asarray(widths).tolist()
    grids = [tuple(grid)] * len(rows) if isinstance(grid[0], int | np.integer) else [tuple(g) for g in grid]
    saved = model.pruning, model.thresholds
    model.pruning = pruned  # the auxiliary heads count only when they run
    if thresholds is not None:
        model.thresholds = tuple(thresholds)
    try:
        cache: dict[tuple, float] = {}
        out = []
        for row, width, hw in zip(rows, widths, grids):
            key = (tuple(int(v) for v in row), tuple(int(v) for v in width), hw)
            if key not in cache:
                cache[key] = model.macs(list(key[0]), hw, list(key[1]))["total"] / 1e9
            out.append(cache[key])
        return np.asarray(out, np.float64)
    finally:
        model.pruning, model.thresholds = saved


def describe_data(dataset) -> str:
    if isinstance(dataset, SyntheticScenes):
        return f"synthetic:{len(dataset)}"
    return f"{getattr(dataset, 'name', 'folder')}:{len(dataset)}"


def protocol_spec(model, dataset=None, *, crop: Any = None, stride: Any = None,
                  test_scale: Any = None) -> mmseg.SlideSpec:
    """The mmseg protocol's settings for a PyTorch model on ``dataset``: options, else the
    model's protocol facts, else the dataset's official test scale and the defaults."""
    cfg = model.config
    return mmseg.resolve_spec(cfg.method, cfg.patch_size, cfg.img_size, getattr(cfg, "protocol", None),
                              crop=crop, stride=stride, test_scale=test_scale,
                              dataset=getattr(dataset, "name", None))


class Evaluator:
    """Holds a preprocessed evaluation set so dense and many pruned settings can be scored on it.

    ``dataset[i]`` returns ``(image (h, w, 3) uint8, mask (h, w))``; ``size`` is the model input
    of the ``"grid"`` protocol. ``protocol="mmseg"`` keeps each image at its own size and runs
    the papers' test pipeline; ``spec`` overrides its settings (default: :func:`protocol_spec`).
    """

    def __init__(self, model, dataset, size: tuple[int, int], *, batch: int = 8,
                 progress: Callable[[int, int], None] | None = None, protocol: str = "grid",
                 spec: mmseg.SlideSpec | None = None) -> None:
        cfg = model.config
        if getattr(dataset, "num_classes", cfg.num_classes) > cfg.num_classes:
            raise ValueError(f"the data has {dataset.num_classes} classes but {cfg.arch} predicts "
                             f"{cfg.num_classes}; evaluate a model trained on this dataset")
        if protocol not in mmseg.PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(mmseg.PROTOCOLS)}")
        self.model, self.size, self.batch, self.protocol = model, size, batch, protocol
        model.fold_for_inference()  # every setting runs the whole set through the model
        self.spec = (spec or protocol_spec(model, dataset)) if protocol == "mmseg" else None
        self.grid = (size[0] // cfg.patch_size, size[1] // cfg.patch_size)
        self.data_name = describe_data(dataset)
        self.images: list[Any] = []  # grid: batches of normalised tensors; mmseg: uint8 images
        self.masks: list[np.ndarray] = []
        for start in range(0, len(dataset), batch):
            samples = [dataset[i] for i in range(start, min(len(dataset), start + batch))]
            if self.spec is not None:
                self.images.extend(img for img, _ in samples)
            else:
                resized = np.stack([resize_image(img, *size) for img, _ in samples])
                self.images.append(to_tensor(resized, cfg.mean, cfg.std))
            self.masks.extend(mask for _, mask in samples)
            if progress:
                progress(min(len(dataset), start + batch), len(dataset))
        self._dense: dict[str, Any] | None = None

    def describe_protocol(self) -> dict[str, Any]:
        return self.spec.to_dict() if self.spec is not None else {"protocol": "grid"}

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
            if self.spec is not None:
                result = self._run_mmseg(cm)
                used = tuple(model.thresholds)
                return {**result, "thresholds": list(used) if pruned else None}
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
        per_image = gmacs(model, keep, self.grid, pruned, thresholds=used)
        tokens = self.grid[0] * self.grid[1]
        return {"cm": cm, "labels": labels, "thresholds": list(used) if pruned else None,
                "gmacs_per_image": float(per_image.mean()),
                "keep_ratios": (keep.mean(0) / tokens).tolist()}

    def _run_mmseg(self, cm: ConfusionMatrix) -> dict[str, Any]:
        """Every image through :func:`~dtp_deploy.runtime.protocol.slide_inference` with the
        model (its current pruning and thresholds) as the window runner."""
        model, cfg = self.model, self.model.config
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype

        def run(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            scores, keep = [], []
            for start in range(0, len(inputs), self.batch):
                out, counts = model(torch.from_numpy(inputs[start:start + self.batch]).to(device, dtype))
                scores.append(out.float().cpu().numpy())
                keep.append(counts.cpu().numpy())
            return np.concatenate(scores), np.concatenate(keep)

        labels, per_image, kept, tokens = [], [], 0, 0
        with torch.inference_mode():
            for image, mask in zip(self.images, self.masks):
                result = mmseg.slide_inference(image, self.spec, cfg.mean, cfg.std, run)
                cm.update(mask, result.labels)
                labels.append(result.labels)
                per_image.append(float(gmacs(model, result.keep_counts, result.grids, model.pruning).sum()))
                kept = kept + result.keep_counts.sum(0)
                tokens += sum(gh * gw for gh, gw in result.grids)
        return {"cm": cm, "labels": labels, "gmacs_per_image": float(np.mean(per_image)),
                "keep_ratios": (np.asarray(kept, np.float64) / tokens).tolist()}

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
            "stray_truth_pixels": cm.stray_truth_pixels,
            "per_class_iou": [None if np.isnan(v) else float(v) for v in cm.iou()],
            "gmacs_per_image": result["gmacs_per_image"], "keep_ratios": result["keep_ratios"]}


def evaluate_accuracy(model, dataset, size: tuple[int, int], *, batch: int = 8,
                      evaluator: Evaluator | None = None, protocol: str = "grid") -> dict[str, Any]:
    """mIoU and per-class IoU dense vs pruned (the model's thresholds), and their agreement."""
    ev = evaluator or Evaluator(model, dataset, size, batch=batch, protocol=protocol)
    dense, pruned = ev.dense(), ev.run(True)
    out = {"data": ev.data_name, "images": len(ev), "height": size[0], "width": size[1],
           "protocol": ev.describe_protocol(), "num_classes": model.config.num_classes, "class_names": list(model.config.class_names),
           "thresholds": list(model.thresholds),
           "dense": summarise(dense), "pruned": summarise(pruned),
           "pruned_dense_agreement": ev.agreement(pruned)}
    out["miou_drop"] = out["dense"]["miou"] - out["pruned"]["miou"]
    out["gmacs_ratio"] = out["pruned"]["gmacs_per_image"] / out["dense"]["gmacs_per_image"]
    return out
