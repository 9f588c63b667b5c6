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


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    EXPLICIT_PRECISION = 1


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    CHECK_ALL = 3
    GPU_FALLBACK = 5
    OBEY_PRECISION_CONSTRAINTS = 10


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
        self.messages: List[str] = []

    def log(self, severity: _Severity, message: str) -> None:
        self.messages.append("%s: %s" % (severity.name, message))


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


def make_tensorrt(version: str = "8.6.1.6") -> types.ModuleType:
    """A fresh double of the ``tensorrt`` module for ``version`` (8.5/8.6 or 10.x behaviour)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.deprecated_calls = []  # names of deprecated calls made (8.x)
    trt.builds = []  # (config, network) of every build_serialized_network
    tag = "".join(version.split(".")[:2]) + "01" if major < 10 else "%d%02d%02d" % tuple(
        int(p) for p in (version.split(".") + ["0", "0"])[:3])
    for name, value in (("DataType", DataType), ("TensorIOMode", TensorIOMode), ("BuilderFlag", BuilderFlag),
                        ("NetworkDefinitionCreationFlag", NetworkDefinitionCreationFlag),
                        ("MemoryPoolType", MemoryPoolType), ("DeviceType", DeviceType), ("Logger", Logger),
                        ("nptype", nptype)):
        setattr(trt, name, value)
    trt.float32, trt.float16, trt.int8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32

    def deprecated(name: str):
        def call(*args, **kwargs):
            trt.deprecated_calls.append(name)
            raise NotImplementedError("the double does not implement deprecated %s" % name)
        return call

    class _CalibratorBase:
        algorithm = ""

        def __init__(self) -> None:
            self._base_initialised = True

    class IInt8EntropyCalibrator2(_CalibratorBase):
        algorithm = "EntropyCalibration2"

    class IInt8MinMaxCalibrator(_CalibratorBase):
        algorithm = "MinMaxCalibration"

    trt.IInt8EntropyCalibrator2, trt.IInt8MinMaxCalibrator = IInt8EntropyCalibrator2, IInt8MinMaxCalibrator

    class ITensor:
        def __init__(self, name: str, shape: Tuple[int, ...]) -> None:
            self.name, self.shape, self.dtype = name, shape, DataType.FLOAT

    class ILayer:
        __slots__ = ("name", "_outputs", "precision", "output_types")

        def __init__(self, name: str, outputs: List[str]) -> None:
            self.name, self._outputs = name, [ITensor(o, ()) for o in outputs]
            self.precision = DataType.FLOAT
            self.output_types: Dict[int, DataType] = {}

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

        def set_output_type(self, index: int, dtype: DataType) -> None:
            if not 0 <= index < len(self._outputs):
                raise IndexError("layer %s has no output %d" % (self.name, index))
            self.output_types[index] = DataType(dtype)

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: List[ITensor] = []
            self.outputs: List[ITensor] = []
            self.layers: List[ILayer] = []
            self.onnx: Optional[bytes] = None

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_layer(self, index: int) -> ILayer:
            return self.layers[index]

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_input(self, index: int) -> ITensor:
            return self.inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self.outputs[index]

    class _ParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def desc(self) -> str:
            return self.text

        def __str__(self) -> str:
            return "In node -1 (parse): %s" % self.text

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> _ParserError:
            return self.errors[index]

        def parse(self, model: bytes, path: Optional[str] = None) -> bool:
            if major < 10 and not self.network.flags & (1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)):
                self.errors.append(_ParserError("the network must be created with EXPLICIT_BATCH"))
                return False
            try:
                inputs, outputs = _onnx_io(bytes(model))
            except Exception as exc:
                self.errors.append(_ParserError("cannot read the ONNX model: %s" % exc))
                return False
            import onnx

            nodes = onnx.load_from_string(bytes(model)).graph.node
            self.network.layers = [ILayer(n.name or "node_of_" + n.output[0], list(n.output)) for n in nodes]
            self.network.inputs = [ITensor(n, s) for n, s in inputs]
            self.network.outputs = [ITensor(n, s) for n, s in outputs]
            self.network.onnx = bytes(model)
            return True

    trt.OnnxParser = OnnxParser

    class IOptimizationProfile:
        __slots__ = ("shapes",)

        def __init__(self) -> None:
            self.shapes: Dict[str, Tuple[Tuple[int, ...], ...]] = {}

        def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
            lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
            if not (len(lo) == len(mid) == len(hi)) or any(a > b or b > c for a, b, c in zip(lo, mid, hi)):
                raise ValueError("profile for %s needs min <= opt <= max of one rank: %s %s %s" % (input, lo, mid, hi))
            self.shapes[input] = (lo, mid, hi)

    class ITimingCache:
        __slots__ = ("data",)

        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data

    config_slots = ["flags", "pools", "int8_calibrator", "default_device_type", "DLA_core", "profiles",
                    "calibration_profile", "timing_cache"]
    if major < 10:
        config_slots.append("_max_workspace_size")

    class IBuilderConfig:
        __slots__ = tuple(config_slots)

        def __init__(self) -> None:
            self.flags, self.pools, self.int8_calibrator = set(), {}, None
            self.default_device_type, self.DLA_core = DeviceType.GPU, -1
            self.profiles: List[IOptimizationProfile] = []
            self.calibration_profile: Optional[IOptimizationProfile] = None
            self.timing_cache: Optional[ITimingCache] = None

        def set_flag(self, flag: BuilderFlag) -> None:
            self.flags.add(BuilderFlag(flag))

        def get_flag(self, flag: BuilderFlag) -> bool:
            return BuilderFlag(flag) in self.flags

        def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
            if int(pool_size) <= 0:
                raise ValueError("pool size must be positive")
            self.pools[MemoryPoolType(pool)] = int(pool_size)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
            self.calibration_profile = profile
            return True

        def create_timing_cache(self, serialized_timing_cache: bytes) -> Optional[ITimingCache]:
            data = bytes(serialized_timing_cache)
            if data and not data.startswith(b"TIMING" + tag.encode()):
                return None  # the real builder logs "Failed to deserialize" and gives no cache
            return ITimingCache(data or b"TIMING" + tag.encode() + b"\n")

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> Optional[ITimingCache]:
            return self.timing_cache

    if major < 10:
        def _get_ws(self):
            trt.deprecated_calls.append("max_workspace_size")
            return 0

        def _set_ws(self, value):
            trt.deprecated_calls.append("max_workspace_size")

        IBuilderConfig.max_workspace_size = property(_get_ws, _set_ws)

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger
            self.platform_has_fast_fp16 = True
            self.platform_has_fast_int8 = True
            self.num_DLA_cores = 2

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            if major >= 10 and flags & ~(1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH)):
                raise TypeError("unsupported network flags %d" % flags)
            return INetworkDefinition(int(flags))

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def _fail(self, text: str) -> None:
            self.logger.log(_Severity.ERROR, text)

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Optional[bytes]:
            trt.builds.append((config, network))
            if network.onnx is None:
                return self._fail("the network is empty")
            if MemoryPoolType.WORKSPACE not in config.pools:
                pass  # optional in real TensorRT
            profile = None
            dynamic = [t for t in network.inputs if -1 in t.shape]
            if dynamic:
                if not config.profiles:
                    return self._fail("Network has dynamic or shape inputs, but no optimization profile has been defined.")
                profile = config.profiles[0]
                for t in dynamic:
                    if t.name not in profile.shapes or not all(_fits(s, t.shape) for s in profile.shapes[t.name]):
                        return self._fail("profile does not fit input %s %s" % (t.name, t.shape))
            if config.default_device_type == DeviceType.DLA and not 0 <= config.DLA_core < self.num_DLA_cores:
                return self._fail("DLA core %d does not exist" % config.DLA_core)
            scales: Dict[str, float] = {}
            if BuilderFlag.INT8 in config.flags:
                calibrator = config.int8_calibrator
                if calibrator is None:
                    return self._fail("INT8 without a calibrator needs explicit dynamic ranges")
                if not getattr(calibrator, "_base_initialised", False):
                    raise TypeError("%s.__init__() must be called when overriding __init__" % type(calibrator).__name__)
                if dynamic and config.calibration_profile is None:
                    return self._fail("Calibration profile must be set for INT8 with dynamic inputs")
                scales = self._calibrate(network, config, calibrator)
                if scales is None:
                    return None
            header = {"version": version, "onnx_size": len(network.onnx),
                      "inputs": [[t.name, list(t.shape)] for t in network.inputs],
                      "outputs": [[t.name, list(t.shape)] for t in network.outputs],
                      "profile": {k: [list(s) for s in v] for k, v in (profile.shapes.items() if profile else [])},
                      "int8": BuilderFlag.INT8 in config.flags, "fp16": BuilderFlag.FP16 in config.flags,
                      "fp16_layers": [layer.name for layer in network.layers if layer.precision == DataType.HALF
                                      and BuilderFlag.OBEY_PRECISION_CONSTRAINTS in config.flags],
                      "scales": scales}
            blob = json.dumps(header).encode()
            return MAGIC + struct.pack("<I", len(blob)) + blob + network.onnx

        def _calibrate(self, network: INetworkDefinition, config: IBuilderConfig, calibrator: Any):
            cached = calibrator.read_calibration_cache()
            if cached:
                text = bytes(cached).decode("ascii")
                return {line.rsplit(": ", 1)[0]: 0.0 for line in text.splitlines()[1:] if line}
            names = [t.name for t in network.inputs]
            shape = (config.calibration_profile.shapes[names[0]][1] if config.calibration_profile
                     else network.inputs[0].shape)
            batch = calibrator.get_batch_size()
            if shape[0] != batch:
                return self._fail("calibration batch size %d does not match the calibration shape %s" % (batch, shape))
            peak, batches = 0.0, 0
            while True:
                pointers = calibrator.get_batch(names)
                if pointers is None:
                    break
                if len(pointers) != len(names):
                    raise ValueError("get_batch returned %d pointers for %d inputs" % (len(pointers), len(names)))
                data = fake_pycuda.read_device(pointers[0], int(np.prod(shape)) * 4)
                peak = max(peak, float(np.abs(np.frombuffer(data, np.float32)).max()))
                batches += 1
            if batches == 0:
                return self._fail("Calibration failure occurred with no scaling factors detected.")
            scales = {names[0]: peak / 127.0}
            for t in network.outputs:
                scales[t.name] = 1.0 / 127.0
            lines = ["TRT-%s-%s" % (tag, calibrator.algorithm)]
            lines += ["%s: %s" % (n, struct.pack(">f", s).hex()) for n, s in scales.items()]
            calibrator.write_calibration_cache(memoryview(("\n".join(lines) + "\n").encode("ascii")))
            return scales

    if major < 10:
        Builder.build_engine = deprecated("build_engine")
    trt.Builder = Builder

    class IExecutionContext:
        def __init__(self, engine: "ICudaEngine") -> None:
            self.engine = engine
            self.shapes: Dict[str, Tuple[int, ...]] = {}
            self.addresses: Dict[str, int] = {}
            self.executions = 0

        def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
            shape = tuple(int(d) for d in shape)
            if name not in self.engine.inputs or not _fits(shape, self.engine.inputs[name]):
                return False
            profile = self.engine.profile.get(name)
            if profile and not all(lo <= s <= hi for lo, s, hi in zip(profile[0], shape, profile[2])):
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            if name in self.engine.inputs:
                return self.shapes.get(name, self.engine.inputs[name])
            shape = self.engine.outputs[name]
            batch = next(iter(self.shapes.values()), (-1,))[0] if self.shapes else self.engine.static_batch
            return (batch,) + tuple(shape[1:])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if name not in self.engine.inputs and name not in self.engine.outputs:
                return False
            self.addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if stream_handle not in fake_pycuda.STATE.streams:
                raise ValueError("execute_async_v3: %r is not a CUDA stream" % (stream_handle,))
            if not fake_pycuda.STATE.stack:
                raise RuntimeError("execute_async_v3 without a current CUDA context")
            feeds = {}
            for name, declared in self.engine.inputs.items():
                shape = self.shapes.get(name, declared)
                if -1 in shape or name not in self.addresses:
                    return False  # "not all input shapes / addresses are specified"
                data = fake_pycuda.read_device(self.addresses[name], int(np.prod(shape)) * 4)
                feeds[name] = np.frombuffer(data, np.float32).reshape(shape)
            if any(name not in self.addresses for name in self.engine.outputs):
                return False
            results = self.engine.session().run(list(self.engine.outputs), feeds)
            for name, value in zip(self.engine.outputs, results):
                fake_pycuda.write_device(self.addresses[name], np.ascontiguousarray(value, np.float32).tobytes())
            self.executions += 1
            return True

    if major < 10:
        IExecutionContext.execute_async_v2 = deprecated("execute_async_v2")
        IExecutionContext.set_binding_shape = deprecated("set_binding_shape")

    class ICudaEngine:
        def __init__(self, header: Dict[str, Any], onnx_bytes: bytes) -> None:
            self.header, self.onnx = header, onnx_bytes
            self.inputs = {n: tuple(s) for n, s in header["inputs"]}
            self.outputs = {n: tuple(s) for n, s in header["outputs"]}
            self.profile = {n: [tuple(s) for s in v] for n, v in header["profile"].items()}
            self.static_batch = next(iter(self.inputs.values()))[0]
            self._session = None

        def session(self):
            if self._session is None:
                import onnxruntime as ort

                self._session = ort.InferenceSession(self.onnx, providers=["CPUExecutionProvider"])
            return self._session

        @property
        def num_io_tensors(self) -> int:
            return len(self.inputs) + len(self.outputs)

        @property
        def num_optimization_profiles(self) -> int:
            return 1

        def get_tensor_name(self, index: int) -> str:
            return (list(self.inputs) + list(self.outputs))[index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if name in self.inputs else (
                TensorIOMode.OUTPUT if name in self.outputs else TensorIOMode.NONE)

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            return self.inputs.get(name) or self.outputs[name]

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType.FLOAT

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Tuple[int, ...]]:
            if profile_index != 0 or name not in self.inputs:
                raise ValueError("no profile %d for %s" % (profile_index, name))
            if name in self.profile:
                return list(self.profile[name])
            return [self.inputs[name]] * 3

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
            self.logger = logger

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
                self.logger.log(_Severity.ERROR, "1: [stdArchiveReader.cpp] Error: %s" % exc)
                return None
            if header["version"] != version:
                self.logger.log(_Severity.ERROR, "The engine plan file is not compatible with this version of "
                                                 "TensorRT, expecting %s got %s" % (version, header["version"]))
                return None
            return ICudaEngine(header, onnx_bytes)

    trt.Runtime = Runtime
    return trt


def install(monkeypatch, version: str = "8.6.1.6") -> types.ModuleType:
    """Put a fresh double for ``version`` into ``sys.modules["tensorrt"]``."""
    trt = make_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    from edge.inference.engines import trt_api

    monkeypatch.setattr(trt_api, "_MODULE", None)
    return trt
