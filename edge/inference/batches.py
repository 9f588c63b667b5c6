"""Reused engine inputs: preprocessing writes each frame's views straight into memory the engine
reads from (page-locked with TensorRT), instead of into a new array per frame that the engine
would then copy.

An :class:`InputPool` lends arrays from :meth:`Engine.host_buffer
<edge.inference.engines.base.Engine.host_buffer>` and takes them back once the engine has run them
(an engine is done with its input when ``run`` returns). ``edge.daemon`` uses one: its schedule
thread takes, its engine thread gives back. The pool holds at most as many buffers as were ever
lent at once (the daemon's queues bound that), each with room for the most views a frame has
needed so far.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np


class InputPool:
    """Input batches of one engine, reused. Thread-safe."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._free: List[np.ndarray] = []  # whole buffers, ready
        self._lent: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}  # id(array lent) -> (it, its whole buffer)
        self._rows = 0  # the most rows asked for so far: every new buffer has room for them
        self._closed = False

    def take(self, shape: Sequence[int]) -> np.ndarray:
        """A C-contiguous float32 array of ``shape`` (rows first), its contents undefined, to fill
        and hand to the engine; then :meth:`give` it back."""
        shape = tuple(int(d) for d in shape)
        rows, row = shape[0], shape[1:]
        with self._lock:
            if self._closed:
                raise RuntimeError("the input pool is closed")
            self._rows = capacity = max(self._rows, rows)
            found = next((k for k, b in enumerate(self._free) if b.shape[1:] == row and b.shape[0] >= rows), None)
            buffer = self._free.pop(found) if found is not None else None
        if buffer is None:
            buffer = self._engine.host_buffer((capacity,) + row)
        array = buffer[:rows]
        with self._lock:
            self._lent[id(array)] = (array, buffer)  # the array is kept alive, so its id stays its own
        return array

    def give(self, array: np.ndarray) -> None:
        """Take back an array from :meth:`take` (the engine has run it; nobody reads it any more).
        A buffer smaller than what frames now need is freed rather than kept."""
        with self._lock:
            lent = self._lent.pop(id(array), None)
            if lent is None or lent[0] is not array:
                raise ValueError("this array was not lent by this pool (or was given back already)")
            buffer = lent[1]
            keep = not self._closed and buffer.shape[0] >= self._rows
            if keep:
                self._free.append(buffer)
        if not keep:
            self._engine.free_host_buffer(buffer)

    @property
    def buffers(self) -> int:
        """How many buffers the pool holds now (free and lent)."""
        with self._lock:
            return len(self._free) + len(self._lent)

    def close(self) -> None:
        """Free every buffer, lent ones too: call it when nothing will touch them any more."""
        with self._lock:
            self._closed = True
            buffers = self._free + [buffer for _, buffer in self._lent.values()]
            self._free, self._lent = [], {}
        for buffer in buffers:
            self._engine.free_host_buffer(buffer)
