"""``dtp-run`` on a toy ONNX model: outputs, JSON summary, bad inputs and exit codes."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_runtime import make_toy_model, scene

from dtp_deploy.runtime import Segmenter
from dtp_deploy.runtime.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy-cli") / "toy.onnx")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(scene(64, 64, 0)).save(folder / "a.png")
    Image.fromarray(scene(100, 150, 1)).save(folder / "b.jpg", quality=95)
    return folder


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_folder_to_pngs_and_json(model, images, tmp_path):
    out = tmp_path / "out"
    result = run(model, images, "-o", out, "--json", "--mode", "slide")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["segmented"] == 2 and summary["failed"] == 0 and summary["mode"] == "slide"
    first = summary["images"][0]
    assert first["keep_ratio"] == [1.0, 0.5, 0.25] and first["latency_ms"] > 0
    labels = np.asarray(Image.open(out / "a_labels.png"))
    expected = Segmenter.open(model).predict(scene(64, 64, 0), mode="slide").labels
    np.testing.assert_array_equal(labels, expected)
    with Image.open(out / "b_overlay.png") as overlay:
        assert overlay.size == (150, 100) and overlay.mode == "RGB"


def test_grayscale_and_rgba_are_converted(model, tmp_path):
    rgb = scene(64, 64, 2)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    result = run(model, tmp_path / "gray.png", tmp_path / "rgba.png", "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    converted = [r["converted_from"] for r in json.loads(result.stdout)["images"]]
    assert converted == ["L", "RGBA"]
    expected = Segmenter.open(model).predict(rgb).labels
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "rgba_labels.png")), expected)


def test_bad_image_is_skipped_unless_strict(model, images, tmp_path):
    bad = images / "0-broken.png"
    bad.write_bytes(b"not a png")
    result = run(model, images, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["segmented"] == 2 and summary["failed"] == 1
    assert "0-broken.png: cannot read it as an image" in summary["images"][0]["error"]
    strict = run(model, images, "-o", tmp_path / "strict", "--json", "--strict")
    assert strict.exit_code == 1
    assert json.loads(strict.stdout)["not_run"] == 2


def test_usage_errors(model, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(model, empty, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "no images in this folder" in result.output
    result = run(model, tmp_path / "nope.png", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "no such file" in result.output
    Image.fromarray(scene(64, 64)).save(tmp_path / "x.png")
    result = run(model, tmp_path / "x.png", "-o", tmp_path / "out", "--mode", "slide", "--crop", "50")
    assert result.exit_code == 2 and "multiple of the patch size" in result.output
    result = run(tmp_path / "missing.onnx", tmp_path / "x.png", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "cannot open the model" in result.output  # bad input


def test_human_output(model, images, tmp_path):
    result = run(model, images, "-o", tmp_path / "out", "--bgr", "--no-overlay")
    assert result.exit_code == 0, result.output
    assert "2 segmented, 0 failed" in result.stdout
    assert not list((tmp_path / "out").glob("*_overlay.png"))
