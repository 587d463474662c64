"""A client of a served segmenter (``dtp-serve``, or any Triton server holding a repository
written by ``dtp-triton-repo``), with the same ``predict`` as :class:`~dtp_deploy.runtime.Segmenter`.

>>> from dtp_deploy.client import Client
>>> client = Client("http://127.0.0.1:8000")          # or grpc://127.0.0.1:8001
>>> result = client.predict(image)                     # (H, W, 3) uint8 RGB
>>> result.labels, result.keep_ratio, result.keep_counts

Needs ``tritonclient`` (``pip install 'dtp-deploy[serve]'``). A ``Client`` may be used from
many threads at once (each thread gets its own connection).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dtp_deploy.metadata import DescribedByMetadata, ModelMetadata
from dtp_deploy.runtime.backends import RuntimeSetupError
from dtp_deploy.runtime.segmenter import Prediction, Segmenter, Timing, _check_image, _pair
from dtp_deploy.serve.repository import DEFAULT_NAME

PROTOCOLS = ("http", "grpc")


class ServerUnavailable(RuntimeSetupError):
    """The server cannot be reached, or the model is not served there."""


class RequestError(ValueError):
    """The server refused or failed one request (bad image, unknown model, ...); it goes on
    serving others."""


@dataclass(frozen=True)
class _Backend:
    name: str  # "triton-http" | "triton-grpc"
    device: str  # the server's address


def parse_url(url: str) -> tuple[str, str]:
    """``http://host:port`` / ``grpc://host:port`` / ``host:port`` (HTTP) -> (protocol, host:port)."""
    protocol, sep, address = url.partition("://")
    if not sep:
        protocol, address = "http", url
    protocol = protocol.lower()
    if protocol == "https" or protocol not in PROTOCOLS:
        raise ValueError(f"server URL {url!r}: use http://HOST:PORT or grpc://HOST:PORT")
    address = address.rstrip("/")
    if ":" not in address:
        raise ValueError(f"server URL {url!r} has no port; e.g. http://127.0.0.1:8000")
    return protocol, address


class Client(DescribedByMetadata):
    """A model served by Triton, used like a :class:`~dtp_deploy.runtime.Segmenter`.

    Args:
        url: ``http://HOST:PORT`` or ``grpc://HOST:PORT`` (what ``dtp-serve`` prints).
        model: the model's name in the repository.
        timeout: seconds to wait for one answer.
    """

    plan = Segmenter.plan  # the same cut into windows as the local runtime (uses metadata only)
    default_crop = Segmenter.default_crop

    def __init__(self, url: str, model: str = DEFAULT_NAME, *, timeout: float = 60.0) -> None:
        self.protocol, self.address = parse_url(url)
        self.url, self.model, self.timeout = url, model, timeout
        try:
            if self.protocol == "http":
                import tritonclient.http as triton
            else:
                import tritonclient.grpc as triton
            from tritonclient.utils import InferenceServerException
        except ImportError as err:
            raise ServerUnavailable("the client needs tritonclient: pip install 'dtp-deploy[serve]'") from err
        self._triton, self._exception = triton, InferenceServerException
        self._local = threading.local()
        self.backend = _Backend(f"triton-{self.protocol}", self.address)
        config = self._call(lambda c: c.get_model_config(self.model))
        config = config["config"] if self.protocol == "grpc" and "config" in config else config
        props = config.get("parameters", {}).get("dtp_metadata", {}).get("string_value")
        if props is None:
            raise ServerUnavailable(f"model {model!r} on {url} was not written by dtp-triton-repo "
                                    "(its config has no dtp_metadata parameter)")
        self.metadata = ModelMetadata.from_props(json.loads(props), f"{url}/{model}")
        self.input_size = self.metadata.input_size

    # -- connection ---------------------------------------------------------------------------
    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.protocol == "http":
                conn = self._triton.InferenceServerClient(self.address, connection_timeout=self.timeout,
                                                          network_timeout=self.timeout)
            else:
                conn = self._triton.InferenceServerClient(self.address)
            self._local.conn = conn
        return conn

    def _call(self, fn):
        try:
            result = fn(self._connection())
        except self._exception as err:
            raise self._error(err) from None
        except (ConnectionError, OSError) as err:
            raise ServerUnavailable(f"cannot reach {self.url}: {err}") from err
        if self.protocol == "grpc" and hasattr(result, "DESCRIPTOR"):
            from google.protobuf.json_format import MessageToDict
            return MessageToDict(result, preserving_proto_field_name=True)
        return result

    def _error(self, err) -> Exception:
        message = err.message() if callable(getattr(err, "message", None)) else str(err)
        status = str(err.status() or "")
        if "UNAVAILABLE" in status or "failed to connect" in message.lower() or "connection" in message.lower():
            return ServerUnavailable(f"cannot reach {self.url}: {message}")
        return RequestError(f"{self.url} model {self.model!r}: {message}")

    # -- facts --------------------------------------------------------------------------------
    def ready(self) -> bool:
        """The server is ready and so is the model."""
        try:
            return bool(self._call(lambda c: c.is_server_ready() and c.is_model_ready(self.model)))
        except (ServerUnavailable, RequestError):
            return False

    def statistics(self) -> dict[str, Any]:
        """Triton's statistics of the model (``inference_stats``, ``batch_stats``, ...)."""
        stats = self._call(lambda c: c.get_inference_statistics(self.model))
        return stats["model_stats"][0]

    # -- inference ----------------------------------------------------------------------------
    def predict(self, image: np.ndarray, *, color: str = "rgb", mode: str | None = None,
                crop: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None,
                return_scores: bool = False, protocol: str = "grid",
                test_scale: str | Sequence[int] | None = None) -> Prediction:
        """Segment one ``(H, W, 3)`` uint8 image on the server; arguments as
        :meth:`Segmenter.predict`, except that ``mode=None`` (and no crop/stride) takes the
        repository's defaults and that the server runs the ``grid`` protocol only.
        ``timing.inference_ms`` is the round trip."""
        if protocol != "grid" or test_scale is not None:
            raise ValueError(f"protocol {protocol!r} / test_scale: a served model runs the 'grid' "
                             "protocol only; run the mmseg protocol in-process with Segmenter")
        _check_image(image)
        params: dict[str, str] = {"color": color}
        if mode is not None:
            params["mode"] = mode
        for key, value in (("crop", crop), ("stride", stride)):
            pair = _pair(value)
            if pair is not None:
                params[key] = f"{pair[0]},{pair[1]}"
        names = ["LABELS", "KEEP_RATIO", "KEEP_COUNTS"] + (["SCORES"] if return_scores else [])
        triton = self._triton
        tensor = triton.InferInput("IMAGE", [1, *image.shape], "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(image[None]))
        outputs = [triton.InferRequestedOutput(n) for n in names]
        start = time.perf_counter()
        # the HTTP client's timeouts are set on its connection, the gRPC client's per call
        kwargs = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        result = self._call(lambda c: c.infer(self.model, [tensor], outputs=outputs, parameters=params, **kwargs))
        spent = (time.perf_counter() - start) * 1e3
        keep = result.as_numpy("KEEP_COUNTS")[0]
        return Prediction(labels=result.as_numpy("LABELS")[0], keep_counts=keep,
                          keep_ratio=tuple(float(r) for r in result.as_numpy("KEEP_RATIO")[0]),
                          scores=result.as_numpy("SCORES")[0] if return_scores else None,
                          windows=int(keep.shape[0]), timing=Timing(inference_ms=spent))

    def predict_batch(self, images: Sequence[np.ndarray], **kwargs) -> list[Prediction]:
        """One request per image, in order (the server batches requests of many clients)."""
        return [self.predict(image, **kwargs) for image in images]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, model={self.model!r}, arch={self.metadata.arch})"
