"""ONNX export of token-pruning segmenters.

``export_onnx`` (in :mod:`exporters.export`) needs torch; :mod:`exporters.schemas` and
:mod:`exporters.ort_dtp_domain` do not, so runtimes can import them without torch. The
torch-backed names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ExportError", "ExportCheckError", "ExportReport", "export_onnx", "METADATA_KEYS", "FLAVOURS",
           "DEFAULT_OPSET", "SUPPORTED_OPSETS"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.export"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
