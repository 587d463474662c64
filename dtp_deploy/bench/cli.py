"""``dtp-bench`` and ``dtp-calibrate``: parse options, call :mod:`dtp_deploy.bench`, report.

Exit codes: 0 success; 2 bad input (options, files, models, output locations, a missing
package); 3 ``dtp-bench`` ran but a
backend named with ``--backend`` could not run here (the report says why); 1 ``dtp-calibrate``
could not reach ``--target-gmacs`` within ``--max-miou-drop`` (nothing written).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..cli_common import (
    CONTEXT,
    SIZE,
    TEST_SCALE,
    THRESHOLD,
    THRESHOLDS,
    check_arch,
    fail,
    head_heads_option,
    require_torch,
    verbosity_options,
    version_option,
)
from ..cli_common import console as wide_console

_CTX = CONTEXT


class _RecordingCommand(click.Command):
    """Keeps the raw arguments, so the report can say exactly which command produced it."""

    def parse_args(self, ctx, args):
        ctx.meta["dtp_bench.argv"] = list(args)
        return super().parse_args(ctx, args)


def _command_line() -> str:
    import shlex

    ctx = click.get_current_context()
    return " ".join([ctx.info_name or "dtp-bench", *map(shlex.quote, ctx.meta.get("dtp_bench.argv", []))])


def parse_size(text: str) -> tuple[int, int]:
    """``"512"`` or ``"512x1024"`` (height x width)."""
    return SIZE.convert(text, None, None)


def _check_outputs(files: dict[str, str | None], inputs) -> None:
    """Refuse unwritable outputs (and outputs that are inputs) before any work starts."""
    from ..safe_io import OutputError, check_output

    try:
        for option, path in files.items():
            if path and path != "-":
                check_output(path, inputs, what=option)
    except OutputError as err:
        fail(str(err))


def _write(path: str, text: str) -> None:
    from ..safe_io import write_text

    write_text(path, text)


def mmseg_options(command):
    """``--crop``, ``--stride`` and ``--test-scale``: the mmseg protocol's settings, each
    overriding what the checkpoint's config and the dataset say (docs/protocols.md)."""
    command = click.option("--test-scale", type=TEST_SCALE, default=None,
                           help="--protocol mmseg: keep-ratio resize bound WxH, e.g. 2048x512, or none.")(command)
    command = click.option("--stride", type=SIZE, default=None,
                           help="--protocol mmseg: slide stride S or HxW.")(command)
    return click.option("--crop", type=SIZE, default=None,
                        help="--protocol mmseg: slide window S or HxW (default: the checkpoint's, "
                             "else the trained size).")(command)


def _protocol_spec(model, dataset, protocol, crop, stride, test_scale):
    """The mmseg settings from the options (None for the grid protocol); exit 2 where the
    options do not apply or do not fit the model."""
    from .accuracy import protocol_spec

    if protocol != "mmseg":
        if (crop, stride, test_scale) != (None, None, None):
            fail("--crop, --stride and --test-scale apply to --protocol mmseg only")
        return None
    try:
        return protocol_spec(model, dataset, crop=crop, stride=stride, test_scale=test_scale)
    except ValueError as err:
        fail(str(err))


def _evaluator(model, dataset, size, protocol, crop, stride, test_scale, **kwargs):
    from . import Evaluator

    spec = _protocol_spec(model, dataset, protocol, crop, stride, test_scale)
    return Evaluator(model, dataset, size, protocol=protocol, spec=spec, **kwargs)


def parse_floats(text: str | None, what: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{what} {text!r}: use comma-separated numbers, e.g. 0.7,0.5") from None


def _eval_data(model, data, data_limit, scenes, size, seed=None):
    """``data`` if given, else ``scenes`` synthetic scenes from ``seed`` (default: the
    evaluation scenes)."""
    from ..data import EVALUATION_SEED, SyntheticScenes, open_dataset

    if data:
        return open_dataset(data, num_classes=model.config.num_classes, limit=data_limit)
    return SyntheticScenes(scenes, *size, seed=EVALUATION_SEED if seed is None else seed)


@click.command(cls=_RecordingCommand, context_settings=_CTX)
@click.argument("models", nargs=-1)
@click.option("--arch", callback=check_arch,
              help="Preset name, for official checkpoints whose shapes are ambiguous.")
@head_heads_option
@click.option("--backend", "backends", multiple=True,
              type=click.Choice(["torch", "ort", "openvino", "trt", "all"]),
              help="Backend to time; repeat for several. Default: every one that can run here.")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "bf16", "int8"]),
              help="CPU precision; repeat. Rows are backend x precision, all interleaved. bf16: "
                   "openvino where the CPU has it; int8: ort and openvino, post-training quantized "
                   "on dtp-calibrate's images (or --data). [default: fp32]")
@click.option("--calibration-images", default=32, show_default=True, type=click.IntRange(min=1),
              help="int8: calibration images.")
@click.option("--agreement-batches", default=4, show_default=True, type=click.IntRange(min=0),
              help="Pool batches on which ort/openvino rows are compared with fp32 PyTorch (0: skip).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch", "batches", multiple=True, type=click.IntRange(min=1), help="Batch size; repeat. [default: 1]")
@click.option("--size", "sizes", multiple=True, help="Input size S or HxW; repeat. Default: the trained size.")
@click.option("--iterations", default=20, show_default=True, type=click.IntRange(min=1),
              help="Timed iterations per variant, after warm-up; each timed call follows an "
              "untimed one of the same variant, so that every variant is timed warm.")
@click.option("--duration", type=click.FloatRange(min=0), help="Seconds of timed iterations per configuration instead.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0),
              help="Untimed rounds before timing; at least one per pool batch, so that backends "
                   "compiling kernels per token count (OpenVINO) have seen every input once.")
@click.option("--fp16", is_flag=True, help="Half precision (needs --device cuda).")
@click.option("--threshold", "thresholds", multiple=True, type=THRESHOLD,
              help="Exit threshold of an auxiliary stage, in (0, 1]; repeat once per stage. "
                   "1 switches that exit off (DToP then skips its head).")
@click.option("--keep-schedule", help="Force keep ratios per auxiliary stage, e.g. 0.7,0.5 "
              "(thresholds from confidence quantiles: per batch on torch, once per pool for ort).")
@click.option("--pool", default=16, show_default=True, type=click.IntRange(min=1),
              help="Images in the input pool that timed iterations cycle through.")
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="ADE20K, Cityscapes or images/+masks/ folder for accuracy and timing inputs.")
@click.option("--data-limit", default=64, show_default=True, type=click.IntRange(min=1),
              help="Images of --data to evaluate on.")
@click.option("--scenes", default=32, show_default=True, type=click.IntRange(min=0),
              help="Synthetic scenes for accuracy without --data (0: skip accuracy).")
@click.option("--protocol", type=click.Choice(["grid", "mmseg"]), default="grid", show_default=True,
              help="Accuracy protocol. grid: images resized to --size, one input each (fast); mmseg: "
                   "the papers' test pipeline (keep-ratio resize, slide windows; docs/protocols.md).")
@mmseg_options
@click.option("--sweep", "do_sweep", is_flag=True, help="Also sweep thresholds: mIoU vs GMACs.")
@click.option("--per-stage", is_flag=True, help="With --sweep: also vary one stage at a time.")
@click.option("--sweep-grid", type=THRESHOLDS,
              help="Thresholds to sweep, comma-separated, each in (0, 1] (default: 1 ... 0.4).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads (torch intra-op, ONNX Runtime, OpenVINO).")
@click.option("--seed", default=0, show_default=True, help="Seed of the input pool and random weights.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False), help="Write the report as JSON to this file.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="Write Markdown tables ('-' prints them).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG figure.")
@verbosity_options
@version_option
def main(models, arch, head_heads, backends, precisions, calibration_images, agreement_batches, device, batches, sizes, iterations, duration, warmup, fp16,
         thresholds, keep_schedule, pool, data, data_limit, scenes, protocol, crop, stride, test_scale,
         do_sweep, per_stage, sweep_grid, threads, seed, as_json, json_path, markdown_path, plot_path,
         quiet, verbose):
    """Time dense vs pruned (same weights, interleaved) on every backend; measure accuracy.

    MODEL is a checkpoint, a built-in name (dtop-vit-t) or random:<preset> (random weights,
    e.g. random:dtop-vit-b; speed only). Without MODEL: the built-in model.

    \b
    Examples:
      dtp-bench
      dtp-bench --backend torch --batch 1 --batch 8 --size 384 --json-out bench.json --plot bench.png
      dtp-bench ckpt.pth --data ADEChallengeData2016 --sweep --per-stage --plot sweep.png
      dtp-bench ckpt.pth --data ADEChallengeData2016 --protocol mmseg --backend torch
      dtp-bench random:dtop-vit-b --device cuda --fp16 --size 512 --keep-schedule 0.7,0.5 --scenes 0
      dtp-bench dtop-vit-t --backend ort --backend openvino --precision fp32 --precision int8

    \b
    Exit codes: 0 ok; 2 bad usage or input (options, files, models, an output location that
    cannot be written, PyTorch missing); 3 a backend named with --backend could not run here.
    """
    require_torch("dtp-bench")
    _check_outputs({"--json-out": json_path, "--markdown": markdown_path, "--plot": plot_path},
                   [m for m in models if Path(m).is_file()])
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--plot needs matplotlib: pip install 'dtp-deploy[plot]'")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..checkpoint import CheckpointError
    from . import (
        BenchOptions,
        evaluate_accuracy,
        load_models,
        plot_report,
        print_report,
        run_benchmark,
        sweep,
        to_markdown,
    )
    from .backends import TorchBackend

    try:
        size_list = [parse_size(s) for s in sizes] or [None]
        schedule = parse_floats(keep_schedule, "--keep-schedule")
        grid = sweep_grid
    except click.BadParameter as err:
        fail(err.message)
    names = None if not backends or "all" in backends else list(dict.fromkeys(backends))
    try:
        loaded = load_models(list(models), arch=arch, thresholds=list(thresholds) or None, seed=seed,
                             head_heads=head_heads)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    for _, model in loaded:  # bad protocol options fail now, not after the timing
        _protocol_spec(model, None, protocol, crop, stride, test_scale)
    options = BenchOptions(backends=names, device=device, batches=tuple(batches) or (1,),
                           sizes=tuple(size_list), iterations=iterations, duration=duration,
                           warmup=warmup, fp16=fp16, pool=pool, keep_schedule=schedule, seed=seed,
                           threads=threads, precisions=tuple(precisions) or ("fp32",),
                           calibration=calibration_images, agreement_batches=agreement_batches)
    console = Console(stderr=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True, disable=quiet)
    task = progress.add_task("starting", total=None)

    def tick(description: str, done: int, total: int) -> None:
        progress.update(task, description=description, completed=done, total=total)

    try:
        with progress:
            if data:
                from ..data import open_dataset

                options.data_pool = open_dataset(data, num_classes=loaded[0][1].config.num_classes,
                                                 limit=max(pool, data_limit))
            report = run_benchmark(loaded, options, progress=tick)
            report["command"] = _command_line()
            report["accuracy"], report["sweep"] = [], []
            if scenes or data:
                for label, model in loaded:
                    size = size_list[0] or tuple(model.config.img_size)
                    dataset = _eval_data(model, data, data_limit, scenes, size)
                    scored = TorchBackend().module(model, device, False)
                    ev = _evaluator(scored, dataset, size, protocol, crop, stride, test_scale,
                                    progress=lambda d, t, label=label: tick(f"{label}: loading data", d, t))
                    tick(f"{label}: accuracy dense vs pruned", 0, 1)
                    report["accuracy"].append({"model": label, **evaluate_accuracy(scored, dataset, size, evaluator=ev)})
                    if do_sweep:
                        result = sweep(scored, dataset, size, **({"grid": grid} if grid else {}),
                                       per_stage=per_stage, evaluator=ev,
                                       progress=lambda d, t, label=label: tick(f"{label}: sweep", d, t))
                        report["sweep"].append({"model": label, **result})
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))

    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not quiet:
        print_report(report, wide_console())
    if json_path:
        _write(json_path, json.dumps(report, indent=2) + "\n")
    if markdown_path:
        text = to_markdown(report)
        if markdown_path == "-":
            click.echo(text)
        else:
            _write(markdown_path, text)
    if plot_path:
        from ..safe_io import atomic_write

        atomic_write(plot_path, lambda tmp: plot_report(report, str(tmp)), keep_suffix=True)
    if names and any(r["status"] != "ok" for r in report["results"]):
        sys.exit(3)


@click.command(context_settings=_CTX)
@click.argument("model", required=False)
@click.option("--arch", callback=check_arch,
              help="Preset name, for official checkpoints whose shapes are ambiguous.")
@click.option("--target-gmacs", type=click.FloatRange(min=0), help="GMACs per image to reach (at most).")
@click.option("--max-miou-drop", type=click.FloatRange(min=0),
              help="Largest allowed mIoU drop from dense, as a fraction (0.005 = half a point).")
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="Calibration set: ADE20K, Cityscapes or images/+masks/ folder.")
@click.option("--data-limit", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--scenes", default=32, show_default=True, type=click.IntRange(min=1),
              help="Synthetic scenes to calibrate on without --data (drawn apart from the "
              "scenes dtp-bench and dtp-info evaluate on).")
@click.option("--size", help="Input size S or HxW (default: the trained size).")
@head_heads_option
@click.option("--protocol", type=click.Choice(["grid", "mmseg"]), default="grid", show_default=True,
              help="Accuracy protocol (see dtp-bench --help and docs/protocols.md).")
@mmseg_options
@click.option("--grid", type=THRESHOLDS,
              help="Candidate thresholds, comma-separated, each in (0, 1] (default: 1 ... 0.5).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint to write (a copy of MODEL with the chosen thresholds).")
@click.option("--json", "as_json", is_flag=True, help="Print the search as JSON instead of a summary line.")
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False), help="Write the search as JSON to this file.")
@verbosity_options
@version_option
def calibrate(model, arch, target_gmacs, max_miou_drop, data, data_limit, scenes, size, head_heads, protocol,
              crop, stride, test_scale, grid, output, as_json, json_path, quiet, verbose):
    """Choose per-stage exit thresholds on a calibration set and save them into a copy of MODEL.

    Greedy: from "nothing exits" (1.0 everywhere), repeatedly lower the one stage's threshold
    that costs the least mIoU per GMAC saved, until --target-gmacs is met; moves that would drop
    mIoU by more than --max-miou-drop are never taken. Without --target-gmacs it prunes as far
    as the budget allows. Last, an exit whose head costs more than it saves is switched off
    (threshold 1: DToP then runs no head) if that stays within the budget.

    \b
    Examples:
      dtp-calibrate --target-gmacs 0.35 -o builtin-0.35.pth
      dtp-calibrate ckpt.pth --data ADEChallengeData2016 --max-miou-drop 0.005 -o ckpt-cal.pth

    \b
    Exit codes: 0 written; 1 --target-gmacs not reached within --max-miou-drop (nothing
    written); 2 bad usage or input (options, files, an output that is MODEL or cannot be
    written, PyTorch missing).
    """
    require_torch("dtp-calibrate")
    _check_outputs({"-o/--output": output, "--json-out": json_path},
                   [model] if model and Path(model).is_file() else [])
    from rich.console import Console

    from ..checkpoint import CheckpointError, save_model
    from ..data import CALIBRATION_SEED
    from . import calibrate as run_calibration
    from . import load_models

    if target_gmacs is None and max_miou_drop is None:
        fail("give --target-gmacs, --max-miou-drop or both")
    try:
        candidates = grid
        hw = parse_size(size) if size else None
    except click.BadParameter as err:
        fail(err.message)
    console = Console(stderr=True)
    try:
        [(label, net)] = load_models([model] if model else [], arch=arch, head_heads=head_heads)
        hw = hw or tuple(net.config.img_size)
        dataset = _eval_data(net, data, data_limit, scenes, hw, seed=CALIBRATION_SEED)
        evaluator = _evaluator(net, dataset, hw, protocol, crop, stride, test_scale)
        with console.status("calibrating") as status:
            result = run_calibration(net, dataset, hw, target_gmacs=target_gmacs,
                                     max_miou_drop=max_miou_drop, evaluator=evaluator,
                                     **({"grid": candidates} if candidates else {}),
                                     progress=lambda line: (status.update(line), quiet or console.print(line, markup=False)))
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        fail(str(err))
    result["model"] = label
    if json_path:
        _write(json_path, json.dumps(result, indent=2) + "\n")
    summary = (f"thresholds {', '.join(f'{t:g}' for t in result['thresholds'])}: "
               f"{result['gmacs_per_image']:.3f} GMACs/image ({result['gmacs_ratio']:.1%} of dense "
               f"{result['dense']['gmacs_per_image']:.3f}), mIoU {result['miou']:.2%} "
               f"(dense {result['dense']['miou']:.2%}) on {result['data']}")
    if not result["reached"]:
        fail(f"--target-gmacs {target_gmacs} not reached; best: {summary}", code=1)
    net.set_thresholds(result["thresholds"])
    save_model(net, output)
    click.echo(json.dumps(result, indent=2) if as_json else f"{output}: {summary}")
