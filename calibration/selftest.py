"""``fallwatch-calibrate --selftest``: is TensorRT usable on this device?

Imports TensorRT and pycuda, reports their versions and the GPU, builds a tiny network (a 3x3
convolution and a ReLU, written as ONNX) through the same build and run code as real engines
(FP32, batch profile 1..2), runs a batch of 2, compares the result with NumPy and closes the
engine from another thread. Then it calibrates the network in INT8 on random frames (the
calibrator's callbacks, the cache written and reused), and checks that what real TensorRT
swallows reaches the user: a frame reader that fails mid-calibration and a damaged calibration
cache must each stop the build with an error and no engine. Last, it says what it could not check
on this machine. Needs a Jetson (or any machine with an NVIDIA GPU, TensorRT and pycuda).
"""
from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Callable, List

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


class _FailingFrames:
    """Calibration frames whose reader fails (an I/O error) after the first batch, on purpose."""

    def __init__(self, frames) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def batches(self, batch_size: int, drop_last: bool = False):
        for number, batch in enumerate(self.frames.batches(batch_size, drop_last)):
            if number == 1:
                raise OSError(5, "Input/output error (on purpose, by the selftest)")
            yield batch

    def feeds(self, batch_size: int, input_name: str, drop_last: bool = False):
        """What the calibrator reads (calibration.data.TensorSet.feeds): the batches by input name."""
        for batch in self.batches(batch_size, drop_last):
            yield {input_name: batch}


def not_checked(facts) -> List[str]:
    """What the selftest cannot establish on this machine, in words for the person running it."""
    lines = ["that every TensorRT object is destroyed before its CUDA context: the driver does not report it "
             "(fallwatch destroys them inside the context; a 'context is destroyed' error or a crash at exit "
             "would mean otherwise)",
             "INT8 accuracy on your own scenes: fallwatch-calibrate's verification against the FP32 model checks "
             "that on every build"]
    if not facts.l4t_release:
        lines.insert(0, "this is not a Jetson (no L4T release found): JetPack's CUDA, TensorRT and pycuda "
                        "packages, DLA cores and the board's INT8 speed were not checked; run "
                        "fallwatch-calibrate --selftest on the Jetson itself")
    return lines


def _run_and_close_elsewhere(engine_file: Path, x: np.ndarray) -> np.ndarray:
    """Run the engine, then close it from another thread, as the daemon may (the CUDA context must still be
    destroyed, not leaked)."""
    from edge.inference.engines.tensorrt import TensorRTEngine

    engine = TensorRTEngine(engine_file)
    try:
        got = engine.run(x)["y"]
    except BaseException:
        engine.close()
        raise
    errors: List[BaseException] = []

    def close() -> None:
        try:
            engine.close()
        except BaseException as exc:  # reported in the calling thread
            errors.append(exc)

    closer = threading.Thread(target=close, name="selftest-close")
    closer.start()
    closer.join()
    if errors:
        raise errors[0]
    return got


def _check_calibrator_errors(tmp: Path, model: Path, frames) -> None:
    """TensorRT swallows exceptions in calibrator callbacks; fallwatch must raise them and write no engine."""
    from calibration.cache import CacheError
    from calibration.trt_build import BuildOptions, build_engine
    from edge.inference.engines import EngineError

    engine_file = tmp / "broken.engine"
    options = BuildOptions(precision="int8", max_batch=2, calibration_batch=2, recalibrate=True)
    try:
        build_engine(model, engine_file, (8, 8), "NCHW", options, _FailingFrames(frames), tmp / "broken.cache",
                     progress=False)
    except EngineError as exc:
        if "failed in get_batch after 1 of" not in str(exc):
            raise EngineError("a failing frame reader gave the wrong error: %s" % exc) from None
    else:
        raise EngineError("a frame reader that failed during calibration went unnoticed: an engine was built "
                          "(TensorRT swallowed the error and fallwatch did not raise it)")
    damaged = tmp / "damaged.cache"
    damaged.write_bytes(b"TRT-8601-EntropyCalibration2\nx: 3c0")
    try:
        build_engine(model, engine_file, (8, 8), "NCHW", BuildOptions(precision="int8", max_batch=2,
                                                                      calibration_batch=2), None, damaged,
                     progress=False)
    except CacheError:
        pass
    else:
        raise EngineError("a damaged calibration cache went unnoticed: an engine was built from it")
    if engine_file.exists():
        raise EngineError("a failed calibration left an engine file %s" % engine_file)


def selftest(say: Callable[[str], None] = print) -> int:
    """0 when the tiny network builds and runs in FP32 (matching NumPy) and INT8, and calibrator errors reach
    the user; 1 with the reason otherwise. Ends with what it could not check on this machine."""
    from calibration.cache import CacheError, parse_cache
    from calibration.data import TensorSet
    from calibration.trt_build import BuildOptions, build_engine
    from edge.inference.engines import EngineError
    from edge.inference.engines.device import current_device
    from edge.inference.engines.metadata import check_engine

    try:
        facts = current_device()
        say("TensorRT %s; GPU %s (compute capability %s); L4T %s (JetPack %s)" % (
            facts.tensorrt_version, facts.device_name, facts.compute_capability, facts.l4t_release or "none",
            facts.jetpack or "unknown"))
        data, weights, bias = tiny_model()
        rng = np.random.RandomState(1)
        x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
        frames = TensorSet(rng.standard_normal((6, 3, 8, 8)).astype(np.float32), ["selftest#%d" % i for i in range(6)])
        with tempfile.TemporaryDirectory(prefix="fallwatch-selftest-") as scratch:
            tmp = Path(scratch)
            model, engine_file = tmp / "tiny.onnx", tmp / "tiny.engine"
            model.write_bytes(data)
            build_engine(model, engine_file, (8, 8), "NCHW", BuildOptions(precision="fp32", max_batch=2),
                         None, tmp / "tiny.cache", progress=False)
            check_engine(engine_file, facts, model, (8, 8), "fp32")
            got = _run_and_close_elsewhere(engine_file, x)
            error = float(np.abs(got - numpy_reference(x, weights, bias)).max())
            if not error <= TOLERANCE:
                say("selftest FAILED: the engine's output differs from NumPy by %.3g (allowed %g)" % (error, TOLERANCE))
                return 1
            say("ok: FP32 engine built, ran a batch of 2, matches NumPy within %.2g, closed from another thread"
                % error)
            int8_file, cache = tmp / "tiny_int8.engine", tmp / "tiny_int8.cache"
            options = BuildOptions(precision="int8", max_batch=2, calibration_batch=2)
            build_engine(model, int8_file, (8, 8), "NCHW", options, frames, cache, progress=False)
            parse_cache(cache.read_bytes(), str(cache))
            build_engine(model, int8_file, (8, 8), "NCHW", options, None, cache, progress=False)
            got = _run_and_close_elsewhere(int8_file, x)
            want = numpy_reference(x, weights, bias)
            say("ok: INT8 engine calibrated on 3 batches, its cache written and reused; mean difference from "
                "NumPy %.3g (mean output %.3g)" % (float(np.abs(got - want).mean()), float(np.abs(want).mean())))
            _check_calibrator_errors(tmp, model, frames)
            say("ok: a frame reader failing during calibration and a damaged calibration cache each stop the "
                "build with an error and no engine (TensorRT itself swallows both)")
    except (EngineError, CacheError) as exc:
        say("selftest FAILED: %s" % exc)
        return 1
    for line in not_checked(facts):
        say("not checked here: %s" % line)
    say("selftest passed")
    return 0
