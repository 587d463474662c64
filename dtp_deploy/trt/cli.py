"""``dtp-build``: ONNX -> TensorRT engine. Parses options and calls :func:`build_engine`.

Exit codes: 0 built, 1 build or parse failure, 2 bad usage, 3 TensorRT or GPU unavailable,
4 plugin library missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dtp_deploy.cli_common import CONTEXT, verbosity_options, version_option
from dtp_deploy.trt.build import OnnxParseError, TrtUnavailable, build_engine, parse_shape
from dtp_deploy.trt.plugins import PluginLibraryNotFound

EXIT_FAILED, EXIT_USAGE, EXIT_NO_TRT, EXIT_NO_PLUGINS = 1, 2, 3, 4


def _shape(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        return parse_shape(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None


@click.command(name="dtp-build", context_settings=CONTEXT)
@click.argument("onnx_path", metavar="MODEL.onnx",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "engine_path", required=True, metavar="MODEL.engine",
              type=click.Path(dir_okay=False, path_type=Path), help="Engine file to write.")
@click.option("--plugins", "plugin_lib", type=click.Path(dir_okay=False, path_type=Path),
              help="libdtp_plugins.so (default: $DTP_PLUGIN_LIB, then build/plugins/).")
@click.option("--min", "min_shape", callback=_shape, metavar="BxCxHxW", help="Smallest input shape.")
@click.option("--opt", "opt_shape", callback=_shape, metavar="BxCxHxW", help="Shape to tune for.")
@click.option("--max", "max_shape", callback=_shape, metavar="BxCxHxW", help="Largest input shape.")
@click.option("--fp16", is_flag=True,
              help="TensorRT 10 only; on TensorRT 11 export an FP16 ONNX instead.")
@click.option("--workspace", "workspace_mb", type=click.IntRange(min=1), default=4096,
              show_default=True, metavar="MB", help="Workspace memory-pool limit.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Timing cache to reuse and update.")
@click.option("--json", "as_json", is_flag=True, help="Print the build record as JSON.")
@verbosity_options
@version_option
def main(onnx_path, engine_path, plugin_lib, min_shape, opt_shape, max_shape, fp16, workspace_mb,
         timing_cache, as_json, quiet, verbose):
    """Build a TensorRT engine from MODEL.onnx (from dtp-export) and write MODEL.engine plus a
    MODEL.engine.json sidecar. Input shapes default to the model's exported size, batch 1.
    -v turns on TensorRT's verbose log.

    \b
    Examples:
      dtp-export --flavour plugin -o dtop-vit-t-trt.onnx
      dtp-build dtop-vit-t-trt.onnx -o dtop-vit-t.engine
      dtp-build model.onnx -o model.engine --min 1x3x512x512 --opt 4x3x512x512 --max 8x3x512x512

    \b
    Exit codes: 0 built; 1 build or parse failure; 2 bad usage (options, an output that is
    the input or cannot be written); 3 TensorRT or GPU unavailable; 4 plugin library missing.
    """
    from dtp_deploy.safe_io import OutputError, check_output

    try:
        check_output(engine_path, [onnx_path], what="-o/--output")
        check_output(engine_path.with_name(engine_path.name + ".json"), [onnx_path],
                     what="the engine's metadata sidecar")
    except OutputError as err:
        raise click.UsageError(str(err)) from None
    given = [s is not None for s in (min_shape, opt_shape, max_shape)]
    if any(given) and not all(given):
        raise click.UsageError("pass all of --min, --opt and --max, or none of them")
    try:
        record = build_engine(onnx_path, engine_path, plugin_lib=plugin_lib, min_shape=min_shape,
                              opt_shape=opt_shape, max_shape=max_shape, fp16=fp16,
                              workspace_mb=workspace_mb, timing_cache=timing_cache, verbose=verbose > 0)
    except TrtUnavailable as err:
        click.echo(f"dtp-build: {err}", err=True)
        sys.exit(EXIT_NO_TRT)
    except PluginLibraryNotFound as err:
        click.echo(f"dtp-build: {err}", err=True)
        sys.exit(EXIT_NO_PLUGINS)
    except (OnnxParseError, ValueError, FileNotFoundError, RuntimeError) as err:
        click.echo(f"dtp-build: {err}", err=True)
        sys.exit(EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        shapes = record["shapes"]
        profile = (f"shapes min {shapes['min']} opt {shapes['opt']} max {shapes['max']}"
                   if shapes else "static shapes")
        click.echo(f"built {engine_path} with TensorRT {record['tensorrt']} on {record['gpu']}; "
                   f"{profile}")


if __name__ == "__main__":
    main()
