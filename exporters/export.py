"""``export_onnx``: a token-pruning segmenter to an ONNX graph of either flavour.

The graph (DESIGN.md section 2):

* input ``images``: ``(B, 3, H, W)`` float32 (float16 with ``fp16=True``), normalised RGB in
  NCHW: ``(pixel - mean) / std`` with the mean and std stored in the metadata;
* output ``scores``: ``(B, K, H/16, W/16)`` per-token class scores, same float type as the input;
* output ``keep_counts``: ``(B, S)`` int32, the tokens of each image entering each stage;
* output ``labels`` (``postprocess="argmax"`` only): ``(B, H, W)`` int32, the argmax over
  classes of the scores resized bilinearly to the input size.

Deployment facts go into ``metadata_props`` under the keys of :data:`METADATA_KEYS` (values
JSON-encoded; see :class:`dtp_deploy.metadata.ModelMetadata`, which parses them back).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dtp_deploy import __version__
from dtp_deploy.metadata import PREFIX, ModelMetadata

from .lowering import PORTABLE_MIN_OPSET, translation_table
from .options import DEFAULT_OPSET, FLAVOURS, POSTPROCESS
from .ort_dtp_domain import pyops_available
from .schemas import DTP_DOMAIN, bound_token_splits, register_dtp_schemas

# torch's exporter emits opset 18 and newer; 23 is the newest its translations are tested at.
SUPPORTED_OPSETS = tuple(range(PORTABLE_MIN_OPSET, 24))
#: ``metadata_props`` key of every metadata field (values are JSON).
METADATA_KEYS: dict[str, str] = {f.name: PREFIX + f.name for f in fields(ModelMetadata)}
#: Largest |ONNX Runtime - PyTorch fp32| of ``scores`` accepted by the export check, per precision.
CHECK_TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2}


class ExportError(ValueError):
    """An export request that cannot be met; the message names the value and the fix."""


class ExportCheckError(ExportError):
    """torch's exporter failed, or the graph failed its check (ONNX checker, shape inference,
    the comparison with PyTorch): a bug to report rather than a bad argument."""


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote, and what its check found."""

    path: str
    flavour: str
    opset: int
    precision: str  # "fp32" | "fp16"
    dense: bool
    input_shape: list[int | str]  # str for symbolic dims
    outputs: dict[str, list[int | str]]
    thresholds: list[float]
    dtp_nodes: dict[str, int]  # op type -> count (empty for portable graphs)
    num_nodes: int
    size_bytes: int
    seconds: float = 0.0
    checked: bool = False
    max_abs_diff: float | None = None  # scores, ONNX Runtime vs PyTorch fp32, on the check batch
    keep_counts: list[list[int]] = field(default_factory=list)  # ONNX Runtime, check batch
    keep_counts_match: bool | None = None  # same as PyTorch on the check batch
    check_note: str = ""  # why part of the check was skipped, if it was
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _ExportGraph(nn.Module):
    """The exported computation: the model, plus full-resolution labels on request."""

    def __init__(self, model: nn.Module, argmax: bool) -> None:
        super().__init__()
        self.model = model
        self.argmax = argmax

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        scores, keep_counts = self.model(images)
        if not self.argmax:
            return scores, keep_counts
        full = F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return scores, keep_counts, full.argmax(dim=1).to(torch.int32)


def _validate(model: nn.Module, flavour: str, postprocess: str, opset: int, height: int,
              width: int, batch: int, thresholds: Sequence[float] | None) -> None:
    if flavour not in FLAVOURS:
        raise ExportError(f"unknown flavour {flavour!r}; use one of {', '.join(FLAVOURS)} "
                          "(plugin: TensorRT plugin nodes, portable: standard ONNX ops only)")
    if postprocess not in POSTPROCESS:
        raise ExportError(f"unknown postprocess {postprocess!r}; use one of {', '.join(POSTPROCESS)}")
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported; use {SUPPORTED_OPSETS[0]}.."
                          f"{SUPPORTED_OPSETS[-1]} (default {DEFAULT_OPSET})")
    patch = model.config.patch_size
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % patch:
            nearest = max(patch, round(value / patch) * patch)
            raise ExportError(f"{name} {value} is not a positive multiple of the patch size "
                              f"{patch}; use e.g. {nearest}")
    if batch < 1:
        raise ExportError(f"batch {batch} must be at least 1")
    expected = model.config.num_stages - 1
    if thresholds is not None and len(thresholds) != expected:
        raise ExportError(f"{model.config.arch} has {expected} auxiliary stage(s), so it takes "
                          f"{expected} threshold(s); got {len(thresholds)}: {list(thresholds)}")
    broken = [name for name, value in model.state_dict().items()
              if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if broken:
        raise ExportError(f"{len(broken)} weight tensor(s) hold NaN or inf (first: {broken[0]}): "
                          "the checkpoint is broken; nothing written")


def _dynamic_shapes(dynamic_batch: bool, dynamic_shape: bool, patch: int) -> dict | None:
    if not (dynamic_batch or dynamic_shape):
        return None
    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    if dynamic_shape:
        dims[2] = patch * torch.export.Dim("grid_h", min=1, max=512)
        dims[3] = patch * torch.export.Dim("grid_w", min=1, max=512)
    return {"images": dims}


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.dim_param else d.dim_value
            for d in value.type.tensor_type.shape.dim]


@contextlib.contextmanager
def _progress(progress: bool | Callable[[str], None]) -> Iterator[Callable[[str], None]]:
    """A ``say(message)`` callable: the caller's, a rich spinner on a terminal, or nothing."""
    if callable(progress):
        yield progress
    elif progress and sys.stderr.isatty():
        from rich.console import Console

        with Console(stderr=True).status("exporting") as status:
            yield lambda message: status.update(message)
    else:
        yield lambda message: None


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """torch's exporter prints and warns on its own; keep library callers' output theirs."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    sink = io.StringIO()
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _check_images(model: nn.Module, batch: int, height: int, width: int) -> np.ndarray:
    """A deterministic, realistic check batch: synthetic scenes, normalised."""
    from dtp_deploy.data import SyntheticScenes
    from dtp_deploy.preprocess import normalize

    scenes = SyntheticScenes(batch, height, width, seed=1234)
    return normalize(np.stack([scenes[i][0] for i in range(batch)]),
                     model.config.mean, model.config.std)


def _compare_with_torch(reference: nn.Module, path: str, images: np.ndarray, fp16: bool
                        ) -> tuple[float, list[list[int]], bool]:
    """Run the written graph in ONNX Runtime and ``reference`` (fp32) in PyTorch."""
    from .ort_dtp_domain import create_session

    feed = images.astype(np.float16 if fp16 else np.float32)
    scores, keep_counts = create_session(path).run(["scores", "keep_counts"], {"images": feed})
    with torch.inference_mode():
        want_scores, want_counts = reference(torch.from_numpy(images))
    diff = float(np.abs(scores.astype(np.float32) - want_scores.numpy()).max())
    return diff, keep_counts.tolist(), bool(np.array_equal(keep_counts, want_counts.numpy()))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    flavour: str = "plugin",
    height: int | None = None,
    width: int | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    dynamic_shape: bool = False,
    dense: bool = False,
    thresholds: Sequence[float] | None = None,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    postprocess: str = "none",
    check: bool = True,
    progress: bool | Callable[[str], None] = True,
) -> ExportReport:
    """Export a :class:`~dtp_deploy.models.TokenPruningSegmenter` to ONNX at ``path``.

    Args:
        model: the model (left unchanged; a copy is exported).
        path: the ``.onnx`` file to write. It is written to a temporary file in the same
            folder and renamed, so a failed export leaves no file and an old file intact.
        flavour: ``"plugin"``: the token ops are ``dtp::TokenSplit`` / ``dtp::TokenReconstruct``
            nodes for the TensorRT plugins; ``"portable"``: standard ONNX ops only.
        height, width: input size, multiples of the patch size (default: the trained size).
        batch: batch size of the graph (of the check batch with ``dynamic_batch``).
        dynamic_batch: symbolic batch dimension ``batch``.
        dynamic_shape: symbolic height and width (``16 * grid_h``, ``16 * grid_w``).
        dense: export the unpruned baseline (no token exits) from the same weights.
        thresholds: exit threshold per auxiliary stage (default: the model's).
        fp16: an FP16 graph: half weights and activations, ``images`` and ``scores`` float16
            (confidences, indices and ``keep_counts`` keep their types). TensorRT 11 networks
            are strongly typed, so this is how to get an FP16 engine.
        opset: ONNX opset of the standard domain, one of :data:`SUPPORTED_OPSETS`.
        postprocess: ``"argmax"`` adds the ``labels`` output (see the module docstring).
        check: run ``onnx.checker`` (full check) and strict shape inference, then ONNX Runtime
            (plugin graphs through :mod:`exporters.ort_dtp_domain`) against PyTorch fp32 on a
            batch of synthetic scenes; fail if the scores differ by more than
            :data:`CHECK_TOLERANCE` while the keep counts agree.
        progress: ``True`` shows a spinner on a terminal, a callable receives status strings,
            ``False`` is silent.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ExportError: an unsupported argument, or a graph that fails its check.
    """
    height = int(height or model.config.img_size[0])
    width = int(width or model.config.img_size[1])
    _validate(model, flavour, postprocess, opset, height, width, batch, thresholds)
    register_dtp_schemas()
    start = time.perf_counter()

    reference = copy.deepcopy(model).cpu().float().eval()  # exported and checked on the CPU
    reference.pruning = not dense
    reference.set_thresholds(thresholds if thresholds is not None else model.thresholds)
    exported = copy.deepcopy(reference).to(torch.float16 if fp16 else torch.float32)
    dtype = torch.float16 if fp16 else torch.float32
    # torch.export specialises a dimension whose example size is 1: trace a dynamic batch with 2.
    example = torch.zeros(max(batch, 2) if dynamic_batch else batch, 3, height, width, dtype=dtype)
    output_names = ["scores", "keep_counts"] + (["labels"] if postprocess == "argmax" else [])
    cfg = model.config

    with _progress(progress) as say:
        say(f"exporting {cfg.arch} ({flavour}, {'dense' if dense else 'pruned'}, "
            f"{'fp16' if fp16 else 'fp32'}) at {height}x{width}")
        try:
            with _exporter_quiet():
                program = torch.onnx.export(
                    _ExportGraph(exported, postprocess == "argmax"), (example,), dynamo=True,
                    opset_version=opset, input_names=["images"], output_names=output_names,
                    dynamic_shapes=_dynamic_shapes(dynamic_batch, dynamic_shape, cfg.patch_size),
                    custom_translation_table=translation_table(flavour), optimize=True,
                    verbose=False)
        except Exception as err:
            raise ExportCheckError(f"torch.onnx.export failed for {cfg.arch} ({flavour}, "
                              f"{height}x{width}): {type(err).__name__}: {err}") from err
        proto = program.model_proto
        bound_token_splits(proto)  # the static bound TensorRT needs for each split's width
        meta = ModelMetadata(
            version=__version__, arch=cfg.arch, method=cfg.method, flavour=flavour, dense=dense,
            class_names=tuple(cfg.class_names), mean=tuple(cfg.mean), std=tuple(cfg.std),
            patch_size=cfg.patch_size,
            input_layout=f"NCHW {'float16' if fp16 else 'float32'} normalised RGB",
            input_size=None if dynamic_shape else (height, width),
            trained_size=tuple(cfg.img_size), stage_ends=tuple(cfg.stage_ends),
            thresholds=tuple(reference.thresholds), context_topk=cfg.context_topk,
            precision="fp16" if fp16 else "fp32", outputs=tuple(output_names),
            palette=tuple(cfg.palette), protocol=dict(cfg.protocol))
        onnx.helper.set_model_props(proto, meta.to_props())
        proto.producer_name, proto.producer_version = "dtp-deploy", __version__
        proto.doc_string = (f"{cfg.arch} ({cfg.method}) exported by dtp-export; "
                            f"flavour {flavour}; metadata keys {PREFIX}*")

        report = ExportReport(
            path=str(path), flavour=flavour, opset=opset, precision=meta.precision, dense=dense,
            input_shape=_shape(proto.graph.input[0]),
            outputs={o.name: _shape(o) for o in proto.graph.output},
            thresholds=list(reference.thresholds), dtp_nodes=count_dtp_nodes(proto),
            num_nodes=len(proto.graph.node), size_bytes=0,
            metadata={key: getattr(meta, key) for key in METADATA_KEYS})
        target = Path(path)
        if target.parent and not target.parent.is_dir():
            raise ExportError(f"cannot write {target}: folder {target.parent} does not exist")
        handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        try:
            onnx.save(proto, tmp)
            report.size_bytes = os.path.getsize(tmp)
            if check:
                say("checking the graph (onnx.checker, strict shape inference)")
                try:
                    onnx.checker.check_model(tmp, full_check=True)
                    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
                except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
                    raise ExportCheckError(f"the exported graph fails the ONNX check: {err}") from err
                report.checked = True
                if flavour == "plugin" and not pyops_available():
                    report.check_note = ("ONNX Runtime vs PyTorch skipped: running plugin graphs "
                                         "on the CPU needs onnxruntime-extensions")
                else:
                    say("comparing ONNX Runtime with PyTorch")
                    images = _check_images(model, batch, height, width)
                    diff, counts, match = _compare_with_torch(reference, tmp, images, fp16)
                    report.max_abs_diff, report.keep_counts = diff, counts
                    report.keep_counts_match = match
                tolerance = CHECK_TOLERANCE[meta.precision]
                if report.max_abs_diff is not None and not np.isfinite(report.max_abs_diff):
                    raise ExportCheckError(
                        f"the {flavour} graph or PyTorch gives non-finite scores (NaN or inf) on "
                        "the check batch: are the checkpoint's weights finite? Nothing written")
                if report.keep_counts_match and not report.max_abs_diff <= tolerance:
                    raise ExportCheckError(
                        f"ONNX Runtime and PyTorch differ by {report.max_abs_diff:.3g} (> "
                        f"{tolerance:g}) on the check batch with the same keep counts "
                        f"{report.keep_counts}: the {flavour} graph is "
                        "wrong; please report it (or pass check=False / --no-check to keep it)")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def count_dtp_nodes(proto: onnx.ModelProto) -> dict[str, int]:
    """``{op_type: count}`` of the ``dtp`` nodes of a graph."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.domain == DTP_DOMAIN:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
