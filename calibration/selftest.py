"""``fallwatch-calibrate --selftest``: is TensorRT usable on this device?

Imports TensorRT and pycuda, reports their versions and the GPU, builds a tiny network (a 3x3
convolution and a ReLU, written as ONNX) through the same build and run code as real engines
(FP32, batch profile 1..2), runs a batch of 2 and compares the result with NumPy. Needs a Jetson
(or any machine with an NVIDIA GPU, TensorRT and pycuda); it cannot run on a machine without them.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

TOLERANCE = 1e-3  # FP32 on the GPU vs NumPy, absolute


def tiny_model(seed: int = 0):
    """``(onnx bytes, weights (4,3,3,3), bias (4,))`` of y = relu(conv3x3(x) + b), x (N, 3, 8, 8) NCHW."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(seed)
    weights = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "selftest", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(), weights, bias


def numpy_reference(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, w = x.shape[2:]
    windows = np.stack([padded[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
    out = np.einsum("nchwk,ock->nohw", windows, weights.reshape(4, 3, 9)) + bias[None, :, None, None]
    return np.maximum(out, 0.0).astype(np.float32)


def selftest(say: Callable[[str], None] = print) -> int:
    """0 when the tiny network runs and matches NumPy; 1 with the reason otherwise."""
    from calibration.trt_build import BuildOptions, build_engine
    from edge.inference.engines import EngineError
    from edge.inference.engines.device import current_device
    from edge.inference.engines.metadata import check_engine
    from edge.inference.engines.tensorrt import TensorRTEngine

    try:
        facts = current_device()
        say("TensorRT %s; GPU %s (compute capability %s); L4T %s (JetPack %s)" % (
            facts.tensorrt_version, facts.device_name, facts.compute_capability, facts.l4t_release or "none",
            facts.jetpack or "unknown"))
        data, weights, bias = tiny_model()
        x = np.random.RandomState(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
        with tempfile.TemporaryDirectory(prefix="fallwatch-selftest-") as tmp:
            model, engine_file = Path(tmp) / "tiny.onnx", Path(tmp) / "tiny.engine"
            model.write_bytes(data)
            build_engine(model, engine_file, (8, 8), "NCHW", BuildOptions(precision="fp32", max_batch=2),
                         None, Path(tmp) / "tiny.cache", progress=False)
            check_engine(engine_file, facts, model, (8, 8), "fp32")
            engine = TensorRTEngine(engine_file)
            try:
                got = engine.run(x)["y"]
            finally:
                engine.close()
    except EngineError as exc:
        say("selftest FAILED: %s" % exc)
        return 1
    error = float(np.abs(got - numpy_reference(x, weights, bias)).max())
    if not error <= TOLERANCE:
        say("selftest FAILED: the engine's output differs from NumPy by %.3g (allowed %g)" % (error, TOLERANCE))
        return 1
    say("selftest passed: built, ran a batch of 2, matches NumPy within %.2g" % error)
    return 0
