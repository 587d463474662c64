"""Find and load ``libdtp_plugins.so`` (the ``dtp::TokenSplit`` / ``dtp::TokenReconstruct`` plugins).

Lookup order: an explicit path, the ``DTP_PLUGIN_LIB`` environment variable, then
``build/plugins/libdtp_plugins.so`` in the source checkout (what ``scripts/build_plugins.sh``
produces).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

ENV_VAR = "DTP_PLUGIN_LIB"
LIBRARY_NAME = "libdtp_plugins.so"
PLUGIN_NAMESPACE = "dtp"
PLUGIN_VERSION = "1"
PLUGIN_NAMES = ("TokenSplit", "TokenReconstruct")

BUILD_HINT = (
    "build it with `TensorRT_ROOT=<TensorRT dir> scripts/build_plugins.sh` (needs nvcc and the "
    "TensorRT headers), or point DTP_PLUGIN_LIB / --plugins at an existing libdtp_plugins.so"
)

# Handles of libraries already loaded into TensorRT's registry, by resolved path: loading twice
# would register the creators twice.
_LOADED: dict[str, Any] = {}


class PluginLibraryNotFound(FileNotFoundError):
    """No plugin library where it was looked for; the message lists the places and the fix."""


def default_library_path() -> Path:
    """``build/plugins/libdtp_plugins.so`` at the root of the source checkout."""
    return Path(__file__).resolve().parents[2] / "build" / "plugins" / LIBRARY_NAME


def find_plugin_library(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the plugin library: ``path``, else ``$DTP_PLUGIN_LIB``, else the build directory.

    Raises:
        PluginLibraryNotFound: the chosen candidate does not exist (an explicit path or the
            environment variable is never silently skipped).
    """
    if path is not None:
        candidate, source = Path(path), "the given path"
    elif os.environ.get(ENV_VAR):
        candidate, source = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        candidate, source = default_library_path(), "the default build location"
    if not candidate.is_file():
        raise PluginLibraryNotFound(
            f"TensorRT plugin library not found: {candidate} ({source}); {BUILD_HINT}")
    return candidate.resolve()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_plugin_library(trt: Any, path: str | os.PathLike[str] | None = None) -> Path:
    """Load the library into TensorRT's plugin registry (once per process) and check its creators.

    ``trt`` is the imported ``tensorrt`` module (passed in so this module never imports it).
    """
    library = find_plugin_library(path)
    key = str(library)
    if key in _LOADED:
        return library
    registry = trt.get_plugin_registry()
    if _missing_creators(registry) == []:
        # Registered already (by the application, or by this library under another path):
        # loading it again would fail to register the same creators twice.
        return library
    handle = registry.load_library(key)
    if handle is None:
        raise RuntimeError(f"TensorRT could not load the plugin library {library}; see the "
                           "TensorRT log above (built for another TensorRT or CUDA version?)")
    _LOADED[key] = handle
    missing = _missing_creators(registry)
    if missing:
        raise RuntimeError(f"{library} loaded but does not provide {', '.join(missing)} "
                           f"(namespace {PLUGIN_NAMESPACE!r}, version {PLUGIN_VERSION!r}); "
                           f"rebuild it: {BUILD_HINT}")
    return library


def _missing_creators(registry: Any) -> list[str] | None:
    """The dtp creators ``registry`` lacks, or None when it cannot be asked."""
    get_creator = getattr(registry, "get_creator", None)
    if get_creator is None:
        return None
    return [name for name in PLUGIN_NAMES if get_creator(name, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None]
