"""Image normalisation shared by training, export checks, benchmarks and the runtime (numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(B, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB -> ``(B, 3, H, W)`` float32 normalised."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) or (H, W, 3) RGB images, got shape {images.shape}")
    out = (images.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def to_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float]):
    """:func:`normalize` into a torch tensor."""
    import torch

    return torch.from_numpy(normalize(images, mean, std))
