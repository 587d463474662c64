"""Token-pruning ViT segmenters and their presets."""

from __future__ import annotations

from typing import Any

from .config import PRESETS, ModelConfig, preset
from .dovit import DoViTSegmenter  # registers METHODS["dovit"]
from .segmenter import METHODS, DToPSegmenter, TokenPruningSegmenter, build_from_config


def build_model(arch: str | ModelConfig, **overrides: Any) -> TokenPruningSegmenter:
    """Build a model with random weights from a preset name (``dtop-vit-b``, ``dovit-vit-b``) or a config.

    ``overrides`` replace config fields, e.g. ``num_classes=19, img_size=(768, 768)``.
    """
    config = arch.replace(**overrides) if isinstance(arch, ModelConfig) else preset(arch, **overrides)
    return build_from_config(config)


__all__ = ["PRESETS", "METHODS", "ModelConfig", "DToPSegmenter", "DoViTSegmenter", "TokenPruningSegmenter",
           "build_model", "build_from_config", "preset"]
