"""The TensorRT build and run paths, against the in-memory doubles of TensorRT (8.6 and 10 API
generations) and pycuda in tests/fake_tensorrt.py and tests/fake_pycuda.py. The doubles run the
ONNX model with ONNX Runtime, so engine outputs here are real network outputs; what is under test
is our use of the API: shapes and profiles, buffers and copies, calibration and its cache, metadata,
clean shutdown. Real TensorRT is exercised only by ``fallwatch-calibrate --selftest`` on a Jetson."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import fake_pycuda
import fake_tensorrt
from calibration.cache import CacheError, parse_cache
from calibration.data import Sources, collect
from calibration.selftest import selftest
from calibration.trt_build import BuildOptions, build_engine
from edge.inference.engines import EngineError, create_engine
from edge.inference.engines.device import current_device
from edge.inference.engines.metadata import cache_path, check_engine, metadata_path, read_metadata
from edge.inference.engines.onnxruntime import OnnxRuntimeEngine
from edge.inference.engines.tensorrt import TensorRTEngine
from edge.inference.specs import load_spec

from conftest import shared_data

SPEC = load_spec("openpose-mobilenet-thin")
HW = (368, 432)
VERSIONS = ("8.6.1.6", "10.3.0")


@pytest.fixture(params=VERSIONS)
def trt(request, monkeypatch):
    fake_pycuda.install(monkeypatch)
    monkeypatch.setenv("FALLWATCH_L4T_RELEASE", "R36.4.0" if request.param.startswith("10") else "R35.4.1")
    module = fake_tensorrt.install(monkeypatch, request.param)
    yield module
    assert module.deprecated_calls == []  # never the binding API, build_engine or max_workspace_size
    assert fake_pycuda.STATE.outlived == []  # every TensorRT object destroyed before its CUDA context
    assert fake_pycuda.leaks() == {"device": 0, "pinned": 0, "contexts": 0, "current": 0, "outlived": 0}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """16 real frames (COCO images and a fall video), preprocessed as the daemon does."""
    scratch = tmp_path_factory.mktemp("frames")
    return collect(Sources(images=(shared_data("images", "coco"),), frames=0), SPEC, HW, "letterbox", scratch,
                   progress=False).subset(range(16))


def _tiny_fixed_batch_model(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_int8_build_calibrates_writes_engine_metadata_and_cache(trt, model_onnx, frames, tmp_path):
    engine = tmp_path / "engines" / "mt_368x432_int8.engine"
    options = BuildOptions(precision="int8", max_batch=2, calibration_batch=4, workspace_mib=512,
                           timing_cache=tmp_path / "engines" / "timing.cache")
    meta = build_engine(model_onnx, engine, HW, "NHWC", options, frames, cache_path(engine), progress=False)
    build = trt.builds[-1]
    assert build.get_flag(trt.BuilderFlag.INT8) and build.get_flag(trt.BuilderFlag.FP16)
    assert build.pools == {trt.MemoryPoolType.WORKSPACE: 512 << 20}
    assert build.profiles[0]["image"] == ((1, 368, 432, 3), (2, 368, 432, 3), (2, 368, 432, 3))
    assert build.calibration_profile["image"][1] == (4, 368, 432, 3)
    assert build.calibrator.batches_given == 4  # 16 frames in batches of 4
    assert not build.get_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)  # no --keep-float: all may be INT8
    cache = parse_cache(cache_path(engine).read_bytes())
    assert cache.algorithm == "EntropyCalibration2"
    # the scale the double derived from the bytes it read from device memory: the frames' largest |value|
    assert cache.scales["image"] == pytest.approx(float(np.abs(frames.tensors).max()) / 127.0, rel=1e-6)
    assert (tmp_path / "engines" / "timing.cache").is_file()
    assert read_metadata(engine) == meta
    assert meta.precision == "int8" and meta.batch == (1, 2, 2) and meta.input_size == HW
    assert meta.tensorrt_version == trt.__version__ and meta.device_name == "Orin"
    assert meta.calibration_cache_sha256 is not None and meta.calibrator == "entropy"
    assert check_engine(engine, current_device(), model_onnx, HW, "int8") == meta


def test_engine_runs_any_batch_and_matches_the_onnx_model(trt, model_onnx, frames, tmp_path):
    engine_file = tmp_path / "e.engine"
    build_engine(model_onnx, engine_file, HW, "NHWC", BuildOptions(precision="fp16", max_batch=2), None,
                 cache_path(engine_file), progress=False)
    reference = OnnxRuntimeEngine(model_onnx)
    batch = np.ascontiguousarray(frames.tensors[:3])
    engine = create_engine("tensorrt", model_onnx, engine_file=engine_file, input_hw=HW, precision="fp16")
    try:
        assert isinstance(engine, TensorRTEngine) and engine.max_batch == 2
        assert engine.input_name == "image" and engine.output_names == ("Openpose/concat_stage7",)
        assert engine.input_shape == (-1, 368, 432, 3)
        got = engine.run(batch)["Openpose/concat_stage7"]  # 3 > max batch 2: two chunks
        one = engine.run(batch[1:2])["Openpose/concat_stage7"]
    finally:
        engine.close()
        engine.close()  # twice is fine
    want = reference.run(batch)["Openpose/concat_stage7"]
    assert got.shape == (3, 46, 54, 57) and np.allclose(got, want, atol=1e-5)
    assert np.allclose(one[0], want[1], atol=1e-5)
    with pytest.raises(EngineError, match="closed"):
        engine.run(batch)


def test_a_batch_preprocessed_into_the_engines_host_buffer_goes_to_the_gpu_without_staging(trt, model_onnx, frames,
                                                                                          tmp_path):
    """The daemon preprocesses into arrays lent by an InputPool over the engine: page-locked ones, which
    the engine copies to the GPU straight from (not through its own input buffer), giving the same
    outputs as a plain batch; the pool reuses them, and the engine frees whatever is still lent when it
    closes (the fixture checks that nothing pinned is left)."""
    from edge.inference.batches import InputPool

    engine_file = tmp_path / "e.engine"
    build_engine(model_onnx, engine_file, HW, "NHWC", BuildOptions(precision="fp16", max_batch=3), None,
                 cache_path(engine_file), progress=False)
    engine = TensorRTEngine(engine_file)
    try:
        pool = InputPool(engine)
        lent = pool.take((2,) + HW + (3,))
        lent[...] = frames.tensors[:2]
        got = engine.run(lent)["Openpose/concat_stage7"]
        assert fake_pycuda.STATE.htod_sources[-1] == lent.__array_interface__["data"][0]
        plain = np.array(frames.tensors[:2])
        want = engine.run(plain)["Openpose/concat_stage7"]
        staged = engine._host[engine.input_name].__array_interface__["data"][0]
        assert fake_pycuda.STATE.htod_sources[-1] == staged  # a plain array goes through the engine's buffer
        assert got.shape == (2, 46, 54, 57) and np.array_equal(got, want)
        pool.give(lent)
        again = pool.take((1,) + HW + (3,))  # the same memory, one view this time
        assert again.__array_interface__["data"][0] == lent.__array_interface__["data"][0] and pool.buffers == 1
        again[...] = frames.tensors[2:3]
        one = engine.run(again)["Openpose/concat_stage7"]
        assert fake_pycuda.STATE.htod_sources[-1] == again.__array_interface__["data"][0]
        assert np.array_equal(one, engine.run(np.array(frames.tensors[2:3]))["Openpose/concat_stage7"])
        bigger = pool.take((3,) + HW + (3,))  # while `again` is lent: a second buffer
        assert pool.buffers == 2 and fake_pycuda.leaks()["pinned"] == 2 + 1 + len(engine.output_names)
        pool.give(again)  # room for 2 views only, now that frames need 3: freed, not kept
        assert pool.buffers == 1 and fake_pycuda.leaks()["pinned"] == 1 + 1 + len(engine.output_names)
        with pytest.raises(ValueError, match="not lent by this pool"):
            pool.give(again)
        del bigger  # still lent when the engine closes: the engine frees it
    finally:
        engine.close()


def test_rebuild_reuses_the_cache_without_frames(trt, model_onnx, frames, tmp_path, caplog):
    engine = tmp_path / "e.engine"
    build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(calibration_batch=8), frames, cache_path(engine),
                 progress=False)
    first_cache = cache_path(engine).read_bytes()
    with caplog.at_level(logging.INFO, logger="fallwatch.calibration"):
        meta = build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(), None, cache_path(engine), progress=False)
    assert "using the calibration cache" in caplog.text
    assert trt.builds[-1].calibrator.batches_given == 0
    assert cache_path(engine).read_bytes() == first_cache
    assert meta.calibration_cache_sha256 == read_metadata(engine).calibration_cache_sha256
    with pytest.raises(EngineError, match="INT8 needs calibration frames"):
        build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(recalibrate=True), None, cache_path(engine),
                     progress=False)
    # raised in read_calibration_cache, swallowed by the trampoline, raised again by build_engine
    with pytest.raises(CacheError, match="made by EntropyCalibration2"):
        build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(calibrator="minmax"), None, cache_path(engine),
                     progress=False)


def test_dla_core_and_gpu_fallback(trt, model_onnx, tmp_path):
    engine = tmp_path / "e.engine"
    build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(precision="fp16", dla_core=1), None,
                 cache_path(engine), progress=False)
    build = trt.builds[-1]
    assert build.default_device_type == trt.DeviceType.DLA and build.DLA_core == 1
    assert build.get_flag(trt.BuilderFlag.GPU_FALLBACK)
    assert read_metadata(engine).dla_core == 1
    with pytest.raises(EngineError, match="--dla-core 2: this device has 2 DLA cores"):
        build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(precision="fp16", dla_core=2), None,
                     cache_path(engine), progress=False)


def test_damaged_timing_cache_is_replaced(trt, model_onnx, tmp_path, caplog):
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="fallwatch.calibration"):
        build_engine(model_onnx, tmp_path / "e.engine", HW, "NHWC", BuildOptions(precision="fp32", timing_cache=timing),
                     None, tmp_path / "c", progress=False)
    assert "timing cache" in caplog.text and timing.read_bytes().startswith(b"TIMING")


def test_fixed_batch_model(trt, tmp_path):
    model = _tiny_fixed_batch_model(tmp_path / "fixed.onnx")
    with pytest.raises(EngineError, match="fixed batch of 1, so --batch-size 2 is impossible"):
        build_engine(model, tmp_path / "f.engine", (8, 8), "NCHW", BuildOptions(precision="fp32", max_batch=2), None,
                     tmp_path / "c", progress=False)
    build_engine(model, tmp_path / "f.engine", (8, 8), "NCHW", BuildOptions(precision="fp32"), None, tmp_path / "c",
                 progress=False)
    assert trt.builds[-1].profiles == []  # static input: no profile
    engine = TensorRTEngine(tmp_path / "f.engine")
    try:
        x = np.arange(3 * 3 * 64, dtype=np.float32).reshape(3, 3, 8, 8)
        out = engine.run(x)["y"]
    finally:
        engine.close()
    assert out.shape == (3, 2, 8, 8) and np.allclose(out[:, 0], x.sum(axis=1))


def test_engine_from_another_tensorrt_is_refused(monkeypatch, model_onnx, tmp_path):
    fake_pycuda.install(monkeypatch)
    monkeypatch.setenv("FALLWATCH_L4T_RELEASE", "R35.4.1")
    fake_tensorrt.install(monkeypatch, "8.6.1.6")
    engine = tmp_path / "e.engine"
    build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(precision="fp16"), None, tmp_path / "c", progress=False)
    monkeypatch.setenv("FALLWATCH_L4T_RELEASE", "R36.4.0")  # the board was upgraded to JetPack 6.1
    fake_tensorrt.install(monkeypatch, "10.3.0")
    with pytest.raises(EngineError) as info:
        create_engine("tensorrt", model_onnx, engine_file=engine, input_hw=HW, precision="fp16")
    text = str(info.value)
    assert "TensorRT 8.6.1.6 (this device has 10.3.0)" in text and "JetPack 5.1.2" in text
    assert "fallwatch-calibrate --config CONFIG --model %s --precision fp16 --out %s" % (model_onnx, engine) in text
    # without the metadata check, TensorRT itself refuses the plan and we say so
    with pytest.raises(EngineError, match="corrupted or was built by another TensorRT version"):
        TensorRTEngine(engine)
    assert fake_pycuda.leaks()["contexts"] == 0 and fake_pycuda.STATE.outlived == []


def test_a_crash_while_writing_the_engine_never_leaves_a_usable_half(trt, model_onnx, tmp_path, monkeypatch):
    import os

    engine = tmp_path / "e.engine"
    build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(precision="fp16"), None, tmp_path / "c", progress=False)
    old = engine.read_bytes()
    real_replace = os.replace

    def crash(src, dst):
        if str(dst) == str(engine):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(precision="fp16", max_batch=2), None,
                     tmp_path / "c", progress=False)
    monkeypatch.setattr(os, "replace", real_replace)
    assert engine.read_bytes() == old  # the old engine whole, no partial new one
    assert not metadata_path(engine).exists()  # and refused until rebuilt
    with pytest.raises(EngineError, match="no metadata file .*interrupted"):
        create_engine("tensorrt", model_onnx, engine_file=engine, input_hw=HW, precision="fp16")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_parse_errors_and_bad_input_sizes_are_reported(trt, model_onnx, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    with pytest.raises(EngineError, match="TensorRT cannot parse .*bad.onnx"):
        build_engine(bad, tmp_path / "e.engine", HW, "NHWC", BuildOptions(precision="fp32"), None, tmp_path / "c",
                     progress=False)
    with pytest.raises(EngineError, match="model.input_height is 288"):
        build_engine(model_onnx, tmp_path / "e.engine", (288, 384), "NHWC", BuildOptions(precision="fp32"), None,
                     tmp_path / "c", progress=False)


def test_selftest_runs_against_the_doubles(trt, capsys):
    assert selftest(print) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("TensorRT %s; GPU Orin (compute capability 8.7); L4T R" % trt.__version__)
    assert out[1].startswith("ok: FP32 engine built, ran a batch of 2, matches NumPy") and "another thread" in out[1]
    assert out[2].startswith("ok: INT8 engine calibrated on 3 batches, its cache written and reused")
    assert out[3].startswith("ok: a frame reader failing during calibration and a damaged calibration cache")
    assert [line.split(":")[0] for line in out[4:-1]] == ["not checked here"] * 2 and out[-1] == "selftest passed"
    assert "not a Jetson" not in "\n".join(out)  # FALLWATCH_L4T_RELEASE says this is one


def test_selftest_cli_off_a_jetson_says_what_it_could_not_check(trt, monkeypatch, capsys):
    from calibration.cli import main
    from edge.health.board import Board

    monkeypatch.delenv("FALLWATCH_L4T_RELEASE")
    monkeypatch.setattr("edge.health.board.detect_board", lambda *args, **kwargs: Board(None, None, None))
    assert main(["--selftest"]) == 0
    out = capsys.readouterr().out
    assert "L4T none (JetPack unknown)" in out
    assert "not checked here: this is not a Jetson (no L4T release found): JetPack's CUDA, TensorRT and pycuda" in out
    assert out.rstrip().endswith("selftest passed")


def test_selftest_fails_when_calibrator_errors_are_swallowed(trt, monkeypatch, capsys):
    """What the selftest is for on a Jetson: were the check that re-raises calibrator errors missing, real
    TensorRT would build an engine from a failing reader, and the selftest says so."""
    import calibration.trt_build

    monkeypatch.setattr(calibration.trt_build, "check_calibration", lambda calibrator, model: None)
    assert selftest(print) == 1
    out = capsys.readouterr().out
    assert "selftest FAILED: a frame reader that failed during calibration went unnoticed: an engine was built" in out


def test_the_tensorrt_10_double_has_no_removed_api(monkeypatch):
    trt10 = fake_tensorrt.make_tensorrt("10.3.0")
    trt8 = fake_tensorrt.make_tensorrt("8.6.1.6")
    builder = trt10.Builder(trt10.Logger())
    with pytest.raises(AttributeError):
        builder.build_engine
    with pytest.raises(AttributeError):
        builder.create_builder_config().max_workspace_size = 1 << 30
    trt8.Builder(trt8.Logger()).create_builder_config().max_workspace_size = 1 << 30
    assert trt8.deprecated_calls == ["max_workspace_size"]
    network = trt8.Builder(trt8.Logger()).create_network(0)
    assert not trt8.OnnxParser(network, trt8.Logger()).parse(b"")  # 8.x needs EXPLICIT_BATCH


def test_cli_builds_and_verifies_an_engine(trt, model_onnx, tmp_path, capsys):
    from calibration.cli import main

    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text("paths: {state_dir: %s}\nmodel: {onnx: %s}\nengine: {backend: tensorrt}\n" % (state, model_onnx))
    video = shared_data("gmdcsa24", "subject1", "Fall", "13.mp4")
    code = main(["--config", str(config), "--video", str(video), "--frames", "12", "--min-frames", "10",
                 "--calib-batch", "2", "--verify-images", str(shared_data("images", "coco")), "--no-progress",
                 "--report", str(tmp_path / "report.json")])
    out = capsys.readouterr()
    assert code == 0, out.err
    engine = state / "engines" / "mobilenet_thin_368x432_int8.engine"
    assert out.out.splitlines()[0] == str(engine)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["frames"] == 20 and report["people_agreement"] == 1.0
    assert cache_path(engine).is_file() and read_metadata(engine).calibrator == "entropy"


def test_doctor_engine_check(trt, model_onnx, tmp_path):
    from edge.health import doctor
    from edge.health.board import Board
    from edge.config import load_config
    from edge.inference.engines.tensorrt import engine_path_for, runtime_versions

    config_file = tmp_path / "config.yaml"
    config_file.write_text("paths: {state_dir: %s}\nmodel: {onnx: %s}\nengine: {backend: tensorrt, precision: fp16}\n"
                           % (tmp_path, model_onnx))
    config = load_config(config_file, env={})
    board = Board(model="NVIDIA Jetson Orin Nano Developer Kit", l4t=(36, 4, 0), l4t_source="test")
    missing = doctor.check_engine(config, board)
    assert missing.status == doctor.FAIL and "does not exist" in missing.message
    build_engine(model_onnx, engine_path_for(config, model_onnx), HW, "NHWC", BuildOptions(precision="fp16"), None,
                 tmp_path / "c", progress=False)
    assert doctor.check_engine(config, board).status == doctor.OK
    assert runtime_versions()["TensorRT"] == trt.__version__


def test_keep_float_pins_matching_layers_to_fp16(trt, model_onnx, frames, tmp_path):
    engine = tmp_path / "e.engine"
    build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(calibration_batch=8, keep_float=("^Openpose/",)),
                 frames, cache_path(engine), progress=False)
    build = trt.builds[-1]
    assert build.get_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    pinned = [layer for layer in build.layers if layer.precision == trt.DataType.HALF]
    assert pinned and all(layer.name.startswith("Openpose/") or layer.get_output(0).name.startswith("Openpose/")
                          for layer in pinned)
    assert all(layer.get_output_type(j) == trt.DataType.HALF for layer in pinned for j in range(layer.num_outputs))
    backbone = [layer for layer in build.layers if layer.name.startswith("MobilenetV1/")]
    assert backbone and all(layer.precision == trt.DataType.FLOAT for layer in backbone)


def _tiny_calibration_network(trt, tmp_path):
    """A parsed fixed-batch network and an INT8 config, as build_engine makes them."""
    model = _tiny_fixed_batch_model(tmp_path / "fixed.onnx")
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(0 if trt.__version__.startswith("10") else
                                     1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    assert trt.OnnxParser(network, trt.Logger()).parse(model.read_bytes())
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.INT8)
    return builder, network, config


def test_the_double_swallows_calibrator_exceptions_like_the_real_trampoline(trt, tmp_path, capsys):
    """pyInt8.cpp: an exception in a callback is printed as [ERROR] Exception caught in NAME(): ... and
    becomes no cache / no batch; build_serialized_network itself raises nothing."""
    class Broken(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            raise OSError(5, "Input/output error")

        def read_calibration_cache(self):
            raise ValueError("the cache is damaged")

        def write_calibration_cache(self, cache):
            raise AssertionError("never reached: there were no batches")

    builder, network, config = _tiny_calibration_network(trt, tmp_path)
    config.int8_calibrator = Broken()
    assert builder.build_serialized_network(network, config) is None
    err = capsys.readouterr().err.splitlines()
    assert err == ["[ERROR] Exception caught in read_calibration_cache(): ValueError: the cache is damaged",
                   "[ERROR] Exception caught in get_batch(): OSError: [Errno 5] Input/output error"]
    del builder, network, config


def _failing_reader(monkeypatch, good_batches: int):
    """The calibration frames' scratch file fails (an I/O error) after ``good_batches`` batches."""
    from calibration.data import TensorSet

    real = TensorSet.batches

    def batches(self, batch_size, drop_last=False):
        for i, batch in enumerate(real(self, batch_size, drop_last)):
            if drop_last and i == good_batches:  # calibration reads with drop_last; verification does not
                raise OSError(5, "Input/output error", "calibration-frames.f32")
            yield batch

    monkeypatch.setattr(TensorSet, "batches", batches)


def _calibrate_cli(tmp_path, model, *extra):
    """``fallwatch-calibrate`` on 12 frames of a fall video in batches of 2: 6 calibration batches."""
    from calibration.cli import main

    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text("paths: {state_dir: %s}\nmodel: {onnx: %s}\nengine: {backend: tensorrt}\n" % (state, model))
    video = shared_data("gmdcsa24", "subject1", "Fall", "13.mp4")
    code = main(["--config", str(config), "--video", str(video), "--frames", "12", "--min-frames", "10",
                 "--calib-batch", "2", "--no-progress", "--no-verify"] + list(extra))
    return code, state / "engines" / "mobilenet_thin_368x432_int8.engine"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("fallwatch-calibrate:")]
    assert len(lines) == 1 and "Traceback" not in err and "[ERROR] Exception caught" not in err, err
    return lines[0]


def test_a_failing_frame_reader_is_an_error_and_no_engine(trt, model_onnx, tmp_path, monkeypatch, capsys):
    _failing_reader(monkeypatch, good_batches=1)
    code, engine = _calibrate_cli(tmp_path, model_onnx)
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1
    assert "INT8 calibration of" in line and "failed in get_batch after 1 of 6 calibration batches" in line
    assert "OSError: [Errno 5] Input/output error: 'calibration-frames.f32'" in line and "no engine was written" in line
    assert "workspace" not in line
    assert not engine.exists() and not metadata_path(engine).exists() and not cache_path(engine).exists()


def test_a_corrupt_calibration_cache_is_an_error_and_no_engine(trt, model_onnx, tmp_path, capsys):
    engine = tmp_path / "state" / "engines" / "mobilenet_thin_368x432_int8.engine"
    engine.parent.mkdir(parents=True)
    cache_path(engine).write_bytes(b"TRT-8601-EntropyCalibration2\nimage: 3c01\nOpenpose/concat_st")
    code, _ = _calibrate_cli(tmp_path, model_onnx)
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1
    assert line == ("fallwatch-calibrate: %s is truncated (its last line is incomplete); delete %s (or pass "
                    "--recalibrate) to calibrate again" % (cache_path(engine), cache_path(engine)))
    assert not engine.exists() and not metadata_path(engine).exists()
    assert cache_path(engine).read_bytes().endswith(b"concat_st")  # left as it was for the user to look at


def test_a_calibration_that_ends_early_is_an_error(trt, frames, tmp_path):
    from calibration.trt_calibrator import check_calibration, make_calibrator
    from edge.inference.engines.cuda import CudaContext

    context = CudaContext(0)
    try:
        with context.active() as cuda:
            calibrator = make_calibrator(trt, cuda, "entropy", frames, 8, tmp_path / "c", progress=False)
            assert calibrator.get_batch(["image"]) is not None  # TensorRT asks once, then stops
            with pytest.raises(EngineError, match="ended after 1 of 2 calibration batches"):
                check_calibration(calibrator, Path("m.onnx"))
            assert calibrator.get_batch(["image"]) is not None
            check_calibration(calibrator, Path("m.onnx"))  # all batches served: nothing to say
            calibrator.free()
    finally:
        context.close()


def test_tensorrt_objects_alive_when_the_context_closes_are_reported(trt):
    """What the double notices (and today's build path used to do): objects made under a context
    still alive when it is destroyed."""
    from edge.inference.engines.cuda import CudaContext

    context = CudaContext(0)
    with context.active():
        builder = trt.Builder(trt.Logger())
        config = builder.create_builder_config()
        del builder  # the config keeps it alive, as in the real bindings
    context.close()
    assert fake_pycuda.STATE.outlived == ["Builder outlived its CUDA context", "IBuilderConfig outlived its CUDA context"]
    fake_pycuda.STATE.outlived.clear()
    del config


def test_an_engine_closed_from_another_thread_frees_its_context(trt, model_onnx, tmp_path):
    import threading

    engine_file = tmp_path / "e.engine"
    build_engine(model_onnx, engine_file, HW, "NHWC", BuildOptions(precision="fp16"), None, tmp_path / "c",
                 progress=False)
    engine = TensorRTEngine(engine_file)
    closer = threading.Thread(target=engine.close)
    closer.start()
    closer.join()
    assert fake_pycuda.leaks()["contexts"] == 0  # pycuda leaks a context detached from another thread unless current


def test_pycuda_double_leaks_a_context_detached_from_another_thread_as_pycuda_does(monkeypatch):
    import threading

    cuda = fake_pycuda.install(monkeypatch)
    cuda.init()
    context = cuda.Device(0).make_context()
    cuda.Context.pop()
    detacher = threading.Thread(target=context.detach)
    detacher.start()
    detacher.join()
    assert fake_pycuda.leaks()["contexts"] == 1
    with pytest.raises(cuda.LogicError, match="cannot detach from invalid context"):
        context.detach()


def test_an_engine_that_fails_to_load_destroys_its_tensorrt_objects_inside_the_context(trt, tmp_path):
    """_setup refuses a two-input engine after the runtime and engine exist: the traceback must not keep
    them alive past the context (the fixture checks nothing outlived it)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("a", "b")],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(0 if trt.__version__.startswith("10") else
                                     1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    assert trt.OnnxParser(network, trt.Logger()).parse(model.SerializeToString())
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    (tmp_path / "two.engine").write_bytes(bytes(plan))
    del builder, network, plan
    with pytest.raises(EngineError, match="the engine has 2 inputs"):
        TensorRTEngine(tmp_path / "two.engine")


def test_a_cache_that_cannot_be_written_is_an_error_and_no_engine(trt, model_onnx, frames, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache's folder should be")
    engine = tmp_path / "e.engine"
    with pytest.raises(EngineError) as info:
        build_engine(model_onnx, engine, HW, "NHWC", BuildOptions(calibration_batch=4, recalibrate=True), frames,
                     blocker / "e.engine.cache", progress=False)
    text = str(info.value)
    assert "failed in write_calibration_cache after 4 of 4 calibration batches" in text
    assert "check that the calibration cache's folder exists, is writable and has space" in text
    assert not engine.exists() and not metadata_path(engine).exists()
