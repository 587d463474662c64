"""Inference backends of the runtime: ONNX Runtime for ``.onnx``, TensorRT for ``.engine``/``.plan``,
OpenVINO (CPU) for portable ``.onnx`` graphs and OpenVINO IR ``.xml``.

A backend runs ``images (B, 3, h, w)`` and returns ``(scores (B, K, h/p, w/p), keep_counts
(B, S))``. It knows the graph's fixed batch (or None) and input dtype, and must be callable
from many threads at once. No backend imports torch.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from dtp_deploy.metadata import ModelMetadata
from dtp_deploy.runtime.denormals import FlushDenormals

BACKENDS = ("auto", "ort", "trt", "openvino")
_ALIASES = {"onnxruntime": "ort", "tensorrt": "trt", "ov": "openvino"}
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")
OPENVINO_SUFFIXES = (".xml",)  # OpenVINO IR (e.g. an INT8 model written by dtp_deploy.bench.quantize)
PRECISIONS = ("f32", "bf16", "f16")  # OpenVINO's inference precision names
PERFORMANCE_HINTS = ("latency", "throughput")


class RuntimeSetupError(RuntimeError):
    """A model that cannot be opened as asked; the message names the file and the fix."""


def parse_device(device: str | None) -> tuple[str, int]:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> ``(kind, index)``."""
    if device is None or device == "cpu":
        return "cpu", 0
    if device == "cuda":
        return "cuda", 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")


def resolve_backend(path: Path, backend: str) -> str:
    backend = _ALIASES.get(backend, backend)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "ort"
    if suffix in ENGINE_SUFFIXES:
        return "trt"
    if suffix in OPENVINO_SUFFIXES:
        return "openvino"
    # Bad input (exit 2 in dtp-run), not a missing runtime: the file's name is what is wrong.
    raise ValueError(f"{path}: cannot tell the backend from the suffix {suffix!r}; name it "
                            f"*.onnx (ONNX Runtime), *.engine / *.plan (TensorRT) or *.xml "
                            f"(OpenVINO IR), or pass backend='ort', 'trt' or 'openvino'")


class OrtBackend:
    """ONNX Runtime. Plugin-flavour graphs (``dtp`` domain nodes) run their token ops through
    the CPU implementation of the ``dtp`` domain (needs ``onnx`` and onnxruntime-extensions).
    Runs flush denormal floats to zero (:mod:`dtp_deploy.runtime.denormals` says why and how the
    calling thread is left as it was)."""

    name = "ort"

    def __init__(self, path: Path, device: str = "cpu", *, threads: int | None = None,
                 spin: bool = True) -> None:
        """``spin=False`` stops idle worker threads from spinning (ONNX Runtime's default is to
        spin: lower latency, but the cores stay busy between calls)."""
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeSetupError(f"{path}: running .onnx models needs ONNX Runtime "
                                    "(pip install onnxruntime, or onnxruntime-gpu for CUDA)") from err
        kind, index = parse_device(device)
        if kind == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeSetupError(
                    f"device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); this ONNX "
                    f"Runtime has {', '.join(ort.get_available_providers())}. Install "
                    "onnxruntime-gpu, or pass device='cpu'")
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.denormals = FlushDenormals()
        self.denormals.enable(options)
        self.device = f"{kind}:{index}" if kind == "cuda" else "cpu"
        self.plugin_graph = False
        with self.denormals.creating():
            try:
                self.session = ort.InferenceSession(os.fspath(path), sess_options=options, providers=providers)
            except Exception as err:  # ORT raises its own exception types
                if "dtp" not in str(err) and "TokenSplit" not in str(err):
                    raise RuntimeSetupError(f"{path}: ONNX Runtime cannot load it: {err}") from err
                self.session = _plugin_session(path, providers, options)
                self.plugin_graph = True
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise RuntimeSetupError(f"{path}: expected one input 'images', the graph has "
                                    f"{[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self.batch = shape[0] if isinstance(shape[0], int) else None
        self.input_size = (shape[2], shape[3]) if all(isinstance(s, int) for s in shape[2:4]) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        for needed in ("scores", "keep_counts"):
            if needed not in self.output_names:
                raise RuntimeSetupError(f"{path}: the graph has no output {needed!r} (outputs: "
                                        f"{self.output_names}); re-export it with dtp-export")
        self.props = dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.denormals.running():
            scores, keep = self.session.run(["scores", "keep_counts"], {self.input_name: images})
        return scores, keep


def _plugin_session(path: Path, providers: list[Any], options: Any):
    """A session for a plugin-flavour graph through the CPU ``dtp`` domain implementation."""
    try:
        from exporters.ort_dtp_domain import create_session
    except ImportError as err:
        raise RuntimeSetupError(
            f"{path} is a plugin-flavour graph (dtp::TokenSplit/TokenReconstruct nodes): running it "
            f"on ONNX Runtime needs the onnx package and onnxruntime-extensions ({err}); or export "
            "the portable flavour (dtp-export --flavour portable), or build a TensorRT engine") from err
    _import_extensions_without_torch()
    cpu_only = [p for p in providers if p == "CPUExecutionProvider"]
    if len(cpu_only) != len(providers):
        raise RuntimeSetupError(f"{path} is a plugin-flavour graph: ONNX Runtime runs its token ops "
                                "on the CPU only; pass device='cpu', export the portable flavour, "
                                "or build a TensorRT engine for the GPU")
    try:
        return create_session(path, providers=cpu_only, sess_options=options)
    except RuntimeError as err:
        raise RuntimeSetupError(f"{path}: {err}") from err


def _import_extensions_without_torch() -> None:
    """Import onnxruntime-extensions with its optional torch converters switched off.

    The package imports torch at import time when it is installed (for converters the runtime
    never uses); a ``None`` entry in ``sys.modules`` makes that ``import torch`` fail with the
    ImportError the package already handles. Nothing changes when torch is already imported.
    """
    import sys

    if "onnxruntime_extensions" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import onnxruntime_extensions  # noqa: F401
    except ImportError:
        pass  # create_session reports it with the fix
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


class OpenVinoBackend:
    """OpenVINO on the CPU, for portable graphs (``.onnx``) and OpenVINO IR (``.xml``).

    Plugin-flavour graphs run when the dtp extension library (``plugins/openvino``, the native
    ``dtp::TokenSplit`` / ``TokenReconstruct``) is loaded: ``plugin_lib``, else the
    ``DTP_OPENVINO_EXTENSION`` environment variable, as the C++ runtime looks it up; without
    it they are refused with how to build it. ``precision`` is set explicitly because OpenVINO's own default is bf16 on CPUs with
    AVX512-BF16 or AMX, which changes the token confidences and so the exit decisions; the
    runtime's default is exact ``f32``. Each calling thread gets its own infer request.
    """

    name = "openvino"

    def __init__(self, path: Path, device: str = "cpu", *, threads: int | None = None,
                 precision: str = "f32", performance_hint: str = "latency",
                 plugin_lib: str | os.PathLike | None = None) -> None:
        precision = {"fp32": "f32", "fp16": "f16"}.get(precision, precision)
        kind, _ = parse_device(device)
        if kind != "cpu":
            raise RuntimeSetupError(f"{path}: the OpenVINO backend runs on the CPU; pass device='cpu', "
                                    "or use backend='ort' / 'trt' for a CUDA GPU")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        if performance_hint not in PERFORMANCE_HINTS:
            raise ValueError(f"unknown performance hint {performance_hint!r}; use "
                             f"{' or '.join(PERFORMANCE_HINTS)}")
        try:
            import openvino as ov
        except ImportError as err:
            raise RuntimeSetupError(f"{path}: the OpenVINO backend needs the openvino package "
                                    "(pip install 'dtp-deploy[openvino]')") from err
        core = ov.Core()
        missing = missing_precision(precision, core)
        if missing:
            raise RuntimeSetupError(f"{path}: precision {precision!r}: {missing}; pass precision='f32'")
        extension = openvino_extension_path(plugin_lib)
        if extension:
            try:
                core.add_extension(extension)
            except RuntimeError as err:
                raise RuntimeSetupError(f"cannot load the dtp OpenVINO extension {extension}: {err}; "
                                        f"{EXTENSION_HOWTO}") from None
        try:
            model = core.read_model(os.fspath(path))
        except RuntimeError as err:
            if not extension and ("dtp." in str(err) or "TokenSplit" in str(err)):
                raise RuntimeSetupError(
                    f"{path} is a plugin-flavour graph (dtp::TokenSplit/TokenReconstruct nodes): "
                    f"load the dtp OpenVINO extension ({EXTENSION_HOWTO}), export the portable "
                    "flavour (dtp-export --flavour portable), or run this graph with backend='ort'") from None
            raise RuntimeSetupError(f"{path}: OpenVINO cannot read it: {err}") from err
        self.props = _ov_props(model)
        if len(model.inputs) != 1:
            raise RuntimeSetupError(f"{path}: expected one input 'images', the graph has "
                                    f"{[i.get_any_name() for i in model.inputs]}")
        self.output_names = [o.get_any_name() for o in model.outputs]
        for needed in ("scores", "keep_counts"):
            if needed not in self.output_names:
                raise RuntimeSetupError(f"{path}: the graph has no output {needed!r} (outputs: "
                                        f"{self.output_names}); re-export it with dtp-export")
        port = model.inputs[0]
        self.input_name = port.get_any_name()
        shape = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        self.batch = dims[0]
        self.input_size = (dims[2], dims[3]) if None not in dims[2:4] else None
        self.dtype = np.float16 if port.get_element_type() == ov.Type.f16 else np.float32
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": performance_hint.upper(),
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as err:
            raise RuntimeSetupError(f"{path}: OpenVINO cannot compile it: {err}") from err
        self.device = "cpu"
        self.plugin_graph = any(op.get_type_name() in ("TokenSplit", "TokenReconstruct") for op in model.get_ops())
        # what OpenVINO will actually run ("f32", "bf16"), read back rather than assumed
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self._local = threading.local()

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer({self.input_name: images})
        # copies: the request reuses its output buffers on the next call
        return (np.array(out[self.compiled.output("scores")]),
                np.array(out[self.compiled.output("keep_counts")]))


EXTENSION_HOWTO = ("build plugins/runtime or plugins/openvino with CMake, see plugins/openvino/README.md, "
                   "and pass plugin_lib=.../libdtp_openvino_ops.so (dtp-run --plugin-lib) or set "
                   "DTP_OPENVINO_EXTENSION")


def openvino_extension_path(plugin_lib: str | os.PathLike | None = None) -> str | None:
    """The dtp OpenVINO extension library to load, looked up as the C++ runtime does:
    ``plugin_lib``, else a non-empty ``DTP_OPENVINO_EXTENSION``; None: load none."""
    if plugin_lib:
        return os.fspath(plugin_lib)
    return os.environ.get("DTP_OPENVINO_EXTENSION") or None


def missing_precision(precision: str, core: Any = None) -> str | None:
    """Why this CPU cannot run OpenVINO at ``precision`` natively (None: it can). bf16 needs
    AVX512-BF16 or AMX; OpenVINO would otherwise emulate or silently fall back to f32."""
    if precision == "f32":
        return None
    if core is None:
        import openvino as ov

        core = ov.Core()
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    name = {"bf16": "BF16", "f16": "FP16"}[precision]
    if name not in capabilities:
        return (f"this CPU has no native {precision} support (OpenVINO reports "
                f"{', '.join(capabilities)})")
    return None


def _ov_props(model: Any) -> dict[str, str]:
    """The ONNX ``metadata_props`` of a model OpenVINO read: its ONNX frontend keeps them in
    ``rt_info["framework"]`` (and ``save_model`` carries them into IR)."""
    info = model.get_rt_info()
    framework = info["framework"] if "framework" in info else {}
    if hasattr(framework, "astype"):  # an OVAny holding the map
        framework = framework.astype(dict)
    return {str(key): value.astype(str) if hasattr(value, "astype") else str(value)
            for key, value in dict(framework).items()}


class TrtBackend:
    """TensorRT through :class:`dtp_deploy.trt.engine.TrtEngine` (imported on first use).

    One execution context runs one batch at a time, so calls are serialised with a lock.
    The metadata comes from a sidecar next to the engine (see :func:`engine_props`).
    """

    name = "trt"

    def __init__(self, path: Path, device: str = "cuda", *, plugin_lib: str | None = None,
                 metadata_path: str | os.PathLike | None = None) -> None:
        kind, index = parse_device(device)
        if kind != "cuda":
            raise RuntimeSetupError(f"{path}: TensorRT engines run on a CUDA GPU; pass device='cuda' "
                                    "(or run the .onnx model on the CPU with ONNX Runtime)")
        try:
            from dtp_deploy.trt.engine import TrtEngine
        except ImportError as err:
            raise RuntimeSetupError(f"{path}: running TensorRT engines needs the tensorrt package and "
                                    f"a CUDA GPU ({err}); pip install 'dtp-deploy[trt]', or run the "
                                    ".onnx model with backend='ort'") from err
        try:
            self.engine = TrtEngine(os.fspath(path), plugin_lib=plugin_lib)
        except (ImportError, RuntimeError) as err:  # TensorRT or a CUDA binding missing, bad engine
            raise RuntimeSetupError(f"{path}: TensorRT cannot run it: {err}") from err
        self.props = engine_props(path, metadata_path)
        self.device = f"cuda:{index}"
        self.plugin_graph = False
        self.input_name = "images"
        meta = ModelMetadata.from_props(self.props, str(path))
        self.dtype = np.float16 if meta.precision == "fp16" else np.float32
        shape = _engine_input_shape(self.engine, self.input_name)
        if shape is not None and len(shape) == 4:
            self.batch = shape[0] if shape[0] > 0 else None
            self.input_size = (shape[2], shape[3]) if min(shape[2:]) > 0 else None
        else:  # the engine does not say: trust the metadata, one image per call
            self.batch = 1
            self.input_size = meta.input_size
        self._lock = threading.Lock()

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            out = self.engine.infer({self.input_name: images})
        return np.asarray(out["scores"]), np.asarray(out["keep_counts"])


def _engine_input_shape(engine: Any, name: str) -> tuple[int, ...] | None:
    """The engine's input shape if the wrapper exposes one (``input_shapes`` / ``shapes`` mapping)."""
    for attr in ("input_shapes", "shapes"):
        table = getattr(engine, attr, None)
        if isinstance(table, dict) and name in table:
            return tuple(int(d) for d in table[name])
    trt_engine = getattr(engine, "engine", None)  # the tensorrt.ICudaEngine it wraps
    if trt_engine is not None and hasattr(trt_engine, "get_tensor_shape"):
        return tuple(int(d) for d in trt_engine.get_tensor_shape(name))
    return None


def engine_props(path: Path, metadata_path: str | os.PathLike | None = None) -> dict[str, str]:
    """The ``dtp.*`` metadata of an engine: from ``metadata_path`` (a ``.json`` of the ONNX
    ``metadata_props`` map, or the ``.onnx`` the engine was built from), else from the sidecar
    ``<engine>.json`` (what ``dtp-build`` writes, the map under ``"metadata"``) or
    ``<stem>.json``, else from ``<stem>.onnx`` next to the engine."""
    candidates = [Path(metadata_path)] if metadata_path else [
        path.with_name(path.name + ".json"), path.with_suffix(".json"), path.with_suffix(".onnx")]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        if candidate.suffix == ".onnx":
            try:
                import onnx
            except ImportError as err:
                raise RuntimeSetupError(f"reading the metadata of {path} from {candidate} needs the "
                                        "onnx package; or write the sidecar "
                                        f"{path.name}.json") from err
            model = onnx.load(os.fspath(candidate), load_external_data=False)
            return {p.key: p.value for p in model.metadata_props}
        with open(candidate, encoding="utf-8") as handle:
            data = json.load(handle)
        if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
            data = data["metadata"]  # the sidecar dtp-build writes: {..., "metadata": {dtp.*}}
        if not isinstance(data, dict):
            raise RuntimeSetupError(f"{candidate}: expected a JSON object of dtp.* metadata")
        return {key: _as_prop(value) for key, value in data.items()}
    raise RuntimeSetupError(
        f"{path}: no metadata found (looked for {', '.join(str(c) for c in candidates)}); write "
        f"the ONNX model's metadata_props as JSON to {path.name}.json, or pass metadata=<model.onnx>")


def _as_prop(value: Any) -> str:
    """A sidecar value as a ``metadata_props`` string (JSON): both the props map itself
    (``"[3, 4, 6]"``) and plain JSON values (``[3, 4, 6]``, ``"dtop-vit-t"``) are accepted."""
    if isinstance(value, str):
        try:
            json.loads(value)
            return value
        except ValueError:
            pass
    return json.dumps(value)
