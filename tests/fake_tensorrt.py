"""An in-memory double of the TensorRT Python API calls fallwatch makes, in two generations:

* ``make_tensorrt("8.6.1.6")``: TensorRT 8.5/8.6 (JetPack 5/6.0): the tensor-name API *and* the
  deprecated binding API (``get_binding_shape``, ``execute_async_v2``, ``build_engine``,
  ``max_workspace_size``), whose use is recorded in ``module.deprecated_calls`` so tests can insist
  it stays empty; a network without EXPLICIT_BATCH cannot parse ONNX (as in 8.x).
* ``make_tensorrt("10.3.0")``: TensorRT 10: the binding API, ``build_engine`` and
  ``max_workspace_size`` do not exist (AttributeError, as on the real module).

It is faithful where misuse would hide: builder objects accept only their real attributes
(``__slots__``), profiles are checked (dynamic inputs need one; min <= opt <= max; the calibration
profile must be set for INT8 with dynamic inputs), the calibrator must have called its base
``__init__``, and calibration reads the batches from the pycuda double's device memory at the
pointers ``get_batch`` returns. The "engine" is the ONNX model plus a JSON header; running it runs
the ONNX model with ONNX Runtime on the bytes at the tensor addresses, so outputs are real.
``deserialize_cuda_engine`` returns None for bytes it cannot read or from another version, as the
real one does.

Every public name matches the real bindings of its generation (tests/test_calibration_doubles.py lists
them): ``BuilderFlag`` and ``NetworkDefinitionCreationFlag`` carry each generation's NvInfer.h members
and values, ``IBuilderConfig.flags`` is the int bit mask; state the real API does not expose is
underscored. Like the real pybind trampoline (python/src/infer/pyInt8.cpp), an exception raised in a
calibrator's ``get_batch``, ``read_calibration_cache`` or ``write_calibration_cache`` is printed as
``[ERROR] Exception caught in get_batch(): ...`` and becomes "no batch" / "no cache": it never
reaches the caller. Builders, networks, parsers, configs, profiles, timing caches, serialized
engines, runtimes, engines and execution contexts are tracked by the pycuda double under the CUDA
context current when they were made (see fake_pycuda.Context). Test instrumentation that is not
TensorRT: ``deprecated_calls``, ``builds`` (a :class:`Build` copy per build) and ``calibration_batches``
(every input of every calibration batch, as read from device memory).
"""
from __future__ import annotations

import enum
import json
import struct
import sys
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fake_pycuda

MAGIC = b"FAKETRT1"


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32}


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


def _network_flags(major: int) -> type:
    """NetworkDefinitionCreationFlag: EXPLICIT_PRECISION was removed in 10.0, STRONGLY_TYPED added (NvInfer.h)."""
    members = {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1} if major < 10 else {"EXPLICIT_BATCH": 0,
                                                                                    "STRONGLY_TYPED": 1}
    return enum.IntEnum("NetworkDefinitionCreationFlag", members)


def _builder_flags(major: int) -> type:
    """The BuilderFlag members fallwatch (and its tests) use, at their NvInfer.h bit positions: 10.0 dropped
    STRICT_TYPES (4 in 8.x), which moved every later flag down by one."""
    members = {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3}
    members["OBEY_PRECISION_CONSTRAINTS"] = 10 if major < 10 else 9
    return enum.IntEnum("BuilderFlag", members)


class CalibrationAlgoType(enum.IntEnum):
    LEGACY_CALIBRATION = 0
    ENTROPY_CALIBRATION = 1
    ENTROPY_CALIBRATION_2 = 2
    MINMAX_CALIBRATION = 3


_CACHE_ALGORITHM = {CalibrationAlgoType.ENTROPY_CALIBRATION_2: "EntropyCalibration2",
                    CalibrationAlgoType.MINMAX_CALIBRATION: "MinMaxCalibration"}


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1


class DeviceType(enum.IntEnum):
    GPU = 0
    DLA = 1


class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class Logger:
    Severity = _Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (_Severity.INTERNAL_ERROR, _Severity.ERROR, _Severity.WARNING,
                                                     _Severity.INFO, _Severity.VERBOSE)

    def __init__(self, min_severity: _Severity = _Severity.WARNING) -> None:
        self.min_severity = min_severity
        self._messages: List[str] = []

    def log(self, severity: _Severity, message: str) -> None:
        self._messages.append("%s: %s" % (severity.name, message))


def nptype(dtype: DataType) -> type:
    return _NP[DataType(dtype)]


def _onnx_io(onnx_bytes: bytes) -> Tuple[List[Tuple[str, Tuple[int, ...]]], List[Tuple[str, Tuple[int, ...]]]]:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    initializers = {i.name for i in model.graph.initializer}

    def dims(value) -> Tuple[int, ...]:
        return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)

    inputs = [(v.name, dims(v)) for v in model.graph.input if v.name not in initializers]
    return inputs, [(v.name, dims(v)) for v in model.graph.output]


def _fits(shape: Sequence[int], network_shape: Sequence[int]) -> bool:
    return len(shape) == len(network_shape) and all(n < 0 or n == s for s, n in zip(shape, network_shape))


def _trampoline(call: Any, name: str, failed: Any) -> Any:
    """A calibrator callback as the bindings' pybind trampoline runs it: an exception is printed to
    stderr as ``[ERROR] Exception caught in NAME(): ...`` and becomes ``failed`` (None: no batch / no
    cache); it never reaches the caller of build_serialized_network (pyInt8.cpp, TensorRT 8.5+)."""
    try:
        return call()
    except Exception as exc:
        print("[ERROR] Exception caught in %s(): %s: %s" % (name, type(exc).__name__, exc), file=sys.stderr)
        return failed


def _pointers(result: Any, count: int) -> Optional[List[int]]:
    """get_batch's result as the trampoline reads it: None or empty is "no more batches"; anything else
    must convert to a list of ``count`` integers."""
    if result is None or len(result) == 0:
        return None
    if len(result) != count or not all(isinstance(p, (int, np.integer)) for p in result):
        raise RuntimeError("Unable to cast Python instance to C++ type")
    return [int(p) for p in result]


class Build:
    """Test instrumentation, not TensorRT: what one ``build_serialized_network`` was given, copied, so
    the record keeps no TensorRT object alive (the calibrator is the caller's own Python object)."""

    def __init__(self, config: Any, network: Any) -> None:
        self.flags = int(config.flags)
        self.pools = dict(config._pools)
        self.profiles = [dict(p._shapes) for p in config._profiles]
        calibration = config._calibration_profile
        self.calibration_profile = dict(calibration._shapes) if calibration is not None else None
        self.calibrator = config.int8_calibrator
        self.default_device_type, self.DLA_core = config.default_device_type, config.DLA_core
        self.layers = list(network._layers)

    def get_flag(self, flag: Any) -> bool:
        return bool(self.flags & (1 << int(flag)))


def make_tensorrt(version: str = "8.6.1.6") -> types.ModuleType:
    """A fresh double of the ``tensorrt`` module for ``version`` (8.5/8.6 or 10.x behaviour)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.deprecated_calls = []  # names of deprecated calls made (8.x)
    trt.builds = []  # a Build record (copies, not the live objects) of every build_serialized_network
    trt.calibration_batches = []  # per calibration batch: {input name: the array read at get_batch's pointer}
    BuilderFlag = _builder_flags(major)
    NetworkDefinitionCreationFlag = _network_flags(major)
    tag = "".join(version.split(".")[:2]) + "01" if major < 10 else "%d%02d%02d" % tuple(
        int(p) for p in (version.split(".") + ["0", "0"])[:3])
    for name, value in (("DataType", DataType), ("TensorIOMode", TensorIOMode), ("BuilderFlag", BuilderFlag),
                        ("NetworkDefinitionCreationFlag", NetworkDefinitionCreationFlag),
                        ("MemoryPoolType", MemoryPoolType), ("DeviceType", DeviceType), ("Logger", Logger),
                        ("nptype", nptype), ("CalibrationAlgoType", CalibrationAlgoType)):
        setattr(trt, name, value)
    trt.float32, trt.float16, trt.int8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32

    def deprecated(name: str):
        def call(*args, **kwargs):
            trt.deprecated_calls.append(name)
            raise NotImplementedError("the double does not implement deprecated %s" % name)
        return call

    class _CalibratorBase:
        """What a subclass must override is what the real bindings bind "for documentation only"."""

        _algorithm = CalibrationAlgoType.LEGACY_CALIBRATION

        def __init__(self) -> None:
            self._base_initialised = True

        def get_algorithm(self) -> CalibrationAlgoType:
            return self._algorithm

        def get_batch_size(self) -> int:
            return 0

        def get_batch(self, names: List[str]) -> List[int]:
            return []

        def read_calibration_cache(self) -> Any:
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    class IInt8EntropyCalibrator2(_CalibratorBase):
        _algorithm = CalibrationAlgoType.ENTROPY_CALIBRATION_2

    class IInt8MinMaxCalibrator(_CalibratorBase):
        _algorithm = CalibrationAlgoType.MINMAX_CALIBRATION

    trt.IInt8EntropyCalibrator2, trt.IInt8MinMaxCalibrator = IInt8EntropyCalibrator2, IInt8MinMaxCalibrator

    class ITensor:
        def __init__(self, name: str, shape: Tuple[int, ...]) -> None:
            self.name, self.shape, self.dtype = name, shape, DataType.FLOAT

    class ILayer:
        __slots__ = ("name", "_outputs", "precision", "_output_types")

        def __init__(self, name: str, outputs: List[str]) -> None:
            self.name, self._outputs = name, [ITensor(o, ()) for o in outputs]
            self.precision = DataType.FLOAT
            self._output_types: Dict[int, DataType] = {}

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

        def set_output_type(self, index: int, dtype: DataType) -> None:
            if not 0 <= index < len(self._outputs):
                raise IndexError("layer %s has no output %d" % (self.name, index))
            self._output_types[index] = DataType(dtype)

        def get_output_type(self, index: int) -> DataType:
            return self._output_types.get(index, DataType.FLOAT)

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self._flags = flags
            self._inputs: List[ITensor] = []
            self._outputs: List[ITensor] = []
            self._layers: List[ILayer] = []
            self._onnx: Optional[bytes] = None

        @property
        def num_layers(self) -> int:
            return len(self._layers)

        def get_layer(self, index: int) -> ILayer:
            return self._layers[index]

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

    class _ParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def desc(self) -> str:
            return self.text

        def __str__(self) -> str:
            return "In node -1 (parse): %s" % self.text

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            self._network, self._errors = network, []  # the real parser keeps its network alive
            fake_pycuda.track(self, "OnnxParser")

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> _ParserError:
            return self._errors[index]

        def parse(self, model: bytes, path: Optional[str] = None) -> bool:
            if major < 10 and not self._network._flags & (1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)):
                self._errors.append(_ParserError("the network must be created with EXPLICIT_BATCH"))
                return False
            try:
                inputs, outputs = _onnx_io(bytes(model))
            except Exception as exc:
                self._errors.append(_ParserError("cannot read the ONNX model: %s" % exc))
                return False
            import onnx

            nodes = onnx.load_from_string(bytes(model)).graph.node
            network = self._network
            network._layers = [ILayer(n.name or "node_of_" + n.output[0], list(n.output)) for n in nodes]
            network._inputs = [ITensor(n, s) for n, s in inputs]
            network._outputs = [ITensor(n, s) for n, s in outputs]
            network._onnx = bytes(model)
            return True

    trt.OnnxParser = OnnxParser

    class IOptimizationProfile:
        __slots__ = ("_shapes", "_builder", "__weakref__")

        def __init__(self) -> None:
            self._shapes: Dict[str, Tuple[Tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
            lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
            if not (len(lo) == len(mid) == len(hi)) or any(a > b or b > c for a, b, c in zip(lo, mid, hi)):
                raise ValueError("profile for %s needs min <= opt <= max of one rank: %s %s %s" % (input, lo, mid, hi))
            self._shapes[input] = (lo, mid, hi)

        def get_shape(self, input: str) -> List[Tuple[int, ...]]:
            return list(self._shapes[input]) if input in self._shapes else []

    class ITimingCache:
        __slots__ = ("_data", "__weakref__")

        def __init__(self, data: bytes) -> None:
            self._data = data

        def serialize(self) -> bytes:
            return self._data

    class IHostMemory:
        """The serialized engine: a buffer (``bytes(memory)``) of ``nbytes`` bytes."""

        __slots__ = ("_data", "__weakref__")

        def __init__(self, data: bytes) -> None:
            self._data = data
            fake_pycuda.track(self, "IHostMemory")

        @property
        def nbytes(self) -> int:
            return len(self._data)

        def __bytes__(self) -> bytes:
            return self._data

    config_slots = ["flags", "_pools", "int8_calibrator", "default_device_type", "DLA_core", "_profiles",
                    "_calibration_profile", "_timing_cache", "_builder", "__weakref__"]
    if major < 10:
        config_slots.append("_max_workspace_size")

    class IBuilderConfig:
        __slots__ = tuple(config_slots)

        def __init__(self) -> None:
            self.flags = 0  # a bit mask, 1 << BuilderFlag, as IBuilderConfig::getFlags()
            self._pools: Dict[MemoryPoolType, int] = {}
            self.int8_calibrator = None
            self.default_device_type, self.DLA_core = DeviceType.GPU, -1
            self._profiles: List[IOptimizationProfile] = []
            self._calibration_profile: Optional[IOptimizationProfile] = None
            self._timing_cache: Optional[ITimingCache] = None

        def set_flag(self, flag: Any) -> None:
            self.flags |= 1 << int(BuilderFlag(flag))

        def clear_flag(self, flag: Any) -> None:
            self.flags &= ~(1 << int(BuilderFlag(flag)))

        def get_flag(self, flag: Any) -> bool:
            return bool(self.flags & (1 << int(BuilderFlag(flag))))

        def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
            if int(pool_size) <= 0:
                raise ValueError("pool size must be positive")
            self._pools[MemoryPoolType(pool)] = int(pool_size)

        def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
            return self._pools.get(MemoryPoolType(pool), 0)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self._profiles.append(profile)
            return len(self._profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self._profiles)

        def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
            self._calibration_profile = profile
            return True

        def get_calibration_profile(self) -> Optional[IOptimizationProfile]:
            return self._calibration_profile

        def create_timing_cache(self, serialized_timing_cache: bytes) -> Optional[ITimingCache]:
            data = bytes(serialized_timing_cache)
            if data and not data.startswith(b"TIMING" + tag.encode()):
                return None  # the real builder logs "Failed to deserialize" and gives no cache
            cache = ITimingCache(data or b"TIMING" + tag.encode() + b"\n")
            fake_pycuda.track(cache, "ITimingCache")
            return cache

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self._timing_cache = cache
            return True

        def get_timing_cache(self) -> Optional[ITimingCache]:
            return self._timing_cache

    if major < 10:
        def _get_ws(self):
            trt.deprecated_calls.append("max_workspace_size")
            return 0

        def _set_ws(self, value):
            trt.deprecated_calls.append("max_workspace_size")

        IBuilderConfig.max_workspace_size = property(_get_ws, _set_ws)

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self._logger = logger
            self.platform_has_fast_fp16 = True
            self.platform_has_fast_int8 = True
            self.num_DLA_cores = 2
            fake_pycuda.track(self, "Builder")

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            if flags & ~((1 << len(NetworkDefinitionCreationFlag)) - 1):
                raise TypeError("unsupported network flags %d" % flags)
            network = INetworkDefinition(int(flags))
            network._builder = self  # the bindings keep the builder alive while the network lives
            fake_pycuda.track(network, "INetworkDefinition")
            return network

        def create_builder_config(self) -> IBuilderConfig:
            config = IBuilderConfig()
            config._builder = self  # likewise: the config keeps the builder alive
            fake_pycuda.track(config, "IBuilderConfig")
            return config

        def create_optimization_profile(self) -> IOptimizationProfile:
            profile = IOptimizationProfile()
            profile._builder = self  # reference_internal: a profile keeps the builder alive
            fake_pycuda.track(profile, "IOptimizationProfile")
            return profile

        def _fail(self, text: str) -> None:
            self._logger.log(_Severity.ERROR, text)

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Optional[Any]:
            trt.builds.append(Build(config, network))
            if network._onnx is None:
                return self._fail("the network is empty")
            profile = None
            dynamic = [t for t in network._inputs if -1 in t.shape]
            if dynamic:
                if not config._profiles:
                    return self._fail("Network has dynamic or shape inputs, but no optimization profile has been defined.")
                profile = config._profiles[0]
                for t in dynamic:
                    if t.name not in profile._shapes or not all(_fits(s, t.shape) for s in profile._shapes[t.name]):
                        return self._fail("profile does not fit input %s %s" % (t.name, t.shape))
            if config.default_device_type == DeviceType.DLA and not 0 <= config.DLA_core < self.num_DLA_cores:
                return self._fail("DLA core %d does not exist" % config.DLA_core)
            scales: Dict[str, float] = {}
            if config.get_flag(BuilderFlag.INT8):
                calibrator = config.int8_calibrator
                if calibrator is None:
                    return self._fail("INT8 without a calibrator needs explicit dynamic ranges")
                if not getattr(calibrator, "_base_initialised", False):
                    raise TypeError("%s.__init__() must be called when overriding __init__" % type(calibrator).__name__)
                if dynamic and config._calibration_profile is None:
                    return self._fail("Calibration profile must be set for INT8 with dynamic inputs")
                scales = self._calibrate(network, config, calibrator)
                if scales is None:
                    return None
            obey = config.get_flag(BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            header = {"version": version, "onnx_size": len(network._onnx),
                      "inputs": [[t.name, list(t.shape)] for t in network._inputs],
                      "outputs": [[t.name, list(t.shape)] for t in network._outputs],
                      "profile": {k: [list(s) for s in v] for k, v in (profile._shapes.items() if profile else [])},
                      "int8": config.get_flag(BuilderFlag.INT8), "fp16": config.get_flag(BuilderFlag.FP16),
                      "fp16_layers": [layer.name for layer in network._layers
                                      if layer.precision == DataType.HALF and obey],
                      "scales": scales}
            blob = json.dumps(header).encode()
            return IHostMemory(MAGIC + struct.pack("<I", len(blob)) + blob + network._onnx)

        def _calibrate(self, network: INetworkDefinition, config: IBuilderConfig, calibrator: Any):
            cached = _trampoline(calibrator.read_calibration_cache, "read_calibration_cache", None)
            if cached:
                text = bytes(cached).decode("ascii", "replace")
                return {line.rsplit(": ", 1)[0]: 0.0 for line in text.splitlines()[1:] if line}
            names = [t.name for t in network._inputs]
            calib = config._calibration_profile
            shapes = {}
            for t in network._inputs:
                if calib is not None and t.name in calib._shapes:
                    shapes[t.name] = calib._shapes[t.name][1]
                elif -1 in t.shape:
                    return self._fail("Calibration profile has no shape for dynamic input %s" % t.name)
                else:
                    shapes[t.name] = t.shape
            batch = _trampoline(calibrator.get_batch_size, "get_batch_size", -1)
            for name in names:
                if shapes[name][0] != batch:
                    return self._fail("calibration batch size %d does not match the calibration shape %s of %s"
                                      % (batch, shapes[name], name))
            peaks, batches = {n: 0.0 for n in names}, 0
            while True:
                # one device pointer per input, in the order of ``names`` (IInt8Calibrator::getBatch)
                pointers = _trampoline(lambda: _pointers(calibrator.get_batch(names), len(names)), "get_batch", None)
                if not pointers:
                    break
                read = {}
                for name, pointer in zip(names, pointers):
                    data = fake_pycuda.read_device(pointer, int(np.prod(shapes[name])) * 4)
                    read[name] = np.frombuffer(data, np.float32).reshape(shapes[name]).copy()
                    peaks[name] = max(peaks[name], float(np.abs(read[name]).max()))
                trt.calibration_batches.append(read)
                batches += 1
            if batches == 0:
                return self._fail("Calibration failure occurred with no scaling factors detected.")
            scales = {n: peaks[n] / 127.0 for n in names}
            for t in network._outputs:
                scales[t.name] = 1.0 / 127.0
            lines = ["TRT-%s-%s" % (tag, _CACHE_ALGORITHM[calibrator.get_algorithm()])]
            lines += ["%s: %s" % (n, struct.pack(">f", s).hex()) for n, s in scales.items()]
            cache = memoryview(("\n".join(lines) + "\n").encode("ascii"))
            _trampoline(lambda: calibrator.write_calibration_cache(cache), "write_calibration_cache", None)
            return scales

    if major < 10:
        Builder.build_engine = deprecated("build_engine")
    trt.Builder = Builder

    class IExecutionContext:
        def __init__(self, engine: "ICudaEngine") -> None:
            self._engine = engine  # create_execution_context: the context keeps its engine alive
            fake_pycuda.track(self, "IExecutionContext")
            self._shapes: Dict[str, Tuple[int, ...]] = {}
            self._addresses: Dict[str, int] = {}
            self._executions = 0

        @property
        def engine(self) -> "ICudaEngine":
            return self._engine

        def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
            shape = tuple(int(d) for d in shape)
            if name not in self._engine._inputs or not _fits(shape, self._engine._inputs[name]):
                return False
            profile = self._engine._profile.get(name)
            if profile and not all(lo <= s <= hi for lo, s, hi in zip(profile[0], shape, profile[2])):
                return False
            self._shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            if name in self._engine._inputs:
                return self._shapes.get(name, self._engine._inputs[name])
            shape = self._engine._outputs[name]
            batch = next(iter(self._shapes.values()), (-1,))[0] if self._shapes else self._engine._static_batch
            return (batch,) + tuple(shape[1:])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in self._engine._inputs and name not in self._engine._outputs:
                return False
            self._addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if stream_handle not in fake_pycuda.STATE.streams:
                raise ValueError("execute_async_v3: %r is not a CUDA stream" % (stream_handle,))
            if not fake_pycuda.STATE.stack:
                raise RuntimeError("execute_async_v3 without a current CUDA context")
            feeds = {}
            for name, declared in self._engine._inputs.items():
                shape = self._shapes.get(name, declared)
                if -1 in shape or name not in self._addresses:
                    return False  # "not all input shapes / addresses are specified"
                data = fake_pycuda.read_device(self._addresses[name], int(np.prod(shape)) * 4)
                feeds[name] = np.frombuffer(data, np.float32).reshape(shape)
            if any(name not in self._addresses for name in self._engine._outputs):
                return False
            results = self._engine._session_().run(list(self._engine._outputs), feeds)
            for name, value in zip(self._engine._outputs, results):
                fake_pycuda.write_device(self._addresses[name], np.ascontiguousarray(value, np.float32).tobytes())
            self._executions += 1
            return True

    if major < 10:
        IExecutionContext.execute_async_v2 = deprecated("execute_async_v2")
        IExecutionContext.set_binding_shape = deprecated("set_binding_shape")

    class ICudaEngine:
        def __init__(self, header: Dict[str, Any], onnx_bytes: bytes) -> None:
            self._header, self._onnx = header, onnx_bytes
            self._inputs = {n: tuple(s) for n, s in header["inputs"]}
            self._outputs = {n: tuple(s) for n, s in header["outputs"]}
            self._profile = {n: [tuple(s) for s in v] for n, v in header["profile"].items()}
            self._static_batch = next(iter(self._inputs.values()))[0]
            self._session = None
            fake_pycuda.track(self, "ICudaEngine")

        def _session_(self):
            if self._session is None:
                import onnxruntime as ort

                self._session = ort.InferenceSession(self._onnx, providers=["CPUExecutionProvider"])
            return self._session

        @property
        def num_io_tensors(self) -> int:
            return len(self._inputs) + len(self._outputs)

        @property
        def num_optimization_profiles(self) -> int:
            return 1

        def get_tensor_name(self, index: int) -> str:
            return (list(self._inputs) + list(self._outputs))[index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if name in self._inputs else (
                TensorIOMode.OUTPUT if name in self._outputs else TensorIOMode.NONE)

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            return self._inputs.get(name) or self._outputs[name]

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType.FLOAT

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Tuple[int, ...]]:
            if profile_index != 0 or name not in self._inputs:
                raise ValueError("no profile %d for %s" % (profile_index, name))
            if name in self._profile:
                return list(self._profile[name])
            return [self._inputs[name]] * 3

        def create_execution_context(self) -> IExecutionContext:
            if not fake_pycuda.STATE.stack:
                raise RuntimeError("create_execution_context without a current CUDA context")
            return IExecutionContext(self)

    if major < 10:
        for name in ("num_bindings", "get_binding_shape", "get_binding_name", "binding_is_input",
                     "get_binding_index", "max_batch_size"):
            setattr(ICudaEngine, name, deprecated(name))

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self._logger = logger
            fake_pycuda.track(self, "Runtime")

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> Optional[ICudaEngine]:
            data = bytes(serialized_engine)
            try:
                if not data.startswith(MAGIC):
                    raise ValueError("magic tag does not match")
                (size,) = struct.unpack("<I", data[8:12])
                header = json.loads(data[12:12 + size].decode())
                onnx_bytes = data[12 + size:]
                if len(onnx_bytes) != header["onnx_size"]:
                    raise ValueError("truncated")
            except Exception as exc:
                self._logger.log(_Severity.ERROR, "1: [stdArchiveReader.cpp] Error: %s" % exc)
                return None
            if header["version"] != version:
                self._logger.log(_Severity.ERROR, "The engine plan file is not compatible with this version of "
                                                 "TensorRT, expecting %s got %s" % (version, header["version"]))
                return None
            engine = ICudaEngine(header, onnx_bytes)
            engine._runtime = self  # the bindings keep the runtime alive while an engine lives
            return engine

    trt.Runtime = Runtime
    for cls in (ITensor, ILayer, INetworkDefinition, IOptimizationProfile, ITimingCache, IHostMemory, IBuilderConfig,
                ICudaEngine, IExecutionContext):
        setattr(trt, cls.__name__, cls)
    return trt


def install(monkeypatch, version: str = "8.6.1.6") -> types.ModuleType:
    """Put a fresh double for ``version`` into ``sys.modules["tensorrt"]``."""
    trt = make_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    from edge.inference.engines import trt_api

    monkeypatch.setattr(trt_api, "_MODULE", None)
    return trt
