"""What every ``dtp-*`` command shares: errors, exit codes, option types, ``--version``,
``--quiet``/``--verbose``. Imports neither torch nor onnx, so ``--help`` works on the lean
``dtp-deploy[ort]`` install.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from . import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CODES = ("Exit codes: 0 ok; 1 {failed}; 2 bad usage or input (options, files, a missing "
              "package){more}.")


def exit_codes(failed: str, more: str = "") -> str:
    """The ``Exit codes:`` line of a command's help (one line, click's ``\\b`` keeps it whole)."""
    return EXIT_CODES.format(failed=failed, more=f"; {more}" if more else "")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` for a person (no markup: names print as they are) and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def require_torch(command: str, *, export: bool = False) -> None:
    """Exit 2 with the install hint when PyTorch (and, to ``export``, onnx and onnxscript)
    are missing: all of them come with ``dtp-deploy[torch]``."""
    needed = ("torch", "onnx", "onnxscript") if export else ("torch",)
    missing = [name for name in needed if not _importable(name)]
    if missing:
        fail(f"{command} needs {' and '.join(missing)}, which this install lacks: "
             "pip install 'dtp-deploy[torch]'")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


# -- option types ---------------------------------------------------------------------------------
class Threshold(click.ParamType):
    """An exit threshold: a number in (0, 1] (1: no token exits). NaN is refused."""

    name = "THRESHOLD"

    def convert(self, value: Any, param, ctx) -> float:
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number; use a threshold in (0, 1], e.g. 0.9", param, ctx)
        if math.isnan(number) or not 0.0 < number <= 1.0:
            self.fail(f"{value} is outside (0, 1]; a threshold is a confidence, e.g. 0.9 "
                      "(1: no token exits)", param, ctx)
        return number


class ThresholdList(click.ParamType):
    """Comma-separated thresholds, each in (0, 1]: ``0.9,0.8,0.7``."""

    name = "T1,T2,..."

    def get_metavar(self, param, ctx=None) -> str:
        return self.name

    def convert(self, value: Any, param, ctx) -> list[float]:
        if isinstance(value, list):
            return value
        items = [v.strip() for v in str(value).split(",")]
        return [THRESHOLD.convert(v, param, ctx) for v in items]


def _dimensions(value: Any) -> list[int]:
    """``"512x1024"`` -> ``[512, 1024]``; ``[]`` where a part is not an integer."""
    try:
        return [int(v) for v in str(value).lower().split("x")]
    except ValueError:
        return []


class Size(click.ParamType):
    """``S`` or ``HxW`` (height x width), positive integers: ``512`` or ``512x1024``."""

    name = "S|HxW"

    def get_metavar(self, param, ctx=None) -> str:  # click upper-cases the name
        return self.name

    def convert(self, value: Any, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        parts = _dimensions(value)
        if len(parts) == 1:
            parts *= 2
        if len(parts) != 2 or min(parts) <= 0:
            self.fail(f"{value!r}: use S or HxW (height x width), e.g. 512 or 512x1024", param, ctx)
        return parts[0], parts[1]


class TestScale(click.ParamType):
    """The mmseg protocol's keep-ratio resize bound, ``WxH`` (width x height, as mmseg writes
    ``scale``), or ``none`` for no resize: ``2048x512``."""

    name = "WxH|none"

    def get_metavar(self, param, ctx=None) -> str:
        return self.name

    def convert(self, value: Any, param, ctx) -> tuple[int, int] | str:
        if isinstance(value, tuple):
            return value
        if str(value).strip().lower() == "none":
            return "none"
        parts = _dimensions(value)
        if len(parts) != 2 or min(parts) <= 0:
            self.fail(f"{value!r}: use WxH (width x height), e.g. 2048x512, or none", param, ctx)
        return parts[0], parts[1]


THRESHOLD, THRESHOLDS, SIZE, TEST_SCALE = Threshold(), ThresholdList(), Size(), TestScale()


def check_arch(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--arch``: one of the presets (checked when the command runs; the list needs torch)."""
    if value is None:
        return value
    try:
        from .models import PRESETS
    except ImportError:
        return value  # the command itself reports the missing package
    if value not in PRESETS:
        raise click.BadParameter(f"{value!r} is not a preset; use one of {', '.join(sorted(PRESETS))}",
                                 ctx=ctx, param=param)
    return value


# -- shared options -------------------------------------------------------------------------------
#: ``--head-heads``: the decode heads' attention heads, which the weights cannot reveal.
head_heads_option = click.option(
    "--head-heads", type=click.IntRange(min=1),
    help="Attention heads of the decode heads, which weights cannot reveal "
         "(default: the checkpoint's config, else the preset).")


def version_option(f: Callable) -> Callable:
    return click.version_option(__version__, "--version", package_name="dtp-deploy",
                                message="%(prog)s (dtp-deploy) %(version)s")(f)


def _log_level(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value:
        if param.name == "quiet":
            level = logging.ERROR
        else:
            level = logging.INFO if value == 1 else logging.DEBUG
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    return value


def verbosity_options(f: Callable) -> Callable:
    """``-q/--quiet`` (errors only: no progress, no notes) and ``-v/--verbose`` (log what
    happens; ``-vv`` debug). The command receives ``quiet`` (bool) and ``verbose`` (count)."""
    f = click.option("-v", "--verbose", count=True, callback=_log_level,
                     help="Log what happens (-vv: debug).")(f)
    f = click.option("-q", "--quiet", is_flag=True, callback=_log_level,
                     help="Errors only: no progress bar, notes or table.")(f)
    return f


def console(stderr: bool = False, **kwargs: Any):
    """A rich console that does not cut tables at 80 columns when the output is piped.
    ``markup=False`` for output made of user strings (file names, class names)."""
    from rich.console import Console

    out = Console(stderr=stderr, soft_wrap=True, **kwargs)
    if not out.is_terminal:
        out = Console(stderr=stderr, soft_wrap=True, width=max(out.width, 200), **kwargs)
    return out
