"""Serving on NVIDIA Triton Inference Server: model repositories, the server, options.

>>> from dtp_deploy.serve import write_repository, TritonServer
>>> write_repository("model.onnx", "repo/")               # dtp-triton-repo
>>> with TritonServer.start("repo/") as server:            # dtp-serve
...     print(server.endpoints.http)

Clients live in :mod:`dtp_deploy.client`. Nothing here imports Triton's packages until a
repository is written or a server started (``pip install 'dtp-deploy[serve]'``).
"""

from .options import DEFAULT_MAX_PIXELS, RequestOptions, check_image
from .repository import DEFAULT_NAME, LAYOUTS, RepositoryError, ServingOptions, write_repository
from .server import Endpoints, ServeError, TritonServer, find_tritonserver, free_port

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_NAME", "LAYOUTS", "Endpoints", "RepositoryError", "RequestOptions",
           "ServeError", "ServingOptions", "TritonServer", "check_image", "find_tritonserver", "free_port",
           "write_repository"]
