"""TensorRT side of dtp-deploy: plugin library lookup, engine building and an engine runner.

Nothing here imports ``tensorrt``, ``pycuda`` or ``cuda`` at import time, so the package imports
on machines without them; the functions that need them raise :class:`TrtUnavailable` with the
reason.
"""

from dtp_deploy.trt.plugins import PluginLibraryNotFound, find_plugin_library

__all__ = ["PluginLibraryNotFound", "find_plugin_library"]
