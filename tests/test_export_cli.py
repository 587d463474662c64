"""``dtp-export``: options reach ``export_onnx`` unchanged, defaults, exit codes, one real run."""

import json

import onnx
import pytest
import torch
from click.testing import CliRunner

import exporters.export as export_module
from dtp_deploy.checkpoint import save_model
from dtp_deploy.metadata import ModelMetadata
from dtp_deploy.models import build_model
from exporters.cli import main

SHALLOW = dict(depth=3, stage_ends=(1, 2, 3), embed_dim=64, num_heads=2, head_dim=32,
               head_heads=2, head_layers=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("dtop-vit-t", num_classes=3, img_size=(64, 96), **SHALLOW)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_model(model, path)
    return path


@pytest.fixture
def calls(monkeypatch):
    """Replace export_onnx by a recorder that writes nothing."""
    seen = []

    def fake(model, path, **kwargs):
        seen.append((model, path, kwargs))
        return export_module.ExportReport(
            path=str(path), flavour=kwargs["flavour"], opset=kwargs["opset"], precision="fp32",
            dense=kwargs["dense"], input_shape=[1, 3, 64, 96], outputs={"scores": [1, 3, 4, 6]},
            thresholds=[0.9, 0.9], dtp_nodes={}, num_nodes=1, size_bytes=1)

    monkeypatch.setattr(export_module, "export_onnx", fake)
    return seen


def test_options_reach_export_onnx(checkpoint, calls):
    result = CliRunner().invoke(main, [
        str(checkpoint), "-o", "out.onnx", "--flavour", "portable", "--height", "128", "--width",
        "160", "--batch", "2", "--dynamic-batch", "--dynamic-shape", "--dense", "--threshold",
        "0.5", "--threshold", "0.7", "--fp16", "--opset", "20", "--postprocess", "argmax",
        "--no-check", "--json"])
    assert result.exit_code == 0, result.output
    (model, path, kwargs), = calls
    assert model.config.num_classes == 3 and str(path) == "out.onnx"
    assert kwargs == dict(flavour="portable", height=128, width=160, batch=2, dynamic_batch=True,
                          dynamic_shape=True, dense=True, thresholds=[0.5, 0.7], fp16=True,
                          opset=20, postprocess="argmax", check=False, progress=kwargs["progress"])
    assert json.loads(result.stdout)["path"] == "out.onnx"


def test_defaults_write_next_to_the_checkpoint(checkpoint, calls):
    result = CliRunner().invoke(main, [str(checkpoint)])
    assert result.exit_code == 0, result.output
    (_, path, kwargs), = calls
    assert path == checkpoint.with_suffix(".onnx")
    assert (kwargs["flavour"], kwargs["check"], kwargs["thresholds"], kwargs["height"]) == \
        ("portable", True, None, None)


def test_without_a_model_exports_the_builtin_one(calls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 0, result.output
    (model, path, _), = calls
    assert model.config.arch == "dtop-vit-t" and str(path) == "dtop-vit-t.onnx"


@pytest.mark.parametrize("args, code, message", [
    (["--height", "100"], 2, "height 100 is not a positive multiple of the patch size 16"),
    (["--opset", "11"], 2, "opset 11 is not supported"),
    (["--threshold", "0.5"], 2, "has 2 auxiliary stages; got 1 thresholds"),
    (["--threshold", "0.5", "--threshold", "nan"], 2, "outside (0, 1]"),
    (["--flavour", "tensorrt"], 2, "Invalid value for '--flavour'"),
], ids=["size", "opset", "thresholds", "threshold-nan", "flavour"])
def test_bad_options_exit_2_and_say_why(checkpoint, tmp_path, args, code, message):
    result = CliRunner().invoke(main, [str(checkpoint), "-o", str(tmp_path / "x.onnx"), *args])
    assert result.exit_code == code
    assert message in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_missing_checkpoint_exits_2(tmp_path):
    result = CliRunner().invoke(main, [str(tmp_path / "nope.pth")])
    assert result.exit_code == 2 and "nope.pth" in result.output


def test_failed_check_exits_1(checkpoint, monkeypatch):
    def failing(*args, **kwargs):
        raise export_module.ExportCheckError("ONNX Runtime and PyTorch differ")

    monkeypatch.setattr(export_module, "export_onnx", failing)
    result = CliRunner().invoke(main, [str(checkpoint)])
    assert result.exit_code == 1 and "differ" in result.output


@pytest.mark.slow  # the export path itself is covered by test_export_model
def test_real_export_with_the_checkpoints_own_config(checkpoint):
    result = CliRunner().invoke(main, [str(checkpoint), "--flavour", "portable", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    path = checkpoint.with_suffix(".onnx")
    assert report["path"] == str(path) and report["checked"] and report["keep_counts_match"]
    assert report["input_shape"] == [1, 3, 64, 96]
    meta = ModelMetadata.from_props({p.key: p.value for p in onnx.load(path).metadata_props})
    assert meta.flavour == "portable" and meta.class_names == ("class_0", "class_1", "class_2")
    assert meta.trained_size == (64, 96)
