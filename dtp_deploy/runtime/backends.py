"""Inference backends of the runtime: ONNX Runtime for ``.onnx``, TensorRT for ``.engine``/``.plan``.

A backend runs ``images (B, 3, h, w)`` and returns ``(scores (B, K, h/p, w/p), keep_counts
(B, S))``. It knows the graph's fixed batch (or None) and input dtype, and must be callable
from many threads at once. Neither backend imports torch.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from dtp_deploy.metadata import ModelMetadata

BACKENDS = ("auto", "ort", "trt")
_ALIASES = {"onnxruntime": "ort", "tensorrt": "trt"}
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan")


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
    raise RuntimeSetupError(f"{path}: cannot tell the backend from the suffix {suffix!r}; name it "
                            f"*.onnx (ONNX Runtime) or *.engine / *.plan (TensorRT), or pass "
                            f"backend='ort' or 'trt'")


class OrtBackend:
    """ONNX Runtime. Plugin-flavour graphs (``dtp`` domain nodes) run their token ops through
    the CPU implementation of the ``dtp`` domain (needs ``onnx`` and onnxruntime-extensions)."""

    name = "ort"

    def __init__(self, path: Path, device: str = "cpu", *, threads: int | None = None) -> None:
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
        self.device = f"{kind}:{index}" if kind == "cuda" else "cpu"
        self.plugin_graph = False
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
