"""Model configurations and the named presets (``dtop-vit-t`` ... ``dovit-vit-l``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

ADE20K_MEAN = (123.675, 116.28, 103.53)
ADE20K_STD = (58.395, 57.12, 57.375)
#: mean = std = 127.5: the official DToP ViT-L and DoViT ADE20K configs.
HALF = (127.5, 127.5, 127.5)

PROTOCOL_KEYS = frozenset({"crop_size", "stride", "test_scale", "dataset", "reduce_zero_label"})


def _protocol(dataset: str, crop: int, stride: int, scale: tuple[int, int], reduce_zero_label: bool) -> dict[str, Any]:
    return {"dataset": dataset, "crop_size": [crop, crop], "stride": [stride, stride],
            "test_scale": list(scale), "reduce_zero_label": reduce_zero_label}


# The official test settings (dataset configs' test pipelines and the models' ``test_cfg``).
ADE20K_512 = _protocol("ade20k", 512, 341, (2048, 512), True)  # DToP ViT-B
ADE20K_640 = _protocol("ade20k", 640, 320, (2560, 640), True)  # DToP ViT-L
PASCAL_CONTEXT_480 = _protocol("pascal_context_59", 480, 320, (2048, 520), True)  # DToP ViT-L
COCO_STUFF_512 = _protocol("coco_stuff", 512, 341, (2048, 512), True)  # DToP ViT-L
ADE20K_512_SEGMENTER = _protocol("ade20k", 512, 480, (2048, 512), True)  # DoViT (mmseg Segmenter base)
CITYSCAPES_768 = _protocol("cityscapes", 768, 512, (2048, 1024), False)  # DoViT


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in checkpoints and ONNX metadata.

    ``stage_ends`` are 1-based block counts after which a head sits (the last equals ``depth``);
    ``thresholds`` has one entry per auxiliary (non-final) stage, each in (0, 1] (1: nothing
    exits). ``palette`` is one RGB colour per class (empty: none known). ``protocol`` holds the
    official evaluation settings when known: ``crop_size`` [h, w] and ``stride`` [h, w] of
    sliding-window inference, ``test_scale`` [w, h] (mmseg's keep-ratio resize), ``dataset``
    (``ade20k``, ``cityscapes``, ``pascal_context_59``, ``coco_stuff``) and ``reduce_zero_label``.
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
    palette: tuple[tuple[int, int, int], ...] = ()
    protocol: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stage_ends = tuple(int(s) for s in self.stage_ends)
        self.img_size = tuple(int(s) for s in self.img_size)  # type: ignore[assignment]
        self.thresholds = tuple(float(t) for t in self.thresholds)
        self.class_names = tuple(self.class_names) or tuple(f"class_{i}" for i in range(self.num_classes))
        self.mean = tuple(float(m) for m in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(s) for s in self.std)  # type: ignore[assignment]
        self.palette = tuple(tuple(int(c) for c in colour) for colour in self.palette)  # type: ignore[misc]
        self.protocol = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in self.protocol.items()}
        self.validate()

    @property
    def num_stages(self) -> int:
        return len(self.stage_ends)

    def validate(self) -> None:
        ends = self.stage_ends
        if not ends or list(ends) != sorted(set(ends)) or ends[0] < 1 or ends[-1] != self.depth:
            raise ValueError(f"{self.arch}: stage_ends {ends} must be increasing, >= 1 and end at depth {self.depth}")
        if len(self.thresholds) != len(ends) - 1:
            raise ValueError(f"{self.arch} has {len(ends) - 1} auxiliary stages; got "
                             f"{len(self.thresholds)} thresholds {list(self.thresholds)}")
        bad = [t for t in self.thresholds if not (math.isfinite(t) and 0.0 < t <= 1.0)]
        if bad:
            raise ValueError(f"{self.arch}: exit threshold {bad[0]} is outside (0, 1]; a token exits "
                             "when its confidence is above the threshold (1: nothing exits)")
        if self.palette and (len(self.palette) != self.num_classes or any(
                len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.palette)):
            raise ValueError(f"{self.arch}: palette must give one RGB colour (0-255) per class "
                             f"({self.num_classes}), got {len(self.palette)} entries")
        unknown = sorted(set(self.protocol) - PROTOCOL_KEYS)
        if unknown:
            raise ValueError(f"{self.arch}: unknown protocol keys {unknown}; known: {sorted(PROTOCOL_KEYS)}")
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
        out["palette"] = [list(c) for c in self.palette]
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


# DToP presets (official configs ``config/prune/prune_segvit_*.py``; docs/checkpoints.md lists
# where every value comes from). ViT-B: ADE20K 512, heads after blocks 6, 8, 12, head width 384
# with 6 attention heads (PruneHead's default), threshold 0.9, ImageNet mean/std. ViT-L: ADE20K
# 640, heads after 8, 16, 24, head width 512 with 8 attention heads, threshold 0.95, mean = std =
# 127.5 (every official ViT-L config); its Pascal-Context and COCO-Stuff configs use 16 attention
# heads (see DATASET_VARIANTS). ViT-S has no official config: ViT-B's layout at DeiT-S width.
# ViT-T is this project's small model for tests and the built-in model.
PRESETS: dict[str, ModelConfig] = {
    "dtop-vit-t": _dtop("dtop-vit-t", 192, 6, 3, (3, 4, 6), 96, 3, 0.9,
                        head_layers=2, img_size=(192, 192)),
    "dtop-vit-s": _dtop("dtop-vit-s", 384, 12, 6, (6, 8, 12), 192, 6, 0.9, protocol=ADE20K_512),
    "dtop-vit-b": _dtop("dtop-vit-b", 768, 12, 12, (6, 8, 12), 384, 6, 0.9, protocol=ADE20K_512),
    "dtop-vit-l": _dtop("dtop-vit-l", 1024, 24, 16, (8, 16, 24), 512, 8, 0.95,
                        img_size=(640, 640), mean=HALF, std=HALF, protocol=ADE20K_640),
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
# official ``diff_conf``), slide inference 512/480 (mmseg's Segmenter base). L: only a Cityscapes
# config exists: 768x768, 19 classes, ImageNet mean/std, threshold 0.985, slide 768/512.
# Cityscapes S/B: see DATASET_VARIANTS. ViT-T is this project's small model for tests and the
# built-in model.
PRESETS.update({
    "dovit-vit-t": _dovit("dovit-vit-t", 192, 6, 3, (2, 4, 6), 0.96, img_size=(192, 192),
                          extra={"aux_channels": 128}),
    "dovit-vit-s": _dovit("dovit-vit-s", 384, 12, 6, (2, 5, 8, 12), 0.96, mean=HALF, std=HALF,
                          extra={"low_conf_stop": 0.02}, protocol=ADE20K_512_SEGMENTER),
    "dovit-vit-b": _dovit("dovit-vit-b", 768, 12, 12, (2, 5, 8, 12), 0.96, mean=HALF, std=HALF,
                          extra={"low_conf_stop": 0.02}, protocol=ADE20K_512_SEGMENTER),
    "dovit-vit-l": _dovit("dovit-vit-l", 1024, 24, 16, (6, 12, 18, 24), 0.985, num_classes=19,
                          img_size=(768, 768), protocol=CITYSCAPES_768),
})

_CITYSCAPES = {"mean": ADE20K_MEAN, "std": ADE20K_STD, "thresholds": 0.985,
               "extra": {"low_conf_stop": -1.0}, "protocol": CITYSCAPES_768}

#: Official configs of one preset on another dataset, told apart by the number of classes (which
#: the weights give): ``(arch, num_classes) -> (dataset, overrides)``. ``thresholds`` is one value
#: for every auxiliary stage; ``extra`` entries update the preset's.
DATASET_VARIANTS: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {
    ("dtop-vit-l", 59): ("Pascal-Context 59", {"head_heads": 16, "protocol": PASCAL_CONTEXT_480}),
    ("dtop-vit-l", 171): ("COCO-Stuff 10k", {"head_heads": 16, "protocol": COCO_STUFF_512}),
    ("dovit-vit-s", 19): ("Cityscapes", _CITYSCAPES),
    ("dovit-vit-b", 19): ("Cityscapes", _CITYSCAPES),
}


def preset(arch: str, **overrides: Any) -> ModelConfig:
    """The named preset with fields overridden (``num_classes``, ``img_size``, ...)."""
    if arch not in PRESETS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[arch]
    if "num_classes" in overrides:
        overrides.setdefault("class_names", ())
        overrides.setdefault("palette", ())
    return dataclasses.replace(base, **overrides)
