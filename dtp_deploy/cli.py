"""``dtp-info``: what a model is made of and what pruning saves on it."""

from __future__ import annotations

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
