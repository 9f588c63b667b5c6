"""The one module that imports pycuda (lazily): a CUDA context, device facts, freeing memory.

The context is created once per engine, popped right away, and pushed only around the calls that
need it (:meth:`CudaContext.active`), so an engine may be used from another thread than the one
that made it. :meth:`CudaContext.close` makes it current and detaches it, so it is destroyed from
any thread (pycuda only leaks a context detached from another thread where it is not current);
nothing is left current afterwards. Whatever TensorRT made in the context must be destroyed first.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Tuple

from edge.inference.engines.base import EngineError

_DRIVER: Optional[Any] = None


def import_cuda() -> Any:
    """``pycuda.driver``, initialised; EngineError saying how to get it when it is missing."""
    global _DRIVER
    if _DRIVER is None:
        try:
            import pycuda.driver as driver  # noqa: the one import of pycuda in fallwatch
        except ImportError as exc:
            raise EngineError(
                "pycuda cannot be imported (%s)." % exc,
                "On a Jetson build it against JetPack's CUDA: export PATH=/usr/local/cuda/bin:$PATH; "
                "pip install pycuda (see the README, 'On a Jetson')", joint=" ") from None
        try:
            driver.init()
        except Exception as exc:  # pycuda raises its own error types
            raise EngineError("CUDA cannot be initialised (%s)" % exc,
                              "is this a Jetson with JetPack, and may this user use the GPU (group video)?") from None
        _DRIVER = driver
    return _DRIVER


def forget() -> None:
    """Drop the cached module (tests swap the pycuda double)."""
    global _DRIVER
    _DRIVER = None


def device_facts(index: int = 0) -> Tuple[str, str]:
    """``(device name, compute capability "major.minor")`` of CUDA device ``index``."""
    cuda = import_cuda()
    try:
        device = cuda.Device(index)
        major, minor = device.compute_capability()
        return str(device.name()), "%d.%d" % (major, minor)
    except Exception as exc:
        raise EngineError("CUDA device %d cannot be queried (%s)" % (index, exc)) from None


class CudaContext:
    """A CUDA context of its own on device ``index``; not current except inside :meth:`active`."""

    def __init__(self, index: int = 0) -> None:
        self.cuda = import_cuda()
        try:
            self._context = self.cuda.Device(index).make_context()
        except Exception as exc:
            raise EngineError("cannot create a CUDA context on device %d (%s)" % (index, exc)) from None
        self._context.pop()

    @contextlib.contextmanager
    def active(self) -> Iterator[Any]:
        """Make the context current for the block; yields ``pycuda.driver``."""
        if self._context is None:
            raise EngineError("the CUDA context was closed; the engine cannot be used any more")
        self._context.push()
        try:
            yield self.cuda
        finally:
            self._context.pop()

    def close(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            try:
                context.push()  # current here, so pycuda destroys it whichever thread made it
            finally:
                context.detach()


def free_host(array: Any) -> None:
    """Release a page-locked array from ``pagelocked_empty`` now rather than at garbage collection."""
    owner = getattr(array, "base", None)
    if owner is not None and hasattr(owner, "free"):
        owner.free()
