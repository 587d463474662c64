"""Segment image files: reading, writing label PNGs and colour overlays (what ``dtp-run`` calls)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .segmenter import Segmenter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageError(ValueError):
    """An image file that cannot be segmented; the message names the file and the reason."""


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, and the images directly inside folders (sorted). An empty folder or a
    missing path is an :class:`ImageError`."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise ImageError(f"{path}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise ImageError(f"{path}: no such file or folder")
    return found


def read_image(path: Path) -> tuple[np.ndarray, str | None]:
    """``(H, W, 3)`` uint8 RGB and the mode it was converted from (None if it was RGB).

    Grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB (alpha dropped).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                peak = array.max() or 1.0
                rgb = np.repeat((array * (255.0 / max(peak, 255.0))).astype(np.uint8)[..., None], 3, axis=2)
                return rgb, mode
            if mode == "F":
                raise ImageError(f"{path}: floating-point images are not supported; save it as 8-bit RGB")
            converted = image if mode == "RGB" else image.convert("RGB")
            return np.asarray(converted, dtype=np.uint8), None if mode == "RGB" else mode
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"{path}: cannot read it as an image ({err})") from err


def palette(num_classes: int) -> np.ndarray:
    """``(K, 3)`` uint8 distinct colours (fixed, so overlays of one model are comparable)."""
    rng = np.random.default_rng(2024)
    colours = rng.integers(40, 256, (max(num_classes, 1), 3), dtype=np.uint8)
    return colours


def overlay(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image blended with the class colours."""
    blended = image.astype(np.float32) * (1 - alpha) + colours[labels].astype(np.float32) * alpha
    return blended.round().astype(np.uint8)


def write_labels(path: Path, labels: np.ndarray) -> None:
    """Class indices as a PNG: 8-bit gray for up to 256 classes, else 16-bit."""
    from PIL import Image

    if labels.max(initial=0) < 256:
        Image.fromarray(labels.astype(np.uint8), mode="L").save(path)
    else:
        Image.fromarray(labels.astype(np.uint16)).save(path)


@dataclass
class FileResult:
    """What happened to one input file."""

    path: str
    ok: bool
    error: str | None = None
    height: int | None = None
    width: int | None = None
    converted_from: str | None = None
    windows: int | None = None
    latency_ms: float | None = None
    timing: dict[str, float] = field(default_factory=dict)
    keep_ratio: list[float] = field(default_factory=list)
    labels_png: str | None = None
    overlay_png: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _output_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


def segment_files(segmenter: Segmenter, paths: Iterable[Path], outdir: Path, *, color: str = "rgb",
                  mode: str | None = "whole", crop: int | None = None, stride: int | None = None,
                  overlays: bool = True, protocol: str = "grid") -> Iterator[FileResult]:
    """Segment each file, writing ``<stem>_labels.png`` (and ``<stem>_overlay.png``) to ``outdir``.

    Yields one :class:`FileResult` per file; a file that cannot be read or segmented gives a
    result with ``ok=False`` and the error, and the next file is processed.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    colours = palette(len(segmenter.class_names))
    used: set[str] = set()
    for path in paths:
        result = FileResult(path=str(path), ok=False)
        try:
            image, converted = read_image(path)
            result.height, result.width, result.converted_from = image.shape[0], image.shape[1], converted
            # Converted images are RGB whatever --bgr says: it describes how the file stores colours.
            prediction = segmenter.predict(image, color=color if converted is None else "rgb", mode=mode,
                                           crop=crop, stride=stride, protocol=protocol)
            stem = _output_stem(path, used)
            labels_png = outdir / f"{stem}_labels.png"
            write_labels(labels_png, prediction.labels)
            result.labels_png = str(labels_png)
            if overlays:
                from PIL import Image

                overlay_png = outdir / f"{stem}_overlay.png"
                Image.fromarray(overlay(image, prediction.labels, colours)).save(overlay_png)
                result.overlay_png = str(overlay_png)
            result.windows = prediction.windows
            result.timing = prediction.timing.to_dict()
            result.latency_ms = result.timing["total_ms"]
            result.keep_ratio = [round(r, 6) for r in prediction.keep_ratio]
            result.ok = True
        except (ImageError, ValueError, OSError) as err:
            result.error = str(err)
        yield result
