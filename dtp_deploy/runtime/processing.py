"""Pre- and post-processing of the runtime, in numpy (no torch).

One image goes through a :class:`Plan`:

1. normalise with the model's mean/std (RGB, 0-255 scale) into ``(3, H, W)`` float32;
2. optionally resize it (bilinear) to ``resized`` — only ``whole`` mode on a fixed-size graph
   smaller than the image does that, keeping the aspect ratio;
3. pad it bottom/right with zeros (the mean colour) to the ``canvas``, a multiple of the patch;
4. cut ``windows`` of the network's input size out of the canvas (one for ``whole`` mode, a
   sliding grid for ``slide`` mode);
5. add each window's token scores ``(K, h/p, w/p)`` into a token-grid accumulator of the canvas
   and divide by how many windows saw each token (windows start at multiples of the patch, so
   they align with the token grid);
6. resample the part of the grid that covers the image bilinearly to the original ``H x W``
   and take the argmax over classes (in row chunks, so a 1024x2048 frame with 150 classes does
   not need a full-size score volume).

The C++ runtime (``plugins/runtime``) implements the same steps with the same arithmetic; its
test compares labels with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MODES = ("whole", "slide")


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def default_stride(crop: tuple[int, int], patch: int) -> tuple[int, int]:
    """Two thirds of the crop, rounded down to the patch (DToP: 512 -> 341; here 336)."""
    return tuple(max(patch, (2 * c // 3) // patch * patch) for c in crop)  # type: ignore[return-value]


@dataclass(frozen=True)
class Plan:
    """How one ``(H, W)`` image becomes network inputs and how the output is mapped back."""

    image: tuple[int, int]  # original (H, W)
    resized: tuple[int, int]  # the image's size on the canvas
    canvas: tuple[int, int]  # padded size, multiple of the patch
    crop: tuple[int, int]  # network input (H, W)
    windows: tuple[tuple[int, int], ...]  # top-left corners on the canvas
    patch: int

    @property
    def tokens_per_window(self) -> int:
        return (self.crop[0] // self.patch) * (self.crop[1] // self.patch)


def make_plan(height: int, width: int, *, mode: str, patch: int,
              input_size: tuple[int, int] | None, crop: tuple[int, int] | None = None,
              stride: tuple[int, int] | None = None) -> Plan:
    """The :class:`Plan` of an image. ``input_size`` is the graph's fixed (H, W), or None.

    ``whole``: a fixed-size graph gets the image padded to its size (downscaled first, keeping
    the aspect ratio, when it is larger); a dynamic graph gets it padded to the patch.
    ``slide``: ``crop`` windows every ``stride`` pixels over the image padded to the patch and at
    least to the crop; both must be multiples of the patch.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image of size {height}x{width} is empty")
    if mode == "whole":
        if input_size is None:
            canvas = (round_up(height, patch), round_up(width, patch))
            return Plan((height, width), (height, width), canvas, canvas, ((0, 0),), patch)
        fh, fw = input_size
        scale = min(1.0, fh / height, fw / width)
        resized = (min(fh, max(1, round(height * scale))), min(fw, max(1, round(width * scale))))
        return Plan((height, width), resized, (fh, fw), (fh, fw), ((0, 0),), patch)
    if mode != "slide":
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if crop is None:
        raise ValueError("slide mode needs a crop size")
    stride = stride or default_stride(crop, patch)
    for name, pair in (("crop", crop), ("stride", stride)):
        for value in pair:
            if value < patch or value % patch:
                raise ValueError(f"{name} {pair[0]}x{pair[1]}: {value} is not a positive multiple of "
                                 f"the patch size {patch}; use {max(patch, value // patch * patch)}")
    if input_size is not None and tuple(crop) != tuple(input_size):
        raise ValueError(f"crop {crop[0]}x{crop[1]} differs from the graph's fixed input size "
                         f"{input_size[0]}x{input_size[1]}; use crop={tuple(input_size)} or a graph "
                         "exported with a dynamic shape")
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ValueError(f"stride {stride[0]}x{stride[1]} is larger than the crop {crop[0]}x{crop[1]}: "
                         "pixels between windows would get no prediction")
    canvas = (max(round_up(height, patch), crop[0]), max(round_up(width, patch), crop[1]))
    starts = []
    for size, c, s in zip(canvas, crop, stride):
        count = max(size - c + s - 1, 0) // s + 1
        starts.append([min(i * s, size - c) for i in range(count)])
    windows = tuple((y, x) for y in starts[0] for x in starts[1])
    return Plan((height, width), (height, width), canvas, tuple(crop), windows, patch)


def axis_weights(out_size: int, in_size: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis, as ``F.interpolate(..., align_corners=False)``:
    ``src = (i + 0.5) * scale - 0.5`` clamped at 0; returns ``(i0, i1, frac)``."""
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = (src - i0).astype(np.float32)
    return i0, i1, frac


def _lerp(a: np.ndarray, b: np.ndarray, frac: np.ndarray) -> np.ndarray:
    # Written as the C++ runtime writes it, so both round the same way.
    return a * (np.float32(1) - frac) + b * frac


def resample(values: np.ndarray, out_hw: tuple[int, int], scale_hw: tuple[float, float],
             rows: slice | None = None) -> np.ndarray:
    """Bilinear resampling of ``(C, h, w)`` float32 to ``(C, out_h, out_w)`` with source step
    ``scale_hw`` per output pixel; rows first, then columns. ``rows`` selects output rows."""
    _, h, w = values.shape
    y0, y1, fy = axis_weights(out_hw[0], h, scale_hw[0])
    x0, x1, fx = axis_weights(out_hw[1], w, scale_hw[1])
    if rows is not None:
        y0, y1, fy = y0[rows], y1[rows], fy[rows]
    tmp = _lerp(values[:, y0, :], values[:, y1, :], fy[None, :, None])
    return _lerp(tmp[:, :, x0], tmp[:, :, x1], fx[None, None, :])


def prepare(image: np.ndarray, plan: Plan, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> the normalised, resized and padded ``(3, *canvas)`` float32."""
    chw = ((image.astype(np.float32) - np.asarray(mean, np.float32))
           / np.asarray(std, np.float32)).transpose(2, 0, 1)
    if plan.resized != plan.image:
        scale = (plan.image[0] / plan.resized[0], plan.image[1] / plan.resized[1])
        chw = resample(np.ascontiguousarray(chw), plan.resized, scale)
    canvas = np.zeros((3, *plan.canvas), np.float32)
    canvas[:, :plan.resized[0], :plan.resized[1]] = chw
    return canvas


def crops(canvas: np.ndarray, plan: Plan) -> list[np.ndarray]:
    ch, cw = plan.crop
    return [canvas[:, y:y + ch, x:x + cw] for y, x in plan.windows]


def stitch(window_scores: Sequence[np.ndarray], plan: Plan) -> np.ndarray:
    """Average the windows' ``(K, ch/p, cw/p)`` scores on the canvas token grid -> ``(K, gh, gw)``."""
    p = plan.patch
    if len(window_scores) == 1 and plan.windows == ((0, 0),) and plan.crop == plan.canvas:
        return np.asarray(window_scores[0], np.float32)
    k = window_scores[0].shape[0]
    total = np.zeros((k, plan.canvas[0] // p, plan.canvas[1] // p), np.float32)
    count = np.zeros(total.shape[1:], np.float32)
    gh, gw = plan.crop[0] // p, plan.crop[1] // p
    for (y, x), scores in zip(plan.windows, window_scores):
        total[:, y // p:y // p + gh, x // p:x // p + gw] += scores
        count[y // p:y // p + gh, x // p:x // p + gw] += 1
    return total / count


def output_scale(plan: Plan) -> tuple[float, float]:
    """Token-grid step per original pixel: the image covers ``resized`` canvas pixels."""
    return tuple(r / (o * plan.patch) for r, o in zip(plan.resized, plan.image))  # type: ignore[return-value]


def resampled_labels(values: np.ndarray, out_hw: tuple[int, int], scale_hw: tuple[float, float], *,
                     chunk_pixels: int = 1 << 20) -> np.ndarray:
    """Argmax over classes of ``(K, h, w)`` resampled to ``out_hw`` (see :func:`resample`) ->
    ``(H, W)`` int32, in row chunks so that no full-size ``(K, H, W)`` volume is needed."""
    height, width = out_hw
    labels = np.empty((height, width), np.int32)
    step = max(1, chunk_pixels // max(1, width * values.shape[0]))
    for start in range(0, height, step):
        rows = slice(start, min(height, start + step))
        labels[rows] = resample(values, out_hw, scale_hw, rows).argmax(0)
    return labels


def labels_from_grid(grid: np.ndarray, plan: Plan, *, chunk_pixels: int = 1 << 20) -> np.ndarray:
    """Argmax over classes of the grid scores resampled to the original size -> ``(H, W)`` int32."""
    return resampled_labels(grid, plan.image, output_scale(plan), chunk_pixels=chunk_pixels)


def scores_from_grid(grid: np.ndarray, plan: Plan) -> np.ndarray:
    """The grid scores resampled to the original size -> ``(K, H, W)`` float32."""
    return resample(grid, plan.image, output_scale(plan))
