"""Inference backends behind one small interface.

An engine takes a batch of preprocessed input tensors and returns the network's raw outputs by
tensor name; :func:`edge.inference.specs.decode` makes sense of them. Each backend lives in its own
module, imported only when chosen, so a machine without TensorRT never imports it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from edge.inference.engines.base import BACKENDS, Engine, EngineError

__all__ = ["BACKENDS", "Engine", "EngineError", "create_engine"]


def create_engine(backend: str, model_path: Path, threads: int = 0, engine_file: Optional[Path] = None,
                  input_hw: Optional[Tuple[int, int]] = None, precision: Optional[str] = None) -> Engine:
    """The engine for ``backend``: onnxruntime runs the ONNX ``model_path``; tensorrt loads the plan
    ``engine_file`` (``model_path`` itself when it ends in .engine/.plan) after checking its metadata
    against this device, the ONNX ``model_path`` it must have been built from, ``input_hw`` (height,
    width) and ``precision``; a mismatch raises EngineError with the exact rebuild command."""
    if backend == "onnxruntime":
        from edge.inference.engines.onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(Path(model_path), threads=threads)
    if backend == "tensorrt":
        from edge.inference.engines.tensorrt import open_checked

        if engine_file is None:
            if Path(model_path).suffix not in (".engine", ".plan"):
                raise EngineError("engine.backend is tensorrt but no engine file was given for %s: set "
                                  "engine.engine_file or build the default one with fallwatch-calibrate" % model_path)
            return open_checked(Path(model_path), None, input_hw, precision)
        return open_checked(Path(engine_file), Path(model_path), input_hw, precision)
    raise EngineError("unknown engine backend %r: use one of %s" % (backend, ", ".join(BACKENDS)))
