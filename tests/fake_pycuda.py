"""An in-memory double of the few ``pycuda.driver`` calls fallwatch makes (edge/inference/engines/cuda.py,
edge/inference/engines/tensorrt.py, calibration/trt_build.py), strict where real CUDA is strict:

* nothing works before ``init()``; allocations, copies and streams need a current context
  (``pycuda._driver.LogicError`` otherwise), contexts are a stack per thread (push, static pop,
  detach: a context detached from a thread where it is not current and that did not make it is
  leaked, as in pycuda's ``context::detach``); ``get_version()`` is the CUDA version;
* TensorRT objects of the TensorRT double are tracked under the context current when they were
  made: destroying that context while one is alive is recorded (see :class:`Context`);
* device memory is real bytes at fake addresses; copies check sizes and freed memory; ``free()``
  activates the allocation's own context as pycuda does (no current context needed on the thread
  that made it; another thread fails; a dead context only warns);
* async copies insist on page-locked host memory from ``pagelocked_empty`` (the real ones are only
  asynchronous with it), and every allocation is accounted, so a test can ask what leaked.

Install with :func:`install` (puts ``pycuda`` and ``pycuda.driver`` into ``sys.modules``).
"""
from __future__ import annotations

import ctypes
import sys
import threading
import types
import weakref
from typing import Dict, List, Tuple

import numpy as np


class Error(Exception):
    pass


class LogicError(Error):
    pass


class _State:
    def __init__(self, devices: List[Tuple[str, Tuple[int, int]]]) -> None:
        self.devices = devices
        self.initialized = False
        self.stacks: Dict[int, List["Context"]] = {}  # thread id -> that thread's context stack
        self.contexts: List["Context"] = []  # not destroyed (a leaked out-of-thread context stays here)
        self.memory: Dict[int, bytearray] = {}  # device address -> bytes
        self.pinned: Dict[int, "PagelockedHostAllocation"] = {}
        self.streams: Dict[int, "Stream"] = {}
        self.next_address = 0x7F0000000000  # allocations never overlap (each starts past the last one's end)
        self.calls: List[str] = []
        self.htod_sources: List[int] = []  # host address of every async copy to the device, in order
        self.objects: List[Tuple[weakref.ref, str, object]] = []  # TensorRT objects: (ref, kind, context)
        self.outlived: List[str] = []  # "Builder outlived its CUDA context", one per object

    @property
    def stack(self) -> List["Context"]:
        """The calling thread's context stack (CUDA keeps one per thread)."""
        return self.stacks.setdefault(threading.get_ident(), [])


STATE = _State([("Orin", (8, 7))])
CUDA_VERSION = (12, 6, 0)  # JetPack 6.1/6.2
DRIVER_VERSION = 12060


def _need_context(what: str) -> None:
    if not STATE.initialized:
        raise LogicError("%s failed: cuInit has not been called" % what)
    if not STATE.stack:
        raise LogicError("%s failed: invalid device context - no currently active context?" % what)


def init(flags: int = 0) -> None:
    STATE.initialized = True


def get_version() -> Tuple[int, int, int]:
    """The CUDA version pycuda was built against, as the real ``pycuda.driver.get_version()``."""
    return CUDA_VERSION


def get_driver_version() -> int:
    if not STATE.initialized:
        raise LogicError("cuDriverGetVersion failed: cuInit has not been called")
    return DRIVER_VERSION


class Device:
    def __init__(self, index: int) -> None:
        if not STATE.initialized:
            raise LogicError("cuDeviceGet failed: cuInit has not been called")
        if not 0 <= index < len(STATE.devices):
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self._index = index

    @staticmethod
    def count() -> int:
        return len(STATE.devices)

    def name(self) -> str:
        return STATE.devices[self._index][0]

    def compute_capability(self) -> Tuple[int, int]:
        return STATE.devices[self._index][1]

    def make_context(self, flags: int = 0) -> "Context":
        context = Context(self)
        STATE.contexts.append(context)
        STATE.stack.append(context)
        return context


class Context:
    """pycuda's context: ``pop`` is static (pops the calling thread's current context); ``detach``
    destroys the context when it is current on the calling thread or that thread made it, and from
    any other thread only forgets it (pycuda's "leaked out-of-thread context": it stays allocated,
    so :func:`leaks` counts it). Destroying a context while TensorRT objects made under it are
    alive succeeds, as cuCtxDestroy does, but each such object is recorded in ``STATE.outlived``:
    on a Jetson its destructor later frees memory in a destroyed context (CUDA error 709, "context
    is destroyed", or a crash at exit)."""

    def __init__(self, device: Device) -> None:
        self._device = device
        self._valid = True
        self._thread = threading.get_ident()

    def push(self) -> None:
        if not self._valid:
            raise LogicError("cuCtxPushCurrent failed: invalid device context")
        STATE.stack.append(self)

    @staticmethod
    def pop() -> None:
        if not STATE.stack:
            raise LogicError("context::pop failed: cannot pop non-current context")
        STATE.stack.pop()

    def detach(self) -> None:
        if not self._valid:
            raise LogicError("context::detach failed: invalid device context - cannot detach from invalid context")
        self._valid = False
        stack = STATE.stack
        if stack and stack[-1] is self:
            stack.pop()
        elif self._thread != threading.get_ident():
            return  # leaked: still allocated, never destroyed
        STATE.contexts.remove(self)
        for ref, kind, context in STATE.objects:
            if context is self and ref() is not None:
                STATE.outlived.append("%s outlived its CUDA context" % kind)


def track(obj: object, kind: str) -> None:
    """For the TensorRT double: ``obj`` (a Builder, an engine ...) lives in the calling thread's current
    context, if any (without one, TensorRT uses the device's primary context, never destroyed here)."""
    stack = STATE.stack
    STATE.objects.append((weakref.ref(obj), kind, stack[-1] if stack else None))


def _activate_own(context: "Context", what: str) -> None:
    """pycuda's scoped_context_activation around a clean-up: the allocation's own context is made current
    when it is not (on its own thread only); in a dead context pycuda only warns (the memory went with it)."""
    if not context._valid:
        print("PyCUDA WARNING: a clean-up operation failed (dead context maybe?)\n%s failed: context is destroyed"
              % what, file=sys.stderr)
    elif not (STATE.stack and STATE.stack[-1] is context) and context._thread != threading.get_ident():
        raise LogicError("%s failed: cannot activate out-of-thread context" % what)


class DeviceAllocation:
    """Device memory. ``free()`` activates the allocation's own context (pycuda does), so it needs no current
    context on the thread that made it; on another thread it fails; in a dead context it warns."""

    def __init__(self, nbytes: int) -> None:
        _need_context("cuMemAlloc")
        if nbytes <= 0:
            raise LogicError("cuMemAlloc failed: invalid argument (size %d)" % nbytes)
        self._address = STATE.next_address
        STATE.next_address += (int(nbytes) // 0x100000 + 2) * 0x100000  # 1 MiB-aligned, a gap after each
        self._context = STATE.stack[-1]
        STATE.memory[self._address] = bytearray(nbytes)

    def __int__(self) -> int:
        return self._address

    __index__ = __int__

    def free(self) -> None:
        if self._address not in STATE.memory:
            raise LogicError("device_allocation::free failed: invalid resource handle")
        _activate_own(self._context, "cuMemFree")
        del STATE.memory[self._address]


def mem_alloc(nbytes: int) -> DeviceAllocation:
    STATE.calls.append("mem_alloc")
    return DeviceAllocation(int(nbytes))


class PagelockedHostAllocation:
    """Page-locked host memory: the ``.base`` of arrays from :func:`pagelocked_empty` (as in pycuda)."""

    def __init__(self, shape: Tuple[int, ...], dtype: np.dtype) -> None:
        self._shape, self._dtype = shape, dtype
        self._context = STATE.stack[-1]
        self._buffer = ctypes.create_string_buffer(max(int(np.prod(shape)) * dtype.itemsize, 1))

    @property
    def __array_interface__(self) -> dict:
        return {"shape": self._shape, "typestr": self._dtype.str, "version": 3,
                "data": (ctypes.addressof(self._buffer), False)}

    def free(self) -> None:
        if id(self) in STATE.pinned:
            _activate_own(self._context, "cuMemFreeHost")
            del STATE.pinned[id(self)]


def pagelocked_empty(shape, dtype) -> np.ndarray:
    _need_context("cuMemHostAlloc")
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    owner = PagelockedHostAllocation(shape, dtype)
    STATE.pinned[id(owner)] = owner
    return np.asarray(owner)


def _is_pinned(array: np.ndarray) -> bool:
    start = array.__array_interface__["data"][0]
    for owner in STATE.pinned.values():
        base = ctypes.addressof(owner._buffer)
        if base <= start and start + array.nbytes <= base + len(owner._buffer):
            return True
    return False


def _region(address: object, nbytes: int, what: str) -> Tuple[bytearray, int]:
    address = int(address)  # type: ignore[call-overload]
    for base, buf in STATE.memory.items():
        if base <= address < base + len(buf):
            if address - base + nbytes > len(buf):
                raise LogicError("%s failed: %d bytes at offset %d overrun an allocation of %d bytes"
                                 % (what, nbytes, address - base, len(buf)))
            return buf, address - base
    raise LogicError("%s failed: invalid device address 0x%x (freed or never allocated)" % (what, address))


def read_device(address: object, nbytes: int) -> bytes:
    """For the TensorRT double: the bytes at a device address."""
    buf, offset = _region(address, nbytes, "device read")
    return bytes(buf[offset:offset + nbytes])


def write_device(address: object, data: bytes) -> None:
    buf, offset = _region(address, len(data), "device write")
    buf[offset:offset + len(data)] = data


def memcpy_htod(dest: object, src: np.ndarray) -> None:
    _need_context("cuMemcpyHtoD")
    src = np.asarray(src)
    if not src.flags.c_contiguous:
        raise LogicError("cuMemcpyHtoD: the host buffer is not contiguous")
    write_device(dest, src.tobytes())


def _check_stream(stream: "Stream") -> None:
    if not isinstance(stream, Stream) or stream.handle not in STATE.streams:
        raise LogicError("invalid stream")


def memcpy_htod_async(dest: object, src: np.ndarray, stream: "Stream" = None) -> None:
    _need_context("cuMemcpyHtoDAsync")
    _check_stream(stream)
    if not _is_pinned(src):
        raise LogicError("cuMemcpyHtoDAsync: host memory is not page-locked (use pagelocked_empty)")
    STATE.htod_sources.append(src.__array_interface__["data"][0])
    write_device(dest, np.ascontiguousarray(src).tobytes())


def memcpy_dtoh_async(dest: np.ndarray, src: object, stream: "Stream" = None) -> None:
    _need_context("cuMemcpyDtoHAsync")
    _check_stream(stream)
    if not _is_pinned(dest) or not dest.flags.c_contiguous:
        raise LogicError("cuMemcpyDtoHAsync: host memory is not page-locked and contiguous")
    data = read_device(src, dest.nbytes)
    dest[...] = np.frombuffer(data, dest.dtype).reshape(dest.shape)


class Stream:
    def __init__(self, flags: int = 0) -> None:
        _need_context("cuStreamCreate")
        self.handle = STATE.next_address
        STATE.next_address += 0x100000
        STATE.streams[self.handle] = self

    def synchronize(self) -> None:
        _need_context("cuStreamSynchronize")


def install(monkeypatch, devices: List[Tuple[str, Tuple[int, int]]] = None) -> types.ModuleType:
    """Put this double into ``sys.modules`` as ``pycuda`` / ``pycuda.driver`` with a fresh state."""
    global STATE
    STATE = _State(devices or [("Orin", (8, 7))])
    driver = sys.modules[__name__]
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    package.VERSION, package.VERSION_STATUS, package.VERSION_TEXT = (2026, 1), "", "2026.1"  # type: ignore
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    from edge.inference.engines import cuda

    cuda.forget()
    monkeypatch.setattr(cuda, "_DRIVER", None)
    return driver


def leaks() -> Dict[str, int]:
    """What is still allocated or current: device buffers, pinned buffers, contexts, stack depth (all
    threads), and TensorRT objects that outlived their context (names in ``STATE.outlived``)."""
    return {"device": len(STATE.memory), "pinned": len(STATE.pinned), "contexts": len(STATE.contexts),
            "current": sum(len(s) for s in STATE.stacks.values()), "outlived": len(STATE.outlived)}
