"""The papers' evaluation protocol: mmseg's test pipeline in numpy (``protocol="mmseg"``).

The runtime's default ``"grid"`` protocol (:mod:`.processing`) averages windows on the token
grid and resamples once; it is the fast path for deployment. The numbers in the DToP and DoViT
papers come from mmseg's test pipeline instead, which this module reproduces step by step
(read from mmcv's ``imrescale`` / ``rescale_size``, mmseg's ``EncoderDecoder.slide_inference``
and ``IoUMetric``, and the official DToP / DoViT code):

1. **keep-ratio resize** to the test scale (``Resize(scale=(2048, 512), keep_ratio=True)``):
   scale factor ``min(long / max(h, w), short / min(h, w))``, new size
   ``int(w * f + 0.5) x int(h * f + 0.5)``, bilinear on the uint8 image exactly as OpenCV's
   ``INTER_LINEAR`` (fixed-point weights and all), then normalise;
2. **windows at pixel offsets**: ``h_grids = max(H - crop + stride - 1, 0) // stride + 1``
   rows (same for columns), window ``i`` spans ``[i * stride, i * stride + crop)`` clipped to
   the image and shifted back so the last one is flush with the edge; an image smaller than
   the crop is one smaller window;
3. each window is **padded bottom/right to the patch** with zeros after normalisation (mmseg's
   ``PatchEmbed(padding="corner")``) and run; its token scores are **resized bilinearly to
   the window** (DToP's head first resizes to the crop size, then mmseg to the window) and
   **accumulated in pixel space** with a count map, then divided by it;
4. the average is **resized bilinearly to the original image** and the argmax taken.

What is averaged differs by method. DToP's head outputs per-class scores
(``softmax(class logits) * sigmoid(mask logits)``) and mmseg averages those. DoViT's mmseg 0.x
segmentor averages the decode head's *logits* and applies the softmax at the end. The exported
DoViT graphs output the softmax, so its log is averaged instead: ``log softmax(z) = z - lse(z)``
differs from the logits by one value per pixel, the same for every class, and resizing and
averaging treat all classes alike, so labels and the final softmax are those of the logits.

Nothing here imports torch: the runtime and the PyTorch evaluation both call
:func:`slide_inference` with their own ``run`` function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .processing import resample, resampled_labels, round_up

PROTOCOLS = ("grid", "mmseg")
METHODS = ("dtop", "dovit")

# Official slide strides by (method, crop) for models whose metadata carries no protocol facts:
# DToP configs/prune/*: 512 -> 341 (ADE20K, COCO-Stuff), 640 -> 320 (ADE20K ViT-L),
# 480 -> 320 (Pascal Context); DoViT local_configs/segmenter/*: 512 -> 480 (ADE20K, from mmseg's
# Segmenter base config), 768 -> 512 (Cityscapes). Other crops: two thirds, rounded down.
OFFICIAL_STRIDES = {("dtop", 512): 341, ("dtop", 640): 320, ("dtop", 480): 320,
                    ("dovit", 512): 480, ("dovit", 768): 512}

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(n, 3, h, w)`` float32 normalised windows -> ``(n, K, h/p, w/p)`` scores (what the exported
graphs output: DToP per-class scores, DoViT softmax) and ``(n, S)`` keep counts."""


def default_stride(method: str, crop: int) -> int:
    """The official stride for ``crop`` (see ``OFFICIAL_STRIDES``), else ``2 * crop // 3``."""
    return OFFICIAL_STRIDES.get((method, crop), max(1, 2 * crop // 3))


def dataset_test_scale(dataset: str | None, crop: tuple[int, int]) -> tuple[int, int] | None:
    """The official test scale ``(w, h)`` of a dataset: ADE20K ``(2048, 512)`` for 512 crops and
    ``(2560, 640)`` for 640 crops (four times the crop by one crop), Cityscapes ``(2048, 1024)``;
    None (no resize) for anything else."""
    if dataset == "ade20k":
        return (4 * max(crop), max(crop))
    if dataset == "cityscapes":
        return (2048, 1024)
    return None


def rescale_size(width: int, height: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv's ``rescale_size`` for a ``(long, short)`` bound in either order -> ``(w, h)``: the
    largest keep-ratio size whose long edge is <= ``max(scale)`` and short edge <= ``min(scale)``
    (an image is enlarged when both fit)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(width * float(factor) + 0.5), int(height * float(factor) + 0.5)


_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: linear weights in 1/2048ths


def _linear_taps(out_size: int, in_size: int, clamp_weights: bool):
    """OpenCV's ``INTER_LINEAR`` taps along one axis: source ``(i + 0.5) * scale - 0.5`` in
    float32, fixed-point weights. Columns clamp position and weight at the edges; rows clamp
    only the row index and keep the weights (so an edge row is the sum of two truncated halves)."""
    scale = 1.0 / (out_size / in_size)
    pos = ((np.arange(out_size) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0.astype(np.float32)
    if clamp_weights:
        frac[i0 < 0] = 0
        i0 = np.maximum(i0, 0)
        frac[i0 >= in_size - 1] = 0
        i0 = np.minimum(i0, in_size - 1)
    one = 1 << _COEF_BITS
    w0 = np.rint((np.float32(1) - frac) * one).astype(np.int64)
    w1 = np.rint(frac * one).astype(np.int64)
    return np.clip(i0, 0, in_size - 1), np.clip(i0 + 1, 0, in_size - 1), w0, w1


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, C)`` uint8 -> ``(h, w, C)`` uint8 as ``cv2.resize(..., INTER_LINEAR)`` computes
    it (mmcv's default ``imresize``): half-pixel centres, no antialiasing, 11-bit fixed-point
    weights, columns first, then rows with OpenCV's rounding. Bit-exact with OpenCV 5.0."""
    height, width = image.shape[:2]
    if (height, width) == tuple(size):
        return image
    x0, x1, a0, a1 = _linear_taps(size[1], width, True)
    y0, y1, b0, b1 = _linear_taps(size[0], height, False)
    src = image.astype(np.int64)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]  # (H, w, C), x2048
    top, bottom = rows[y0] >> 4, rows[y1] >> 4
    out = (((b0[:, None, None] * top) >> 16) + ((b1[:, None, None] * bottom) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def slide_windows(height: int, width: int, crop: tuple[int, int],
                  stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """mmseg's slide windows ``(y1, y2, x1, x2)`` over an ``height x width`` image, row-major."""
    def starts(size: int, c: int, s: int) -> list[tuple[int, int]]:
        spans = []
        for i in range(max(size - c + s - 1, 0) // s + 1):
            end = min(i * s + c, size)
            spans.append((max(end - c, 0), end))
        return spans

    return [(y1, y2, x1, x2) for y1, y2 in starts(height, crop[0], stride[0])
            for x1, x2 in starts(width, crop[1], stride[1])]


@dataclass(frozen=True)
class SlideSpec:
    """The test settings of one model on one dataset: ``crop`` and ``stride`` ``(h, w)`` in
    pixels, ``test_scale`` ``(w, h)`` as mmseg writes it (None: no resize), ``method``
    (``"dtop"`` averages scores, ``"dovit"`` logits), the model's ``patch`` size, and where each
    value came from (``sources``: option, model, dataset or default)."""

    crop: tuple[int, int]
    stride: tuple[int, int]
    test_scale: tuple[int, int] | None
    method: str
    patch: int
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": "mmseg", "crop": list(self.crop), "stride": list(self.stride),
                "test_scale": list(self.test_scale) if self.test_scale else None,
                "average": "logits" if self.method == "dovit" else "scores", "sources": dict(self.sources)}


def _pair(value: Any, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int | np.integer):
        pair: tuple[int, ...] = (int(value), int(value))
    else:
        pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} {value!r}: expected a positive int or a pair of them")
    return pair  # type: ignore[return-value]


NO_RESIZE = "none"


def resolve_spec(method: str, patch: int, trained_size: Sequence[int], facts: Mapping[str, Any] | None = None,
                 *, crop: Any = None, stride: Any = None, test_scale: Any = None,
                 dataset: str | None = None) -> SlideSpec:
    """The :class:`SlideSpec` of a model: options first, then the model's protocol facts
    (``facts``: ``crop_size`` [h, w], ``stride`` [h, w], ``test_scale`` [w, h], ``dataset``),
    then the dataset's official test scale, then defaults (crop: the trained size; stride: the
    official one for that crop, else two thirds; no resize). ``test_scale="none"`` turns the
    resize off."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; the mmseg protocol knows {', '.join(METHODS)}")
    facts = dict(facts or {})
    sources = {}

    def pick(name: str, option: Any, fact: Any) -> Any:
        if option is not None:
            sources[name] = "option"
            return option
        if fact is not None:
            sources[name] = "model"
            return fact
        return None

    crop_hw = _pair(pick("crop", crop, facts.get("crop_size")), "crop")
    if crop_hw is None:
        crop_hw, sources["crop"] = _pair(tuple(trained_size), "trained size"), "default"
    stride_hw = _pair(pick("stride", stride, facts.get("stride")), "stride")
    if stride_hw is None:
        stride_hw = (default_stride(method, crop_hw[0]), default_stride(method, crop_hw[1]))
        sources["stride"] = "default"
    if stride_hw[0] > crop_hw[0] or stride_hw[1] > crop_hw[1]:
        raise ValueError(f"stride {stride_hw[0]}x{stride_hw[1]} is larger than the crop "
                         f"{crop_hw[0]}x{crop_hw[1]}: pixels between windows would get no prediction")
    scale = pick("test_scale", test_scale, facts.get("test_scale"))
    if isinstance(scale, str) and scale.lower() == NO_RESIZE:
        scale_wh = None
    elif scale is not None:
        scale_wh = _pair(scale, "test scale")
    else:
        scale_wh = dataset_test_scale(dataset or facts.get("dataset"), crop_hw)
        sources["test_scale"] = "dataset" if scale_wh else "default"
    return SlideSpec(crop_hw, stride_hw, scale_wh, method, patch, sources)  # type: ignore[arg-type]


@dataclass
class SlideResult:
    """One image through :func:`slide_inference`."""

    labels: np.ndarray  # (H, W) int32 at the original size
    scores: np.ndarray | None  # (K, H, W) float32: DToP averaged scores, DoViT softmax
    keep_counts: np.ndarray  # (windows, S) int32
    windows: list[tuple[int, int, int, int]]  # (y1, y2, x1, x2) on the resized image
    grids: list[tuple[int, int]]  # each window's token grid (of its padded network input)
    resized: tuple[int, int]  # (h, w) after the keep-ratio resize
    timing_ms: dict[str, float] = field(default_factory=dict)

    @property
    def keep_ratio(self) -> tuple[float, ...]:
        """Per stage: tokens entering it / all tokens, over all windows."""
        tokens = sum(gh * gw for gh, gw in self.grids)
        return tuple(float(v) for v in self.keep_counts.sum(0) / tokens)


def _window_input_size(window: tuple[int, int], patch: int, input_size: tuple[int, int] | None,
                       crop: tuple[int, int]) -> tuple[int, int]:
    if input_size is None:
        return round_up(window[0], patch), round_up(window[1], patch)
    if tuple(input_size) != (round_up(crop[0], patch), round_up(crop[1], patch)):
        raise ValueError(f"crop {crop[0]}x{crop[1]} does not fit the graph's fixed input size "
                         f"{input_size[0]}x{input_size[1]}; use crop={tuple(input_size)} or a graph "
                         "exported with a dynamic shape")
    return tuple(input_size)  # type: ignore[return-value]


def window_pixels(scores: np.ndarray, window: tuple[int, int], spec: SlideSpec) -> np.ndarray:
    """One window's ``(K, gh, gw)`` graph output -> ``(K, h, w)`` values to accumulate: the
    tokens covering the window (its input was padded to the patch), as log-probabilities for
    DoViT, resized bilinearly to the window (DToP: to the crop first, as its head does)."""
    p = spec.patch
    grid = np.asarray(scores, np.float32)[:, :math.ceil(window[0] / p), :math.ceil(window[1] / p)]
    if spec.method == "dovit":
        grid = np.log(np.maximum(grid, np.finfo(np.float32).tiny))
    gh, gw = grid.shape[1:]
    if spec.method == "dtop":
        ch, cw = spec.crop
        grid = resample(np.ascontiguousarray(grid), spec.crop, (gh / ch, gw / cw))
        if tuple(window) == tuple(spec.crop):
            return grid
        gh, gw = spec.crop
    return resample(np.ascontiguousarray(grid), window, (gh / window[0], gw / window[1]))


def slide_inference(image: np.ndarray, spec: SlideSpec, mean: Sequence[float], std: Sequence[float],
                    run: Runner, *, input_size: tuple[int, int] | None = None,
                    return_scores: bool = False) -> SlideResult:
    """Segment one ``(H, W, 3)`` uint8 RGB image with mmseg's test pipeline (module docstring).

    ``run`` gets the windows of one network input size at a time; ``input_size`` is a fixed
    graph's (H, W) (windows smaller than the crop are then padded to it), None for a dynamic one.
    """
    start = time.perf_counter()
    height, width = image.shape[:2]
    resized = (height, width)
    if spec.test_scale is not None:
        new_w, new_h = rescale_size(width, height, spec.test_scale)
        resized = (new_h, new_w)
        image = resize_image(image, resized)
    chw = ((image.astype(np.float32) - np.asarray(mean, np.float32))
           / np.asarray(std, np.float32)).transpose(2, 0, 1)
    windows = slide_windows(*resized, spec.crop, spec.stride)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (y1, y2, x1, x2) in enumerate(windows):
        size = _window_input_size((y2 - y1, x2 - x1), spec.patch, input_size, spec.crop)
        groups.setdefault(size, []).append(i)
    outputs: list[Any] = [None] * len(windows)
    keeps: list[Any] = [None] * len(windows)
    grids: list[tuple[int, int]] = [(0, 0)] * len(windows)
    prep_ms, infer_ms = (time.perf_counter() - start) * 1e3, 0.0
    for size, members in groups.items():
        t0 = time.perf_counter()
        batch = np.zeros((len(members), 3, *size), np.float32)  # zero padding, as mmseg's
        for row, i in enumerate(members):
            y1, y2, x1, x2 = windows[i]
            batch[row, :, :y2 - y1, :x2 - x1] = chw[:, y1:y2, x1:x2]
        t1 = time.perf_counter()
        scores, keep = run(batch)
        infer_ms += (time.perf_counter() - t1) * 1e3
        prep_ms += (t1 - t0) * 1e3
        for row, i in enumerate(members):
            outputs[i], keeps[i] = scores[row], keep[row]
            grids[i] = (size[0] // spec.patch, size[1] // spec.patch)

    start = time.perf_counter()
    k = outputs[0].shape[0]
    total = np.zeros((k, *resized), np.float32)
    count = np.zeros(resized, np.float32)
    for (y1, y2, x1, x2), scores in zip(windows, outputs):
        total[:, y1:y2, x1:x2] += window_pixels(scores, (y2 - y1, x2 - x1), spec)
        count[y1:y2, x1:x2] += 1
    total /= count
    scale = (resized[0] / height, resized[1] / width)
    labels = resampled_labels(total, (height, width), scale)
    out_scores = None
    if return_scores:
        out_scores = total if resized == (height, width) else resample(total, (height, width), scale)
        if spec.method == "dovit":  # the softmax of the averaged logits, as DoViT outputs
            out_scores = np.exp(out_scores - out_scores.max(0, keepdims=True))
            out_scores /= out_scores.sum(0, keepdims=True)
    post_ms = (time.perf_counter() - start) * 1e3
    return SlideResult(labels=labels, scores=out_scores, keep_counts=np.stack(keeps).astype(np.int32),
                       windows=windows, grids=grids, resized=resized,
                       timing_ms={"preprocess_ms": prep_ms, "inference_ms": infer_ms,
                                  "postprocess_ms": post_ms})
