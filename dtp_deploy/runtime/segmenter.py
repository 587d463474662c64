"""``Segmenter``: an exported token-pruning segmenter behind a numpy API (no torch)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dtp_deploy.metadata import DescribedByMetadata, ModelMetadata

from . import processing
from .backends import OpenVinoBackend, OrtBackend, RuntimeSetupError, TrtBackend, resolve_backend
from .processing import MODES, Plan
from .protocol import PROTOCOLS, SlideSpec, resolve_spec, slide_inference

COLORS = ("rgb", "bgr")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
#: Tokens of one network input above which whole-mode inference on a dynamic-shape graph is
#: refused: one N x N float32 attention matrix alone would take more than 4 GiB.
MAX_WINDOW_TOKENS = 32768


def check_metadata(meta: ModelMetadata, source: str, classes: int | None = None) -> None:
    """Refuse metadata that would fail later, image after image; the error names the key."""
    def bad(key: str, value, why: str) -> ValueError:
        return ValueError(f"{source}: metadata dtp.{key} = {value!r} {why}; re-export the model "
                          "with dtp-export")

    if not isinstance(meta.patch_size, int) or meta.patch_size < 1:
        raise bad("patch_size", meta.patch_size, "is not a positive integer")
    for key in ("mean", "std"):
        value = getattr(meta, key)
        if len(value) != 3 or not all(isinstance(v, int | float) for v in value):
            raise bad(key, value, "is not three numbers (R, G, B)")
    if not all(v > 0 for v in meta.std):
        raise bad("std", meta.std, "has a value that is not positive")
    if not meta.class_names:
        raise bad("class_names", meta.class_names, "is empty")
    if classes is not None and classes != len(meta.class_names):
        raise bad("class_names", f"{len(meta.class_names)} names", f"but the graph scores {classes} classes")
    for key in ("input_size", "trained_size"):
        value = getattr(meta, key)
        if value is not None and (len(value) != 2 or any(not isinstance(v, int) or v < meta.patch_size
                                                         or v % meta.patch_size for v in value)):
            raise bad(key, value, f"is not two multiples of the patch size {meta.patch_size}")


@dataclass
class Timing:
    """Milliseconds spent on one image. In :meth:`Segmenter.predict_batch` the inference time
    of a batch is shared among its images in proportion to their windows."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms

    def to_dict(self) -> dict[str, float]:
        return {"preprocess_ms": round(self.preprocess_ms, 3), "inference_ms": round(self.inference_ms, 3),
                "postprocess_ms": round(self.postprocess_ms, 3), "total_ms": round(self.total_ms, 3)}


@dataclass
class Prediction:
    """The result for one image."""

    labels: np.ndarray  # (H, W) int32 class indices
    scores: np.ndarray | None  # (K, H, W) float32 when asked for with return_scores=True
    keep_ratio: tuple[float, ...]  # per stage: tokens entering it / all tokens (over all windows)
    keep_counts: np.ndarray  # (windows, S) int32 as the model reported them
    windows: int  # network inputs run for this image (1 in whole mode)
    timing: Timing = field(default_factory=Timing)


def _check_image(image: np.ndarray, index: int | None = None) -> None:
    where = "image" if index is None else f"image {index}"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{where}: expected a numpy array (H, W, 3) uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = ("convert grayscale or RGBA images to RGB first, e.g. "
                "np.asarray(PIL.Image.open(path).convert('RGB'))")
        raise ValueError(f"{where}: expected shape (H, W, 3), got {image.shape}; {hint}")
    if image.dtype != np.uint8:
        raise ValueError(f"{where}: expected dtype uint8 (0-255), got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{where}: empty image of shape {image.shape}")


class Segmenter(DescribedByMetadata):
    """An exported model (``.onnx``, a TensorRT ``.engine``/``.plan``, or OpenVINO IR ``.xml``)
    ready to segment images.

    Open with :meth:`open`. Instances are immutable after opening; :meth:`predict` and
    :meth:`predict_batch` may be called from many threads at once.
    """

    def __init__(self, backend: OrtBackend | TrtBackend | OpenVinoBackend, metadata: ModelMetadata, path: Path,
                 *, max_batch: int = 8) -> None:
        self.backend = backend
        self.metadata = metadata
        self.path = path
        self.max_batch = max_batch
        size = backend.input_size
        if size is not None and metadata.input_size is not None and tuple(size) != tuple(metadata.input_size):
            raise RuntimeSetupError(f"{path}: graph input {size} disagrees with its metadata input_size "
                                    f"{metadata.input_size}; re-export it")
        self.input_size: tuple[int, int] | None = tuple(size) if size is not None else None  # type: ignore[assignment]

    @classmethod
    def open(cls, path: str | os.PathLike, backend: str = "auto", device: str | None = None, *,
             plugin_lib: str | None = None, metadata: str | os.PathLike | None = None,
             threads: int | None = None, max_batch: int = 8, precision: str | None = None,
             performance_hint: str | None = None) -> Segmenter:
        """Open an exported model.

        Args:
            path: ``.onnx`` (ONNX Runtime or OpenVINO), ``.engine``/``.plan`` (TensorRT) or
                ``.xml`` (OpenVINO IR).
            backend: ``"auto"`` (by suffix), ``"ort"``, ``"trt"`` or ``"openvino"`` (CPU;
                plugin-flavour graphs need the dtp extension, see ``plugin_lib``).
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; default CPU for ONNX, ``cuda:0``
                for engines. ONNX on CUDA needs onnxruntime-gpu.
            plugin_lib: TensorRT plugin library (default: what ``TrtEngine`` finds), or for
                OpenVINO the dtp extension library ``libdtp_openvino_ops.so`` (default: the
                ``DTP_OPENVINO_EXTENSION`` environment variable; none: plugin graphs refused).
            metadata: engines only: the ``.onnx`` the engine was built from or a ``.json`` of its
                ``metadata_props``; default: ``<engine>.json``, ``<stem>.json`` or ``<stem>.onnx``.
            threads: ONNX Runtime intra-op / OpenVINO inference threads (default: the engine's).
            max_batch: windows per inference call when the graph's batch is dynamic. A pruned
                dynamic batch computes attention and the heads at its largest keep count: on
                the CPU, large models run faster with 1 (see BENCHMARKS.md, batch 8).
            precision: OpenVINO only: ``"f32"`` (default, exact), ``"bf16"`` or ``"f16"``
                (only where the CPU supports it natively; refused otherwise).
            performance_hint: OpenVINO only: ``"latency"`` (default) or ``"throughput"``.
        """
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"model {path} is a directory; give the .onnx or .engine file in it")
        if not path.is_file():
            raise FileNotFoundError(f"model {path} does not exist")
        if path.suffix.lower() in CHECKPOINT_SUFFIXES:
            raise ValueError(f"{path} is a PyTorch checkpoint: export it first (dtp-export {path} "
                             f"--flavour portable), then open {path.with_suffix('.onnx')}")
        kind = resolve_backend(path, backend)
        if kind != "openvino" and (precision or performance_hint):
            raise ValueError("precision and performance_hint apply to backend='openvino' only "
                             f"(the {kind} backend runs the graph's own precision)")
        runner: OrtBackend | TrtBackend | OpenVinoBackend
        if kind == "ort":
            runner = OrtBackend(path, device or "cpu", threads=threads)
        elif kind == "openvino":
            runner = OpenVinoBackend(path, device or "cpu", threads=threads,
                                     precision=precision or "f32",
                                     performance_hint=performance_hint or "latency",
                                     plugin_lib=plugin_lib)
        else:
            runner = TrtBackend(path, device or "cuda", plugin_lib=plugin_lib, metadata_path=metadata)
        meta = ModelMetadata.from_props(runner.props, str(path))
        check_metadata(meta, str(path), classes=_graph_classes(runner))
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch} must be at least 1")
        return cls(runner, meta, path, max_batch=max_batch)

    # -- facts --------------------------------------------------------------------------------
    def default_crop(self) -> tuple[int, int]:
        """Slide-window crop: the graph's fixed input size, else the size it was trained at."""
        return self.input_size or tuple(self.metadata.trained_size)  # type: ignore[return-value]

    def plan(self, height: int, width: int, *, mode: str = "whole",
             crop: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None) -> Plan:
        """How an image of ``height x width`` is cut into network inputs (see :mod:`.processing`)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if mode == "whole" and (crop is not None or stride is not None):
            raise ValueError("crop and stride apply to mode='slide' only")
        plan = processing.make_plan(
            height, width, mode=mode, patch=self.metadata.patch_size, input_size=self.input_size,
            crop=_pair(crop) or self.default_crop(), stride=_pair(stride))
        if plan.tokens_per_window > MAX_WINDOW_TOKENS:
            gib = plan.tokens_per_window ** 2 * 4 / 2**30
            raise ValueError(f"a {height}x{width} image is {plan.tokens_per_window} tokens in one "
                             f"network input (one attention matrix alone: {gib:.0f} GiB); use "
                             "mode='slide' (--mode slide), or downscale the image")
        return plan

    def protocol_spec(self, *, crop: int | Sequence[int] | None = None,
                      stride: int | Sequence[int] | None = None,
                      test_scale: str | Sequence[int] | None = None, dataset: str | None = None) -> SlideSpec:
        """The mmseg protocol's settings for this model: the options given, else the model's
        protocol facts, else defaults (see :func:`.protocol.resolve_spec`)."""
        meta = self.metadata
        return resolve_spec(meta.method, meta.patch_size, self.default_crop(), getattr(meta, "protocol", None),
                            crop=crop, stride=stride, test_scale=test_scale, dataset=dataset)

    # -- inference ----------------------------------------------------------------------------
    def predict(self, image: np.ndarray, *, color: str = "rgb", mode: str | None = None,
                crop: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None,
                return_scores: bool = False, protocol: str = "grid",
                test_scale: str | Sequence[int] | None = None) -> Prediction:
        """Segment one ``(H, W, 3)`` uint8 image.

        Args:
            color: channel order of ``image``, ``"rgb"`` or ``"bgr"`` (OpenCV).
            mode: ``protocol="grid"`` only: ``"whole"`` (default): one network input (padded,
                or downscaled to a fixed-size graph); ``"slide"``: ``crop`` windows every
                ``stride`` pixels, scores averaged on the token grid where windows overlap.
            crop, stride: slide windows (int or (h, w)). ``grid``: multiples of the patch size,
                default :meth:`default_crop` and two thirds of it on the patch; ``mmseg``: any
                pixel sizes, default the model's protocol facts (see :meth:`protocol_spec`).
            return_scores: also return the ``(K, H, W)`` class scores.
            protocol: ``"grid"`` (fast, the default) or ``"mmseg"``: the papers' evaluation
                pipeline (keep-ratio resize to ``test_scale``, windows at pixel offsets averaged
                in pixel space; see :mod:`.protocol` and docs/protocols.md).
            test_scale: ``mmseg`` only: keep-ratio resize bound ``(w, h)``, e.g. ``(2048, 512)``,
                or ``"none"``; default: the model's protocol facts, else no resize.
        """
        _check_image(image)
        return self.predict_batch([image], color=color, mode=mode, crop=crop, stride=stride,
                                  return_scores=return_scores, protocol=protocol,
                                  test_scale=test_scale)[0]

    def predict_batch(self, images: Sequence[np.ndarray], *, color: str = "rgb", mode: str | None = None,
                      crop: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None,
                      return_scores: bool = False, protocol: str = "grid",
                      test_scale: str | Sequence[int] | None = None) -> list[Prediction]:
        """Segment several images (sizes may differ); windows of the same size share batches."""
        if color not in COLORS:
            raise ValueError(f"unknown color {color!r}; use 'rgb' or 'bgr'")
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
        if protocol == "mmseg":
            if mode not in (None, "slide"):
                raise ValueError(f"mode {mode!r} does not apply to protocol='mmseg' (it always slides)")
            spec = self.protocol_spec(crop=crop, stride=stride, test_scale=test_scale)
            return [self._predict_mmseg(image, spec, color, return_scores, i if len(images) > 1 else None)
                    for i, image in enumerate(images)]
        if test_scale is not None:
            raise ValueError("test_scale applies to protocol='mmseg' only")
        mode = mode or "whole"
        if len(images) == 0:
            return []
        meta = self.metadata
        timings = [Timing() for _ in images]
        plans: list[Plan] = []
        jobs: list[tuple[int, int, np.ndarray]] = []  # (image, window, (3, h, w) view)
        for i, image in enumerate(images):
            _check_image(image, i if len(images) > 1 else None)
            start = time.perf_counter()
            rgb = image[..., ::-1] if color == "bgr" else image
            plan = self.plan(image.shape[0], image.shape[1], mode=mode, crop=crop, stride=stride)
            canvas = processing.prepare(rgb, plan, meta.mean, meta.std)
            plans.append(plan)
            jobs.extend((i, w, view) for w, view in enumerate(processing.crops(canvas, plan)))
            timings[i].preprocess_ms = (time.perf_counter() - start) * 1e3

        window_scores: list[list[np.ndarray | None]] = [[None] * len(p.windows) for p in plans]
        window_keep: list[list[np.ndarray | None]] = [[None] * len(p.windows) for p in plans]
        by_shape: dict[tuple[int, ...], list[tuple[int, int, np.ndarray]]] = {}
        for job in jobs:
            by_shape.setdefault(job[2].shape, []).append(job)
        batch = self.backend.batch or self.max_batch
        for group in by_shape.values():
            for first in range(0, len(group), batch):
                chunk = group[first:first + batch]
                start = time.perf_counter()
                scores, keep = self._run([view for _, _, view in chunk], batch)
                spent = (time.perf_counter() - start) * 1e3 / len(chunk)
                for row, (i, w, _) in enumerate(chunk):
                    window_scores[i][w] = scores[row]
                    window_keep[i][w] = keep[row]
                    timings[i].inference_ms += spent

        results = []
        for i, plan in enumerate(plans):
            start = time.perf_counter()
            grid = processing.stitch(window_scores[i], plan)  # type: ignore[arg-type]
            labels = processing.labels_from_grid(grid, plan)
            scores = processing.scores_from_grid(grid, plan) if return_scores else None
            keep = np.stack(window_keep[i]).astype(np.int32)  # type: ignore[arg-type]
            ratio = tuple(float(r) for r in keep.sum(0) / (plan.tokens_per_window * len(plan.windows)))
            timings[i].postprocess_ms = (time.perf_counter() - start) * 1e3
            results.append(Prediction(labels=labels, scores=scores, keep_ratio=ratio, keep_counts=keep,
                                      windows=len(plan.windows), timing=timings[i]))
        return results

    def _predict_mmseg(self, image: np.ndarray, spec: SlideSpec, color: str, return_scores: bool,
                       index: int | None) -> Prediction:
        _check_image(image, index)
        rgb = image[..., ::-1] if color == "bgr" else image
        batch = self.backend.batch or self.max_batch

        def run(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            parts = [self._run(list(inputs[i:i + batch]), batch) for i in range(0, len(inputs), batch)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

        result = slide_inference(rgb, spec, self.metadata.mean, self.metadata.std, run,
                                 input_size=self.input_size, return_scores=return_scores)
        return Prediction(labels=result.labels, scores=result.scores, keep_ratio=result.keep_ratio,
                          keep_counts=result.keep_counts, windows=len(result.windows),
                          timing=Timing(**result.timing_ms))

    def _run(self, views: list[np.ndarray], batch: int) -> tuple[np.ndarray, np.ndarray]:
        count = len(views)
        rows = batch if self.backend.batch else count  # a fixed batch is filled up with zeros
        inputs = np.zeros((rows, *views[0].shape), self.backend.dtype)
        for row, view in enumerate(views):
            inputs[row] = view
        scores, keep = self.backend.run(inputs)
        return np.asarray(scores[:count], np.float32), np.asarray(keep[:count])

    def __repr__(self) -> str:
        size = "dynamic" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        return (f"Segmenter({str(self.path)!r}, arch={self.metadata.arch}, flavour={self.metadata.flavour}, "
                f"backend={self.backend.name}, device={self.backend.device}, input={size}, "
                f"classes={len(self.class_names)})")


def _graph_classes(runner: OrtBackend | TrtBackend) -> int | None:
    """K of the graph's ``scores`` output when ONNX Runtime says it (None: unknown)."""
    session = getattr(runner, "session", None)
    for output in session.get_outputs() if session is not None else ():
        if output.name == "scores" and len(output.shape) == 4 and isinstance(output.shape[1], int):
            return output.shape[1]
    return None


def _pair(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int | np.integer):
        return int(value), int(value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"expected an int or (height, width), got {value!r}")
    return pair  # type: ignore[return-value]
