"""``dtp-export``: a checkpoint (or the built-in model) to an ONNX graph.

The command only parses options and calls :func:`exporters.export.export_onnx`.
Exit codes: 0 written, 2 bad input (options, checkpoint, output location, PyTorch missing),
1 export or check failed.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from dtp_deploy.cli_common import (
    CONTEXT,
    THRESHOLD,
    check_arch,
    console,
    head_heads_option,
    require_torch,
    verbosity_options,
    version_option,
)
from dtp_deploy.cli_common import fail as _fail

from .options import DEFAULT_OPSET, FLAVOURS, POSTPROCESS


def _print_report(report) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"wrote {report.path}"), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    shapes = ", ".join(f"{name} {shape}" for name, shape in report.outputs.items())
    rows = [
        ("flavour", report.flavour),
        ("precision / opset", f"{report.precision} / {report.opset}"),
        ("mode", "dense (no exits)" if report.dense else f"pruned, thresholds {report.thresholds}"),
        ("input", f"images {report.input_shape}"),
        ("outputs", shapes),
        ("dtp nodes", ", ".join(f"{k} x{v}" for k, v in report.dtp_nodes.items()) or "none"),
        ("nodes / size", f"{report.num_nodes} / {report.size_bytes / 2**20:.1f} MiB"),
    ]
    if report.check_note:
        rows.append(("check", report.check_note))
    if report.max_abs_diff is not None:
        agree = "same" if report.keep_counts_match else "DIFFERENT (threshold ties)"
        rows.append(("check vs PyTorch", f"max |diff| {report.max_abs_diff:.2e}, keep counts "
                                         f"{report.keep_counts} ({agree})"))
    rows.append(("time", f"{report.seconds:.1f} s"))
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    console().print(table)


@click.command(context_settings=CONTEXT)
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="ONNX file to write; default: MODEL with .onnx next to it (built-in: "
                   "<arch>.onnx here).")
@click.option("--flavour", type=click.Choice(FLAVOURS), default="portable", show_default=True,
              help="portable: standard ONNX ops only (runs on any ONNX Runtime, dtp-run); "
                   "plugin: dtp::TokenSplit/TokenReconstruct nodes for the TensorRT plugins "
                   "(dtp-build).")
@click.option("--height", type=click.IntRange(min=1),
              help="Input height (multiple of 16); default: the trained size.")
@click.option("--width", type=click.IntRange(min=1),
              help="Input width (multiple of 16); default: the trained size.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch size of the graph.")
@click.option("--dynamic-batch", is_flag=True, help="Symbolic batch dimension.")
@click.option("--dynamic-shape", is_flag=True, help="Symbolic height and width.")
@click.option("--dense", is_flag=True, help="Export the dense baseline (no token exits).")
@click.option("--threshold", "thresholds", multiple=True, type=THRESHOLD,
              help="Exit threshold of an auxiliary stage; repeat once per stage. 1 switches "
                   "that exit off (DToP then exports no head and no split for it).")
@click.option("--fp16", is_flag=True, help="FP16 graph (half weights, input and scores).")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@click.option("--postprocess", type=click.Choice(POSTPROCESS), default="none", show_default=True,
              help="argmax: add labels (B, H, W) int32 at input resolution.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the ONNX checker and compare ONNX Runtime with PyTorch.")
@click.option("--arch", callback=check_arch,
              help="Preset name, for official checkpoints whose shapes are ambiguous.")
@head_heads_option
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON.")
@verbosity_options
@version_option
def main(model, output, flavour, height, width, batch, dynamic_batch, dynamic_shape, dense,
         thresholds, fp16, opset, postprocess, check, arch, head_heads, as_json, quiet, verbose):
    """Export MODEL (a checkpoint or a built-in name: dtop-vit-t, dovit-vit-t) to ONNX;
    without MODEL, the built-in dtop-vit-t.

    The checkpoint's own config gives the architecture, classes, normalisation and
    thresholds; the graph takes normalised NCHW RGB ``images`` and returns ``scores``
    (B, K, H/16, W/16) and ``keep_counts`` (B, S).

    \b
    Examples:
      dtp-export
      dtp-export dovit-vit-t --flavour portable
      dtp-export model.pth --flavour portable --height 512 --width 1024
      dtp-export dtop_vit_b_ade20k.pth --arch dtop-vit-b --fp16 --dynamic-batch -o vitb.onnx
      dtp-export model.pth --flavour plugin -o model-trt.onnx   # for dtp-build (TensorRT)

    The default portable graph runs wherever ONNX Runtime does (dtp-run, the lean
    dtp-deploy[ort] install); the plugin graph is for TensorRT.

    \b
    Exit codes: 0 written; 1 the export or its check failed (non-finite scores, ONNX Runtime
    and PyTorch differ); 2 bad usage or input (options, checkpoint, an output that is the
    input or cannot be written, PyTorch missing).
    """
    require_torch("dtp-export", export=True)
    from dtp_deploy.builtin import (
        DEFAULT_BUILTIN,
        builtin_checkpoint_path,
        is_builtin_name,
        open_model,
    )
    from dtp_deploy.checkpoint import CheckpointError
    from dtp_deploy.safe_io import OutputError, check_output

    from .export import ExportCheckError, ExportError, export_onnx

    if output is None:
        name = model if model is not None and not is_builtin_name(model) else None
        output = Path(name).with_suffix(".onnx") if name else Path(f"{model or DEFAULT_BUILTIN}.onnx")
    try:  # before the (slow) load and export: never over the checkpoint, never into nowhere
        source = builtin_checkpoint_path(model) if model is not None and is_builtin_name(model) else model
        check_output(output, [source], what="-o/--output")
    except (OutputError, ValueError) as err:
        _fail(str(err), 2)
    try:
        # Thresholds go through the model config's validation here too.
        loaded = open_model(model, arch=arch, thresholds=list(thresholds) or None, head_heads=head_heads)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        _fail(str(err), 2)
    status_console = console(stderr=True)
    try:
        with status_console.status("exporting") as status:
            if quiet:
                status.stop()
            report = export_onnx(
                loaded, output, flavour=flavour, height=height, width=width, batch=batch,
                dynamic_batch=dynamic_batch, dynamic_shape=dynamic_shape, dense=dense,
                thresholds=list(thresholds) or None, fp16=fp16, opset=opset,
                postprocess=postprocess, check=check, progress=status.update)
    except ExportCheckError as err:
        _fail(str(err), 1)
    except ExportError as err:
        _fail(str(err), 2)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif not quiet:
        _print_report(report)
