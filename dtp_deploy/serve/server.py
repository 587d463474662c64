"""Run Triton Inference Server on a model repository: ``dtp-serve``'s library half.

The ``tritonserver`` binary comes from the ``nvidia-pytriton`` wheel (``dtp-deploy[serve]``),
which also ships the Python backend and one backend stub per Python version; a server
installed elsewhere (a Triton container) is used with ``tritonserver=PATH``. The server runs in
its own process group, so stopping it also stops the Python-backend stub processes it starts.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LOG_LEVELS = ("error", "warning", "info", "verbose")


class ServeError(RuntimeError):
    """The server cannot be started or did not become ready; the message says why."""


@dataclass(frozen=True)
class Endpoints:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def metrics(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def to_dict(self) -> dict[str, str]:
        return {"http": self.http, "grpc": self.grpc, "metrics": self.metrics}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _pytriton_dir() -> Path:
    # find_spec only: importing pytriton itself would need its own dependencies
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServeError("no tritonserver: pip install 'dtp-deploy[serve]' (nvidia-pytriton ships the "
                         "server), or pass the path of a tritonserver binary")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def find_tritonserver(path: str | os.PathLike | None = None) -> Path:
    """``path``, ``$DTP_TRITONSERVER``, or the binary inside the nvidia-pytriton wheel."""
    path = path or os.environ.get("DTP_TRITONSERVER")
    binary = Path(path) if path else _pytriton_dir() / "bin" / "tritonserver"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise ServeError(f"{binary} is not an executable tritonserver binary")
    return binary


def _backend_dir(binary: Path, workdir: Path) -> Path | None:
    """For the wheel's server: a backend folder with the stub of this Python version.

    The wheel keeps stubs for several Python versions apart; the Python backend looks for
    ``triton_python_backend_stub`` next to ``libtriton_python.so``, so the folder is made of
    links to the wheel's files plus the matching stub. None for other servers (their own
    backend folder applies)."""
    dist = binary.parent.parent
    stub = dist / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / \
        "triton_python_backend_stub"
    if not stub.is_file():
        return None
    backends = workdir / "backends"
    python = backends / "python"
    python.mkdir(parents=True)
    for item in (dist / "backends" / "python").iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    (python / stub.name).symlink_to(stub)
    return backends


@dataclass
class TritonServer:
    """A running ``tritonserver``; use as a context manager or call :meth:`stop`.

    Attributes:
        repository: the model repository served.
        endpoints: the HTTP, gRPC and metrics addresses.
        log_path: the server's log (stdout and stderr).
    """

    repository: Path
    endpoints: Endpoints
    log_path: Path
    process: subprocess.Popen
    _workdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @classmethod
    def start(cls, repository: str | os.PathLike, *, host: str = "127.0.0.1", http_port: int = 0,
              grpc_port: int = 0, metrics_port: int = 0, log_level: str = "warning",
              timeout: float = 120.0, tritonserver: str | os.PathLike | None = None,
              log_path: str | os.PathLike | None = None, exit_timeout: int = 10,
              extra_args: tuple[str, ...] = ()) -> TritonServer:
        """Start the server and wait until it and every model in ``repository`` are ready.

        Ports of 0 are picked free. Raises :class:`ServeError` with the server's error lines
        when it exits early (a model failing to load makes it exit) or is not ready within
        ``timeout`` seconds; the process is stopped in both cases. On stopping, the server
        waits up to ``exit_timeout`` seconds for requests in flight and for clients to close
        their (keep-alive) HTTP connections.
        """
        repository = Path(repository)
        if not repository.is_dir():
            raise ServeError(f"model repository {repository} is not a folder")
        if log_level not in LOG_LEVELS:
            raise ServeError(f"unknown log level {log_level!r}; use one of {', '.join(LOG_LEVELS)}")
        binary = find_tritonserver(tritonserver)
        workdir = tempfile.TemporaryDirectory(prefix="dtp-serve-")
        ports = [p or free_port(host) for p in (http_port, grpc_port, metrics_port)]
        endpoints = Endpoints(host, *ports)
        log = Path(log_path) if log_path else Path(workdir.name) / "tritonserver.log"
        args = [os.fspath(binary), f"--model-repository={repository.resolve()}",
                f"--http-address={host}", f"--http-port={ports[0]}",
                f"--grpc-address={host}", f"--grpc-port={ports[1]}",
                f"--metrics-address={host}", f"--metrics-port={ports[2]}", "--allow-metrics=true",
                "--allow-gpu-metrics=false", "--exit-on-error=true", "--strict-readiness=true",
                "--disable-auto-complete-config", f"--exit-timeout-secs={exit_timeout}",
                f"--log-info={str(log_level in ('info', 'verbose')).lower()}",
                f"--log-warning={str(log_level != 'error').lower()}",
                f"--log-verbose={1 if log_level == 'verbose' else 0}", *extra_args]
        backends = _backend_dir(binary, Path(workdir.name))
        if backends is not None:
            args.append(f"--backend-directory={backends}")
        env = dict(os.environ)
        # The backend stub is a separate embedded interpreter: it finds this environment's
        # packages (numpy, dtp_deploy, onnxruntime) through the python first on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        with open(log, "wb") as handle:
            # The stub ignores PYTHONPATH but puts its working folder first on sys.path: started
            # next to the dtp_deploy package this process imported, it imports the same one.
            process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env, cwd=_package_root(), start_new_session=True)
        server = cls(repository, endpoints, log, process, workdir)
        atexit.register(server.stop)  # no server left behind by an interpreter that exits
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.close()
            raise
        return server

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.endpoints.http}/v2/health/ready"
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServeError(f"tritonserver exited with status {code} before it was ready:\n"
                                 f"{self.errors() or self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            if time.monotonic() > deadline:
                raise ServeError(f"tritonserver was not ready within {timeout:.0f} s (log: {self.log_path}):\n"
                                 f"{self.errors() or self.log_tail()}")
            time.sleep(0.2)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def errors(self) -> str:
        """The server's error lines (``E...`` in Triton's log format), with what follows them
        on the same message (Python tracebacks from a failed model load)."""
        lines = self.log_text().splitlines()
        keep = [line for line in lines if line.startswith("E") or "failed to load" in line
                or "Error" in line]
        return "\n".join(keep[-20:])

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the server (SIGTERM), then anything left in its process group (backend stubs)
        with SIGKILL, also after ``timeout`` seconds. Returns the server's exit status."""
        pgid = self.process.pid  # start_new_session: the group id is the server's pid
        # The server alone first: it unloads its models and stops their stubs itself.
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Stubs left behind (or a server that ignored SIGTERM) go with the group.
        deadline = time.monotonic() + 5
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        return self.process.returncode

    def close(self) -> None:
        self.stop()
        atexit.unregister(self.stop)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def group_members(pgid: int) -> list[int]:
    """Live process ids of process group ``pgid`` (from /proc; zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _package_root() -> str:
    """The folder holding the dtp_deploy package (for a source checkout not installed)."""
    return str(Path(__file__).resolve().parents[2])
