"""Per-request options of the served segmenter and the checks on a request's image.

Shared by the Triton models (inside the server) and :mod:`dtp_deploy.client` (which sends the
options as request parameters), so both sides spell them the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np

from dtp_deploy.runtime.processing import MODES

COLORS = ("rgb", "bgr")
#: Default pixel limit of one served image (a 16-megapixel photo); 0 means no limit.
DEFAULT_MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class RequestOptions:
    """How to segment a request's images; ``crop``/``stride`` apply to ``slide`` mode."""

    mode: str = "whole"
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    color: str = "rgb"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; use 'rgb' or 'bgr'")

    def to_parameters(self) -> dict[str, str]:
        """Request parameters (strings): what differs from nothing at all."""
        params = {"mode": self.mode, "color": self.color}
        for key in ("crop", "stride"):
            value = getattr(self, key)
            if value is not None:
                params[key] = f"{value[0]},{value[1]}"
        return params

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> RequestOptions:
        return cls().updated(params)

    def updated(self, params: str | dict | None) -> RequestOptions:
        """These options with a request's parameters (a JSON object, or a dict) applied."""
        if isinstance(params, str):
            params = json.loads(params or "{}")
        if not params:
            return self
        changes: dict = {}
        for key in ("mode", "color"):
            if key in params:
                changes[key] = str(params[key])
        for key in ("crop", "stride"):
            if key in params:
                changes[key] = _pair(key, params[key])
        return replace(self, **changes)


def _pair(key: str, value) -> tuple[int, int] | None:
    if value in (None, ""):
        return None
    try:
        parts = [int(v) for v in str(value).split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise ValueError(f"parameter {key}={value!r}: expected a positive int or 'height,width'")
    return parts[0], parts[1]


def check_image(image: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse an image the server should not run: not ``(H, W, 3)`` uint8, empty, or larger
    than ``max_pixels`` (0: no limit). The message names the value and the limit."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image of shape {image.shape}: expected (height, width, 3) RGB")
    if image.dtype != np.uint8:
        raise ValueError(f"image of dtype {image.dtype}: expected uint8 (0-255)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if max_pixels and image.shape[0] * image.shape[1] > max_pixels:
        raise ValueError(f"image of {image.shape[1]}x{image.shape[0]} pixels is over this server's "
                         f"limit of {max_pixels} pixels (the repository's max_pixels parameter); "
                         "downscale it or raise the limit")
