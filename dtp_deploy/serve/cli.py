"""``dtp-triton-repo`` and ``dtp-serve``: a Triton model repository, and a Triton server on it.

Both only parse options and call :func:`dtp_deploy.serve.write_repository` and
:meth:`dtp_deploy.serve.TritonServer.start`.
Exit codes: 0 done (dtp-serve: stopped by Ctrl-C/SIGTERM); 1 the server stopped by itself;
2 bad usage or input; 3 the server or a model failed to start.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click

from dtp_deploy.cli_common import CONTEXT, SIZE, verbosity_options, version_option
from dtp_deploy.cli_common import fail as _fail

EXIT_OK, EXIT_DIED, EXIT_USAGE, EXIT_START = 0, 1, 2, 3


def serving_options(f):
    """Options shared by both commands: how Triton schedules the model."""
    options = [
        click.option("--name", default="dtp_segmenter", show_default=True, help="The model's name in Triton."),
        click.option("--backend", default="auto", show_default=True,
                     help="Runtime backend inside the server (Segmenter.open's: auto, ort, trt, openvino, ...)."),
        click.option("--mode", type=click.Choice(["whole", "slide"]), default=None,
                     help="Default mode of requests [default: slide at the model's protocol crop if its "
                          "metadata names one, else whole]."),
        click.option("--crop", type=SIZE, default=None, help="Default slide crop S or HxW."),
        click.option("--stride", type=SIZE, default=None, help="Default slide stride S or HxW."),
        click.option("--max-batch-size", default=8, show_default=True, help="Images per model execution."),
        click.option("--dynamic-batching/--no-dynamic-batching", default=True, show_default=True,
                     help="Let Triton group waiting requests into one execution."),
        click.option("--max-queue-delay-us", default=2000, show_default=True,
                     help="How long a request may wait for others to join its batch (microseconds)."),
        click.option("--instances", default=1, show_default=True, help="Model instances (each a Segmenter)."),
        click.option("--kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
                     help="Instance kind: gpu for TensorRT engines."),
        click.option("--gpus", default=None, help="GPU instances: device ids, e.g. 0,1 (default: all)."),
        click.option("--threads", default=0, show_default=True, help="ONNX Runtime threads per CPU instance (0: its default)."),
        click.option("--max-pixels", default=None, type=int,
                     help="Largest image (height x width) accepted [default: 4096x4096; 0: no limit]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _write(model, out, *, name, layout, backend, metadata, mode, crop, stride, max_batch_size,
           dynamic_batching, max_queue_delay_us, instances, kind, gpus, threads, max_pixels, overwrite):
    from . import (
        DEFAULT_MAX_PIXELS,
        RepositoryError,
        RequestOptions,
        ServingOptions,
        write_repository,
    )
    from .repository import resolve_model

    try:
        serving = ServingOptions(
            max_batch_size=max_batch_size, dynamic_batching=dynamic_batching,
            max_queue_delay_us=max_queue_delay_us, instances=instances, kind=kind,
            gpus=tuple(int(g) for g in gpus.split(",")) if gpus else (), threads=threads,
            max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
        options = None
        if mode or crop or stride:
            if (crop or stride) and mode != "slide":
                raise RepositoryError("--crop and --stride apply to --mode slide only")
            options = RequestOptions(mode=mode or "whole", crop=crop, stride=stride)
        with tempfile.TemporaryDirectory(prefix="dtp-export-") as folder:
            path = resolve_model(model, Path(folder))
            return write_repository(path, out, name=name, layout=layout, backend=backend, metadata=metadata,
                                    options=options, serving=serving, overwrite=overwrite)
    except (RepositoryError, ValueError, FileNotFoundError) as err:
        _fail(str(err))
    except Exception as err:  # a model the runtime cannot open (RuntimeSetupError, ExportError)
        _fail(f"cannot read the model {model}: {err}")


@click.command(context_settings=CONTEXT)
@click.argument("model")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The repository folder (created; other models in it are kept).")
@click.option("--layout", type=click.Choice(["python", "ensemble"]), default="python", show_default=True,
              help="python: one model wrapping Segmenter; ensemble: a TensorRT engine between "
                   "Python pre/post-processing models.")
@click.option("--metadata", default=None, type=click.Path(dir_okay=False),
              help="Engines: the .onnx or .json with the engine's dtp.* metadata.")
@serving_options
@click.option("--overwrite", is_flag=True, help="Replace model folders of the same names.")
@click.option("--json", "as_json", is_flag=True, help="Print the written folders as JSON.")
@verbosity_options
@version_option
def triton_repo(model, out, layout, metadata, overwrite, as_json, quiet, verbose, **kwargs):
    """Write a Triton model repository serving MODEL (.onnx, a TensorRT engine, or a built-in
    name such as dtop-vit-t, exported on the fly).

    A stock Triton server with dtp-deploy installed in its Python serves it unchanged.

    \b
    Examples:
      dtp-triton-repo model.onnx -o repo/
      dtp-triton-repo dovit-vit-t -o repo/ --name dovit --instances 2 --max-queue-delay-us 5000
      dtp-triton-repo model.engine -o repo/ --kind gpu --gpus 0,1        # Segmenter on TensorRT
      dtp-triton-repo model.engine -o repo/ --layout ensemble --metadata model.onnx

    \b
    Exit codes: 0 written; 2 bad usage or input (options, a missing or unreadable model, model
    folders that exist without --overwrite).
    """
    folders = _write(model, out, layout=layout, metadata=metadata, overwrite=overwrite, **kwargs)
    if as_json:
        click.echo(json.dumps({"repository": str(out), "models": [f.name for f in folders]}))
    elif not quiet:
        for folder in folders:
            click.echo(f"wrote {folder}/config.pbtxt")


@click.command(context_settings=CONTEXT)
@click.argument("model")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the repository here and keep it (default: a temporary folder).")
@serving_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--http-port", default=8000, show_default=True, help="HTTP port (0: a free one).")
@click.option("--grpc-port", default=8001, show_default=True, help="gRPC port (0: a free one).")
@click.option("--metrics-port", default=8002, show_default=True, help="Prometheus metrics port (0: a free one).")
@click.option("--log-level", type=click.Choice(["error", "warning", "info", "verbose"]), default="warning",
              show_default=True)
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Triton's log (default: a temporary file, shown on errors).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the models to load.")
@click.option("--exit-timeout", default=10, show_default=True,
              help="On stopping, seconds to wait for requests in flight and open HTTP connections.")
@click.option("--tritonserver", default=None, help="A tritonserver binary (default: nvidia-pytriton's).")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoints as one JSON line.")
@verbosity_options
@version_option
def serve(model, repo, host, http_port, grpc_port, metrics_port, log_level, log_file, timeout,
          exit_timeout, tritonserver, as_json, quiet, verbose, **kwargs):
    """Serve MODEL on Triton Inference Server until Ctrl-C or SIGTERM.

    MODEL is an exported .onnx, a TensorRT engine, a built-in name (dtop-vit-t, dovit-vit-t),
    or a model repository folder (served as it is; the scheduling options then do not apply).

    \b
    Examples:
      dtp-serve dtop-vit-t                                 # http://127.0.0.1:8000
      dtp-serve model.onnx --instances 2 --max-queue-delay-us 5000 --http-port 0 --json
      dtp-serve repo/ --host 0.0.0.0
      dtp-run --server http://127.0.0.1:8000 dtp_segmenter images/ -o out/

    \b
    Exit codes: 0 stopped by Ctrl-C or SIGTERM; 1 the server stopped by itself; 2 bad usage or
    input; 3 the server or a model failed to start (Triton's error is shown).
    """
    from .repository import is_repository
    from .server import ServeError, TritonServer

    with tempfile.TemporaryDirectory(prefix="dtp-repo-") as scratch:
        if is_repository(model):
            repository = Path(model)
        else:
            repository = repo or Path(scratch) / "repo"
            _write(model, repository, layout="python", metadata=None, overwrite=repo is not None, **kwargs)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            server = TritonServer.start(repository, host=host, http_port=http_port, grpc_port=grpc_port,
                                        metrics_port=metrics_port, log_level=log_level, timeout=timeout,
                                        tritonserver=tritonserver, log_path=log_file,
                                        exit_timeout=exit_timeout)
        except ServeError as err:
            _fail(str(err), EXIT_START)
        with server:
            ends = server.endpoints.to_dict()
            if as_json:
                click.echo(json.dumps({**ends, "repository": str(repository), "pid": server.process.pid}))
            else:
                click.echo(f"serving {repository} (Ctrl-C to stop)")
                for key, url in ends.items():
                    click.echo(f"  {key:8s} {url}")
            sys.stdout.flush()
            while not stop.wait(0.5):
                if not server.running():
                    _fail(f"tritonserver stopped by itself (status {server.process.returncode}):\n"
                          f"{server.errors() or server.log_tail()}", EXIT_DIED)
        if not quiet:
            click.echo("stopped", err=True)
