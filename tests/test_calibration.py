"""Calibration pieces that need no TensorRT: frame sources, the tensor store, the calibration cache,
engine metadata checks, atomic writes, input shape plans and the OKS verification."""
from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.cache import CacheError, parse_cache, read_cache, write_cache
from calibration.data import Sources, check_count, collect
from calibration.frames import FramesError, camera_frames, image_files, read_images, sample_indices, video_frames
from calibration.shapes import ShapeError, max_batch_of, plan_input
from calibration.verify import MIN_AREA_PX2, SIGMAS, compare, match_people, oks
from edge.inference.engines import EngineError
from edge.inference.engines.device import DeviceFacts
from edge.inference.engines.metadata import (cache_path, check_engine, default_engine_path, make_metadata, metadata_path,
                                   read_metadata)
from edge.inference.models import sha256_bytes
from edge.inference.preprocess import LowLight, preprocess
from edge.inference.specs import load_spec

from conftest import shared_data

SPEC = load_spec("openpose-mobilenet-thin")
HW = (368, 432)
VIDEO = ("gmdcsa24", "subject1", "ADL", "10.mp4")  # 115 frames, 1280x720


def _write_images(folder: Path, count: int, seed: int = 0) -> list:
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(count):
        sub = folder / ("sub%d" % (i % 2))
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / ("img%02d.%s" % (i, "png" if i % 3 else "jpg"))
        assert cv2.imwrite(str(path), rng.randint(0, 255, (48 + i, 64, 3), dtype=np.uint8))
        paths.append(path)
    return paths


# ---------------------------------------------------------------- frame sources and the reader

def test_image_files_are_found_recursively_sorted_and_unreadable_ones_skipped(tmp_path):
    written = _write_images(tmp_path, 5)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    files = image_files(tmp_path)
    assert files == sorted(written + [tmp_path / "broken.jpg"])
    skipped = []
    frames = list(read_images(files, skipped))
    assert skipped == [str(tmp_path / "broken.jpg")]
    assert [f.source for f in frames] == [str(p) for p in sorted(written)]
    assert all(f.image.ndim == 3 and f.image.dtype == np.uint8 for f in frames)


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FramesError, match="no .jpg"):
        image_files(tmp_path)
    with pytest.raises(FramesError, match="not a folder"):
        image_files(tmp_path / "missing")


def test_sample_indices_spread_evenly():
    assert sample_indices(10, 3) == [0, 4, 9]  # round(4.5) == 4 in Python
    assert sample_indices(5, 10) == [0, 1, 2, 3, 4]
    assert sample_indices(0, 5) == [] and sample_indices(5, 0) == []
    idx = sample_indices(115, 12)
    assert len(idx) == 12 and idx[0] == 0 and idx[-1] == 114
    gaps = np.diff(idx)
    assert gaps.max() - gaps.min() <= 1


def test_video_is_sampled_over_its_whole_length():
    video = shared_data(*VIDEO)
    frames = list(video_frames(video, 12))
    assert [int(f.source.rsplit("#", 1)[1]) for f in frames] == sample_indices(115, 12)
    cap = cv2.VideoCapture(str(video))
    for _ in range(sample_indices(115, 12)[5]):
        cap.grab()
    ok, expected = cap.read()
    cap.release()
    assert ok and np.array_equal(frames[5].image, expected)


def test_video_errors(tmp_path):
    with pytest.raises(FramesError, match="no such file"):
        list(video_frames(tmp_path / "none.mp4", 5))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(FramesError, match="bad.mp4"):
        list(video_frames(bad, 5))


def test_camera_source_samples_a_live_capture_over_time():
    """A video file opened the way a camera URI is (edge.capture.sources.open_capture), one frame per tick."""
    video = shared_data(*VIDEO)
    ticks = iter(np.arange(0, 1000, 0.05))
    frames = list(camera_frames(str(video), 5, interval_s=0.1, clock=lambda: float(next(ticks))))
    assert len(frames) == 5
    assert [f.source for f in frames] == ["%s#%d" % (video, i) for i in range(5)]
    assert not np.array_equal(frames[0].image, frames[1].image)  # every other frame was dropped


def test_camera_errors_name_the_uri():
    with pytest.raises(FramesError, match="--camera"):
        list(camera_frames("/dev/video_does_not_exist", 3))


def test_csi_camera_without_gstreamer_says_what_is_missing():
    from edge.capture.sources import opencv_has_gstreamer

    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer; the message under test is for one without")
    with pytest.raises(FramesError, match="csi://0.*without GStreamer"):
        list(camera_frames("csi://0", 3))


def test_collect_preprocesses_exactly_like_the_daemon(tmp_path):
    images = _write_images(tmp_path / "img", 4)
    data = collect(Sources(images=(tmp_path / "img",)), SPEC, HW, "letterbox", tmp_path, progress=False)
    assert len(data) == 4 and data.tensors.shape == (4, 368, 432, 3)
    for i, path in enumerate(sorted(images)):
        expected, _ = preprocess(cv2.imread(str(path)), SPEC, HW, "letterbox")
        assert np.array_equal(data.tensors[i], expected[0])
    batches = list(data.batches(3))
    assert [b.shape[0] for b in batches] == [3, 1]
    assert [b.shape[0] for b in data.batches(3, drop_last=True)] == [3]
    assert (tmp_path / "calibration.npy").is_file()  # on disk, memory-mapped


def test_collect_brightens_dark_frames_as_the_daemon_does(tmp_path):
    rng = np.random.RandomState(3)
    (tmp_path / "img").mkdir()
    frames = [rng.randint(0, 30, (120, 160, 3)).astype(np.uint8), rng.randint(100, 200, (120, 160, 3)).astype(np.uint8)]
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(tmp_path / "img" / ("f%d.png" % i)), frame)
    light = LowLight(threshold=60.0)
    data = collect(Sources(images=(tmp_path / "img",)), SPEC, HW, "stretch", tmp_path, progress=False, light=light)
    for i, frame in enumerate(frames):
        assert np.array_equal(data.tensors[i], preprocess(frame, SPEC, HW, "stretch", light=light)[0][0])
    assert data.tensors[0].mean() > preprocess(frames[0], SPEC, HW, "stretch")[0].mean() + 20
    assert np.array_equal(data.tensors[1], preprocess(frames[1], SPEC, HW, "stretch")[0][0])


def test_collect_combines_sources_and_holds_out_every_tenth(tmp_path):
    video = shared_data(*VIDEO)
    _write_images(tmp_path / "img", 3)
    data = collect(Sources(images=(tmp_path / "img",), videos=(video,), frames=17), SPEC, HW, "stretch", tmp_path,
                   progress=False)
    assert len(data) == 20
    assert data.sources[3] == "%s#0" % video and data.sources[-1] == "%s#114" % video
    calib, held = data.split_holdout(10)
    assert len(held) == 2 and held.sources == [data.sources[9], data.sources[19]]
    assert len(calib) == 18 and not set(calib.sources) & set(held.sources)
    assert np.array_equal(held.tensors[0], data.tensors[9])


def test_too_few_frames_is_an_error_and_few_a_warning(caplog):
    with pytest.raises(FramesError, match="only 12 usable calibration frames \\(3 unreadable"):
        check_count(12, 3, minimum=50)
    with caplog.at_level(logging.WARNING, logger="fallwatch.calibration"):
        check_count(120, 0, minimum=50)
    assert "only 120 calibration frames" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fallwatch.calibration"):
        check_count(300, 0)
    assert caplog.text == ""


def test_no_source_is_an_error(tmp_path):
    with pytest.raises(FramesError, match="no calibration source"):
        collect(Sources(), SPEC, HW, "letterbox", tmp_path, progress=False)


# ---------------------------------------------------------------- the calibration cache

def _cache_bytes(algorithm: str = "EntropyCalibration2") -> bytes:
    lines = ["TRT-8601-%s" % algorithm, "image: %s" % struct.pack(">f", 0.5).hex(),
             "Openpose/concat_stage7: %s" % struct.pack(">f", 0.0078125).hex()]
    return ("\n".join(lines) + "\n").encode()


def test_cache_round_trip(tmp_path):
    path = tmp_path / "sub" / "model.engine.cache"
    write_cache(path, _cache_bytes())
    data = read_cache(path, "entropy")
    assert data == _cache_bytes()
    parsed = parse_cache(data)
    assert parsed.tensorrt_tag == "8601" and parsed.algorithm == "EntropyCalibration2"
    assert parsed.scales == {"image": 0.5, "Openpose/concat_stage7": 0.0078125}
    assert read_cache(tmp_path / "absent.cache", "entropy") is None


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b[:len(b) - 5], "truncated"),
    (lambda b: b"\x00\x13\x99garbage\xff" * 10, "not a TensorRT calibration cache"),
    (lambda b: b"hello world\n", "first line should look like"),
    (lambda b: b.replace(b": 3f000000", b": zz"), "line 2"),
    (lambda b: b.split(b"\n")[0] + b"\n", "holds no tensor scales"),
])
def test_damaged_cache_is_refused_with_the_file_named(tmp_path, mangle, message):
    path = tmp_path / "x.cache"
    path.write_bytes(mangle(_cache_bytes()))
    with pytest.raises(CacheError, match=message) as info:
        read_cache(path, "entropy")
    assert str(path) in str(info.value) and "--recalibrate" in str(info.value)


def test_cache_of_another_calibrator_is_refused(tmp_path):
    path = tmp_path / "x.cache"
    path.write_bytes(_cache_bytes("MinMaxCalibration"))
    assert read_cache(path, "minmax") is not None
    with pytest.raises(CacheError, match="made by MinMaxCalibration, not EntropyCalibration2"):
        read_cache(path, "entropy")


def test_a_crash_while_writing_the_cache_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "x.cache"
    write_cache(path, _cache_bytes())

    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space"):
        write_cache(path, _cache_bytes("EntropyCalibration2").replace(b"3f000000", b"3f800000"))
    assert path.read_bytes() == _cache_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.cache"]  # no temporary file left behind


def test_a_bad_cache_from_tensorrt_is_not_written(tmp_path):
    with pytest.raises(CacheError):
        write_cache(tmp_path / "x.cache", b"TRT-8601-EntropyCalibration2\nbroken")
    assert not (tmp_path / "x.cache").exists()


# ---------------------------------------------------------------- engine metadata

DEVICE = DeviceFacts("8.5.2.2", "Orin", "8.7", "R35.4.1")


def _engine(tmp_path: Path, **overrides) -> tuple:
    from edge.inference.models import atomic_write

    model = tmp_path / "model.onnx"
    model.write_bytes(b"pretend onnx model")
    engine = tmp_path / "model_368x432_int8.engine"
    plan = b"pretend serialized engine" * 10
    atomic_write(engine, plan)
    fields = dict(precision="int8", input_name="image", input_size=HW, batch=(1, 2, 2), model_file="model.onnx",
                  model_sha256=sha256_bytes(model.read_bytes()), engine_bytes=len(plan),
                  engine_sha256=sha256_bytes(plan), calibrator="entropy", build_time="2026-01-01T00:00:00Z")
    fields.update(overrides)
    meta = make_metadata(DEVICE, **fields)
    atomic_write(metadata_path(engine), meta.to_json())
    return engine, model, meta


def test_metadata_round_trip_and_matching_engine_is_accepted(tmp_path):
    engine, model, meta = _engine(tmp_path)
    assert read_metadata(engine) == meta
    raw = json.loads(metadata_path(engine).read_text())
    assert raw["jetpack"] == "5.1.2" and raw["l4t_release"] == "R35.4.1" and raw["compute_capability"] == "8.7"
    assert raw["tensorrt_version"] == "8.5.2.2" and raw["model_sha256"] == sha256_bytes(b"pretend onnx model")
    assert check_engine(engine, DEVICE, model, HW, "int8") == meta


@pytest.mark.parametrize("device, pieces", [
    (DeviceFacts("10.3.0", "Orin", "8.7", "R36.4.0"), ["TensorRT 8.5.2.2 (this device has 10.3.0)",
                                                        "L4T R35.4.1 = JetPack 5.1.2", "L4T R36.4.0 = JetPack 6.1"]),
    (DeviceFacts("8.5.2.2", "Xavier", "7.2", "R35.4.1"), ["GPU Orin, compute capability 8.7 (this device: Xavier, 7.2)"]),
    (DeviceFacts("8.5.2.2", "Orin", "8.7", None), ["this device: no L4T"]),
])
def test_engine_for_another_device_is_refused_with_the_rebuild_command(tmp_path, device, pieces):
    engine, model, _ = _engine(tmp_path)
    with pytest.raises(EngineError) as info:
        check_engine(engine, device, model, HW, "int8")
    text = str(info.value)
    for piece in pieces + ["Rebuild it on this device: fallwatch-calibrate", "--model %s" % model,
                           "--out %s" % engine, "--precision int8"]:
        assert piece in text


def test_engine_from_another_model_size_or_precision_is_refused(tmp_path):
    engine, model, _ = _engine(tmp_path)
    other = tmp_path / "other.onnx"
    other.write_bytes(b"another model")
    with pytest.raises(EngineError, match="built from another model than .*other.onnx"):
        check_engine(engine, DEVICE, other, HW, "int8")
    with pytest.raises(EngineError, match="takes 368x432 .* is 288x384"):
        check_engine(engine, DEVICE, model, (288, 384), "int8")
    with pytest.raises(EngineError, match="is int8 but engine.precision is fp16"):
        check_engine(engine, DEVICE, model, HW, "fp16")


def test_rebuild_hint_mentions_the_cache_when_there_is_one(tmp_path):
    engine, model, _ = _engine(tmp_path)
    cache_path(engine).write_bytes(_cache_bytes())
    with pytest.raises(EngineError, match="calibration cache .* is reused, so --images may be left out"):
        check_engine(engine, DeviceFacts("10.3.0", "Orin", "8.7", "R36.4.0"), model, HW, "int8")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_truncated_or_corrupted_engine_is_refused(tmp_path, damage):
    engine, model, _ = _engine(tmp_path)
    data = engine.read_bytes()
    engine.write_bytes(data[:len(data) // 2] if damage == "truncate" else data[:10] + b"X" + data[11:])
    with pytest.raises(EngineError, match="truncated or corrupted"):
        check_engine(engine, DEVICE, model, HW, "int8")


@pytest.mark.parametrize("text, message", [
    (None, "has no metadata file .*interrupted"),
    ("{not json", "unreadable or corrupted"),
    ('{"format": 1}', "lacks"),
    ('[1, 2]', "not format 1"),
    ('{"format": 1, "input_size": [368], "batch": [1, 1, 1]}', "lacks|malformed"),
])
def test_missing_or_damaged_metadata_is_refused(tmp_path, text, message):
    engine, model, meta = _engine(tmp_path)
    if text is None:
        metadata_path(engine).unlink()
    else:
        metadata_path(engine).write_text(text)
    with pytest.raises(EngineError, match=message) as info:
        check_engine(engine, DEVICE, model, HW, "int8")
    assert "fallwatch-calibrate" in str(info.value)


def test_missing_engine_says_how_to_build_it(tmp_path):
    with pytest.raises(EngineError, match="does not exist. Build it on this device: fallwatch-calibrate"):
        check_engine(tmp_path / "none.engine", DEVICE, None, HW, "int8")


def test_default_engine_path_names_model_size_and_precision(tmp_path):
    path = default_engine_path(tmp_path, "models/x/mobilenet_thin_368x432.onnx", HW, "int8")
    assert path == tmp_path / "engines" / "mobilenet_thin_368x432_int8.engine"
    assert default_engine_path(tmp_path, "bpn.onnx", (288, 384), "fp16").name == "bpn_288x384_fp16.engine"


# ---------------------------------------------------------------- input shape plans

def test_dynamic_batch_gets_a_profile_pinned_to_the_input_size():
    plan = plan_input((-1, 368, 432, 3), "NHWC", HW, max_batch=3, calibration_batch=8)
    assert plan.dynamic and plan.sample == (368, 432, 3)
    assert plan.profile() == ((1, 368, 432, 3), (3, 368, 432, 3), (3, 368, 432, 3))
    assert plan.calibration_shape() == (8, 368, 432, 3)
    nchw = plan_input((-1, 3, -1, -1), "NCHW", (224, 224))
    assert nchw.sample == (3, 224, 224) and nchw.batch == (1, 1, 1)


def test_fixed_batch_and_fixed_size_are_respected_or_explained():
    plan = plan_input((1, 288, 384, 3), "NHWC", (288, 384), max_batch=1, calibration_batch=8)
    assert not plan.dynamic and plan.batch == (1, 1, 1) and plan.calibration_batch == 1
    with pytest.raises(ShapeError, match="fixed batch of 1, so --batch-size 3 is impossible"):
        plan_input((1, 288, 384, 3), "NHWC", (288, 384), max_batch=3)
    with pytest.raises(ShapeError, match="model.input_height is 368: set model.input_height to 288"):
        plan_input((1, 288, 384, 3), "NHWC", HW)
    with pytest.raises(ShapeError, match="3 colour channels"):
        plan_input((1, 4, 8, 8), "NCHW", (8, 8))
    assert max_batch_of((-1, 3, 8, 8), (4, 3, 8, 8)) == 4 and max_batch_of((2, 3, 8, 8), None) == 2


# ---------------------------------------------------------------- OKS and people agreement

def _person(points):
    kp = np.zeros((18, 3), np.float32)
    for index, (x, y) in points.items():
        kp[index] = (x, y, 0.8)
    return kp


def test_oks_follows_the_coco_formula():
    a = _person({0: (0.5, 0.2), 1: (0.5, 0.3), 8: (0.45, 0.6), 13: (0.55, 0.9)})
    assert oks(a, a, (432, 368)) == pytest.approx(1.0)
    b = a.copy()
    b[0, 0] += 4 / 432.0  # the nose moved 4 pixels
    px = a[a[:, 2] > 0, :2] * (432, 368)
    area = max(float(np.prod(px.max(0) - px.min(0))), MIN_AREA_PX2)
    expected = (3 + np.exp(-16 / (2 * area * (2 * SIGMAS[0]) ** 2))) / 4
    assert oks(a, b, (432, 368)) == pytest.approx(expected, rel=1e-6)
    c = a.copy()
    c[13] = 0  # the ankle is missing in the other model: counts as 0
    assert oks(a, c, (432, 368)) == pytest.approx(0.75)


def test_people_are_matched_greedily_by_oks():
    left = _person({0: (0.2, 0.2), 1: (0.2, 0.3), 8: (0.2, 0.6)})
    right = _person({0: (0.8, 0.2), 1: (0.8, 0.3), 8: (0.8, 0.6)})
    ref = np.stack([left, right])
    other = np.stack([right, left, _person({0: (0.5, 0.9)})])
    matches = match_people(ref, other, (432, 368))
    assert sorted((i, j) for i, j, _ in matches) == [(0, 1), (1, 0)]
    assert match_people(ref, np.zeros((0, 18, 3), np.float32), (432, 368)) == []


def test_identical_models_agree_fully_and_a_broken_one_does_not(pose_model):
    image = cv2.imread(str(shared_data("images", "apollo11_crew.jpg")))
    tensor, _ = preprocess(image, SPEC, HW)
    run = pose_model.engine.run
    same = compare(run, run, [tensor], SPEC, HW)
    assert same.people_reference == 3 and same.people_agreement == 1.0 and same.mean_oks == pytest.approx(1.0)
    assert same.outputs["Openpose/concat_stage7"].max_abs == 0.0
    blurred = compare(run, lambda x: {k: np.roll(v, 3, axis=2) for k, v in run(x).items()}, [tensor], SPEC, HW)
    assert blurred.mean_oks < 0.9 or blurred.people_agreement < 1.0
    assert not blurred.passed(0.95, 0.9)
    assert blurred.to_dict()["outputs"]["Openpose/concat_stage7"]["max_abs_error"] > 0.1
