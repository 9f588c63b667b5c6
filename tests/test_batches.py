"""InputPool: the daemon's reused engine inputs (edge/inference/batches.py). Its use with TensorRT's
page-locked buffers is in tests/test_calibration_trt.py; here the engine is the base class, whose
buffers are plain NumPy arrays, as ONNX Runtime's are."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from edge.inference.batches import InputPool
from edge.inference.engines.base import Engine

ROW = (4, 5, 3)


def address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_arrays_given_back_are_lent_again_and_never_two_at_once():
    pool = InputPool(Engine())
    a, b = pool.take((1,) + ROW), pool.take((1,) + ROW)
    assert a.shape == (1,) + ROW and a.dtype == np.float32 and a.flags.c_contiguous
    assert not np.shares_memory(a, b) and pool.buffers == 2
    a[...] = 1.0
    b[...] = 2.0
    pool.give(b)
    pool.give(a)
    c, d = pool.take((1,) + ROW), pool.take((1,) + ROW)
    assert {address(c), address(d)} == {address(a), address(b)} and pool.buffers == 2
    e = pool.take((1,) + ROW)  # both lent: a third one
    assert pool.buffers == 3 and not np.shares_memory(e, c) and not np.shares_memory(e, d)


def test_buffers_grow_to_the_most_views_and_smaller_ones_are_dropped():
    pool = InputPool(Engine())
    one = pool.take((1,) + ROW)
    three = pool.take((3,) + ROW)  # a frame with three views
    assert three.shape == (3,) + ROW and pool.buffers == 2
    pool.give(one)  # too small for what frames now need: dropped
    assert pool.buffers == 1
    pool.give(three)
    again = pool.take((1,) + ROW)  # one view fits in the three-view buffer
    assert again.shape == (1,) + ROW and address(again) == address(three) and pool.buffers == 1
    other = pool.take((2, 7, 7, 3))  # another input size never gets a buffer of the wrong shape
    assert other.shape == (2, 7, 7, 3) and pool.buffers == 2
    pool.give(other)
    pool.give(again)
    assert address(pool.take((2,) + ROW)) == address(three)  # passing over the free buffer of another size
    assert address(pool.take((2, 7, 7, 3))) == address(other) and pool.buffers == 2


def test_only_arrays_it_lent_come_back_once():
    pool = InputPool(Engine())
    lent = pool.take((1,) + ROW)
    with pytest.raises(ValueError, match="not lent by this pool"):
        pool.give(np.empty((1,) + ROW, np.float32))
    with pytest.raises(ValueError, match="not lent by this pool"):
        pool.give(lent[:])  # the same memory, another array
    pool.give(lent)
    with pytest.raises(ValueError, match="given back already"):
        pool.give(lent)
    pool.close()
    assert pool.buffers == 0
    with pytest.raises(RuntimeError, match="closed"):
        pool.take((1,) + ROW)


def test_a_producer_and_a_consumer_thread_never_share_a_buffer():
    """As in the daemon: one thread takes and fills, another reads and gives back; a buffer is never
    lent twice at once, so what the reader sees is what the writer wrote."""
    import queue

    pool = InputPool(Engine())
    handed: "queue.Queue" = queue.Queue(2)
    wrong = []

    def reader() -> None:
        for k in range(500):
            array = handed.get()
            if not (array == k).all():
                wrong.append(k)
            pool.give(array)

    thread = threading.Thread(target=reader)
    thread.start()
    for k in range(500):
        array = pool.take((1 + k % 3,) + ROW)
        array[...] = k
        handed.put(array)
    thread.join(30)
    assert not thread.is_alive() and wrong == [] and pool.buffers <= 4
