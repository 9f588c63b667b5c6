"""The doubles of TensorRT and pycuda expose only names the real APIs have, per generation.

The lists below are written from the real bindings, not from the doubles: TensorRT's Python bindings
(NVIDIA/TensorRT python/src/infer/pyCore.cpp, pyGraph.cpp, pyInt8.cpp, pyFoundationalTypes.cpp; enum
values from include/NvInfer.h of 8.6 and 10.x) and pycuda (inducer/pycuda src/wrapper/wrap_cudadrv.cpp,
src/cpp/cuda.hpp). A double may expose fewer names than the real module, never others, and an enum
member must have the real value of its generation. Test instrumentation that exists in no real module
is listed apart, so a reviewer sees all of it here."""
from __future__ import annotations

import types

import pytest

import fake_pycuda
import fake_tensorrt

# TensorRT 8.5 / 8.6 (JetPack 5.1, 6.0) and 10.x (JetPack 6.1+): the names the doubles model.
TRT_COMMON = {
    "module": {"DataType", "TensorIOMode", "BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType",
               "DeviceType", "CalibrationAlgoType", "Logger", "nptype", "float32", "float16", "int8", "int32",
               "Builder", "Runtime", "OnnxParser", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "ITensor",
               "ILayer", "INetworkDefinition", "IOptimizationProfile", "ITimingCache", "IHostMemory",
               "IBuilderConfig", "ICudaEngine", "IExecutionContext"},
    "Logger": {"Severity", "INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE", "min_severity", "log"},
    "Builder": {"create_network", "create_builder_config", "create_optimization_profile",
                "build_serialized_network", "platform_has_fast_fp16", "platform_has_fast_int8", "num_DLA_cores"},
    "IBuilderConfig": {"flags", "set_flag", "clear_flag", "get_flag", "set_memory_pool_limit",
                       "get_memory_pool_limit", "add_optimization_profile", "num_optimization_profiles",
                       "set_calibration_profile", "get_calibration_profile", "int8_calibrator",
                       "default_device_type", "DLA_core", "create_timing_cache", "set_timing_cache",
                       "get_timing_cache"},
    "INetworkDefinition": {"num_layers", "get_layer", "num_inputs", "num_outputs", "get_input", "get_output"},
    "ITensor": {"name", "shape", "dtype"},
    "ILayer": {"name", "precision", "num_outputs", "get_output", "set_output_type", "get_output_type"},
    "OnnxParser": {"parse", "num_errors", "get_error"},
    "IOptimizationProfile": {"set_shape", "get_shape"},
    "ITimingCache": {"serialize"},
    "IHostMemory": {"nbytes"},
    "Runtime": {"deserialize_cuda_engine"},
    "ICudaEngine": {"num_io_tensors", "num_optimization_profiles", "get_tensor_name", "get_tensor_mode",
                    "get_tensor_shape", "get_tensor_dtype", "get_tensor_profile_shape", "create_execution_context"},
    "IExecutionContext": {"engine", "set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"},
    "IInt8EntropyCalibrator2": {"get_algorithm", "get_batch_size", "get_batch", "read_calibration_cache",
                                "write_calibration_cache"},
}
TRT_8_ONLY = {  # deprecated in 8.x, removed in 10.0
    "Builder": {"build_engine"},
    "IBuilderConfig": {"max_workspace_size"},
    "ICudaEngine": {"num_bindings", "get_binding_shape", "get_binding_name", "binding_is_input", "get_binding_index",
                    "max_batch_size"},
    "IExecutionContext": {"execute_async_v2", "set_binding_shape"},
}
ENUMS = {  # name -> value, NvInfer.h
    "8": {"BuilderFlag": {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "OBEY_PRECISION_CONSTRAINTS": 10},
          "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1}},
    "10": {"BuilderFlag": {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "OBEY_PRECISION_CONSTRAINTS": 9},
           "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}},
}
SHARED_ENUMS = {
    "DataType": {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3},
    "TensorIOMode": {"NONE": 0, "INPUT": 1, "OUTPUT": 2},
    "MemoryPoolType": {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1},
    "DeviceType": {"GPU": 0, "DLA": 1},
    "CalibrationAlgoType": {"LEGACY_CALIBRATION": 0, "ENTROPY_CALIBRATION": 1, "ENTROPY_CALIBRATION_2": 2,
                            "MINMAX_CALIBRATION": 3},
}
TRT_INSTRUMENTATION = {"deprecated_calls", "builds", "calibration_batches"}  # the doubles' own, in no TensorRT

PYCUDA = {  # pycuda.driver (2022.1 .. 2026.1)
    "module": {"Error", "LogicError", "init", "get_version", "get_driver_version", "Device", "Context",
               "DeviceAllocation", "PagelockedHostAllocation", "mem_alloc", "pagelocked_empty", "memcpy_htod",
               "memcpy_htod_async", "memcpy_dtoh_async", "Stream"},
    "Device": {"count", "name", "compute_capability", "make_context"},
    "Context": {"push", "pop", "detach"},
    "DeviceAllocation": {"free"},
    "PagelockedHostAllocation": {"free"},
    "Stream": {"handle", "synchronize"},
}
PYCUDA_INSTRUMENTATION = {"STATE", "CUDA_VERSION", "DRIVER_VERSION", "install", "leaks", "track", "read_device",
                          "write_device"}


def _public(obj) -> set:
    return {n for n in dir(obj) if not n.startswith("_")}


def _module_names(module) -> set:
    """Names the module defines (not what it imports)."""
    return {n for n in _public(module) if n != "annotations" and not isinstance(getattr(module, n), types.ModuleType)
            and getattr(getattr(module, n), "__module__", module.__name__) in (module.__name__, "tensorrt")}


@pytest.mark.parametrize("version", ["8.5.2.2", "8.6.1.6", "10.3.0", "10.7.0"])
def test_tensorrt_double_names_are_the_real_ones(version):
    trt = fake_tensorrt.make_tensorrt(version)
    major = version.split(".")[0]
    expected = {k: set(v) for k, v in TRT_COMMON.items()}
    if major == "8":
        for cls, names in TRT_8_ONLY.items():
            expected[cls] |= names
    assert {n for n in _public(trt) if n != "annotations"} == expected["module"] | TRT_INSTRUMENTATION
    for cls, names in expected.items():
        if cls != "module":
            assert _public(getattr(trt, cls)) | _instance_names(trt, cls) == names, cls
    assert _public(trt.IInt8MinMaxCalibrator) == expected["IInt8EntropyCalibrator2"]
    for name, members in dict(SHARED_ENUMS, **ENUMS[major]).items():
        assert {m.name: int(m) for m in getattr(trt, name)} == members, name
    assert {m.name: int(m) for m in trt.Logger.Severity} == {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2,
                                                            "INFO": 3, "VERBOSE": 4}


def _instance_names(trt, cls: str) -> set:
    """Attributes set in ``__init__`` (the bindings expose them as properties)."""
    makers = {"Builder": lambda: trt.Builder(trt.Logger()), "Logger": trt.Logger,
              "IBuilderConfig": lambda: trt.Builder(trt.Logger()).create_builder_config(),
              "ITensor": lambda: trt.ITensor("x", (1,)), "ILayer": lambda: trt.ILayer("l", ["y"])}
    return _public(makers[cls]()) if cls in makers else set()


def test_pycuda_double_names_are_the_real_ones(monkeypatch):
    cuda = fake_pycuda.install(monkeypatch)
    assert _module_names(cuda) == PYCUDA["module"] | PYCUDA_INSTRUMENTATION
    cuda.init()
    context = cuda.Device(0).make_context()
    try:
        instances = {"Device": cuda.Device(0), "Context": context, "DeviceAllocation": cuda.mem_alloc(4),
                     "PagelockedHostAllocation": cuda.pagelocked_empty((1,), "float32").base,
                     "Stream": cuda.Stream()}
        for cls, names in PYCUDA.items():
            if cls != "module":
                assert _public(instances[cls]) == names, cls
        assert type(instances["PagelockedHostAllocation"]).__name__ == "PagelockedHostAllocation"
        assert cuda.get_version() == (12, 6, 0) and isinstance(cuda.get_driver_version(), int)
        instances["DeviceAllocation"].free()
        instances["PagelockedHostAllocation"].free()
    finally:
        cuda.Context.pop()
        context.detach()


def test_builder_config_flags_are_a_bit_mask():
    for version in ("8.6.1.6", "10.3.0"):
        trt = fake_tensorrt.make_tensorrt(version)
        config = trt.Builder(trt.Logger()).create_builder_config()
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        assert isinstance(config.flags, int)
        assert config.flags == 1 << 1 | 1 << (10 if version.startswith("8") else 9)
        config.clear_flag(trt.BuilderFlag.INT8)
        assert not config.get_flag(trt.BuilderFlag.INT8) and config.get_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    assert not hasattr(fake_tensorrt.make_tensorrt("10.3.0").NetworkDefinitionCreationFlag, "EXPLICIT_PRECISION")
    assert not any(hasattr(fake_tensorrt.make_tensorrt(v).BuilderFlag, "CHECK_ALL") for v in ("8.6.1.6", "10.3.0"))


def test_pycuda_double_frees_memory_like_pycuda(monkeypatch, capsys):
    """pycuda's free() activates the allocation's own context on the thread that made it, fails from
    another thread, warns in a dead context, and refuses a second free."""
    import threading

    cuda = fake_pycuda.install(monkeypatch)
    cuda.init()
    context = cuda.Device(0).make_context()
    first, second, third = cuda.mem_alloc(4), cuda.mem_alloc(4), cuda.mem_alloc(4)
    cuda.Context.pop()
    first.free()  # no current context: its own is activated
    with pytest.raises(cuda.LogicError, match="invalid resource handle"):
        first.free()
    errors = []

    def free_elsewhere():
        try:
            second.free()
        except cuda.LogicError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=free_elsewhere)
    worker.start()
    worker.join()
    assert errors == ["cuMemFree failed: cannot activate out-of-thread context"]
    second.free()
    context.detach()
    third.free()
    assert "PyCUDA WARNING: a clean-up operation failed (dead context maybe?)" in capsys.readouterr().err
    assert fake_pycuda.leaks() == {"device": 0, "pinned": 0, "contexts": 0, "current": 0, "outlived": 0}
