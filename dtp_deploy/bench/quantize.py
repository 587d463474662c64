"""INT8 post-training quantization of the portable graph, calibrated on the images that
``dtp-calibrate`` uses (the same synthetic scenes and seed, or the same ``--data`` folder).

Two quantizers, one per CPU backend: NNCF for OpenVINO (an OpenVINO IR ``.xml``, which the
runtime opens with ``backend="openvino"``) and ONNX Runtime's static QDQ quantization (an
``.onnx``). Both run the float graph on the calibration batches to collect activation ranges;
the graph's token ops stay in float (they only move data), the exit thresholds are unchanged,
so INT8 can change which tokens exit: measure it (``dtp-bench --precision int8``) before use.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from ..data import CALIBRATION_SEED, SyntheticScenes
from ..preprocess import to_tensor
from .accuracy import resize_image


def calibration_images(model, height: int, width: int, *, count: int = 32, dataset=None) -> np.ndarray:
    """``(count, 3, height, width)`` float32 normalised images: ``dataset`` (resized) if given,
    else the synthetic scenes ``dtp-calibrate`` calibrates on."""
    cfg = model.config
    if dataset is not None and len(dataset) > 0:
        raw = np.stack([resize_image(dataset[i][0], height, width) for i in range(min(count, len(dataset)))])
    else:
        scenes = SyntheticScenes(count, height, width, seed=CALIBRATION_SEED)
        raw = np.stack([scenes[i][0] for i in range(count)])
    return to_tensor(raw, cfg.mean, cfg.std).numpy()


def _batches(images: np.ndarray, batch: int) -> list[np.ndarray]:
    """Calibration inputs of the graph's fixed batch (the last one wraps around)."""
    n = max(1, len(images) // batch)
    return [np.ascontiguousarray(images[(np.arange(batch) + j * batch) % len(images)]) for j in range(n)]


def quantize_openvino(onnx_path: str | os.PathLike, output: str | os.PathLike, images: np.ndarray,
                      batch: int) -> Path:
    """NNCF INT8 (transformer preset: SmoothQuant, per-channel weights) -> OpenVINO IR at
    ``output`` (``.xml`` + ``.bin``); the ONNX metadata travels in the IR's rt_info."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(os.fspath(onnx_path))
    samples = _batches(images, batch)
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                              model_type=nncf.ModelType.TRANSFORMER)
    ov.save_model(quantized, os.fspath(output), compress_to_fp16=False)  # float parts stay f32
    return Path(output)


def quantize_onnxruntime(onnx_path: str | os.PathLike, output: str | os.PathLike, images: np.ndarray,
                         batch: int) -> Path:
    """ONNX Runtime static INT8 (QDQ, per-channel 7-bit weights, MinMax ranges) of
    MatMul/Gemm/Conv -> ``output`` (``.onnx``).

    Weights use 7 bits (``reduce_range``) because CPUs without VNNI multiply uint8 activations
    by int8 weights with an instruction that saturates the pairwise sums at int16; ONNX
    Runtime recommends the reduced range there, and the file must run right on any CPU. On the
    built-in models it raised the share of scenes keeping exactly the fp32 token set (DToP 62%
    -> 75%, DoViT 12% -> 50%; BENCHMARKS.md, CPU backends and precisions)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"images": b} for b in _batches(images, batch))

        def get_next(self):
            return next(self.items, None)

    with _without_preprocess_advice():
        quantize_static(os.fspath(onnx_path), os.fspath(output), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm", "Conv"])
    return Path(output)


@contextlib.contextmanager
def _without_preprocess_advice():
    """Drop ONNX Runtime's "consider pre-processing before quantization" warnings (several
    per call, on the root logger): its pre-processing fails on the pruned graph's
    data-dependent shapes with symbolic shape inference and, without it, changed neither
    speed nor agreement on the built-in model. Other warnings pass."""
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
