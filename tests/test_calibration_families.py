"""``fallwatch-calibrate`` on the crop families (issue 18): the PoseResNet stand-in (top_down) and the
BodyPose3DNet stand-in (single_person_3d), ONNX Runtime INT8 on real images and GMDCSA24 frames, TensorRT
through the doubles (tests/fake_tensorrt.py, tests/fake_pycuda.py; they run the ONNX model with ONNX Runtime,
so a TensorRT "engine" computes what the FP32 model computes), and the daemon's replay on TensorRT.

The stand-ins wrap the real mobilenet_thin; its refinement stages and first six backbone blocks, and the
stand-ins' own decoding heads, are kept in float (--keep-float), as fallwatch does for mobilenet_thin itself
(BENCHMARKS.md "Engines: FP32 vs INT8"): quantised whole, mobilenet_thin loses half its keypoints.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import yaml

import fake_pycuda
import fake_tensorrt
from bodypose3dnet_onnx import INPUTS as B3D_INPUTS
from bodypose3dnet_onnx import write_bodypose3dnet_like
from calibration.cli import main as calibrate
from conftest import MODELS_DIR, REPO, shared_data
from edge.inference.specs import load_spec
from poseresnet_onnx import write_poseresnet_like

pytest.importorskip("onnxruntime")

PRN_SPEC = REPO / "tests" / "specs" / "poseresnet-standin.yaml"
B3D_SPEC = load_spec("bodypose3dnet")
KEEP_FLOAT = ("--keep-float", "^Openpose/", "--keep-float", "(^|/)Conv2d_[0-5][_/]", "--keep-float", "^(prn|b3d)/")
CALIB_VIDEO = ("subject1", "Fall", "15.mp4")
VERIFY_VIDEOS = (("subject2", "Fall", "12.mp4"), ("subject1", "ADL", "16.mp4"))
VERSIONS = ("8.6.1.6", "10.3.0")


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    graph = MODELS_DIR / "openpose-mobilenet-thin" / "graph_opt.pb"
    if not graph.is_file():
        pytest.skip("the default model's graph_opt.pb is absent (run `fallwatch model fetch`)")
    folder = tmp_path_factory.mktemp("standins")
    return {"top_down": write_poseresnet_like(graph, folder / "poseresnet_standin.onnx"),
            "single_person_3d": write_bodypose3dnet_like(graph, folder / "bodypose3dnet_standin.onnx")}


def write_config(folder: Path, model: Path, family: str, **extra) -> Path:
    raw = {"paths": {"models_dir": str(MODELS_DIR), "state_dir": str(folder / "state")},
           "model": {"spec": str(PRN_SPEC) if family == "top_down" else "bodypose3dnet", "onnx": str(model),
                     "input_height": 256, "input_width": 192},
           "topdown": {"seed_spec": "openpose-mobilenet-thin"}, "mqtt": {"enabled": False}}
    for section, values in extra.items():
        raw.setdefault(section, {}).update(values)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def verify_videos():
    return [a for v in VERIFY_VIDEOS for a in ("--verify-video", str(shared_data("gmdcsa24", *v)))]


@pytest.fixture
def trt(request, monkeypatch):
    fake_pycuda.install(monkeypatch)
    version = getattr(request, "param", VERSIONS[0])
    monkeypatch.setenv("FALLWATCH_L4T_RELEASE", "R36.4.0" if version.startswith("10") else "R35.4.1")
    module = fake_tensorrt.install(monkeypatch, version)
    yield module
    assert module.deprecated_calls == []  # never the binding API (set_binding_shape, execute_async_v2...)
    assert fake_pycuda.STATE.outlived == []
    assert fake_pycuda.leaks() == {"device": 0, "pinned": 0, "contexts": 0, "current": 0, "outlived": 0}


# ------------------------------------------------------------------ ONNX Runtime INT8 on real frames

@pytest.mark.parametrize("family", ["top_down", "single_person_3d"])
def test_int8_by_onnxruntime_from_person_crops_places_keypoints_as_fp32(family, standins, tmp_path, capsys):
    """Calibrated on the people of the shared images and a GMDCSA24 clip, verified on crops of two other
    clips: an INT8 model with every input of the FP32 one, 90% of FP32's keypoints within 8 crop pixels."""
    out = tmp_path / "int8.onnx"
    code = calibrate(["-c", str(write_config(tmp_path, standins[family], family)), "--backend", "onnxruntime",
                      "--images", str(shared_data("images")), "--video", str(shared_data("gmdcsa24", *CALIB_VIDEO)),
                      "--frames", "4", "--min-frames", "30", *verify_videos(), "--verify-frames", "4",
                      "--out", str(out), "--report", str(tmp_path / "report.json"), "--min-oks", "0.85",
                      "--no-progress", *KEEP_FLOAT])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    report = json.loads((tmp_path / "report.json").read_text())
    assert lines[0] == str(out) and lines[1].startswith("verification on %d held-out person crops" % report["crops"])
    assert report["passed"] and report["crops"] >= 5 and report["keypoints_fp32"] >= 50
    assert report["keypoint_agreement"] >= 0.9 and report["mean_oks"] >= 0.85
    assert set(report["groups"]) == {str(shared_data("gmdcsa24", *v)) for v in VERIFY_VIDEOS}
    info = json.loads((tmp_path / "int8.onnx.json").read_text())
    assert info["calibration_frames"] >= 30  # person crops: about one per image, one or two per clip frame
    fp32, int8 = onnx.load(str(standins[family])).graph, onnx.load(str(out)).graph
    assert [i.name for i in int8.input] == [i.name for i in fp32.input]
    assert Counter(n.op_type for n in int8.node)["QuantizeLinear"] >= 10


def test_a_calibration_set_without_people_is_a_usage_error(standins, tmp_path, capsys):
    """Frames where the seed model finds nobody give no crop to calibrate on: exit 2 and a sentence."""
    folder = tmp_path / "empty"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / ("wall%d.png" % i)), np.full((240, 320, 3), 40 + 60 * i, np.uint8))
    code = calibrate(["-c", str(write_config(tmp_path, standins["top_down"], "top_down")), "--backend",
                      "onnxruntime", "--images", str(folder), "--no-progress", "--out", str(tmp_path / "x.onnx")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fallwatch-calibrate: the calibration frames (3 read from %s) gave no person crops" % folder)
    assert "found nobody" in err and not (tmp_path / "x.onnx").exists()


def test_without_a_seed_model_calibration_says_what_to_set(standins, tmp_path, capsys):
    config = write_config(tmp_path, standins["single_person_3d"], "single_person_3d", topdown={"seed_spec": None})
    code = calibrate(["-c", str(config), "--backend", "onnxruntime", "--images", str(shared_data("images")),
                      "--no-progress", "--out", str(tmp_path / "x.onnx")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "topdown.seed_spec is null" in err and err.count("\n") == 0


# ------------------------------------------------------------------ TensorRT through the doubles

def seed_engine(model_onnx: Path, folder: Path) -> Path:
    """The mobilenet seed as an FP16 TensorRT engine at 368x432 (on TensorRT the seed runs on TensorRT too:
    topdown.seed_onnx names its engine)."""
    from calibration.trt_build import BuildOptions, build_engine

    path = folder / "seed.engine"
    build_engine(model_onnx, path, (368, 432), load_spec("openpose-mobilenet-thin").input_layout,
                 BuildOptions(precision="fp16", max_batch=4), None, folder / "seed.cache", progress=False)
    return path


def _trt_calibrate(tmp_path, standin, family, model_onnx, *extra):
    out = tmp_path / "standin.engine"
    config = write_config(tmp_path, standin, family, engine={"backend": "tensorrt", "precision": "fp16"},
                          topdown={"seed_onnx": str(seed_engine(model_onnx, tmp_path))})
    code = calibrate(["-c", str(config), "--images", str(shared_data("images")), "--min-frames", "8",
                      "--precision", "int8", "--calib-batch", "4", "--batch-size", "8", "--out", str(out),
                      "--no-progress",
                      "--report", str(tmp_path / "report.json"), *extra])
    return code, out


@pytest.mark.parametrize("trt", VERSIONS, indirect=True)
def test_tensorrt_int8_build_of_the_poseresnet_standin(trt, standins, model_onnx, tmp_path, capsys):
    """Profile 1..8 crops, calibration in batches of 4 ImageNet-normalised 256x192 crops, then the engine
    (the doubles compute FP32) agrees with the FP32 model on every held-out crop's keypoints."""
    code, out = _trt_calibrate(tmp_path, standins["top_down"], "top_down", model_onnx)
    assert code == 0, capsys.readouterr().err
    build = trt.builds[-1]
    assert build.profiles == [{"input": ((1, 3, 256, 192), (8, 3, 256, 192), (8, 3, 256, 192))}]
    assert build.calibration_profile == {"input": ((4, 3, 256, 192),) * 3}
    assert len(trt.calibration_batches) >= 2
    for batch in trt.calibration_batches:
        assert list(batch) == ["input"] and batch["input"].shape == (4, 3, 256, 192)
        # (pixel - ImageNet mean) / std of 0..255 pixels; 0 outside the frame
        assert -2.2 < batch["input"].min() < -1.5 and 2.0 < batch["input"].max() < 2.7
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["backend"] == "tensorrt" and report["keypoint_agreement"] == 1.0
    assert report["crops"] >= 1 and report["keypoints_fp32"] > 0


@pytest.mark.parametrize("trt", VERSIONS, indirect=True)
def test_tensorrt_int8_build_of_the_bodypose3dnet_standin_feeds_five_inputs(trt, standins, model_onnx, tmp_path,
                                                                              capsys):
    """Every calibration batch hands TensorRT one device buffer per input, in the order TensorRT names them:
    the crops, k_inv of the image (default 77.3 degree field of view), t_form_inv (crop -> frame pixels),
    and the spec's limb lengths; the profile opens the batch of all five alike."""
    code, out = _trt_calibrate(tmp_path, standins["single_person_3d"], "single_person_3d", model_onnx)
    assert code == 0, capsys.readouterr().err
    build = trt.builds[-1]
    sample = {"input0": (3, 256, 192), "k_inv": (3, 3), "t_form_inv": (3, 3),
              "scale_normalized_mean_limb_lengths": (36,), "mean_limb_lengths": (36,)}
    assert build.profiles == [{n: ((1,) + s, (8,) + s, (8,) + s) for n, s in sample.items()}]
    assert build.calibration_profile == {n: ((4,) + s,) * 3 for n, s in sample.items()}
    widths = set()
    for path in sorted(shared_data("images").rglob("*")):
        image = cv2.imread(str(path)) if path.suffix in (".jpg", ".png") else None
        if image is not None:
            widths.add(image.shape[1])
    focal = {w / 2.0 / math.tan(math.radians(77.3) / 2.0) for w in widths}
    limbs = dict(B3D_SPEC.body3d.limb_lengths)
    assert len(trt.calibration_batches) >= 2
    for batch in trt.calibration_batches:
        assert tuple(batch) == B3D_INPUTS
        assert {n: a.shape for n, a in batch.items()} == {n: (4,) + s for n, s in sample.items()}
        assert 0.0 <= batch["input0"].min() and batch["input0"].max() <= 1.0  # BGR / 255
        for k_inv, t_inv in zip(batch["k_inv"], batch["t_form_inv"]):
            assert np.allclose(k_inv[2], [0, 0, 1]) and k_inv[0, 1] == 0 and k_inv[1, 0] == 0
            assert any(abs(1.0 / k_inv[0, 0] - f) < 1e-3 * f for f in focal)
            assert np.allclose(t_inv[2], [0, 0, 1]) and abs(np.linalg.det(t_inv[:2, :2])) > 0
        for name in ("scale_normalized_mean_limb_lengths", "mean_limb_lengths"):
            assert np.allclose(batch[name], np.asarray(limbs[name], np.float32)[None])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["keypoint_agreement"] == 1.0 and report["crops"] >= 1
    assert set(report["outputs"]) == {"pose2d", "pose2d_org_img", "pose25d", "pose3d"}


def test_tensorrt_engine_runs_a_multi_input_batch_like_onnxruntime(trt, standins, tmp_path):
    """The engine takes any batch of crops up to its profile (and larger ones in chunks), each input by name,
    and gives what ONNX Runtime gives; a missing input is refused by name."""
    from calibration.trt_build import BuildOptions, build_engine
    from edge.inference.engines import EngineError
    from edge.inference.engines.onnxruntime import OnnxRuntimeEngine
    from edge.inference.engines.tensorrt import TensorRTEngine
    from edge.inference.model import check_io

    model, out = standins["single_person_3d"], tmp_path / "b3d.engine"
    build_engine(model, out, (256, 192), "NCHW", BuildOptions(precision="fp16", max_batch=4), None,
                 tmp_path / "b3d.cache", progress=False, input_name="input0")
    images = sorted(shared_data("images", "coco").glob("*.jpg"))[:6]
    n = len(images)
    feeds = {"k_inv": np.repeat(np.linalg.inv([[800.0, 0, 640], [0, 800, 360], [0, 0, 1]])[None], n, 0),
             "t_form_inv": np.repeat(np.array([[2.0, 0, 100], [0, 2, 50], [0, 0, 1]])[None], n, 0)}
    for name, values in B3D_SPEC.body3d.limb_lengths:
        feeds[name] = np.repeat(np.asarray(values)[None], n, 0)
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    # real pictures (random pixels would leave every argmax to rounding), BGR / 255 as the spec says
    crops = np.stack([cv2.resize(cv2.imread(str(p)), (192, 256)).transpose(2, 0, 1) / 255.0
                      for p in images]).astype(np.float32)
    reference = OnnxRuntimeEngine(model)
    engine = TensorRTEngine(out)
    try:
        assert engine.input_name == "input0" and engine.max_batch == 4
        check_io(B3D_SPEC, engine, model)  # the spec's check at open (names, shapes) takes the engine
        assert engine.extra_inputs == {"k_inv": (-1, 3, 3), "t_form_inv": (-1, 3, 3),
                                       "scale_normalized_mean_limb_lengths": (-1, 36), "mean_limb_lengths": (-1, 36)}
        expected = reference.run(crops, feeds)
        for size in (1, 3, 6):  # 6 runs as 4 + 2
            got = engine.run(crops[:size], {k: v[:size] for k, v in feeds.items()})
            for name in ("pose2d", "pose3d"):
                np.testing.assert_allclose(got[name], expected[name][:size], rtol=1e-5, atol=1e-3)
        with pytest.raises(EngineError) as err:
            engine.run(crops[:2], {k: v[:2] for k, v in feeds.items() if k != "k_inv"})
        assert "k_inv" in str(err.value)
    finally:
        engine.close()
        reference.close()


# ------------------------------------------------------------------ the daemon on TensorRT

def test_replay_on_tensorrt_through_the_doubles_gives_the_onnxruntime_skeletons(trt, standins, model_onnx,
                                                                                 tmp_path):
    """`fallwatch replay` of a GMDCSA24 fall clip with engine.backend tensorrt for the PoseResNet stand-in and
    its mobilenet seed (FP16 engines, which the doubles compute in FP32): the config loads, and the skeleton
    JSONL is byte for byte the one the onnxruntime backend records, the fall reported."""
    from calibration.trt_build import BuildOptions, build_engine
    from edge.cli import main as fallwatch

    engines = tmp_path / "engines"
    engines.mkdir()
    seed_engine(model_onnx, engines)
    build_engine(standins["top_down"], engines / "prn.engine", (256, 192), "NCHW",
                 BuildOptions(precision="fp16", max_batch=16), None, engines / "prn.cache", progress=False)
    clip = str(shared_data("gmdcsa24", "subject1", "Fall", "15.mp4"))
    recorded = {}
    for backend in ("onnxruntime", "tensorrt"):
        folder = tmp_path / backend
        folder.mkdir()
        extra = {"engine": {"backend": backend, "precision": "fp16"}}
        if backend == "tensorrt":
            extra["engine"]["engine_file"] = str(engines / "prn.engine")
            extra["topdown"] = {"seed_onnx": str(engines / "seed.engine")}
        config = write_config(folder, standins["top_down"], "top_down", **extra)
        code = fallwatch(["--config", str(config), "replay", clip, "--max-fps", "3", "--record-skeletons",
                          str(folder / "skeletons.jsonl"), "--events-out", str(folder / "events.jsonl")])
        assert code == 0
        recorded[backend] = (folder / "skeletons.jsonl").read_bytes()
        events = [json.loads(line)["type"] for line in (folder / "events.jsonl").read_text().splitlines()]
        assert "fall_detected" in events, (backend, events)
    assert len(recorded["tensorrt"].splitlines()) >= 15 and recorded["tensorrt"] == recorded["onnxruntime"]
