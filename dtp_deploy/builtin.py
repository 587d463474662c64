"""The built-in model (trained on synthetic scenes, shipped in the package) and model lookup."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from .models import TokenPruningSegmenter

BUILTIN_MODELS = {"dtop-vit-t": "dtop-vit-t-synthetic.pth", "dovit-vit-t": "dovit-vit-t-synthetic.pth"}
DEFAULT_BUILTIN = "dtop-vit-t"


def builtin_checkpoint_path(name: str = DEFAULT_BUILTIN) -> Path:
    """Path of a built-in checkpoint inside the installed package."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"no built-in model {name!r}; built-in: {sorted(BUILTIN_MODELS)}")
    path = Path(str(resources.files("dtp_deploy") / "assets" / BUILTIN_MODELS[name]))
    if not path.is_file():
        raise FileNotFoundError(
            f"built-in checkpoint {path} is missing; reinstall dtp-deploy or rebuild it with "
            "scripts/train_builtin.py")
    return path


def load_builtin_model(name: str = DEFAULT_BUILTIN, **kwargs) -> TokenPruningSegmenter:
    """The built-in model in eval mode; ``kwargs`` go to :func:`~dtp_deploy.checkpoint.load_model`."""
    from .checkpoint import load_model

    return load_model(builtin_checkpoint_path(name), **kwargs)


def is_builtin_name(path: str | os.PathLike) -> bool:
    """``path`` names a built-in model (and no file of that name exists)."""
    return str(path) in BUILTIN_MODELS and not Path(path).exists()


def open_model(path: str | os.PathLike | None = None, *, arch: str | None = None,
               thresholds: Sequence[float] | None = None, pruning: bool = True,
               head_heads: int | None = None) -> TokenPruningSegmenter:
    """A checkpoint file, a built-in model name (``dovit-vit-t``), or the default built-in model
    when ``path`` is None: what every CLI accepts. An existing file wins over a built-in name.
    Keyword arguments are :func:`~dtp_deploy.checkpoint.load_model`'s."""
    from .checkpoint import load_model

    if path is None or is_builtin_name(path):
        # arch is checked against the built-in model's own (a wrong one is an error, not ignored)
        return load_builtin_model(str(path or DEFAULT_BUILTIN), arch=arch, thresholds=thresholds,
                                  pruning=pruning, head_heads=head_heads)
    return load_model(path, arch=arch, thresholds=thresholds, pruning=pruning, head_heads=head_heads)
