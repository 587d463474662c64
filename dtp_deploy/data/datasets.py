"""Segmentation datasets on disk: ADE20K, Cityscapes and a plain ``images/`` + ``masks/`` folder.

Every dataset yields ``(image (H, W, 3) uint8 RGB, mask (H, W) uint8)`` with class ids in
``[0, K)`` and ``255`` for pixels that are not scored, so they plug straight into
:class:`~dtp_deploy.metrics.ConfusionMatrix`. Only PIL and numpy are needed.

Layouts (``root`` is the folder passed to ``--data``):

* ADE20K (SceneParsing): ``images/validation/*.jpg`` and ``annotations/validation/*.png``;
  annotation ``0`` is "other" (ignored), ``1..150`` become ``0..149`` (mmseg's
  ``reduce_zero_label``: ids above 150, which the dataset does not use, become 150..253 and
  count as mmseg counts them, see :mod:`dtp_deploy.metrics`).
* Cityscapes: ``leftImg8bit/val/<city>/*_leftImg8bit.png`` with, as mmseg reads them,
  ``gtFine/val/<city>/*_gtFine_labelTrainIds.png`` (train ids ``0..18``, ``255`` ignored;
  written by Cityscapes' ``createTrainIdLabelImgs`` or mmseg's converter), or, when no such file
  exists, ``*_gtFine_labelIds.png``, whose 34 label ids map to the 19 train ids and every other
  id to ``255``.
* Folder: ``images/<stem>.(png|jpg|jpeg)`` and ``masks/<stem>.png`` holding class ids directly
  (``255`` ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

ADE20K_NUM_CLASSES = 150

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle")
# Cityscapes label id -> train id (from the dataset's labels.py); every other id is ignored.
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                         23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _lookup(table: dict[int, int]) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for src, dst in table.items():
        lut[src] = dst
    return lut


# mmseg's reduce_zero_label: 0 ("other") -> 255, k -> k - 1, and 255 stays ignored.
ADE20K_LUT = _lookup({k: k - 1 for k in range(1, 255)})
CITYSCAPES_LUT = _lookup(_CITYSCAPES_TRAIN_IDS)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), np.uint8)


def _read_mask(path: Path) -> np.ndarray:
    """A single-channel (``L``, ``P`` or 16-bit ``I``) PNG as its raw integer values."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: mask must be a single-channel PNG of class ids, got mode {img.mode}")
        mask = np.asarray(img)
    if mask.max(initial=0) > 255:
        raise ValueError(f"{path}: mask values up to {mask.max()} do not fit class ids 0..255")
    return mask.astype(np.uint8)


class SegmentationFolder:
    """Pairs of image and mask files; subclasses say where they are and how labels map."""

    name = "folder"
    classes: tuple[str, ...] = ()
    reduce_zero_label = False  # mmseg's flag; the label lookup table applies it

    def __init__(self, pairs: list[tuple[Path, Path]], lut: np.ndarray | None = None,
                 limit: int | None = None) -> None:
        if not pairs:
            raise FileNotFoundError(f"{type(self).__name__}: no image/mask pairs found")
        self.pairs = pairs[:limit] if limit else pairs
        self.lut = lut

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[i]
        image, mask = _read_image(image_path), _read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
                             f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}")
        return image, (self.lut[mask] if self.lut is not None else mask)


def _pairs_by_stem(images: Path, masks: Path, mask_name) -> list[tuple[Path, Path]]:
    pairs, missing = [], []
    for image in sorted(p for p in images.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES):
        mask = masks / image.relative_to(images).parent / mask_name(image)
        (pairs if mask.is_file() else missing).append((image, mask))
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) have no mask, e.g. {missing[0][0]} "
                                f"(expected {missing[0][1]})")
    return pairs


class ADE20K(SegmentationFolder):
    """ADE20K (SceneParsing ``ADEChallengeData2016``) validation or training split."""

    name = "ade20k"
    classes = tuple(f"ade_{i}" for i in range(ADE20K_NUM_CLASSES))
    reduce_zero_label = True

    def __init__(self, root: str | os.PathLike, split: str = "validation", limit: int | None = None):
        root = Path(root)
        pairs = _pairs_by_stem(root / "images" / split, root / "annotations" / split,
                               lambda p: p.stem + ".png")
        super().__init__(pairs, ADE20K_LUT, limit)


class Cityscapes(SegmentationFolder):
    """Cityscapes fine annotations, scored on the 19 train ids."""

    name = "cityscapes"
    classes = CITYSCAPES_CLASSES
    reduce_zero_label = False

    def __init__(self, root: str | os.PathLike, split: str = "val", limit: int | None = None):
        root = Path(root)
        labels = root / "gtFine" / split
        # mmseg's layout has train-id PNGs; the raw download has only label ids.
        self.label_kind = ("labelTrainIds" if labels.is_dir() and next(labels.rglob("*_gtFine_labelTrainIds.png"), None)
                           else "labelIds")

        def label_name(image: Path) -> str:
            return image.name.replace("_leftImg8bit", f"_gtFine_{self.label_kind}").rsplit(".", 1)[0] + ".png"

        pairs = _pairs_by_stem(root / "leftImg8bit" / split, labels, label_name)
        super().__init__(pairs, CITYSCAPES_LUT if self.label_kind == "labelIds" else None, limit)


class ImageMaskFolder(SegmentationFolder):
    """``images/<stem>.*`` with ``masks/<stem>.png`` of class ids; ``num_classes`` is whatever
    the model predicts (pass it), or one more than the largest id found in the first masks."""

    def __init__(self, root: str | os.PathLike, num_classes: int | None = None,
                 limit: int | None = None):
        root = Path(root)
        pairs = _pairs_by_stem(root / "images", root / "masks", lambda p: p.stem + ".png")
        super().__init__(pairs, None, limit)
        if num_classes is None:
            seen = [m[m != IGNORE_INDEX] for m in (_read_mask(p) for _, p in self.pairs[:16])]
            num_classes = int(max((s.max(initial=0) for s in seen), default=0)) + 1
        self.classes = tuple(f"class_{i}" for i in range(num_classes))


def detect_layout(root: str | os.PathLike) -> str:
    """``"ade20k"``, ``"cityscapes"`` or ``"folder"`` from the sub-folders of ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root}: not a folder")
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return "ade20k"
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder"
    raise FileNotFoundError(
        f"--data {root}: expected images/ + annotations/ (ADE20K), leftImg8bit/ + gtFine/ "
        "(Cityscapes) or images/ + masks/ (plain folder)")


def open_dataset(root: str | os.PathLike, *, layout: str | None = None,
                 num_classes: int | None = None, limit: int | None = None) -> SegmentationFolder:
    """The dataset at ``root`` (layout detected unless given), at most ``limit`` samples."""
    layout = layout or detect_layout(root)
    if layout == "ade20k":
        return ADE20K(root, limit=limit)
    if layout == "cityscapes":
        return Cityscapes(root, limit=limit)
    if layout == "folder":
        return ImageMaskFolder(root, num_classes=num_classes, limit=limit)
    raise ValueError(f"unknown dataset layout {layout!r}; use ade20k, cityscapes or folder")
