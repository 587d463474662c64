"""``dtp-info``: what a model is made of and what pruning saves on it."""

from __future__ import annotations

import importlib
import json
import sys

import click

from .checkpoint import CheckpointError


def fail(message: str, code: int = 2) -> None:
    """Print an error for a person and exit with ``code`` (2: bad input)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--arch", help="Preset name, for official checkpoints whose shapes are ambiguous.")
@click.option("--height", type=int, help="Input height (multiple of 16); default: the trained size.")
@click.option("--width", type=int, help="Input width (multiple of 16); default: the trained size.")
@click.option("--threshold", "thresholds", multiple=True, type=float,
              help="Exit threshold of an auxiliary stage; repeat once per stage.")
@click.option("--scenes", default=8, show_default=True,
              help="Synthetic scenes to measure keep ratios on (0: skip the measurement).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def info(model, arch, height, width, thresholds, scenes, as_json):
    """Show a model's stages, parameter count and analytic GMACs, dense and pruned.

    MODEL is a checkpoint (dtp-deploy format, official DToP/DoViT mmseg, or a bare state
    dict) or a built-in name (dtop-vit-t, dovit-vit-t); without it, the built-in dtop-vit-t. Keep ratios are measured on synthetic scenes, so
    they are representative only for models trained on them (such as the built-in model).

    \b
    Examples:
      dtp-info
      dtp-info dtop_vit_b_ade20k.pth --arch dtop-vit-b --height 512 --width 512 --json
    """
    from .report import model_summary, print_summary

    try:
        summary = model_summary(model, arch=arch, size=(height, width),
                                thresholds=list(thresholds) or None, scenes=scenes)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)


#: ``dtp <name>`` runs the same command as ``dtp-<name>``; modules load only when a command runs.
SUBCOMMANDS = {
    "info": "dtp_deploy.cli:info",
    "export": "exporters.cli:main",
    "build": "dtp_deploy.trt.cli:main",
    "run": "dtp_deploy.runtime.cli:main",
    "bench": "dtp_deploy.bench.cli:main",
    "calibrate": "dtp_deploy.bench.cli:calibrate",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(SUBCOMMANDS)

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dtp-deploy")
def main():
    """dtp-deploy: export, build, run and benchmark token-pruning ViT segmenters.

    Each subcommand is also installed as dtp-<name> (dtp export = dtp-export).

    \b
    Typical flow:
      dtp export model.pth                 # ONNX with TokenSplit/TokenReconstruct nodes
      dtp build model.onnx -o model.engine # TensorRT engine with the dtp plugins (GPU)
      dtp run model.onnx images/ -o out/   # label PNGs from the lean runtime
      dtp bench model.pth                  # dense vs pruned, side by side
    """
