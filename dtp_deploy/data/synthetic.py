"""Synthetic street-like scenes with exact masks (numpy only, no torch).

Large flat regions (sky, ground, wall, road) are easy and should exit early; object borders,
thin structures and textured blobs are hard. That mix is what makes token pruning worth
measuring, and it lets the built-in models be trained and evaluated with no download.
"""

from __future__ import annotations

import numpy as np

# Scene sets drawn from disjoint seeds: the built-in models train on seed 0
# (scripts/train_builtin.py), dtp-bench and dtp-info evaluate on EVALUATION_SEED, and
# dtp-calibrate (exit thresholds) and INT8 quantization calibrate on CALIBRATION_SEED. Chosen
# on the scenes they are then scored on, thresholds would look better than they are.
EVALUATION_SEED = 1234
CALIBRATION_SEED = 4321

SYNTHETIC_CLASSES = ("sky", "ground", "wall", "road", "disc", "box", "triangle", "stripes")

# Base RGB colour of each class; scenes jitter it per region and add noise.
_COLOURS = np.array([
    (110, 160, 230), (120, 95, 60), (150, 150, 150), (60, 60, 66),
    (210, 50, 40), (40, 170, 60), (230, 200, 40), (190, 60, 190),
], dtype=np.float32)


def _paint(image: np.ndarray, mask: np.ndarray, region: np.ndarray, cls: int,
           rng: np.random.Generator) -> None:
    colour = _COLOURS[cls] + rng.normal(0, 12, 3)
    image[region] = colour
    mask[region] = cls


def make_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(H, W, 3) uint8`` RGB image and ``(H, W) uint8`` class mask."""
    image = np.zeros((height, width, 3), np.float32)
    mask = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    everywhere = np.ones((height, width), bool)

    horizon = rng.uniform(0.25, 0.6) * height + rng.uniform(-0.1, 0.1) * (xx - width / 2)
    _paint(image, mask, everywhere, 0, rng)
    image[..., 2] += (yy / height * 40)[...]  # sky gradient
    _paint(image, mask, yy > horizon, 1 if rng.random() < 0.5 else 3, rng)
    if rng.random() < 0.6:  # a wall band on one side
        x0 = rng.uniform(0, 0.6) * width
        top = horizon - rng.uniform(0.1, 0.3) * height
        _paint(image, mask, (xx > x0) & (xx < x0 + rng.uniform(0.2, 0.5) * width) & (yy > top) & (yy <= horizon), 2, rng)
    if (mask == 3).any():  # lane markings on the road
        lane = (np.abs(xx - width / 2 - (yy - horizon) * rng.uniform(-0.5, 0.5)) < 2) & (mask == 3)
        image[lane & ((yy // 8) % 2 == 0)] = 235

    for _ in range(rng.integers(2, 7)):
        cls = int(rng.integers(4, 8))
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        size = rng.uniform(0.06, 0.22) * min(height, width)
        if cls == 4:
            region = (yy - cy) ** 2 + (xx - cx) ** 2 < size ** 2
        elif cls == 5:
            region = (np.abs(yy - cy) < size) & (np.abs(xx - cx) < size * rng.uniform(0.5, 1.5))
        elif cls == 6:
            region = (yy < cy + size) & (yy > cy - size) & (np.abs(xx - cx) < (yy - cy + size) / 2)
        else:
            region = ((yy - cy) / size) ** 2 + ((xx - cx) / (1.6 * size)) ** 2 < 1
        _paint(image, mask, region, cls, rng)
        if cls == 7:  # textured: high-frequency stripes
            image[region & ((xx + yy) // 3 % 2 == 0)] *= 0.55

    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


class SyntheticScenes:
    """A fixed, indexable set of scenes: scene ``i`` is the same for the same seed."""

    classes = SYNTHETIC_CLASSES

    def __init__(self, length: int, height: int, width: int, seed: int = 0) -> None:
        self.length, self.height, self.width, self.seed = length, height, width, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        return make_scene(np.random.default_rng((self.seed, i)), self.height, self.width)
