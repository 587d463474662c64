"""Model configurations and the named presets (``dtop-vit-t`` ... ``dovit-vit-l``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ADE20K_MEAN = (123.675, 116.28, 103.53)
ADE20K_STD = (58.395, 57.12, 57.375)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in checkpoints and ONNX metadata.

    ``stage_ends`` are 1-based block counts after which a head sits (the last equals ``depth``);
    ``thresholds`` has one entry per auxiliary (non-final) stage.
    """

    arch: str
    method: str  # "dtop" or "dovit"
    embed_dim: int
    depth: int
    num_heads: int
    stage_ends: tuple[int, ...]
    num_classes: int
    img_size: tuple[int, int] = (512, 512)  # the size the position embeddings were trained at
    patch_size: int = 16
    mlp_ratio: float = 4.0
    head_dim: int = 384  # width of the decode heads (SegViT: "channels")
    head_heads: int = 6
    head_layers: int = 3
    thresholds: tuple[float, ...] = ()
    context_topk: int = 5
    class_names: tuple[str, ...] = ()
    mean: tuple[float, float, float] = ADE20K_MEAN
    std: tuple[float, float, float] = ADE20K_STD
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stage_ends = tuple(int(s) for s in self.stage_ends)
        self.img_size = tuple(int(s) for s in self.img_size)  # type: ignore[assignment]
        self.thresholds = tuple(float(t) for t in self.thresholds)
        self.class_names = tuple(self.class_names) or tuple(f"class_{i}" for i in range(self.num_classes))
        self.mean = tuple(float(m) for m in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(s) for s in self.std)  # type: ignore[assignment]
        self.validate()

    @property
    def num_stages(self) -> int:
        return len(self.stage_ends)

    def validate(self) -> None:
        ends = self.stage_ends
        if not ends or list(ends) != sorted(set(ends)) or ends[0] < 1 or ends[-1] != self.depth:
            raise ValueError(f"{self.arch}: stage_ends {ends} must be increasing, >= 1 and end at depth {self.depth}")
        if len(self.thresholds) != len(ends) - 1:
            raise ValueError(f"{self.arch}: {len(self.thresholds)} thresholds given, "
                             f"expected one per auxiliary stage ({len(ends) - 1})")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.arch}: {len(self.class_names)} class names for {self.num_classes} classes")
        if any(s % self.patch_size for s in self.img_size):
            raise ValueError(f"{self.arch}: img_size {self.img_size} must be multiples of {self.patch_size}")

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("stage_ends", "img_size", "thresholds", "class_names", "mean", "std"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        return cls(**data)


def _dtop(arch: str, embed_dim: int, depth: int, num_heads: int, stage_ends, head_dim: int,
          head_heads: int, threshold: float, **kw: Any) -> ModelConfig:
    kw.setdefault("num_classes", 150)
    return ModelConfig(arch=arch, method="dtop", embed_dim=embed_dim, depth=depth,
                       num_heads=num_heads, stage_ends=stage_ends, head_dim=head_dim,
                       head_heads=head_heads,
                       thresholds=(threshold,) * (len(stage_ends) - 1), **kw)


# DToP presets. ViT-B / ViT-L follow the official configs (heads after blocks 6, 8, 12 and
# 8, 16, 24; head width 384 and 512; thresholds 0.9 and 0.95). ViT-S follows the same layout
# at DeiT-S width. ViT-T is this project's small model for tests and the built-in model.
PRESETS: dict[str, ModelConfig] = {
    "dtop-vit-t": _dtop("dtop-vit-t", 192, 6, 3, (3, 4, 6), 96, 3, 0.9,
                        head_layers=2, img_size=(192, 192)),
    "dtop-vit-s": _dtop("dtop-vit-s", 384, 12, 6, (6, 8, 12), 192, 6, 0.9),
    "dtop-vit-b": _dtop("dtop-vit-b", 768, 12, 12, (6, 8, 12), 384, 6, 0.9),
    "dtop-vit-l": _dtop("dtop-vit-l", 1024, 24, 16, (8, 16, 24), 512, 8, 0.95,
                        img_size=(640, 640)),
}


def _dovit(arch: str, embed_dim: int, depth: int, num_heads: int, stage_ends, threshold: float,
           **kw: Any) -> ModelConfig:
    kw.setdefault("num_classes", 150)
    kw.setdefault("head_dim", embed_dim)
    kw.setdefault("head_heads", num_heads)
    extra = {"class_token": True, "final_norm": True, "agg_rate": 0.1, "aux_channels": 256,
             "aux_convs": 1, "aux_kernel": 1, "low_conf_stop": -1.0}
    extra.update(kw.pop("extra", {}))
    return ModelConfig(arch=arch, method="dovit", embed_dim=embed_dim, depth=depth,
                       num_heads=num_heads, stage_ends=stage_ends, head_layers=2,
                       thresholds=(threshold,) * (len(stage_ends) - 1), context_topk=0,
                       extra=extra, **kw)


# DoViT presets (official configs ``local_configs/segmenter/segmenter_dovit-*``): ViT with a class
# token and a final norm (mmseg's Segmenter base config), FCN auxiliary heads (256 channels, one
# 1x1 conv + BN + ReLU), a Segmenter mask-transformer decode head (2 layers at the encoder width).
# The official loop runs auxiliary head k *before* block ``out_indices[k]`` (0-based), so with
# ``out_indices`` (2, 5, 8, 11) / (6, 12, 18, 23) the heads see the output of 2, 5, 8 / 6, 12, 18
# blocks: those are the stage ends here (the paper's "after blocks 3, 6, 9" reads the indices
# as mmseg's usual outputs-after-block).
# S/B: ADE20K 512x512, mean/std 127.5, exit threshold 0.96 and low-confidence stop 0.02 (the
# official ``diff_conf``). L: only a Cityscapes config exists: 768x768, 19 classes, ImageNet
# mean/std, threshold 0.985. Cityscapes S/B: ``num_classes=19, img_size=(768, 768)``, thresholds
# 0.985, ImageNet mean/std. ViT-T is this project's small model for tests and the built-in model.
_HALF = (127.5, 127.5, 127.5)
PRESETS.update({
    "dovit-vit-t": _dovit("dovit-vit-t", 192, 6, 3, (2, 4, 6), 0.96, img_size=(192, 192),
                          extra={"aux_channels": 128}),
    "dovit-vit-s": _dovit("dovit-vit-s", 384, 12, 6, (2, 5, 8, 12), 0.96, mean=_HALF, std=_HALF,
                          extra={"low_conf_stop": 0.02}),
    "dovit-vit-b": _dovit("dovit-vit-b", 768, 12, 12, (2, 5, 8, 12), 0.96, mean=_HALF, std=_HALF,
                          extra={"low_conf_stop": 0.02}),
    "dovit-vit-l": _dovit("dovit-vit-l", 1024, 24, 16, (6, 12, 18, 24), 0.985, num_classes=19,
                          img_size=(768, 768)),
})


def preset(arch: str, **overrides: Any) -> ModelConfig:
    """The named preset with fields overridden (``num_classes``, ``img_size``, ...)."""
    if arch not in PRESETS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[arch]
    if "num_classes" in overrides and "class_names" not in overrides:
        overrides["class_names"] = ()
    return dataclasses.replace(base, **overrides)
