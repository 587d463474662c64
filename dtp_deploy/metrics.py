"""Segmentation metrics (numpy): confusion matrix, per-class IoU, mIoU, agreement."""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """Accumulates a ``K x K`` confusion matrix (rows: truth, columns: prediction).

    Pixels whose truth is ``ignore_index`` or outside ``[0, K)`` are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        if truth.shape != prediction.shape:
            raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
        truth = truth.astype(np.int64).ravel()
        prediction = prediction.astype(np.int64).ravel()
        valid = (truth != self.ignore_index) & (truth >= 0) & (truth < self.num_classes)
        k = self.num_classes
        self.matrix += np.bincount(truth[valid] * k + prediction[valid], minlength=k * k).reshape(k, k)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes that occur (in truth or prediction), as mmseg reports it."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.diag(self.matrix).sum() / total) if total else float("nan")
