"""Run a serialized TensorRT engine from numpy: :class:`TrtEngine`.

Device memory goes through one small interface, :class:`DeviceApi`, with two implementations:
cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``) and pycuda, whichever
imports. Tensors are bound by name with the TensorRT 10 API (``num_io_tensors``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``). Outputs whose shape is only
known after running (data-dependent) go through a TensorRT output allocator; the engines that
``dtp-build`` makes have static outputs, so that path is the exception.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dtp_deploy.trt.plugins import PluginLibraryNotFound, load_plugin_library


class TrtUnavailable(RuntimeError):
    """TensorRT (or a CUDA GPU) is not usable here; the message says which and how to fix it."""


def import_tensorrt() -> Any:
    """``import tensorrt`` or :class:`TrtUnavailable` naming the fix."""
    try:
        import tensorrt
    except ImportError as err:
        raise TrtUnavailable(f"TensorRT is not installed ({err}); install it with "
                             "`pip install dtp-deploy[trt]` on a machine with an NVIDIA GPU") from err
    return tensorrt


class DeviceApi:
    """The handful of CUDA runtime calls the engine runner needs. Pointers are ints."""

    name = ""

    def malloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def free(self, ptr: int) -> None:
        raise NotImplementedError

    def stream(self) -> Any:
        raise NotImplementedError

    def stream_handle(self, stream: Any) -> int:
        raise NotImplementedError

    def synchronize(self, stream: Any) -> None:
        raise NotImplementedError

    def htod(self, ptr: int, array: np.ndarray, stream: Any) -> None:
        raise NotImplementedError

    def dtoh(self, array: np.ndarray, ptr: int, stream: Any) -> None:
        raise NotImplementedError

    def device_name(self) -> str:
        raise NotImplementedError


class CudaPythonApi(DeviceApi):
    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        self._rt = cudart

    def _check(self, result: tuple[Any, ...]) -> Any:
        err, *values = result
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes):
        return int(self._check(self._rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr):
        self._check(self._rt.cudaFree(ptr))

    def stream(self):
        return self._check(self._rt.cudaStreamCreate())

    def stream_handle(self, stream):
        return int(stream)

    def synchronize(self, stream):
        self._check(self._rt.cudaStreamSynchronize(stream))

    def htod(self, ptr, array, stream):
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, stream))

    def dtoh(self, array, ptr, stream):
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, stream))

    def device_name(self):
        device = self._check(self._rt.cudaGetDevice())
        props = self._check(self._rt.cudaGetDeviceProperties(device))
        name = props.name
        return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).strip("\x00 ")


class PycudaApi(DeviceApi):
    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self._cuda = cuda
        # TensorRT works in the device's primary context; make it current for pycuda too.
        self._context = cuda.Device(0).retain_primary_context()
        self._context.push()
        self._allocations: dict[int, Any] = {}

    def malloc(self, nbytes):
        allocation = self._cuda.mem_alloc(max(int(nbytes), 1))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr):
        allocation = self._allocations.pop(ptr, None)
        if allocation is not None:
            allocation.free()

    def stream(self):
        return self._cuda.Stream()

    def stream_handle(self, stream):
        return int(stream.handle)

    def synchronize(self, stream):
        stream.synchronize()

    def htod(self, ptr, array, stream):
        self._cuda.memcpy_htod_async(ptr, array, stream)

    def dtoh(self, array, ptr, stream):
        self._cuda.memcpy_dtoh_async(array, ptr, stream)

    def device_name(self):
        return str(self._context.get_device().name())


def device_api(prefer: str | None = None) -> DeviceApi:
    """cuda-python or pycuda (``prefer`` = their ``name``), whichever imports; else TrtUnavailable."""
    order = [CudaPythonApi, PycudaApi]
    if prefer is not None:
        order.sort(key=lambda cls: cls.name != prefer)
    reasons = []
    for cls in order:
        try:
            return cls()
        except Exception as err:  # ImportError, or a CUDA init error without a GPU
            reasons.append(f"{cls.name}: {err}")
    raise TrtUnavailable("no CUDA Python binding works here (" + "; ".join(reasons) + "); install "
                         "cuda-python (`pip install cuda-python`) or pycuda on a machine with a GPU")


def device_name() -> str:
    """Name of the current CUDA device, or ``"unknown"``."""
    try:
        return device_api().device_name()
    except Exception:
        return "unknown"


class _DeviceBuffer:
    def __init__(self, api: DeviceApi) -> None:
        self.api = api
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes or self.ptr == 0:
            self.release()
            self.ptr = self.api.malloc(nbytes)
            self.nbytes = max(nbytes, 1)
        return self.ptr

    def release(self) -> None:
        if self.ptr:
            self.api.free(self.ptr)
            self.ptr, self.nbytes = 0, 0


def _output_allocator_class(trt: Any) -> type:
    """A trt.IOutputAllocator that (re)allocates data-dependent outputs and records their shape."""

    class OutputAllocator(trt.IOutputAllocator):
        def __init__(self, buffers: dict[str, _DeviceBuffer]) -> None:
            super().__init__()
            self.buffers = buffers
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name, memory, size, alignment):
            return self.buffers[tensor_name].ensure(int(size))

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            return self.buffers[tensor_name].ensure(int(size))

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return OutputAllocator


class TrtEngine:
    """A deserialized engine with one execution context; ``infer`` maps input names to arrays.

    Args:
        path: serialized engine (``dtp-build`` output).
        plugin_lib: plugin library; default ``$DTP_PLUGIN_LIB`` or the build directory. When none
            is found the engine is still tried (a portable-flavour engine needs no plugins).
        device_api_name: ``"cuda-python"`` or ``"pycuda"`` to prefer one binding.
    """

    def __init__(self, path: str | os.PathLike[str], plugin_lib: str | os.PathLike[str] | None = None,
                 *, device_api_name: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"engine not found: {self.path}; build it with dtp-build")
        trt = import_tensorrt()
        self._trt = trt
        self.plugin_library: Path | None = None
        try:
            self.plugin_library = load_plugin_library(trt, plugin_lib)
        except PluginLibraryNotFound:
            if plugin_lib is not None:
                raise
        self.api = device_api(device_api_name)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            hint = ("" if self.plugin_library else
                    " (no plugin library was loaded: set DTP_PLUGIN_LIB or pass plugin_lib if the "
                    "engine uses the dtp plugins)")
            raise RuntimeError(f"{self.path}: TensorRT could not deserialize the engine; it must be "
                               f"built with TensorRT {trt.__version__} on this GPU model{hint}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._buffers = {n: _DeviceBuffer(self.api) for n in names}
        self._stream = self.api.stream()
        self._allocator = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once: ``{input name: array}`` -> ``{output name: array}`` (host numpy arrays)."""
        missing = sorted(set(self.input_names) - set(feeds))
        extra = sorted(set(feeds) - set(self.input_names))
        if missing or extra:
            raise KeyError(f"{self.path.name}: inputs are {self.input_names}; missing {missing}, "
                           f"unexpected {extra}")
        stream = self._stream
        hosts = {}
        for name in self.input_names:
            array = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            if not self.context.set_input_shape(name, array.shape):
                raise ValueError(f"{self.path.name}: input {name!r} shape {array.shape} is outside "
                                 "the engine's optimisation profile")
            hosts[name] = array
            ptr = self._buffers[name].ensure(array.nbytes)
            self.api.htod(ptr, array, stream)
            self.context.set_tensor_address(name, ptr)

        dynamic = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                dynamic.append(name)
                continue
            nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtypes[name].itemsize
            self.context.set_tensor_address(name, self._buffers[name].ensure(nbytes))
        if dynamic:
            if self._allocator is None:
                self._allocator = _output_allocator_class(self._trt)(self._buffers)
            for name in dynamic:
                self.context.set_output_allocator(name, self._allocator)

        if not self.context.execute_async_v3(self.api.stream_handle(stream)):
            raise RuntimeError(f"{self.path.name}: execute_async_v3 failed; see the TensorRT log")
        outputs = {}
        for name in self.output_names:
            if name in dynamic:
                shape = self._allocator.shapes[name]
            else:
                shape = tuple(self.context.get_tensor_shape(name))
            out = np.empty(shape, dtype=self.dtypes[name])
            if out.nbytes:
                self.api.dtoh(out, self._buffers[name].ptr, stream)
            outputs[name] = out
        self.api.synchronize(stream)
        return outputs

    def close(self) -> None:
        for buffer in getattr(self, "_buffers", {}).values():
            buffer.release()

    def __enter__(self) -> TrtEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
