"""The one module that imports TensorRT (lazily): everything else gets the module from here.

Supported: TensorRT 8.5 / 8.6 (JetPack 5.1, 6.0) and 10.x (JetPack 6.1+), through the tensor-name
API they share (``num_io_tensors``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``, ``build_serialized_network``, ``set_memory_pool_limit``). The binding API,
``build_engine`` and ``max_workspace_size`` (removed in TensorRT 10) are never used.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Tuple

from edge.inference.engines.base import EngineError

MIN_VERSION = (8, 5)
_MODULE: Optional[Any] = None


def import_tensorrt() -> Any:
    """The ``tensorrt`` module; EngineError saying how to get it when it is missing or too old."""
    global _MODULE
    if _MODULE is None:
        try:
            import tensorrt  # noqa: the one import of TensorRT in fallwatch
        except ImportError as exc:
            raise EngineError(
                "TensorRT's Python bindings cannot be imported (%s)." % exc,
                "On a Jetson they come with JetPack (sudo apt install python3-libnvinfer) and the venv must be "
                "made with --system-site-packages; off a Jetson use engine.backend: onnxruntime "
                "(fallwatch-calibrate --backend onnxruntime)", joint=" ") from None
        version = parse_version(getattr(tensorrt, "__version__", ""))
        if version < MIN_VERSION:
            raise EngineError("TensorRT %s is too old" % getattr(tensorrt, "__version__", "?"),
                              "fallwatch needs %d.%d or newer (JetPack 5.1+)" % MIN_VERSION)
        _MODULE = tensorrt
    return _MODULE


def forget() -> None:
    """Drop the cached module (tests swap the TensorRT double between API generations)."""
    global _MODULE
    _MODULE = None


def parse_version(text: str) -> Tuple[int, ...]:
    """``"8.6.1.6"`` -> ``(8, 6, 1, 6)``; ``()`` when there is no version number in ``text``."""
    found = re.match(r"\s*(\d+(?:\.\d+)*)", text or "")
    return tuple(int(p) for p in found.group(1).split(".")) if found else ()


def tensorrt_version() -> str:
    return str(import_tensorrt().__version__)


def make_logger(verbose: bool = False) -> Any:
    trt = import_tensorrt()
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
