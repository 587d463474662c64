"""Dataset loaders on tiny generated folders in each layout."""

import numpy as np
import pytest
from PIL import Image

from dtp_deploy.data import ADE20K, Cityscapes, ImageMaskFolder, detect_layout, open_dataset
from dtp_deploy.metrics import ConfusionMatrix


def _write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _image(h=4, w=6, value=0):
    return np.full((h, w, 3), value, np.uint8)


def test_ade20k_shifts_labels_and_ignores_zero(tmp_path):
    raw = np.array([[0, 1, 150, 2, 0, 7]] * 4, np.uint8)
    _write(tmp_path / "images/validation/ADE_val_0001.jpg", _image())
    _write(tmp_path / "annotations/validation/ADE_val_0001.png", raw)
    assert detect_layout(tmp_path) == "ade20k"
    data = open_dataset(tmp_path)
    assert isinstance(data, ADE20K) and len(data) == 1 and data.num_classes == 150
    image, mask = data[0]
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8
    assert mask[0].tolist() == [255, 0, 149, 1, 255, 6]


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    # road 7 -> 0, sky 23 -> 10, bicycle 33 -> 18; unlabeled 0, ego vehicle 1, parking 9,
    # license plate -1 (stored as 255 in uint8) -> ignored
    raw = np.array([[7, 23, 33, 0, 1, 9, 26, 255]] * 2, np.uint8)
    stem = "frankfurt_000000_000294"
    _write(tmp_path / f"leftImg8bit/val/frankfurt/{stem}_leftImg8bit.png", _image(2, 8))
    _write(tmp_path / f"gtFine/val/frankfurt/{stem}_gtFine_labelIds.png", raw)
    _write(tmp_path / f"gtFine/val/frankfurt/{stem}_gtFine_color.png", _image(2, 8))
    assert detect_layout(tmp_path) == "cityscapes"
    data = open_dataset(tmp_path)
    assert isinstance(data, Cityscapes) and len(data) == 1 and data.num_classes == 19
    _, mask = data[0]
    assert mask[0].tolist() == [0, 10, 18, 255, 255, 255, 13, 255]


def test_plain_folder_pairs_by_stem_and_keeps_ids(tmp_path):
    for stem, value in (("b", 2), ("a", 1)):
        _write(tmp_path / f"images/{stem}.png", _image(value=value))
        mask = np.full((4, 6), value, np.uint8)
        mask[0, 0] = 255
        _write(tmp_path / f"masks/{stem}.png", mask)
    assert detect_layout(tmp_path) == "folder"
    data = open_dataset(tmp_path)
    assert isinstance(data, ImageMaskFolder) and len(data) == 2
    assert data.num_classes == 3  # largest id 2, 255 is ignore
    for i, value in enumerate((1, 2)):  # sorted by stem: a, b
        image, mask = data[i]
        assert image[0, 0, 0] == value and mask[1, 1] == value and mask[0, 0] == 255
    cm = ConfusionMatrix(3)
    cm.update(data[0][1], np.ones((4, 6), np.int64))
    assert cm.matrix.sum() == 23  # the 255 pixel is not scored


def test_palette_mask_reads_indices(tmp_path):
    mask = Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8), "L").convert("P")
    _write(tmp_path / "images/x.jpg", _image(2, 2))
    (tmp_path / "masks").mkdir()
    mask.save(tmp_path / "masks/x.png")
    assert open_dataset(tmp_path, num_classes=4)[0][1].tolist() == [[0, 1], [2, 3]]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="images/ \\+ masks/"):
        detect_layout(tmp_path)
    _write(tmp_path / "images/a.png", _image())
    (tmp_path / "masks").mkdir()
    with pytest.raises(FileNotFoundError, match="have no mask"):
        open_dataset(tmp_path)
    _write(tmp_path / "masks/a.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="its mask"):
        open_dataset(tmp_path, num_classes=2)[0]
    _write(tmp_path / "masks/a.png", _image())
    with pytest.raises(ValueError, match="single-channel"):
        open_dataset(tmp_path, num_classes=2)[0]


def test_ade20k_reduce_zero_label_as_mmseg(tmp_path):
    # mmseg: label[label == 0] = 255; label -= 1; label[label == 254] = 255 (ids > 150 do not occur
    # in ADE20K, but are not ignored by mmseg either)
    raw = np.array([[0, 1, 2, 150, 151, 254, 255]], np.uint8)
    _write(tmp_path / "images/validation/a.jpg", _image(1, 7))
    _write(tmp_path / "annotations/validation/a.png", raw)
    data = open_dataset(tmp_path)
    assert data.reduce_zero_label and data[0][1].tolist() == [[255, 0, 1, 149, 150, 253, 255]]


def test_cityscapes_prefers_train_id_files_as_mmseg(tmp_path):
    stem = "lindau_000000_000019"
    train_ids = np.array([[0, 18, 255, 5]], np.uint8)
    _write(tmp_path / f"leftImg8bit/val/lindau/{stem}_leftImg8bit.png", _image(1, 4))
    _write(tmp_path / f"gtFine/val/lindau/{stem}_gtFine_labelIds.png", np.full((1, 4), 7, np.uint8))
    _write(tmp_path / f"gtFine/val/lindau/{stem}_gtFine_labelTrainIds.png", train_ids)
    data = open_dataset(tmp_path)
    assert data.label_kind == "labelTrainIds" and not data.reduce_zero_label
    assert data[0][1].tolist() == train_ids.tolist()  # read as they are, not through the id table
