"""Every command used carelessly: the lean install (no torch), outputs that are inputs or cannot
be written, bad numbers, and the conventions every command shares (--version, -h, examples,
exit codes)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from test_runtime import make_toy_model, scene

import exporters.export as export_module
from dtp_deploy.bench.cli import calibrate
from dtp_deploy.bench.cli import main as bench
from dtp_deploy.cli import info
from dtp_deploy.cli import main as dtp
from dtp_deploy.runtime.cli import main as run_cli
from dtp_deploy.trt.cli import main as build
from exporters.cli import main as export

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"dtp": dtp, "dtp-info": info, "dtp-export": export, "dtp-build": build,
            "dtp-run": run_cli, "dtp-bench": bench, "dtp-calibrate": calibrate}

# What `pip install dtp-deploy[ort]` has: no torch, no onnx, no onnxscript.
LEAN = textwrap.dedent("""
    import sys

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "onnx", "onnxscript"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NotInstalled())
    from dtp_deploy.cli import main
    sys.argv = ["dtp", *sys.argv[1:]]
    try:
        main()
    finally:
        assert "torch" not in sys.modules
""")


def lean(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", LEAN, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy-cli-hostile") / "toy.onnx")


# -- 4, 5, 17: the lean install -------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["export", "--help"], ["info", "--help"],
                                  ["bench", "--help"], ["calibrate", "--help"], ["build", "-h"],
                                  ["--version"]], ids=" ".join)
def test_help_works_without_torch(args):
    done = lean(*args)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["export"], ["info"], ["bench"],
                                  ["calibrate", "--target-gmacs", "1", "-o", "x.pth"]], ids=" ".join)
def test_commands_needing_torch_say_what_to_install(args, tmp_path):
    done = lean(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "pip install 'dtp-deploy[torch]'" in done.stderr and "Traceback" not in done.stderr


def test_the_lean_install_runs_and_describes_an_exported_model(toy, tmp_path):
    Image.fromarray(scene(64, 64)).save(tmp_path / "x.png")
    done = lean("run", toy, tmp_path / "x.png", "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "x_labels.png").is_file()
    described = lean("info", toy, "--json")
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["mean"] == [123.675, 116.28, 103.53]


# -- 15: dtp-info of an exported model ------------------------------------------------------------
def test_info_shows_an_exported_models_metadata(toy):
    result = CliRunner().invoke(info, [str(toy)])
    assert result.exit_code == 0, result.output
    for text in ("123.675, 116.28, 103.53", "58.395, 57.12, 57.375", "portable / fp32", "patch",
                 "0.9, 0.9", "64x64", "road", "not recorded (defaults apply)", "dtp-run generates one"):
        assert text in result.stdout, text
    data = json.loads(CliRunner().invoke(info, [str(toy), "--json"]).stdout)
    assert data["patch_size"] == 16 and data["input_size"] == [64, 64] and data["num_classes"] > 1
    wrong = CliRunner().invoke(info, [str(toy), "--height", "32"])
    assert wrong.exit_code == 2 and "apply to checkpoints" in wrong.output


def test_info_of_a_file_that_is_not_an_export(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"\x00garbage")
    result = CliRunner().invoke(info, [str(bogus)])
    assert result.exit_code == 2 and "bogus.onnx" in result.output and "Traceback" not in result.output


# -- 12: numbers checked on the command line --------------------------------------------------------
@pytest.mark.parametrize("command, args, message", [
    (info, ["--height", "-16"], "--height"),
    (info, ["--height", "0"], "--height"),
    (info, ["--scenes", "-3"], "--scenes"),
    (info, ["--arch", "bogus"], "'bogus' is not a preset"),
    (info, ["--threshold", "nan"], "outside (0, 1]"),
    (export, ["--threshold", "1.5"], "outside (0, 1]"),
    (export, ["--width", "0"], "--width"),
    (bench, ["--threshold", "0"], "outside (0, 1]"),
    (bench, ["--sweep-grid", "0.9,-1"], "outside (0, 1]"),
    (calibrate, ["--grid", "-1,2", "--target-gmacs", "1", "-o", "x.pth"], "-1 is outside (0, 1]"),
    (calibrate, ["--grid", "0.9,nan", "--target-gmacs", "1", "-o", "x.pth"], "nan is outside (0, 1]"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_numbers_exit_2_before_any_work(command, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "x.pth").exists()


def test_arch_is_not_ignored_for_a_builtin_model():
    result = CliRunner().invoke(info, ["dtop-vit-t", "--arch", "dovit-vit-t", "--scenes", "0"])
    assert result.exit_code == 2 and "not dovit-vit-t" in result.output


# -- 1, 10: outputs that are inputs or cannot be written --------------------------------------------
@pytest.fixture
def no_export(monkeypatch):
    """export_onnx must not be reached: the output is refused first."""
    def unreachable(*args, **kwargs):
        raise AssertionError("export_onnx ran")

    monkeypatch.setattr(export_module, "export_onnx", unreachable)


def test_export_refuses_to_overwrite_its_checkpoint(tmp_path, no_export):
    ckpt = tmp_path / "same.pth"
    ckpt.write_bytes(b"precious weights")
    (tmp_path / "link.onnx").symlink_to(ckpt)
    for output in (ckpt, tmp_path / "link.onnx"):
        result = CliRunner().invoke(export, [str(ckpt), "-o", str(output)])
        assert result.exit_code == 2, result.output
        assert "is the input" in result.output
    assert ckpt.read_bytes() == b"precious weights"


def test_export_checks_the_output_folder_before_loading(tmp_path, no_export):
    result = CliRunner().invoke(export, ["-o", str(tmp_path / "missing" / "x.onnx")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_build_refuses_to_overwrite_its_onnx(toy):
    result = CliRunner().invoke(build, [str(toy), "-o", str(toy)])
    assert result.exit_code == 2 and "is the input" in result.output


@pytest.mark.parametrize("option", ["--json-out", "--markdown", "--plot"])
def test_bench_checks_its_output_files_before_the_benchmark(option, tmp_path, monkeypatch):
    import dtp_deploy.bench as bench_module

    monkeypatch.setattr(bench_module, "run_benchmark", lambda *a, **k: pytest.fail("benchmark ran"))
    result = CliRunner().invoke(bench, ["--scenes", "0", option, str(tmp_path / "nope" / "report")])
    assert result.exit_code == 2, result.output
    assert f"{option} {tmp_path / 'nope' / 'report'}: folder" in result.output


def test_calibrate_refuses_to_overwrite_its_checkpoint(tmp_path):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"precious")
    result = CliRunner().invoke(calibrate, [str(ckpt), "--target-gmacs", "1", "-o", str(ckpt)])
    assert result.exit_code == 2 and "is the input" in result.output
    assert ckpt.read_bytes() == b"precious"


# -- 8: names with brackets -------------------------------------------------------------------------
def test_export_report_prints_bracketed_names(tmp_path, monkeypatch):
    import torch
    from test_export_cli import SHALLOW

    from dtp_deploy.checkpoint import save_model
    from dtp_deploy.models import build_model

    torch.manual_seed(0)
    folder = tmp_path / ("long-folder-name-" * 6)  # the path is wider than 80 columns
    folder.mkdir()
    ckpt = folder / "m[b].pth"
    save_model(build_model("dtop-vit-t", num_classes=3, img_size=(32, 32), **SHALLOW), ckpt)

    def fake(model, path, **kwargs):
        return export_module.ExportReport(
            path=str(path), flavour=kwargs["flavour"], opset=18, precision="fp32", dense=False,
            input_shape=[1, 3, 32, 32], outputs={"scores": [1, 3, 2, 2]}, thresholds=[0.9, 0.9],
            dtp_nodes={}, num_nodes=1, size_bytes=1)

    monkeypatch.setattr(export_module, "export_onnx", fake)
    result = CliRunner().invoke(export, [str(ckpt)])
    assert result.exit_code == 0, result.output
    assert f"wrote {ckpt.with_suffix('.onnx')}" in result.stdout  # not markup, not cut at 80


def test_info_prints_a_bracketed_checkpoint_name(tmp_path):
    import torch
    from test_export_cli import SHALLOW

    from dtp_deploy.checkpoint import save_model
    from dtp_deploy.models import build_model

    torch.manual_seed(0)
    ckpt = tmp_path / "m[b].pth"
    save_model(build_model("dtop-vit-t", num_classes=3, img_size=(32, 32), **SHALLOW), ckpt)
    result = CliRunner().invoke(info, [str(ckpt), "--scenes", "0"])
    assert result.exit_code == 0, result.output
    assert "m[b].pth" in result.stdout


# -- 14: conventions --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_version_help_examples_and_exit_codes(name):
    command = COMMANDS[name]
    version = CliRunner().invoke(command, ["--version"])
    assert version.exit_code == 0 and "0.1" in version.stdout
    short = CliRunner().invoke(command, ["-h"])
    assert short.exit_code == 0, short.output
    assert "Exit codes" in short.stdout
    if name != "dtp":
        assert "Examples:" in short.stdout
        assert "--quiet" in short.stdout and "--verbose" in short.stdout
