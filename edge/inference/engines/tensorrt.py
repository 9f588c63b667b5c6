"""TensorRT backend: a serialized engine built on this device by ``fallwatch-calibrate``.

One CUDA stream, page-locked host buffers and device buffers sized for the engine's largest batch,
asynchronous copies in and out around ``execute_async_v3``. Any batch up to the engine's maximum
runs at once (larger ones in chunks); an engine with a fixed batch N gets zero-padded chunks of N.
A batch written into an array from :meth:`TensorRTEngine.host_buffer` (page-locked; the daemon
preprocesses into these) is copied to the GPU straight from there; any other batch is first copied
into the engine's own page-locked input buffer (async copies need page-locked memory).
:meth:`TensorRTEngine.close` frees every buffer and destroys the execution context, engine and runtime
(in that order) inside the CUDA context, then closes the context; so does a failed constructor. An engine of a
single_person_3d model has inputs besides the image (``extra_inputs``, fed by name to :meth:`TensorRTEngine.run`):
each has the same open batch dimension, each gets its shape (``set_input_shape``) before every run. Only the tensor-name API
(TensorRT 8.5+, the one TensorRT 10 kept) is used; see :mod:`edge.inference.engines.trt_api`.
"""
from __future__ import annotations

import logging
import threading
import traceback
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from edge.inference.engines.base import Engine, EngineError

log = logging.getLogger("fallwatch.engine")


class TensorRTEngine(Engine):
    def __init__(self, plan_path: Path, device_index: int = 0, verbose: bool = False) -> None:
        from edge.inference.engines.cuda import CudaContext
        from edge.inference.engines.trt_api import import_tensorrt, make_logger

        trt = import_tensorrt()
        self._trt = trt
        try:
            data = Path(plan_path).read_bytes()
        except OSError as exc:
            raise EngineError("cannot read the TensorRT engine %s (%s)" % (plan_path, exc.strerror)) from None
        self._cuda_context = CudaContext(device_index)
        self._host: Dict[str, np.ndarray] = {}
        self._device: Dict[str, Any] = {}
        self._lent: List[np.ndarray] = []  # page-locked input arrays handed out by host_buffer
        self._lent_lock = threading.Lock()  # host_buffer and free_host_buffer come from different threads
        try:
            with self._cuda_context.active() as cuda:
                self._runtime = trt.Runtime(make_logger(verbose))
                self._engine = self._runtime.deserialize_cuda_engine(data)
                if self._engine is None:
                    raise EngineError("TensorRT cannot load the engine %s: it is corrupted or was built by another "
                                      "TensorRT version; rebuild it on this device with fallwatch-calibrate" % plan_path)
                self._setup(cuda)
        except BaseException as exc:
            traceback.clear_frames(exc.__traceback__)  # no TensorRT object may outlive the context via a traceback
            self.close()
            raise

    def _setup(self, cuda: Any) -> None:
        trt, engine = self._trt, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        shapes = {n: tuple(int(d) for d in engine.get_tensor_shape(n)) for n in inputs}
        images = [n for n in inputs if len(shapes[n]) == 4]
        if len(inputs) != 1 and len(images) != 1:
            raise EngineError("the engine has %d inputs (%s); a pose network has one image input (4-D) and maybe "
                              "others (a single_person_3d model's camera geometry)" % (len(inputs), ", ".join(inputs)))
        self.input_name = inputs[0] if len(inputs) == 1 else images[0]
        self._inputs = tuple(inputs)
        self.output_names = tuple(n for n in names if n not in shapes)
        shape = shapes[self.input_name]
        self._dynamic = shape[0] < 0
        if any(d < 0 for d in shape[1:]):
            raise EngineError("the engine's input %s has dynamic size %s; build it for a fixed input size"
                              % (self.input_name, shape))
        if self._dynamic:
            low, _, high = engine.get_tensor_profile_shape(self.input_name, 0)
            self._min_batch, self.max_batch = int(low[0]), int(high[0])
        else:
            self._min_batch = self.max_batch = shape[0]
        self.input_shape = (-1 if self._dynamic else shape[0],) + shape[1:]
        for name in inputs:
            other = shapes[name]
            if name != self.input_name and (not other or any(d < 0 for d in other[1:]) or (other[0] < 0) != self._dynamic):
                raise EngineError("the engine's input %s has shape %s; besides the image an input may have an open "
                                  "batch dimension (open like the image's %s) and nothing else open"
                                  % (name, other, self.input_name))
        self.extra_inputs = {n: (-1 if self._dynamic else shapes[n][0],) + shapes[n][1:] for n in inputs
                             if n != self.input_name}
        self._context = engine.create_execution_context()
        if self._context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        full = {n: (self.max_batch,) + shapes[n][1:] for n in inputs}
        if self._dynamic and not self._set_batch(self.max_batch):
            raise EngineError("the engine refuses its own maximum input shapes %s" % (full,))
        self._stream = cuda.Stream()
        self.output_shapes = {}
        for name in names:
            dims = full[name] if name in full else tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in dims):
                raise EngineError("output %s has an unknown shape %s at batch %d" % (name, dims, self.max_batch))
            if name not in full:
                self.output_shapes[name] = (-1 if self._dynamic else dims[0],) + dims[1:]
            host = cuda.pagelocked_empty(dims, trt.nptype(engine.get_tensor_dtype(name)))
            self._host[name] = host
            self._device[name] = cuda.mem_alloc(host.nbytes)
            if not self._context.set_tensor_address(name, int(self._device[name])):
                raise EngineError("TensorRT refused the buffer of tensor %s" % name)

    def _set_batch(self, size: int) -> bool:
        """Tell the context the batch of every input (dynamic engines): False when the profile refuses it."""
        return all(self._context.set_input_shape(n, (size,) + tuple(self._engine.get_tensor_shape(n))[1:])
                   for n in self._inputs)

    def host_buffer(self, shape: Any) -> np.ndarray:
        """A page-locked float32 array of ``shape``: a batch written into it (or a leading slice of it)
        goes to the GPU with no staging copy. Freed by :meth:`free_host_buffer` or :meth:`close`."""
        if self._cuda_context is None:
            raise EngineError("the TensorRT engine was closed and cannot run any more")
        with self._cuda_context.active() as cuda:
            array = cuda.pagelocked_empty(tuple(int(d) for d in shape), np.float32)
        with self._lent_lock:
            self._lent.append(array)
        return array

    def free_host_buffer(self, array: np.ndarray) -> None:
        from edge.inference.engines.cuda import free_host

        with self._lent_lock:
            if self._cuda_context is None or not any(a is array for a in self._lent):
                return  # freed by close(), or not ours
            self._lent = [a for a in self._lent if a is not array]
        with self._cuda_context.active():
            free_host(array)

    def _pinned(self, chunk: np.ndarray) -> bool:
        """Whether ``chunk`` lies in an array from :meth:`host_buffer` (and can be copied from directly)."""
        return chunk.flags.c_contiguous and chunk.dtype == np.float32 and any(
            np.may_share_memory(chunk, a) for a in list(self._lent))

    def run(self, batch: np.ndarray, extra: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
        """Run ``(N, ...)`` float32 inputs; N may exceed the engine's maximum (run in chunks). ``extra``: the
        engine's other inputs by name (``extra_inputs``), ``(N, ...)`` like ``batch``."""
        if self._cuda_context is None:
            raise EngineError("the TensorRT engine was closed and cannot run any more")
        batch = np.asarray(batch)
        if batch.ndim != len(self.input_shape) or tuple(batch.shape[1:]) != tuple(self.input_shape[1:]):
            raise EngineError("input of shape %s does not fit the engine's %s %s"
                              % (batch.shape, self.input_name, self.input_shape))
        others = {n: np.asarray(v, np.float32) for n, v in (extra or {}).items() if n in self.extra_inputs}
        missing = [n for n in self.extra_inputs if n not in others]
        if missing:
            raise EngineError("the engine also takes %s, which nothing fed" % ", ".join(missing))
        for name, value in others.items():
            if value.shape != (batch.shape[0],) + tuple(self.extra_inputs[name][1:]):
                raise EngineError("input %s of shape %s does not fit the engine's %s for a batch of %d"
                                  % (name, value.shape, self.extra_inputs[name], batch.shape[0]))
        parts: List[Dict[str, np.ndarray]] = []
        with self._cuda_context.active() as cuda:
            for start in range(0, batch.shape[0], self.max_batch):
                end = start + self.max_batch
                parts.append(self._run_chunk(cuda, batch[start:end], {n: v[start:end] for n, v in others.items()}))
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _run_chunk(self, cuda: Any, chunk: np.ndarray, others: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        n = chunk.shape[0]
        size = max(n, self._min_batch)
        if size == n and self._pinned(chunk):
            source = chunk  # preprocessed into page-locked memory: no staging copy
        else:
            host_in = self._host[self.input_name]
            host_in[:n] = chunk
            if size > n:
                host_in[n:size] = 0
            source = host_in[:size]
        if self._dynamic and not self._set_batch(size):
            raise EngineError("the engine refused a batch of %d (its profile allows %d to %d)"
                              % (size, self._min_batch, self.max_batch))
        cuda.memcpy_htod_async(self._device[self.input_name], source, self._stream)
        for name, value in others.items():  # staged in page-locked memory: async copies need it
            host = self._host[name]
            host[:n] = value
            if size > n:
                host[n:size] = 0
            cuda.memcpy_htod_async(self._device[name], host[:size], self._stream)
        if not self._context.execute_async_v3(self._stream.handle):
            raise EngineError("TensorRT failed to run the engine (execute_async_v3 returned false)")
        for name in self.output_names:
            cuda.memcpy_dtoh_async(self._host[name][:size], self._device[name], self._stream)
        self._stream.synchronize()
        return {name: np.array(self._host[name][:n], dtype=np.float32) for name in self.output_names}

    def close(self) -> None:
        """Free the buffers, the TensorRT objects, then the CUDA context; safe to call twice."""
        context = getattr(self, "_cuda_context", None)
        if context is None:
            return
        from edge.inference.engines.cuda import free_host

        try:
            with context.active():
                for buffer in self._device.values():
                    buffer.free()
                for array in list(self._host.values()) + self._lent:
                    free_host(array)
                self._device, self._host, self._lent = {}, {}, []
                for attr in ("_context", "_engine", "_runtime", "_stream"):  # the order TensorRT needs
                    if hasattr(self, attr):
                        delattr(self, attr)
        finally:
            context.close()
            self._cuda_context = None


def runtime_versions() -> Dict[str, str]:
    """TensorRT and CUDA facts for ``fallwatch doctor``; EngineError when they cannot be imported."""
    from edge.inference.engines.device import current_device

    facts = current_device()
    out = {"TensorRT": facts.tensorrt_version, "GPU": "%s (compute %s)" % (facts.device_name,
                                                                          facts.compute_capability)}
    if facts.l4t_release:
        out["L4T"] = facts.l4t_release
    return out


def engine_path_for(config: Any, model_path: Path) -> Path:
    """``engine.engine_file``, or the default file name for this model, input size and precision."""
    from edge.inference.engines.metadata import default_engine_path

    if config.engine.engine_file is not None:
        return Path(config.engine.engine_file)
    return default_engine_path(config.paths.state_dir, model_path,
                               (config.model.input_height, config.model.input_width), config.engine.precision)


def open_checked(engine_path: Path, model_path: Optional[Path], input_hw: Optional[Tuple[int, int]],
                 precision: Optional[str] = None) -> TensorRTEngine:
    """Check the engine's metadata against this device and model, then load it."""
    from edge.inference.engines.device import current_device
    from edge.inference.engines.metadata import check_engine

    check_engine(engine_path, current_device(), model_path, input_hw, precision)
    return TensorRTEngine(engine_path)
