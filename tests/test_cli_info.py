import json

import pytest
import torch
from click.testing import CliRunner

from dtp_deploy.checkpoint import save_model
from dtp_deploy.cli import info
from dtp_deploy.models import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_model(build_model("dtop-vit-t", num_classes=8, img_size=(64, 64)), path)
    return path


def test_json_summary(checkpoint):
    result = CliRunner().invoke(info, [str(checkpoint), "--scenes", "2", "--json", "--threshold", "0.5",
                                       "--threshold", "0.6", "--height", "64", "--width", "96"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["arch"] == "dtop-vit-t" and summary["tokens"] == 24
    assert [s["threshold"] for s in summary["stages"]] == [0.5, 0.6, None]
    assert [s["blocks"] for s in summary["stages"]] == [[1, 3], [4, 4], [5, 6]]
    assert summary["stages"][0]["keep_ratio"] == 1.0
    assert 0 <= summary["miou_pruned"] <= 1 and summary["gmacs_dense"] > 0


@pytest.mark.parametrize("args,message", [
    (["--height", "70"], "multiples of 16"),
    (["--threshold", "0.5"], "2 auxiliary stages"),
])
def test_bad_options_exit_2_with_message(checkpoint, args, message):
    result = CliRunner().invoke(info, [str(checkpoint), "--scenes", "0", *args])
    assert result.exit_code == 2 and message in result.output


def test_bad_file_exit_2(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    result = CliRunner().invoke(info, [str(bad)])
    assert result.exit_code == 2 and "not a readable PyTorch checkpoint" in result.output


def test_dtp_group_runs_each_subcommand(checkpoint):
    from dtp_deploy.cli import SUBCOMMANDS, main

    listing = CliRunner().invoke(main, ["--help"])
    assert listing.exit_code == 0 and all(name in listing.output for name in SUBCOMMANDS)
    for name in SUBCOMMANDS:  # every entry resolves to a command with its own help
        assert CliRunner().invoke(main, [name, "--help"]).exit_code == 0, name
    grouped = CliRunner().invoke(main, ["info", str(checkpoint), "--scenes", "0", "--json"])
    assert grouped.exit_code == 0
    direct = CliRunner().invoke(info, [str(checkpoint), "--scenes", "0", "--json"])
    assert json.loads(grouped.output) == json.loads(direct.output)
    assert CliRunner().invoke(main, ["nope"]).exit_code == 2


def test_builtin_names_are_models():
    result = CliRunner().invoke(info, ["dovit-vit-t", "--scenes", "0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["arch"] == "dovit-vit-t" and summary["method"] == "dovit"
