"""``dtp-info``: what a model is made of and what pruning saves on it."""

from __future__ import annotations

import importlib
import json

import click

from .cli_common import (
    CONTEXT,
    THRESHOLD,
    check_arch,
    fail,
    head_heads_option,
    require_torch,
    verbosity_options,
    version_option,
)


@click.command(context_settings=CONTEXT)
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--arch", callback=check_arch,
              help="Preset name, for official checkpoints whose shapes are ambiguous.")
@click.option("--height", type=click.IntRange(min=1),
              help="Input height (multiple of 16); default: the trained size.")
@click.option("--width", type=click.IntRange(min=1),
              help="Input width (multiple of 16); default: the trained size.")
@click.option("--threshold", "thresholds", multiple=True, type=THRESHOLD,
              help="Exit threshold of an auxiliary stage, in (0, 1]; repeat once per stage. "
                   "1 switches that exit off (DToP then skips its head).")
@click.option("--scenes", default=8, show_default=True, type=click.IntRange(min=0),
              help="Synthetic scenes to measure keep ratios on (0: skip the measurement).")
@head_heads_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@verbosity_options
@version_option
def info(model, arch, height, width, thresholds, scenes, head_heads, as_json, quiet, verbose):
    """Show a model's stages, parameter count and analytic GMACs, dense and pruned; for an
    exported model (.onnx, or an engine with its .json sidecar), what it was exported with.

    MODEL is a checkpoint (dtp-deploy format, official DToP/DoViT mmseg, or a bare state
    dict), a built-in name (dtop-vit-t, dovit-vit-t) or an exported model; without it, the
    built-in dtop-vit-t. Keep ratios are measured on synthetic scenes, so they are
    representative only for models trained on them (such as the built-in model). An exported
    model shows its classes, mean/std, patch, input, flavour and thresholds (what the C++
    runtime's Options need); that needs no PyTorch.

    \b
    Examples:
      dtp-info
      dtp-info dtop_vit_b_ade20k.pth --arch dtop-vit-b --height 512 --width 512 --json
      dtp-info dtop-vit-t.onnx

    \b
    Exit codes: 0 ok; 2 bad usage or input (options, a missing or unreadable model, PyTorch
    missing for a checkpoint).
    """
    from .exported_info import exported_model_info, is_exported_model, print_exported_info

    if is_exported_model(model):
        if arch or height or width or thresholds or head_heads:
            fail("--arch, --height, --width, --threshold and --head-heads apply to checkpoints; an exported "
                 "model's are fixed (re-export it to change them)")
        try:
            exported = exported_model_info(model)
        except (ValueError, FileNotFoundError) as err:
            fail(str(err))
        if as_json:
            click.echo(json.dumps(exported, indent=2))
        else:
            print_exported_info(exported)
        return
    require_torch("dtp-info")
    from .checkpoint import CheckpointError
    from .report import model_summary, print_summary

    try:
        summary = model_summary(model, arch=arch, size=(height, width),
                                thresholds=list(thresholds) or None, scenes=scenes,
                                head_heads=head_heads)
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
    "triton-repo": "dtp_deploy.serve.cli:triton_repo",
    "serve": "dtp_deploy.serve.cli:serve",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(SUBCOMMANDS)

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        module, attr = SUBCOMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings=CONTEXT)
@version_option
def main():
    """dtp-deploy: export, build, run and benchmark token-pruning ViT segmenters.

    Each subcommand is also installed as dtp-<name> (dtp export = dtp-export).

    \b
    Typical flow:
      dtp export model.pth                 # portable ONNX (standard ops), for dtp run
      dtp export model.pth --flavour plugin -o trt.onnx  # dtp ops for the TensorRT plugins
      dtp build trt.onnx -o model.engine   # TensorRT engine with the dtp plugins (GPU)
      dtp run model.onnx images/ -o out/   # label PNGs from the lean runtime
      dtp bench model.pth                  # dense vs pruned, side by side

    \b
    Exit codes (every command): 0 ok; 1 the work failed (some inputs, a check, a build);
    2 bad usage or input (options, files, a missing package); 3 and up: see the command's help.
    """
