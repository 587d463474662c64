"""Build a TensorRT engine from an exported ONNX model (plugin or portable flavour).

:func:`build_engine` parses the ONNX with TensorRT's parser (all parser errors in one
exception), sets one optimisation profile, builds, and writes the engine atomically next to a
JSON sidecar recording what it was built with. TensorRT 11 networks are strongly typed: there,
FP16 means an FP16 ONNX graph (``dtp-export --fp16``), not a builder flag.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# One direction: build uses the engine module (TensorRT import, device), never the reverse.
from dtp_deploy.trt.engine import TrtUnavailable, device_name, import_tensorrt
from dtp_deploy.trt.plugins import file_sha256, find_plugin_library, load_plugin_library

Shape = tuple[int, ...]


class OnnxParseError(RuntimeError):
    """TensorRT's ONNX parser refused the model; ``errors`` holds every parser error."""

    def __init__(self, onnx_path: Path, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        listing = "\n".join(f"  - {e}" for e in self.errors) or "  (the parser gave no details)"
        super().__init__(f"{onnx_path}: TensorRT's ONNX parser failed with "
                         f"{len(self.errors)} error(s):\n{listing}")


@dataclass(frozen=True)
class ShapeProfile:
    """One optimisation profile for the image input, ``(B, C, H, W)`` each."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(f"min/opt/max shapes must have the same rank: {self}")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if not (0 < lo <= mid <= hi):
                raise ValueError(f"shapes must satisfy 0 < min <= opt <= max in every dim: "
                                 f"min {self.min}, opt {self.opt}, max {self.max}")


def parse_shape(text: str) -> Shape:
    """``"1x3x512x512"`` -> ``(1, 3, 512, 512)``."""
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {text!r} is not of the form BxCxHxW (e.g. 1x3x512x512)") from None
    if len(dims) != 4 or min(dims) <= 0:
        raise ValueError(f"shape {text!r} must be four positive sizes BxCxHxW (e.g. 1x3x512x512)")
    return dims


def shapes_from_onnx(onnx_path: str | os.PathLike[str]) -> ShapeProfile:
    """Profile from the ONNX input and its ``dtp.*`` metadata: fixed dims stay, a symbolic batch
    becomes 1 and symbolic H, W become the exported (or trained) size."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"{onnx_path}: expected one image input, found {len(inputs)}; "
                         "pass --min/--opt/--max explicitly")
    dims = inputs[0].type.tensor_type.shape.dim
    size = None
    for key in ("dtp.input_size", "dtp.trained_size"):
        if props.get(key) not in (None, "null"):
            size = tuple(json.loads(props[key]))
            break
    shape = []
    for axis, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(int(dim.dim_value))
        elif axis == 0:
            shape.append(1)
        elif axis == 1:
            shape.append(3)
        elif size is not None and axis in (2, 3):
            shape.append(int(size[axis - 2]))
        else:
            raise ValueError(f"{onnx_path}: input dim {axis} is symbolic and the model has no "
                             "dtp.input_size metadata; pass --min/--opt/--max BxCxHxW")
    fixed = tuple(shape)
    return ShapeProfile(fixed, fixed, fixed)


def check_split_bounds(model: Any, onnx_path: str | os.PathLike[str]) -> None:
    """Refuse a plugin graph TensorRT cannot build: every ``TokenSplit`` after the first needs
    ``max_tokens`` (its input width is the previous split's data-dependent M, which TensorRT does
    not take as a bound). Graphs exported with ``--dynamic-shape`` have none."""
    splits = [n for n in model.graph.node if n.domain == "dtp" and n.op_type == "TokenSplit"]
    unbounded = [n.name for n in splits[1:]
                 if not any(a.name == "max_tokens" and a.i > 0 for a in n.attribute)]
    if unbounded:
        raise ValueError(f"{onnx_path}: TokenSplit node(s) {', '.join(unbounded)} have no max_tokens "
                         "attribute, so TensorRT cannot bound their data-dependent output; export "
                         "with a fixed input size (dtp-export without --dynamic-shape)")


def _make_builder(trt: Any, logger: Any) -> Any:
    try:
        builder = trt.Builder(logger)
    except Exception as err:  # TensorRT raises various types when no device is present
        raise TrtUnavailable(f"TensorRT could not start a builder ({err}); is there a CUDA GPU "
                             "and a matching driver?") from err
    if builder is None:
        raise TrtUnavailable("TensorRT could not create a builder: no usable CUDA GPU "
                             "(see the TensorRT log above)")
    return builder


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    *,
    plugin_lib: str | os.PathLike[str] | None = None,
    min_shape: Sequence[int] | None = None,
    opt_shape: Sequence[int] | None = None,
    max_shape: Sequence[int] | None = None,
    fp16: bool = False,
    workspace_mb: int = 4096,
    timing_cache: str | os.PathLike[str] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Build and write ``engine_path`` plus ``<engine_path>.json``; returns the sidecar dict.

    Args:
        onnx_path: model from ``dtp-export`` (either flavour).
        engine_path: where the serialized engine goes (written atomically).
        plugin_lib: ``libdtp_plugins.so``; default: see :func:`find_plugin_library`. Required
            only when the graph has ``dtp`` nodes.
        min_shape, opt_shape, max_shape: ``(B, C, H, W)`` of the image input; all three or none
            (then taken from the ONNX input and its ``dtp.*`` metadata).
        fp16: TensorRT 10 only: allow FP16 kernels. TensorRT 11 is strongly typed: export an
            FP16 ONNX instead (this raises ValueError there).
        workspace_mb: workspace memory-pool limit.
        timing_cache: read if it exists, updated after the build.

    Raises:
        TrtUnavailable: no tensorrt module or no usable GPU.
        PluginLibraryNotFound: the graph has ``dtp`` nodes and no plugin library was found.
        OnnxParseError: every error of TensorRT's ONNX parser.
        ValueError: inconsistent shapes or options.
        RuntimeError: the build itself failed.
    """
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    given = [s is not None for s in (min_shape, opt_shape, max_shape)]
    if any(given) and not all(given):
        raise ValueError("pass all of min/opt/max shapes or none of them")
    if all(given):
        profile = ShapeProfile(tuple(min_shape), tuple(opt_shape), tuple(max_shape))  # type: ignore[arg-type]
    else:
        profile = None
    if workspace_mb <= 0:
        raise ValueError(f"workspace_mb must be positive, got {workspace_mb}")

    trt = import_tensorrt()
    major = int(trt.__version__.split(".")[0])
    if fp16 and major >= 11:
        raise ValueError("TensorRT 11 builds strongly typed networks only: FP16 means an FP16 ONNX "
                         "graph (export with dtp-export --fp16), not a builder flag")

    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    uses_plugins = any(node.domain == "dtp" for node in model.graph.node)
    check_split_bounds(model, onnx_path)
    metadata = {p.key: p.value for p in model.metadata_props if p.key.startswith("dtp.")}

    library = None
    if uses_plugins:
        library = load_plugin_library(trt, plugin_lib)
    elif plugin_lib is not None:
        library = find_plugin_library(plugin_lib)

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = _make_builder(trt, logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        raise OnnxParseError(onnx_path, [str(parser.get_error(i)) for i in range(parser.num_errors)])

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    # Only inputs with dynamic dims need a profile; a fully static graph gets none.
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(d < 0 for d in network.get_input(i).shape)]
    if dynamic:
        if profile is None:
            profile = shapes_from_onnx(onnx_path)
        optimization = builder.create_optimization_profile()
        for tensor in dynamic:
            if len(tensor.shape) != len(profile.min):
                raise ValueError(f"{onnx_path}: input {tensor.name!r} has rank {len(tensor.shape)}; "
                                 f"the profile shapes have rank {len(profile.min)}")
            optimization.set_shape(tensor.name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(optimization)

    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}; see the "
                           "TensorRT log above")
    _atomic_write(engine_path, bytes(serialized))
    if cache_path is not None:
        _atomic_write(cache_path, bytes(config.get_timing_cache().serialize()))

    sidecar = {
        "engine": engine_path.name,
        "onnx": str(onnx_path),
        "onnx_sha256": file_sha256(onnx_path),
        "tensorrt": trt.__version__,
        "gpu": device_name(),
        "plugin_library": str(library) if library else None,
        "plugin_library_sha256": file_sha256(library) if library else None,
        "uses_plugins": uses_plugins,
        "shapes": {k: list(v) for k, v in asdict(profile).items()} if profile else None,
        "fp16_flag": fp16,
        "workspace_mb": workspace_mb,
        "timing_cache": str(cache_path) if cache_path else None,
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metadata": metadata,
    }
    _atomic_write(sidecar_path(engine_path), (json.dumps(sidecar, indent=2) + "\n").encode())
    return sidecar
