"""Segmentation metrics (numpy): confusion matrix, per-class IoU, mIoU, agreement.

The arithmetic is mmseg's ``IoUMetric``: pixels whose truth is the ignore index are dropped;
intersections, prediction areas and truth areas are summed over the whole set (not averaged per
image); IoU = intersection / union per class, NaN for a class absent from both prediction and
truth, and mIoU is the NaN-mean. mmseg bins areas with ``histc`` over ``[0, K - 1]``, so a truth
value outside ``[0, K)`` that is not the ignore index scores nothing itself but its pixel's
prediction still counts in the prediction area; so it does here.
"""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """Accumulates a ``K x K`` confusion matrix (rows: truth, columns: prediction).

    Pixels whose truth is ``ignore_index`` are skipped; predictions at pixels whose truth lies
    outside ``[0, K)`` (and is not ignored) go to ``stray_predictions`` (see the module).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self.stray_predictions = np.zeros(num_classes, np.int64)

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        if truth.shape != prediction.shape:
            raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
        truth = truth.astype(np.int64).ravel()
        prediction = prediction.astype(np.int64).ravel()
        k = self.num_classes
        if prediction.size and (prediction.min() < 0 or prediction.max() >= k):
            raise ValueError(f"predicted class ids {prediction.min()}..{prediction.max()} are outside "
                             f"0..{k - 1}; pass the model's number of classes")
        scored = truth != self.ignore_index
        valid = scored & (truth >= 0) & (truth < k)
        self.matrix += np.bincount(truth[valid] * k + prediction[valid], minlength=k * k).reshape(k, k)
        self.stray_predictions += np.bincount(prediction[scored & ~valid], minlength=k)

    @property
    def stray_truth_pixels(self) -> int:
        """Scored pixels whose truth id lies outside ``[0, K)``: usually a mask made for another
        class list, so reports show the count rather than let it pass silently."""
        return int(self.stray_predictions.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.stray_predictions + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes that occur (in truth or prediction), as mmseg reports it."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def accuracy(self) -> float:
        """mmseg's ``aAcc``: correct pixels / scored truth pixels."""
        total = self.matrix.sum()
        return float(np.diag(self.matrix).sum() / total) if total else float("nan")
