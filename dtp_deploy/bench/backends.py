"""Inference backends the benchmark can time: PyTorch eager, ONNX Runtime, OpenVINO, TensorRT.

A backend says up front whether it can run here at a precision (:meth:`Backend.unavailable`
returns the reason, or None), then builds one :class:`Variant` per (dense | pruned) model. A
variant turns a CPU batch into whatever its engine eats (:meth:`Variant.place`, untimed) and
runs it (:meth:`Variant.timed`), returning the wall time in milliseconds and the keep counts;
:meth:`Variant.outputs` returns the scores too, for the accuracy of a precision.

Precisions: ``fp32``; ``fp16`` (torch and trt on CUDA, ``--fp16``); ``bf16`` (OpenVINO, where
the CPU has it natively); ``int8`` (post-training quantization of the portable graph on ONNX
Runtime and OpenVINO, see :mod:`.quantize`).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

BACKENDS = ("torch", "ort", "openvino", "trt")
PRECISIONS = ("fp32", "bf16", "int8")  # the CPU precisions of --precision (fp16: --fp16)


class BackendUnavailable(RuntimeError):
    """The backend cannot run this configuration; the message says why."""


class Variant:
    """One model (dense or pruned) on one backend, at one batch size and input size."""

    supports_thresholds = False
    cuda_memory = False

    def place(self, images: torch.Tensor, thresholds: Sequence[float] | None = None) -> Any:
        raise NotImplementedError

    def timed(self, placed: Any) -> tuple[float, np.ndarray]:
        """Run once; ``(milliseconds, keep_counts (B, S) int)``."""
        raise NotImplementedError

    def outputs(self, placed: Any) -> tuple[np.ndarray, np.ndarray]:
        """Run once, untimed; ``(scores (B, K, h, w) float32, keep_counts (B, S))``."""
        raise NotImplementedError


class Backend:
    name = ""
    threads: int | None = None  # CPU inference threads (None: the engine's default)

    def unavailable(self, device: str, fp16: bool, precision: str = "fp32") -> str | None:
        raise NotImplementedError

    def variant(self, model, *, pruned: bool, batch: int, height: int, width: int, device: str,
                fp16: bool, workdir: Path, precision: str = "fp32",
                calibration: np.ndarray | None = None) -> Variant:
        """``calibration``: normalised images ``(n, 3, height, width)`` for ``precision="int8"``."""
        raise NotImplementedError

    def version(self) -> str | None:
        return None


# -- PyTorch eager -----------------------------------------------------------------------------
class TorchVariant(Variant):
    supports_thresholds = True

    def __init__(self, model, pruned: bool, device: str, dtype: torch.dtype) -> None:
        self.model, self.pruned, self.device, self.dtype = model, pruned, device, dtype
        self.default_thresholds = tuple(model.thresholds)
        self.cuda_memory = device == "cuda"

    def place(self, images, thresholds=None):
        return images.to(self.device, self.dtype), tuple(thresholds or self.default_thresholds)

    def outputs(self, placed):
        images, thresholds = placed
        model = self.model
        model.pruning, model.thresholds = self.pruned, thresholds
        with torch.inference_mode():
            scores, keep = model(images)
        return scores.float().cpu().numpy(), keep.cpu().numpy()

    def timed(self, placed):
        images, thresholds = placed
        model = self.model
        model.pruning = self.pruned  # both variants share one module: the same weights
        model.thresholds = thresholds
        with torch.inference_mode():
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                _, keep = model(images)
                end.record()
                end.synchronize()
                ms = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                _, keep = model(images)
                ms = (time.perf_counter() - t0) * 1e3
        return ms, keep.cpu().numpy()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self) -> None:
        self._modules: dict[tuple[int, str, bool], Any] = {}

    def unavailable(self, device, fp16, precision="fp32"):
        if precision != "fp32":
            return f"{precision} is timed on the ort and openvino backends (torch: fp32, --fp16)"
        if device == "cuda" and not torch.cuda.is_available():
            return "--device cuda but torch sees no CUDA device"
        if fp16 and device != "cuda":
            return "--fp16 needs --device cuda (CPU half-precision kernels are not representative)"
        return None

    def module(self, model, device: str, fp16: bool):
        """The model on ``device`` in the benchmark precision; one copy shared by both variants."""
        key = (id(model), device, fp16)
        if key not in self._modules:
            module = model
            if device != "cpu" or fp16:
                import copy

                module = copy.deepcopy(model).to(device, torch.float16 if fp16 else torch.float32)
            self._modules[key] = module.eval().fold_for_inference()
        return self._modules[key]

    def variant(self, model, *, pruned, batch, height, width, device, fp16, workdir,
                precision="fp32", calibration=None):
        return TorchVariant(self.module(model, device, fp16), pruned, device,
                            torch.float16 if fp16 else torch.float32)

    def version(self):
        return torch.__version__


# -- the runtime's CPU backends on the portable graph --------------------------------------------
class RuntimeVariant(Variant):
    """A graph on one of the runtime's CPU backends (ONNX Runtime or OpenVINO), run as an
    application runs it."""

    def __init__(self, runner) -> None:
        self.runner = runner

    def place(self, images, thresholds=None):
        if thresholds is not None:
            raise BackendUnavailable("thresholds are baked into the graph")
        return np.ascontiguousarray(images.numpy(), np.float32)

    def timed(self, placed):
        t0 = time.perf_counter()
        _, keep = self.runner.run(placed)
        return (time.perf_counter() - t0) * 1e3, np.asarray(keep)

    def outputs(self, placed):
        scores, keep = self.runner.run(placed)
        return np.asarray(scores, np.float32), np.asarray(keep)


def _exporter_missing() -> str | None:
    try:
        exporters = importlib.import_module("exporters")
        exporters.export_onnx  # noqa: B018 - resolving the lazy name checks it imports
    except Exception as err:  # the exporter is optional; any failure to import means "not here"
        return f"the ONNX exporter does not import: {type(err).__name__}: {err}"
    return None


_PORTABLE: dict[tuple, Path] = {}  # (workdir, model, pruned, batch, size, thresholds) -> graph


def portable_graph(model, *, pruned: bool, batch: int, height: int, width: int, workdir) -> Path:
    """The model's portable ONNX graph (thresholds as set now), exported once per run and
    shared by the backends and precisions that time it."""
    from exporters import export_onnx

    key = (str(workdir), id(model), pruned, batch, height, width, tuple(model.thresholds))
    path = _PORTABLE.get(key)
    if path is None or not path.is_file():
        path = Path(workdir) / (f"{model.config.arch}-{'pruned' if pruned else 'dense'}-b{batch}-"
                                f"{height}x{width}-{len(_PORTABLE)}.onnx")
        try:
            export_onnx(model, path, flavour="portable", height=height, width=width, batch=batch,
                        dense=not pruned, thresholds=list(model.thresholds), check=False,
                        progress=False)
        except Exception as err:
            raise BackendUnavailable(f"portable ONNX export failed: {type(err).__name__}: {err}") from err
        _PORTABLE[key] = path
    return path


def timed_graph(model, *, pruned: bool, batch: int, height: int, width: int, workdir,
                precision: str, calibration, quantize, suffix: str) -> Path:
    """The portable graph a graph backend times: as exported, or for ``precision="int8"``
    quantized by ``quantize`` (from :mod:`.quantize`) on the calibration images into a
    ``-int8<suffix>`` file beside it."""
    path = portable_graph(model, pruned=pruned, batch=batch, height=height, width=width,
                          workdir=workdir)
    if precision != "int8":
        return path
    return quantize(path, path.with_name(path.stem + "-int8" + suffix), calibration, batch)


# -- ONNX Runtime ---------------------------------------------------------------------------------
class OrtBackend(Backend):
    name = "ort"

    def _provider(self, device: str) -> str:
        return "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"

    def unavailable(self, device, fp16, precision="fp32"):
        try:
            ort = importlib.import_module("onnxruntime")
        except ImportError as err:
            return f"onnxruntime is not installed ({err}); pip install 'dtp-deploy[ort]'"
        if self._provider(device) not in ort.get_available_providers():
            return f"onnxruntime has no {self._provider(device)} (has {ort.get_available_providers()})"
        if fp16:
            return "--fp16 is timed on the torch and trt backends only"
        if precision == "bf16":
            return "bf16 is timed on the openvino backend only"
        if precision == "int8" and device != "cpu":
            return "int8 is timed on the CPU only"
        return _exporter_missing()

    def variant(self, model, *, pruned, batch, height, width, device, fp16, workdir,
                precision="fp32", calibration=None):
        from ..runtime.backends import OrtBackend as Runner
        from .quantize import quantize_onnxruntime

        path = timed_graph(model, pruned=pruned, batch=batch, height=height, width=width, workdir=workdir,
                           precision=precision, calibration=calibration, quantize=quantize_onnxruntime,
                           suffix=".onnx")
        # idle ONNX Runtime threads spin by default, stealing cores from the variant that runs
        # next in the interleaved loop; a deployed process runs one model, so spinning is off here
        return RuntimeVariant(Runner(path, device, threads=self.threads, spin=False))

    def version(self):
        try:
            return importlib.import_module("onnxruntime").__version__
        except ImportError:
            return None


# -- OpenVINO --------------------------------------------------------------------------------------
class OpenVinoBackend(Backend):
    """OpenVINO on the CPU: the portable graph at f32 (exact), bf16 (where the CPU has it) or
    NNCF INT8, compiled with the latency hint."""

    name = "openvino"

    def unavailable(self, device, fp16, precision="fp32"):
        if device != "cpu":
            return "OpenVINO is timed on --device cpu"
        if fp16:
            return "--fp16 is timed on the torch and trt backends only"
        try:
            importlib.import_module("openvino")
        except ImportError as err:
            return f"openvino is not installed ({err}); pip install 'dtp-deploy[openvino]'"
        if precision == "bf16":
            from ..runtime.backends import missing_precision

            return missing_precision("bf16")
        if precision == "int8":
            try:
                importlib.import_module("nncf")
            except ImportError as err:
                return f"int8 needs nncf ({err}); pip install 'dtp-deploy[openvino]'"
        return _exporter_missing()

    def variant(self, model, *, pruned, batch, height, width, device, fp16, workdir,
                precision="fp32", calibration=None):
        from ..runtime.backends import OpenVinoBackend as Runner
        from .quantize import quantize_openvino

        path = timed_graph(model, pruned=pruned, batch=batch, height=height, width=width, workdir=workdir,
                           precision=precision, calibration=calibration, quantize=quantize_openvino,
                           suffix=".xml")  # OpenVINO IR: NNCF's output
        # int8 runs its quantized layers in int8 and the rest in f32
        return RuntimeVariant(Runner(path, threads=self.threads,
                                     precision="bf16" if precision == "bf16" else "f32"))

    def version(self):
        try:
            return importlib.import_module("openvino").__version__
        except ImportError:
            return None


# -- TensorRT ------------------------------------------------------------------------------------
class TrtVariant(Variant):
    """An engine built from the plugin-flavour export. ``TrtEngine.infer`` is host to host, so the
    time includes copying the images in and the outputs back (as a deployed app pays it)."""

    def __init__(self, engine, input_name: str, dtype: np.dtype) -> None:
        self.engine, self.input_name, self.dtype = engine, input_name, dtype

    def place(self, images, thresholds=None):
        if thresholds is not None:
            raise BackendUnavailable("thresholds are baked into the engine")
        return np.ascontiguousarray(images.numpy(), self.dtype)

    def timed(self, placed):
        t0 = time.perf_counter()
        outputs = self.engine.infer({self.input_name: placed})
        return (time.perf_counter() - t0) * 1e3, np.asarray(outputs["keep_counts"])

    def outputs(self, placed):
        out = self.engine.infer({self.input_name: placed})
        return np.asarray(out["scores"], np.float32), np.asarray(out["keep_counts"])


class TrtBackend(Backend):
    """TensorRT: the plugin-flavour graph (dense: no dtp nodes) built into a static-shape engine
    with the dtp plugin library, run by :class:`dtp_deploy.trt.engine.TrtEngine`."""

    name = "trt"

    def unavailable(self, device, fp16, precision="fp32"):
        if device != "cuda":
            return "TensorRT needs --device cuda"
        if precision != "fp32":
            return f"{precision} is timed on the ort and openvino backends (trt: fp32, --fp16)"
        try:
            importlib.import_module("tensorrt")
        except ImportError as err:
            return f"tensorrt does not import ({err})"
        try:
            plugins = importlib.import_module("dtp_deploy.trt.plugins")
            plugins.find_plugin_library()
        except Exception as err:  # the library is needed by every pruned engine
            return f"no dtp plugin library: {err}"
        return None

    def variant(self, model, *, pruned, batch, height, width, device, fp16, workdir,
                precision="fp32", calibration=None):
        from exporters import export_onnx

        from ..trt.build import build_engine
        from ..trt.engine import TrtEngine

        stem = Path(workdir) / f"{model.config.arch}-{'pruned' if pruned else 'dense'}-b{batch}-{height}x{width}-trt"
        try:
            export_onnx(model, stem.with_suffix(".onnx"), flavour="plugin", height=height,
                        width=width, batch=batch, dense=not pruned, fp16=fp16,
                        thresholds=list(model.thresholds), check=False, progress=False)
            build_engine(stem.with_suffix(".onnx"), stem.with_suffix(".engine"))
            engine = TrtEngine(stem.with_suffix(".engine"))
        except Exception as err:
            raise BackendUnavailable(f"TensorRT engine build failed: {type(err).__name__}: {err}") from err
        name = engine.input_names[0]
        return TrtVariant(engine, name, engine.dtypes[name])

    def version(self):
        try:
            return importlib.import_module("tensorrt").__version__
        except ImportError:
            return None


def get_backend(name: str) -> Backend:
    if name == "torch":
        return TorchBackend()
    if name == "ort":
        return OrtBackend()
    if name == "openvino":
        return OpenVinoBackend()
    if name == "trt":
        return TrtBackend()
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def host_peak_rss_mb() -> float:
    """This process's peak resident set size (high-water mark since it started), MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if os.uname().sysname == "Darwin" else peak / 1024
