"""What every inference backend is: the :class:`Engine` interface and :class:`EngineError`.

Leaf of edge.inference.engines: the backends import it, and the package's :func:`create_engine` imports
the backends, so nothing imports in a circle.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from edge.errors import FallwatchError

BACKENDS = ("onnxruntime", "tensorrt")


class EngineError(FallwatchError, RuntimeError):
    """The engine cannot be created or run; ``fix`` says what to do (when something can be done)."""


class Engine:
    """Interface of every backend.

    ``input_name``: the input tensor's name; ``input_shape``: its shape with the batch
    dimension as given by the model (``-1`` when dynamic); ``output_names``: output tensors;
    ``output_shapes``: their shapes by name where the backend knows them (-1: not fixed).
    """

    input_name: str
    input_shape: Sequence[int]
    output_names: Sequence[str]
    output_shapes: Mapping[str, Tuple[int, ...]] = {}
    extra_inputs: Mapping[str, Tuple[int, ...]] = {}  # inputs besides the image (single_person_3d models)

    def run(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        """Run a float32 batch ``(N, ...)``; return each output ``(N, ...)`` by name."""
        raise NotImplementedError

    def host_buffer(self, shape: Sequence[int]) -> np.ndarray:
        """A float32 array of ``shape`` (batch first) to write inputs into and hand to :meth:`run`,
        whole or as a leading slice, again and again: the memory this backend reads its inputs from
        fastest. Here plain memory (ONNX Runtime reads a float32 C-contiguous input in place);
        TensorRT gives page-locked memory, copied to the device straight from. :meth:`run` is done
        with its input when it returns. The engine owns the array: it is valid until
        :meth:`free_host_buffer` or :meth:`close`."""
        return np.empty(tuple(int(d) for d in shape), np.float32)

    def free_host_buffer(self, array: np.ndarray) -> None:
        """Give back an array from :meth:`host_buffer` (nothing to do after :meth:`close`)."""

    def close(self) -> None:
        """Release the backend's resources; the engine is unusable afterwards."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
