"""What an exported model carries in ONNX ``metadata_props`` (and engine sidecars), so a runtime
needs no checkpoint and no torch. Values are JSON; keys are prefixed ``dtp.``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

PREFIX = "dtp."


@dataclass(frozen=True)
class ModelMetadata:
    """The deployment facts of an exported model."""

    version: str  # dtp-deploy version that wrote it
    arch: str
    method: str  # "dtop" | "dovit"
    flavour: str  # "plugin" | "portable"
    dense: bool  # True: exported without token exits (the baseline)
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]  # RGB, 0-255 scale
    std: tuple[float, float, float]
    patch_size: int
    input_layout: str  # "NCHW float32 normalised RGB" (or float16)
    input_size: tuple[int, int] | None  # fixed (H, W) of the graph, None if symbolic
    trained_size: tuple[int, int]  # crop size the model was trained at (slide inference default)
    stage_ends: tuple[int, ...]
    thresholds: tuple[float, ...]
    context_topk: int
    precision: str  # "fp32" | "fp16"
    outputs: tuple[str, ...]  # graph outputs, e.g. ("scores", "keep_counts")
    # Optional (absent from graphs of older versions): one RGB colour per class (empty: none
    # known) and the official evaluation settings (see ModelConfig.protocol).
    palette: tuple[tuple[int, int, int], ...] = ()
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_props(self) -> dict[str, str]:
        """``metadata_props`` entries: ``dtp.<field>`` -> JSON value."""
        return {PREFIX + f.name: json.dumps(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "model") -> ModelMetadata:
        """Parse ``metadata_props``; a missing key is an error that names the source."""
        values: dict[str, Any] = {}
        missing = []
        for f in fields(cls):
            raw = props.get(PREFIX + f.name)
            if raw is None:
                if f.default is MISSING and f.default_factory is MISSING:
                    missing.append(PREFIX + f.name)
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                raise ValueError(f"{source}: metadata {PREFIX + f.name} = {raw!r} is not JSON; "
                                 "re-export it with dtp-export") from None
            values[f.name] = tuple(value) if isinstance(value, list) else value
        if missing:
            raise ValueError(f"{source}: not exported by dtp-export (missing metadata "
                             f"{', '.join(missing[:4])}); re-export it with dtp-export")
        for key in ("input_size", "trained_size"):
            if values[key] is not None:
                values[key] = tuple(values[key])
        if "palette" in values:
            values["palette"] = tuple(tuple(c) for c in values["palette"])
        return cls(**values)


class DescribedByMetadata:
    """What a model's runner tells about it, read from its ``metadata``: shared by the local
    :class:`~dtp_deploy.runtime.Segmenter` and the Triton :class:`~dtp_deploy.client.Client`."""

    metadata: ModelMetadata

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.metadata.class_names

    @property
    def num_stages(self) -> int:
        return len(self.metadata.stage_ends)
