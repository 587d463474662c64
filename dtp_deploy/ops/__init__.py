"""Token ops: reference semantics (``reference``), the ``torch.ops.dtp`` custom ops
(``library``) and a torch-free numpy twin (``numpy_ref``).

The torch-backed names are imported on first use, so that ``dtp_deploy.ops.numpy_ref`` can be
imported by runtimes that do not have torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["keep_mask", "token_split", "token_reconstruct"]

_WHERE = {"keep_mask": "reference", "token_split": "library", "token_reconstruct": "library"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
