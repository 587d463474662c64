"""``dtp-run`` used carelessly or on purpose badly: outputs never destroy inputs or write through
links, names print as they are, one bad image or model fact gives one clear message."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_runtime import make_toy_model, scene, toy_metadata

from dtp_deploy import safe_io
from dtp_deploy.runtime import Segmenter
from dtp_deploy.runtime import segmenter as segmenter_module
from dtp_deploy.runtime.cli import main
from dtp_deploy.runtime.files import read_image


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy-hostile") / "toy.onnx")


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy-dyn") / "toy.onnx", batch=None, size=None)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def save(path, seed=0, size=(64, 64)):
    Image.fromarray(scene(*size, seed)).save(path)
    return path


# -- 2: never write through a link, never leave half a file --------------------------------------
def test_a_link_in_the_output_folder_is_replaced_not_followed(model, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("x_overlay.png", "x_labels.png", "colour_key.csv"):
        (out / name).symlink_to(victim)
    result = run(model, save(tmp_path / "x.png"), "-o", out)
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    for name in ("x_overlay.png", "x_labels.png", "colour_key.csv"):
        assert not (out / name).is_symlink()
    with Image.open(out / "x_overlay.png") as image:
        assert image.size == (64, 64)


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x_overlay.png"
    target.write_bytes(b"old")

    def half_then_ctrl_c(tmp):
        tmp.write_bytes(b"\x89PNG partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        safe_io.atomic_write(target, half_then_ctrl_c)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_overlay.png"]


def test_an_overlay_interrupted_by_ctrl_c_is_not_left_truncated(model, tmp_path, monkeypatch):
    out, image = tmp_path / "out", save(tmp_path / "x.png")

    def interrupted_save(self, fp, format=None, **params):
        with open(fp, "wb") as handle:
            handle.write(b"\x89PNG\r\n\x1a\n truncated")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    result = run(model, image, "-o", out)  # click turns Ctrl-C into "Aborted!", exit 1
    assert result.exit_code == 1 and "Aborted" in result.output
    assert [p.name for p in out.iterdir() if p.suffix == ".png"] == []
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# -- 3: in/ -o in/ ---------------------------------------------------------------------------------
def test_output_folder_equal_to_input_folder(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "x.png", 0)
    user_labels = save(folder / "x_labels.png", 1)  # an input that happens to have this name
    before = user_labels.read_bytes()
    first = run(model, folder, "-o", folder, "--json")
    assert first.exit_code == 0, first.output
    assert user_labels.read_bytes() == before  # never overwritten
    summary = json.loads(first.stdout)
    assert summary["segmented"] == 2
    written = sorted(p.name for p in folder.iterdir())
    second = run(model, folder, "-o", folder, "--json")
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["segmented"] == 2  # its own outputs are not segmented
    assert len(again["skipped_own_outputs"]) == len(written) - 2 - 1  # minus 2 inputs, colour key
    assert sorted(p.name for p in folder.iterdir()) == written  # no _labels_labels.png
    assert "dtp-run wrote" in second.stderr
    assert user_labels.read_bytes() == before


# -- 8: names are not markup ----------------------------------------------------------------------
def test_names_with_square_brackets_print_as_they_are(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "photo[b].png")
    (tmp_path / "bad[").mkdir()
    broken = tmp_path / "bad[" / "x].png"  # the path holds "[/x]", a closing markup tag
    broken.write_bytes(b"not a png")
    result = run(model, folder, broken, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "photo[b].png" in result.stdout
    assert "bad[/x].png" in result.stderr and "cannot read it as an image" in result.stderr
    assert (tmp_path / "out" / "photo[b]_labels.png").is_file()


# -- 9: one bad image does not end the batch; bad metadata is refused once at open ------------------
def test_a_decompression_bomb_is_skipped(model, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 > 2x the limit: an error
    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "a.png")
    Image.new("L", (30, 30)).save(folder / "b.png")  # under the limit
    result = run(model, folder, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["segmented"] == 1 and summary["failed"] == 1
    assert "too large to read safely" in summary["images"][0]["error"]


def test_whole_mode_refuses_an_image_too_large_for_one_input(dynamic_model, tmp_path, monkeypatch):
    monkeypatch.setattr(segmenter_module, "MAX_WINDOW_TOKENS", 20)  # 64x96 = 24 tokens
    save(tmp_path / "big.png", size=(64, 96))
    save(tmp_path / "small.png", size=(64, 64))
    result = run(dynamic_model, tmp_path / "big.png", tmp_path / "small.png", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert [r["ok"] for r in summary["images"]] == [False, True]
    assert "24 tokens" in summary["images"][0]["error"] and "--mode slide" in summary["images"][0]["error"]
    slide = run(dynamic_model, tmp_path / "big.png", "-o", tmp_path / "out2", "--mode", "slide", "--crop", "64")
    assert slide.exit_code == 0, slide.output


def test_the_default_limit_admits_a_cityscapes_frame_and_refuses_8000x8000(dynamic_model):
    seg = Segmenter.open(dynamic_model)
    assert seg.plan(1024, 2048).tokens_per_window == 8192
    with pytest.raises(ValueError, match="250000 tokens"):
        seg.plan(8000, 8000)


@pytest.mark.parametrize("key, value, message", [
    ("class_names", ["road", "sky"], "dtp.class_names = '2 names' but the graph scores"),
    ("patch_size", 0, "dtp.patch_size = 0 is not a positive integer"),
    ("std", [58.4, 0.0, 57.4], "dtp.std"),
], ids=["too-few-classes", "patch-0", "std-0"])
def test_bad_metadata_is_refused_at_open_naming_the_file_and_key(tmp_path, key, value, message):
    props = toy_metadata((64, 64)).to_props()
    props[f"dtp.{key}"] = json.dumps(value)
    path = make_toy_model(tmp_path / "bad.onnx", props=props)
    with pytest.raises(ValueError, match="bad.onnx") as caught:
        Segmenter.open(path)
    assert message in str(caught.value)
    result = run(path, save(tmp_path / "x.png"), "-o", tmp_path / "out")
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.output


# -- 13: wording -----------------------------------------------------------------------------------
def test_a_checkpoint_says_export_it_first(tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"\x80\x04")
    result = run(ckpt, save(tmp_path / "x.png"), "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "export it first" in result.stderr and "backend='ort'" not in result.stderr


def test_open_on_a_directory_says_it_is_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        Segmenter.open(tmp_path)


# -- 10: output location checked before the model is opened --------------------------------------
def test_an_output_folder_that_cannot_be_made_is_refused_first(tmp_path):
    (tmp_path / "file").write_text("a file")
    result = run(tmp_path / "missing.onnx", save(tmp_path / "x.png"), "-o", tmp_path / "file" / "out")
    assert result.exit_code == 2 and "cannot be created" in result.stderr


# -- 16, 17: output for people, 16-bit input -------------------------------------------------------
def test_labels_are_palette_pngs_with_a_colour_key(model, tmp_path):
    result = run(model, save(tmp_path / "x.png"), "-o", tmp_path / "out", "--alpha", "1")
    assert result.exit_code == 0, result.output
    expected = Segmenter.open(model).predict(scene(64, 64, 0)).labels
    with Image.open(tmp_path / "out" / "x_labels.png") as labels:
        assert labels.mode == "P"
        indices = np.asarray(labels)
        lut = np.asarray(labels.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(indices, expected)
    rows = (tmp_path / "out" / "colour_key.csv").read_text().splitlines()
    assert rows[0] == "index,name,r,g,b,hex" and len(rows) == 1 + len(Segmenter.open(model).class_names)
    key = {int(r.split(",")[0]): tuple(int(v) for v in r.split(",")[2:5]) for r in rows[1:]}
    overlay = np.asarray(Image.open(tmp_path / "out" / "x_overlay.png"))  # alpha 1: pure colours
    for k in np.unique(expected):
        assert tuple(lut[k]) == key[k]
        assert tuple(overlay[expected == k][0]) == key[k]


def test_the_generated_palette_has_150_distinct_visible_colours():
    from dtp_deploy.runtime.files import palette

    colours = palette(150)
    assert len({tuple(c) for c in colours}) == 150
    assert not (colours == 0).all(axis=1).any()
    given = [(1, 2, 3), (4, 5, 6)]
    assert palette(2, given).tolist() == [[1, 2, 3], [4, 5, 6]]


def test_crop_takes_height_x_width(dynamic_model, tmp_path):
    save(tmp_path / "x.png", size=(64, 96))
    result = run(dynamic_model, tmp_path / "x.png", "-o", tmp_path / "out", "--mode", "slide",
                 "--crop", "32x64", "--stride", "32x32", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"][0]["windows"] == 2 * 2
    bad = run(dynamic_model, tmp_path / "x.png", "-o", tmp_path / "out", "--mode", "slide", "--crop", "0x64")
    assert bad.exit_code == 2 and "HxW" in bad.output


def test_16_bit_images_are_scaled_by_bit_depth_not_by_their_peak(tmp_path):
    dim = np.full((8, 8), 32896, np.uint16)  # 32896 / 257 = 128
    bright = dim.copy()
    bright[0, 0] = 65535
    for name, array in (("dim.png", dim), ("bright.png", bright)):
        Image.fromarray(array).save(tmp_path / name)
    got_dim, mode = read_image(tmp_path / "dim.png")
    got_bright, _ = read_image(tmp_path / "bright.png")
    assert mode.startswith("I") and got_dim[1, 1].tolist() == [128, 128, 128]
    assert got_bright[1, 1].tolist() == [128, 128, 128] and got_bright[0, 0].tolist() == [255] * 3


def test_threads_reach_onnx_runtime(model, tmp_path):
    result = run(model, save(tmp_path / "x.png"), "-o", tmp_path / "out", "--threads", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "1 segmented, 0 failed"
    assert run(model, "--version").stdout.startswith("main (dtp-deploy) 0.")
    assert os.path.isfile(tmp_path / "out" / "x_labels.png")


def test_metadata_that_is_not_json_names_the_file_and_key(tmp_path):
    props = toy_metadata((64, 64)).to_props()
    props["dtp.mean"] = "[123.7, oops"
    path = make_toy_model(tmp_path / "bad.onnx", props=props)
    with pytest.raises(ValueError, match=r"bad.onnx: metadata dtp.mean = '\[123.7, oops' is not JSON"):
        Segmenter.open(path)


def test_a_model_with_an_unknown_suffix_is_bad_input(tmp_path):
    model = tmp_path / "model.bin"
    model.write_bytes(b"not looked at")
    result = run(model, save(tmp_path / "x.png"), "-o", tmp_path / "out")
    assert result.exit_code == 2 and "cannot tell the backend from the suffix" in result.output
