"""ONNX Runtime with denormal floats flushed to zero, without changing the caller's thread for good.

After a token split, attention masks padded keys with a large negative bias; ``exp`` of those
logits (and of very wide logits in trained models) lands in the denormal range, where x86 cores
take a slow path per value: ONNX Runtime's Softmax over ViT-B's padded ``[8, 12, 1024, 1024]``
logits ran in 131 ms instead of 22 ms. Flushing denormals to zero changes no result that
matters (they are below 1.2e-38) and removes the slow path.

ONNX Runtime's ``session.set_denormal_as_zero`` switches the mode on in the session's worker
threads, and in the thread that creates the first session of the process, for good: that may be
the application's own thread. The calling thread also does part of every run. So the creator's
floating-point environment is restored right after the session is created, and the calling
thread flushes denormals only for the length of each run.

That needs the MXCSR register's place in the C library's ``fenv_t``: it is known for x86-64
Linux. Elsewhere the option is left off.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
from collections.abc import Iterator
from typing import Any

_FENV_BYTES = 32  # x86-64 fenv_t: the x87 environment (28 bytes), then MXCSR
_MXCSR_OFFSET = 28  # the same in glibc and musl
_FTZ_DAZ = 0x8040  # MXCSR bits: flush-to-zero (15), denormals-are-zero (6)


def _c_fenv() -> Any | None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    # glibc's libm by name; else whatever the process already has loaded (musl: libc itself).
    # No ctypes.util.find_library: it runs ldconfig, ~15 ms at every import.
    for name in ("libm.so.6", None):
        try:
            lib = ctypes.CDLL(name)
            lib.fegetenv, lib.fesetenv  # noqa: B018 - the lookup fails where they are missing
        except (OSError, AttributeError):
            continue
        return lib
    return None


_LIB = _c_fenv()


def _get() -> ctypes.Array:
    env = ctypes.create_string_buffer(_FENV_BYTES)
    _LIB.fegetenv(env)
    return env


class FlushDenormals:
    """Ask for the mode with :meth:`enable`, create the session inside :meth:`creating`, run it
    inside :meth:`running`."""

    def __init__(self) -> None:
        self.enabled = False

    @staticmethod
    def available() -> bool:
        return _LIB is not None

    def enable(self, options: Any) -> None:
        if self.available():
            options.add_session_config_entry("session.set_denormal_as_zero", "1")
            self.enabled = True

    def creating(self) -> contextlib.AbstractContextManager[None]:
        """Around the session's creation: the thread's mode is put back afterwards."""
        return self._restoring(flush=False)

    def running(self) -> contextlib.AbstractContextManager[None]:
        """Around a run: denormals flushed in this thread meanwhile, its mode put back after."""
        return self._restoring(flush=True)

    @contextlib.contextmanager
    def _restoring(self, flush: bool) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        before = _get()
        if flush:
            flushing = ctypes.create_string_buffer(before.raw, _FENV_BYTES)
            ctypes.c_uint32.from_buffer(flushing, _MXCSR_OFFSET).value |= _FTZ_DAZ
            _LIB.fesetenv(flushing)
        try:
            yield
        finally:
            _LIB.fesetenv(before)
