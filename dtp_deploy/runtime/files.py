"""Segment image files: reading, writing label PNGs and colour overlays (what ``dtp-run`` calls)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dtp_deploy.safe_io import atomic_write, same_file, write_text

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

    Grayscale, palette, RGBA and 16-bit images are converted to 8-bit RGB (alpha dropped);
    16-bit values are scaled by the bit depth (65535 -> 255), so every image of a set keeps
    the same brightness scale. Images larger than Pillow's decompression-bomb limit are refused.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                gray = (np.clip(array, 0, 65535) * (255.0 / 65535.0)).round().astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2), mode
            if mode == "F":
                raise ImageError(f"{path}: floating-point images are not supported; save it as 8-bit RGB")
            converted = image if mode == "RGB" else image.convert("RGB")
            return np.asarray(converted, dtype=np.uint8), None if mode == "RGB" else mode
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too large to read safely ({err})") from err
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"{path}: cannot read it as an image ({err})") from err


def palette(num_classes: int, given: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """``(K, 3)`` uint8 class colours: ``given`` (the model's own palette) when it has one per
    class, else the PASCAL VOC bit-interleaving colour map (distinct for up to 255 classes;
    black is not used, so every class shows in an overlay), then fixed random colours."""
    k = max(num_classes, 1)
    if len(given) >= k:
        return np.asarray([tuple(c)[:3] for c in given[:k]], np.uint8)
    colours = np.zeros((k, 3), np.uint8)
    for i in range(k):
        code, rgb = i + 1, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        colours[i] = rgb
    if k > 255:
        colours[255:] = np.random.default_rng(2024).integers(40, 256, (k - 255, 3), dtype=np.uint8)
    return colours


def overlay(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image blended with the class colours (``alpha``: weight of the colours)."""
    blended = image.astype(np.float32) * (1 - alpha) + colours[labels].astype(np.float32) * alpha
    return blended.round().astype(np.uint8)


#: PNG text tag of the files dtp-run writes, so a later run can tell them from input images.
OUTPUT_TAG = "dtp-run"


def _save_png(path: Path, image) -> None:
    """Save a PIL image as a tagged PNG, atomically (see :func:`dtp_deploy.safe_io.atomic_write`)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", OUTPUT_TAG)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def write_labels(path: Path, labels: np.ndarray, colours: np.ndarray | None = None) -> None:
    """Class indices as a PNG: a palette PNG for up to 256 classes (the pixel values are the
    class indices, and viewers show the class colours), else 16-bit gray."""
    from PIL import Image

    if labels.max(initial=0) < 256:
        image = Image.fromarray(labels.astype(np.uint8), mode="L")
        if colours is not None:
            image = _as_palette(image, colours)
        _save_png(path, image)
    else:
        _save_png(path, Image.fromarray(labels.astype(np.uint16)))


def _as_palette(image, colours: np.ndarray):
    """The ``L`` image ``image`` as a ``P`` image: same indices, ``colours`` as its palette."""
    image.putpalette(np.resize(colours[:256], (256, 3)).astype(np.uint8).tobytes(), rawmode="RGB")
    return image


def write_colour_key(path: Path, class_names: Sequence[str], colours: np.ndarray) -> None:
    """``index,name,r,g,b,hex`` per class: the key to the colours of labels and overlays."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "name", "r", "g", "b", "hex"])
    for index, (name, rgb) in enumerate(zip(class_names, colours)):
        r, g, b = (int(v) for v in rgb)
        writer.writerow([index, name, r, g, b, f"#{r:02x}{g:02x}{b:02x}"])
    write_text(path, buffer.getvalue())


def is_own_output(path: Path) -> bool:
    """True for a PNG that dtp-run wrote (tagged with :data:`OUTPUT_TAG`)."""
    if path.suffix.lower() != ".png":
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.info.get("Software") == OUTPUT_TAG
    except Exception:  # not readable: not ours; reading it as an input reports why
        return False


def skip_own_outputs(paths: Iterable[Path], outdir: Path) -> tuple[list[Path], list[Path]]:
    """``(inputs, skipped)``: the files in ``outdir`` that an earlier run wrote are skipped, so
    ``dtp-run in/ -o in/`` does not segment its own label and overlay PNGs."""
    kept: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        ours = outdir.is_dir() and same_file(path.parent, outdir) and is_own_output(path)
        (skipped if ours else kept).append(path)
    return kept, skipped


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


OUTPUT_SUFFIXES = ("_labels.png", "_overlay.png")
COLOUR_KEY = "colour_key.csv"


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()  # follows links: a link to an input is that input
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _output_stem(path: Path, used: set[str], outdir: Path, inputs: set[tuple[int, int]]) -> str:
    """``path``'s stem, numbered when another input already took it or when one of its output
    files would be one of the inputs (``x.png`` next to an input ``x_labels.png``)."""
    stem, n = path.stem, 1
    while stem in used or any(_file_id(outdir / f"{stem}{suffix}") in inputs for suffix in OUTPUT_SUFFIXES):
        n += 1
        stem = f"{path.stem}_{n}"
    used.add(stem)
    return stem


def segment_files(segmenter: Segmenter, paths: Iterable[Path], outdir: Path, *, color: str = "rgb",
                  mode: str | None = "whole", crop: int | Sequence[int] | None = None,
                  stride: int | Sequence[int] | None = None,
                  test_scale: str | Sequence[int] | None = None, overlays: bool = True,
                  alpha: float = 0.5, protocol: str = "grid") -> Iterator[FileResult]:
    """Segment each file, writing ``<stem>_labels.png`` (and ``<stem>_overlay.png``) to ``outdir``,
    and ``colour_key.csv``, the class of each colour.

    Outputs are written atomically and never over one of ``paths`` (a clashing output name
    gets a number). Yields one :class:`FileResult` per file; a file that cannot be read or
    segmented gives a result with ``ok=False`` and the error, and the next file is processed.
    """
    from PIL import Image

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} is outside [0, 1]")
    paths = list(paths)
    inputs = {i for i in map(_file_id, paths) if i is not None}
    outdir.mkdir(parents=True, exist_ok=True)
    colours = palette(len(segmenter.class_names), getattr(segmenter.metadata, "palette", ()) or ())
    write_colour_key(outdir / COLOUR_KEY, segmenter.class_names, colours)
    used: set[str] = set()
    for path in paths:
        result = FileResult(path=str(path), ok=False)
        try:
            image, converted = read_image(path)
            result.height, result.width, result.converted_from = image.shape[0], image.shape[1], converted
            # Converted images are RGB whatever --bgr says: it describes how the file stores colours.
            prediction = segmenter.predict(image, color=color if converted is None else "rgb", mode=mode,
                                           crop=crop, stride=stride, protocol=protocol,
                                           test_scale=test_scale)
            stem = _output_stem(path, used, outdir, inputs)
            labels_png = outdir / f"{stem}_labels.png"
            write_labels(labels_png, prediction.labels, colours)
            result.labels_png = str(labels_png)
            if overlays:
                overlay_png = outdir / f"{stem}_overlay.png"
                _save_png(overlay_png, Image.fromarray(overlay(image, prediction.labels, colours, alpha)))
                result.overlay_png = str(overlay_png)
            result.windows = prediction.windows
            result.timing = prediction.timing.to_dict()
            result.latency_ms = result.timing["total_ms"]
            result.keep_ratio = [round(r, 6) for r in prediction.keep_ratio]
            result.ok = True
        except ImageError as err:
            result.error = str(err)
        except Exception as err:  # one bad image must not end the batch; the result says why
            result.error = f"{path}: {err}" if str(path) not in str(err) else str(err)
            if not isinstance(err, (ValueError, OSError)):
                result.error += f" ({type(err).__name__})"
        yield result
