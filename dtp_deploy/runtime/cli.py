"""``dtp-run``: segment images with an exported model (no torch).

Exit codes: 0 every image segmented; 1 some images failed (or the first failure with
``--strict``); 2 bad usage or input (options, no images, a missing or wrong model file, an
output folder that cannot be written); 3 the model cannot run here (ONNX Runtime or
TensorRT missing, no GPU).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from dtp_deploy.cli_common import (
    CONTEXT,
    SIZE,
    TEST_SCALE,
    console,
    fail,
    verbosity_options,
    version_option,
)

EXIT_OK, EXIT_IMAGE_FAILED, EXIT_USAGE, EXIT_MODEL = 0, 1, 2, 3
log = logging.getLogger("dtp_deploy.run")


@click.command(context_settings=CONTEXT)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <stem>_labels.png (class indices) and <stem>_overlay.png.")
@click.option("--mode", type=click.Choice(["whole", "slide"]), default=None,
              help="whole (default): one network input per image; slide: crop windows, scores averaged.")
@click.option("--crop", type=SIZE, default=None,
              help="Slide window S or HxW, e.g. 512x1024 (default: the model's).")
@click.option("--stride", type=SIZE, default=None, help="Slide stride S or HxW (default: 2/3 of the crop).")
@click.option("--test-scale", type=TEST_SCALE, default=None,
              help="--protocol mmseg: keep-ratio resize bound WxH, e.g. 2048x512, or none "
                   "(default: the model's, else the dataset's).")
@click.option("--protocol", type=click.Choice(["grid", "mmseg"]), default="grid", show_default=True,
              help="grid: fast, windows averaged on the token grid; mmseg: the papers' test pipeline "
                   "(keep-ratio resize, slide windows averaged in pixel space; docs/protocols.md).")
@click.option("--bgr", is_flag=True, help="The files' pixel data is in BGR order.")
@click.option("--backend", type=click.Choice(["auto", "ort", "trt", "openvino"]), default="auto", show_default=True,
              help="auto: by suffix (.onnx: ONNX Runtime; .engine/.plan: TensorRT; .xml: OpenVINO). "
                   "openvino: CPU (plugin-flavour graphs with --plugin-lib).")
@click.option("--precision", type=click.Choice(["f32", "bf16", "f16"]), default=None,
              help="OpenVINO inference precision (default f32, exact; bf16/f16 only where the CPU has them).")
@click.option("--performance-hint", type=click.Choice(["latency", "throughput"]), default=None,
              help="OpenVINO performance hint (default latency).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cpu for .onnx, cuda:0 for engines).")
@click.option("--plugin-lib", default=None, help="The dtp plugin library: TensorRT's, or OpenVINO's extension "
              "(libdtp_openvino_ops.so) to run plugin-flavour graphs.")
@click.option("--server", default=None, help="Segment on a Triton server (http://HOST:PORT or grpc://HOST:PORT, "
              "see dtp-serve); MODEL is then the served model's name, e.g. dtp_segmenter.")
@click.option("--no-overlay", is_flag=True, help="Write label PNGs only.")
@click.option("--strict", is_flag=True, help="Stop at the first image that fails.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (per-image latency, keep ratios).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Overlay opacity of the class colours.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU inference threads (ONNX Runtime, OpenVINO; default: the engine's).")
@verbosity_options
@version_option
def main(model: Path, images: tuple[Path, ...], outdir: Path, mode: str | None, crop: tuple[int, int] | None,
         stride: tuple[int, int] | None, test_scale: tuple[int, int] | str | None, protocol: str, bgr: bool,
         backend: str, precision: str | None, performance_hint: str | None, device: str | None, plugin_lib: str | None,
         server: str | None, no_overlay: bool, strict: bool, as_json: bool, alpha: float, threads: int | None,
         quiet: bool, verbose: int) -> None:
    """Segment IMAGES (files or folders) with MODEL (.onnx from dtp-export, or a TensorRT engine).

    Writes <stem>_labels.png (a palette PNG: pixel values are class indices, viewers show the
    class colours), <stem>_overlay.png and colour_key.csv (class of each colour) to OUTDIR.
    Outputs are written atomically and never over an input; files an earlier run wrote into
    OUTDIR are skipped when it is also an input folder. An image that fails is reported and
    skipped; the others go on.

    \b
    Examples:
      dtp-run dtop-vit-t.onnx street.png -o out/
      dtp-run model.onnx images/ -o out/ --mode slide --crop 512x1024 --json
      dtp-run model.onnx ADEChallengeData2016/images/validation -o out/ --protocol mmseg
      dtp-run model.engine images/ -o out/ --device cuda --no-overlay

    \b
    Exit codes: 0 all segmented; 1 some images failed; 2 bad usage or input (options, no images,
    a missing or wrong model file, an unwritable output folder); 3 the model cannot run here
    (ONNX Runtime or TensorRT missing, no GPU).
    """
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dtp_deploy.safe_io import OutputError, check_output_folder

    from .backends import RuntimeSetupError
    from .files import ImageError, find_images, segment_files, skip_own_outputs
    from .segmenter import Segmenter

    err = console(stderr=True)

    def say(markup: str, text: str) -> None:  # user strings (file names) never as markup
        if not quiet:
            err.print(f"{markup} {escape(text)}")

    try:
        paths = find_images(images)
        check_output_folder(outdir, what="-o/--outdir")
    except (ImageError, OutputError) as error:
        fail(str(error), EXIT_USAGE)
    paths, own = skip_own_outputs(paths, outdir)
    if own:
        say("[dim]note:[/dim]", f"skipped {len(own)} file(s) in {outdir} that dtp-run wrote "
                                f"(e.g. {own[0].name}): the output folder is also an input folder")
    if not paths:
        fail(f"no images left to segment in {', '.join(map(str, images))} (only earlier outputs)",
             EXIT_USAGE)
    try:
        if server:
            if protocol == "mmseg":
                raise ValueError("--protocol mmseg runs in-process only; a server runs the grid protocol")
            from dtp_deploy.client import Client

            seg = Client(server, str(model))
        else:
            seg = Segmenter.open(model, backend=backend, device=device, plugin_lib=plugin_lib, threads=threads,
                                 precision=precision, performance_hint=performance_hint)
    except RuntimeSetupError as error:
        fail(f"cannot run the model: {error}", EXIT_MODEL)
    except (FileNotFoundError, IsADirectoryError, ValueError) as error:
        fail(f"cannot open the model: {error}", EXIT_USAGE)
    log.info("opened %r", seg)
    if protocol == "mmseg" or mode == "slide":
        try:  # refuse a bad crop or stride once, not once per image
            if protocol == "mmseg":
                if mode == "whole":
                    raise ValueError("--mode whole does not apply to --protocol mmseg (it always slides)")
                seg.protocol_spec(crop=crop, stride=stride, test_scale=test_scale)
            else:
                size = crop or seg.default_crop()
                seg.plan(size[0], size[1], mode=mode, crop=crop, stride=stride)
        except ValueError as error:
            fail(str(error), EXIT_USAGE)
    elif crop is not None or stride is not None:
        fail("--crop and --stride apply to --mode slide only", EXIT_USAGE)
    if test_scale is not None and protocol != "mmseg":
        fail("--test-scale applies to --protocol mmseg only", EXIT_USAGE)

    results = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=quiet or not err.is_terminal)
    with progress:
        task = progress.add_task("segmenting", total=len(paths))
        for result in segment_files(seg, paths, outdir, color="bgr" if bgr else "rgb", mode=mode, crop=crop,
                                    stride=stride, test_scale=test_scale, overlays=not no_overlay,
                                    alpha=alpha, protocol=protocol):
            results.append(result)
            progress.advance(task)
            log.debug("%s", result)
            if not result.ok:
                err.print(f"[yellow]skipped[/yellow] {escape(result.error or '')}")
                if strict:
                    break
            elif result.converted_from:
                say("[dim]note:[/dim]", f"{result.path}: converted from {result.converted_from} to RGB")

    failed = sum(not r.ok for r in results)
    done = [r for r in results if r.ok]
    not_run = len(paths) - len(results)
    if as_json:
        latencies = sorted(r.latency_ms for r in done if r.latency_ms is not None)
        summary = {
            "model": str(model), "arch": seg.metadata.arch, "flavour": seg.metadata.flavour,
            "backend": seg.backend.name, "device": seg.backend.device, "mode": mode or ("slide" if protocol == "mmseg" else "whole"),
            "protocol": protocol,
            "classes": list(seg.class_names), "images": [r.to_dict() for r in results],
            "segmented": len(done), "failed": failed, "not_run": not_run,
            "skipped_own_outputs": [str(p) for p in own],
            "median_latency_ms": latencies[len(latencies) // 2] if latencies else None,
        }
        click.echo(json.dumps(summary, indent=2))
    else:
        out = console()
        if not quiet:
            for r in done:
                ratio = " ".join(f"{x:.2f}" for x in r.keep_ratio)
                out.print(f"{r.path}  {r.width}x{r.height}  {r.latency_ms:.1f} ms  keep {ratio}  -> "
                          f"{r.labels_png}", markup=False, highlight=False)
        out.print(f"{len(done)} segmented, {failed} failed" + (f", {not_run} not run" if not_run else ""),
                  markup=False, highlight=False)
        for r in results:
            if not r.ok:
                out.print(f"failed: {r.error}", markup=False, highlight=False)
    sys.exit(EXIT_IMAGE_FAILED if failed else EXIT_OK)

if __name__ == "__main__":
    main()
