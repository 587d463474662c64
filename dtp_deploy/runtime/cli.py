"""``dtp-run``: segment images with an exported model (no torch).

Exit codes: 0 every image segmented; 1 some images failed (or the first failure with
``--strict``); 2 bad usage, or no images; 3 the model cannot be opened.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

EXIT_OK, EXIT_IMAGE_FAILED, EXIT_USAGE, EXIT_MODEL = 0, 1, 2, 3


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <stem>_labels.png (class indices) and <stem>_overlay.png.")
@click.option("--mode", type=click.Choice(["whole", "slide"]), default=None,
              help="whole (default): one network input per image; slide: crop windows, scores averaged.")
@click.option("--crop", type=int, default=None, help="Slide window size (default: the model's).")
@click.option("--stride", type=int, default=None, help="Slide stride (default: 2/3 of the crop).")
@click.option("--protocol", type=click.Choice(["grid", "mmseg"]), default="grid", show_default=True,
              help="grid: fast, windows averaged on the token grid; mmseg: the papers' test pipeline "
                   "(keep-ratio resize, slide windows averaged in pixel space; docs/protocols.md).")
@click.option("--bgr", is_flag=True, help="The files' pixel data is in BGR order.")
@click.option("--backend", type=click.Choice(["auto", "ort", "trt"]), default="auto", show_default=True,
              help="auto: by suffix (.onnx: ONNX Runtime; .engine/.plan: TensorRT).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cpu for .onnx, cuda:0 for engines).")
@click.option("--plugin-lib", default=None, help="TensorRT: the dtp plugin library.")
@click.option("--no-overlay", is_flag=True, help="Write label PNGs only.")
@click.option("--strict", is_flag=True, help="Stop at the first image that fails.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (per-image latency, keep ratios).")
def main(model: Path, images: tuple[Path, ...], outdir: Path, mode: str | None, crop: int | None,
         stride: int | None, protocol: str, bgr: bool, backend: str, device: str | None, plugin_lib: str | None,
         no_overlay: bool, strict: bool, as_json: bool) -> None:
    """Segment IMAGES (files or folders) with MODEL (.onnx or a TensorRT engine)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .backends import RuntimeSetupError
    from .files import ImageError, find_images, segment_files
    from .segmenter import Segmenter

    err = Console(stderr=True, soft_wrap=True)
    try:
        paths = find_images(images)
    except ImageError as error:
        err.print(f"[red]error:[/red] {error}")
        sys.exit(EXIT_USAGE)
    try:
        seg = Segmenter.open(model, backend=backend, device=device, plugin_lib=plugin_lib)
    except (RuntimeSetupError, FileNotFoundError, ValueError) as error:
        err.print(f"[red]error:[/red] cannot open the model: {error}")
        sys.exit(EXIT_MODEL)
    if protocol == "mmseg" or mode == "slide":
        try:  # refuse a bad crop or stride once, not once per image
            if protocol == "mmseg":
                if mode == "whole":
                    raise ValueError("--mode whole does not apply to --protocol mmseg (it always slides)")
                seg.protocol_spec(crop=crop, stride=stride)
            else:
                size = crop or seg.default_crop()[0]
                seg.plan(size, size, mode=mode, crop=crop, stride=stride)
        except ValueError as error:
            err.print(f"[red]error:[/red] {error}")
            sys.exit(EXIT_USAGE)
    elif crop is not None or stride is not None:
        err.print("[red]error:[/red] --crop and --stride apply to --mode slide only")
        sys.exit(EXIT_USAGE)

    results = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=not err.is_terminal)
    with progress:
        task = progress.add_task("segmenting", total=len(paths))
        for result in segment_files(seg, paths, outdir, color="bgr" if bgr else "rgb", mode=mode, crop=crop,
                                    stride=stride, overlays=not no_overlay, protocol=protocol):
            results.append(result)
            progress.advance(task)
            if not result.ok:
                err.print(f"[yellow]skipped[/yellow] {result.error}")
                if strict:
                    break
            elif result.converted_from:
                err.print(f"[dim]{result.path}: converted from {result.converted_from} to RGB[/dim]")

    failed = sum(not r.ok for r in results)
    done = [r for r in results if r.ok]
    if as_json:
        latencies = sorted(r.latency_ms for r in done if r.latency_ms is not None)
        summary = {
            "model": str(model), "arch": seg.metadata.arch, "flavour": seg.metadata.flavour,
            "backend": seg.backend.name, "device": seg.backend.device, "mode": mode or ("slide" if protocol == "mmseg" else "whole"),
            "protocol": protocol,
            "classes": list(seg.class_names), "images": [r.to_dict() for r in results],
            "segmented": len(done), "failed": failed, "not_run": len(paths) - len(results),
            "median_latency_ms": latencies[len(latencies) // 2] if latencies else None,
        }
        click.echo(json.dumps(summary, indent=2))
    else:
        out = Console(soft_wrap=True)
        for r in done:
            ratio = " ".join(f"{x:.2f}" for x in r.keep_ratio)
            out.print(f"{r.path}  {r.width}x{r.height}  {r.latency_ms:.1f} ms  keep {ratio}  -> {r.labels_png}")
        out.print(f"{len(done)} segmented, {failed} failed" + (f", {len(paths) - len(results)} not run"
                                                                if len(results) < len(paths) else ""))
    sys.exit(EXIT_IMAGE_FAILED if failed else EXIT_OK)


if __name__ == "__main__":
    main()
