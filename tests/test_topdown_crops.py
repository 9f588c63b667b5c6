"""Where the top-down path's crops come from: track boxes predicted forward, and a person detector.

Real network output throughout: the PoseResNet stand-in and the person-detector stand-in
(``person_detector_onnx.py``) both wrap the real mobilenet_thin; the truth is what the bottom-up path
finds on the same image, compared with test_topdown's reference OKS (COCO's formula written out there).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import MODELS_DIR, REPO, run_cli, shared_data
from edge.capture.sources import Frame
from edge.config import ConfigError, load_config
from edge.inference.crops import box_velocity, predict_box
from edge.inference.detector import load_detector_spec
from edge.inference.engines import EngineError
from edge.inference.model import open_pose_model
from edge.pipeline import CameraPipeline
from edge.track import Tracker
from person_detector_onnx import INPUT as DET_INPUT, OUTPUTS as DET_OUTPUTS, write_detector_like
from poseresnet_onnx import write_poseresnet_like
from test_topdown import reference_oks, video_frame, write_config

ort = pytest.importorskip("onnxruntime")

DETECTOR_SPEC = REPO / "tests" / "specs" / "person-detector-standin.yaml"


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    graph = MODELS_DIR / "openpose-mobilenet-thin" / "graph_opt.pb"
    if not graph.is_file():
        pytest.skip("the default model's graph_opt.pb is absent (run `fallwatch model fetch`)")
    return write_poseresnet_like(graph, tmp_path_factory.mktemp("poseresnet") / "poseresnet_standin.onnx")


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory) -> Path:
    graph = MODELS_DIR / "openpose-mobilenet-thin" / "graph_opt.pb"
    if not graph.is_file():
        pytest.skip("the default model's graph_opt.pb is absent (run `fallwatch model fetch`)")
    return write_detector_like(graph, tmp_path_factory.mktemp("detector") / "detector_standin.onnx")


def edit_config(path: Path, **topdown) -> Path:
    raw = yaml.safe_load(path.read_text())
    for key, value in topdown.items():
        raw["topdown"][key] = value
    path.write_text(yaml.safe_dump(raw))
    return path


def detector_config(folder: Path, standin: Path, detector: Path, spec: Path = DETECTOR_SPEC, **extra) -> Path:
    """Top-down through the stand-in with the detector as its only crop source (no seed)."""
    return edit_config(write_config(folder, standin, seed=False),
                       detector={"spec": str(spec), "onnx": str(detector), **extra})


# ------------------------------------------------------------------ arithmetic of the prediction


def test_box_velocity_is_a_line_through_unevenly_spaced_boxes():
    t = np.array([0.0, 0.1, 0.35, 0.4])  # frames not evenly spaced
    start = np.array([0.2, 0.1, 0.4, 0.9])
    rate = np.array([0.5, 0.2, 0.5, 0.0])  # moving right and its top down: a person falling to the right
    boxes = start + t[:, None] * rate
    assert box_velocity(t, boxes) == pytest.approx(rate)
    # counting frames instead of seconds would see 0.5 / 0.1 per frame, and 0.125 over the 0.25 s gap
    assert box_velocity(t[:1], boxes[:1]).tolist() == [0, 0, 0, 0]
    assert box_velocity([1.0, 1.0], boxes[:2]).tolist() == [0, 0, 0, 0]  # no time between them
    still = np.repeat([[0.3, 0.1, 0.45, 0.8]], 4, axis=0)
    assert box_velocity(t, still).tolist() == [0, 0, 0, 0]


def test_predicted_box_holds_the_person_where_they_were_and_where_they_are_now():
    box = np.array([0.5, 0.2, 0.6, 0.8])
    assert predict_box(box, np.zeros(4), 0.7).tolist() == box.tolist()  # a still person: unchanged
    assert predict_box(box, np.array([0.5, 0, 0.5, 0]), 0.0).tolist() == box.tolist()  # no time passed
    # 0.2 s at 0.5 frame widths a second to the right: 0.1 further, and still where it was
    assert predict_box(box, np.array([0.5, 0, 0.5, 0]), 0.2).tolist() == pytest.approx([0.5, 0.2, 0.7, 0.8])
    # moving left past the frame's edge: clipped to the frame
    assert predict_box(box, np.array([-2.0, 0, -2.0, 0]), 0.5).tolist() == pytest.approx([0.0, 0.2, 0.6, 0.8])


# ------------------------------------------------------------------ prediction on real network output


def shifted(image: np.ndarray, dx: float) -> np.ndarray:
    """The image moved ``dx`` pixels to the right (the uncovered strip black): a person walking."""
    m = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_CONSTANT)


@pytest.fixture(scope="module")
def topdown_model(standin, tmp_path_factory):
    config = load_config(edit_config(write_config(tmp_path_factory.mktemp("pred"), standin), seed_every_s=3600),
                         env={})
    model = open_pose_model(config)
    yield config, model
    model.close()


def run_frames(config, model, images, times, predict_window_s):
    """The top-down pipeline over ``images`` at frame ``times`` (the seed on the first frame only): the last
    frame's job and people."""
    cfg = dataclasses.replace(config, topdown=dataclasses.replace(config.topdown, predict_window_s=predict_window_s))
    pipeline = CameraPipeline("walk", cfg, model)
    for i, (image, t) in enumerate(zip(images, times)):
        job = pipeline.prepare(Frame("walk", i, t, t, image))
        people = pipeline.find_people(job, pipeline.infer(job))
        pipeline.track(people, t, t, (image.shape[1], image.shape[0]))
    return job, people


def test_a_walking_person_is_cropped_whole_when_the_box_is_predicted(topdown_model, pose_model):
    """A real GMDCSA24 frame (a man walking, 1280x720) moved left at 400 px/s, frames at uneven times; the
    last one 0.6 s after the one before (a frame rate that dropped): the person has moved 240 px, more than
    the last box's margin. The last box where it was cuts them off; predicted forward it keeps them whole."""
    config, model = topdown_model
    base = video_frame("subject1/ADL/10.mp4", 1.5)
    times = [0.0, 0.1, 0.25, 0.3, 0.9]
    images = [shifted(base, -400.0 * t) for t in times]
    size = (base.shape[1], base.shape[0])
    truth = CameraPipeline("bu", load_config(None, env={}), pose_model).detect(images[-1]).keypoints
    assert len(truth) == 1

    job, people = run_frames(config, model, images, times, 0.0)
    assert len(job.boxes) == 1 and job.seeded == 0  # the last frame's crop: the track's box
    last_scores = [reference_oks(truth[0], p, size) for p in people.keypoints]
    assert not last_scores or max(last_scores) < 0.5, last_scores  # cut off: (nearly) nobody there

    job, people = run_frames(config, model, images, times, 0.5)
    assert len(job.boxes) == 1 and job.seeded == 0
    (x0, y0), (x1, y1) = job.transforms[0].to_frame(np.array([[0.0, 0.0], [1.0, 1.0]]))  # the crop, in the frame
    seen = truth[0][truth[0][:, 2] > 0]
    assert x0 <= seen[:, 0].min() and seen[:, 0].max() <= x1 and y0 <= seen[:, 1].min() and seen[:, 1].max() <= y1
    assert len(people) == 1 and reference_oks(truth[0], people.keypoints[0], size) >= 0.8


def test_a_still_persons_box_is_unchanged(pose_model, topdown_model):
    """A still person (the bottom-up skeleton of a real frame, seen at uneven times) confirmed on a track: the
    next frame's crop box is exactly the box of their parts, as without prediction."""
    config, model = topdown_model
    image = video_frame("subject1/Fall/15.mp4", 0.5)
    size = (image.shape[1], image.shape[0])
    person = CameraPipeline("bu", load_config(None, env={}), pose_model).detect(image).keypoints[:1]
    tracker = Tracker(config.tracker)
    pipeline = CameraPipeline("still", config, model)
    for t in (0.0, 0.15, 0.2, 0.45):
        ids = tracker.update(person, t, size)
    assert ids.tolist() == [1]
    pipeline.topdown.observe(person, tracker.tracks, 0.45, ids)
    job = pipeline.topdown.prepare(Frame("still", 4, 1.2, 1.2, image), seed=False, follow=False)
    pipeline.topdown.infer(job)
    seen = person[0][person[0][:, 2] > 0]
    assert job.boxes.tolist() == [[seen[:, 0].min(), seen[:, 1].min(), seen[:, 0].max(), seen[:, 1].max()]]


# ------------------------------------------------------------------ the person detector as crop source


def test_standin_detector_has_the_efficient_nms_io(detector_onnx):
    session = ort.InferenceSession(str(detector_onnx), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(DET_INPUT, ["N", 3, 368, 432])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [
        ("num_dets", ["N", 1]), ("det_boxes", ["N", 20, 4]), ("det_scores", ["N", 20]), ("det_classes", ["N", 20])]
    assert tuple(o.name for o in session.get_outputs()) == DET_OUTPUTS
    out = session.run(None, {DET_INPUT: np.zeros((2, 3, 368, 432), np.float32)})
    assert out[0].dtype == np.int32 and out[0].tolist() == [[0], [0]]  # a black frame: nobody
    assert out[3].dtype == np.int32 and not out[1].any() and not out[2].any()


@pytest.mark.parametrize("image", ["apollo11_crew.jpg", "subject1/ADL/10.mp4@1.5"])
def test_detector_sourced_topdown_finds_the_people_bottom_up_finds(image, standin, detector_onnx, pose_model,
                                                                   tmp_path):
    """The detector (no seed) gives each person's box, mapped back through its letterbox; the crops give
    the people the bottom-up path finds (OKS >= 0.8, one each). Measured limit, not tested: on
    subject1/Fall/15.mp4 at 0.5 s the detector's box is within 2% of the bottom-up skeleton's, yet OKS is
    0.76: the crop's weak parts differ (the left wrist, 0.28 in the bottom-up path, is lost; the left knee,
    0.24, lands elsewhere), where the seed's box gives 0.81; on astronaut.png (one person in a spacesuit)
    0.75, where the seed's box gives 0.62: the stand-in's own limit on that image, whichever box it gets."""
    if "@" not in image:
        frame = cv2.imread(str(shared_data("images", image)))
    else:
        clip, t = image.split("@")
        frame = video_frame(clip, float(t))
    size = (frame.shape[1], frame.shape[0])
    config = load_config(detector_config(tmp_path, standin, detector_onnx), env={})
    model = open_pose_model(config)
    try:
        assert model.seed is None and model.detector is not None
        pipeline = CameraPipeline("td", config, model)
        boxes, scores = model.detector.detect(frame)
        found = pipeline.detect(frame).keypoints
    finally:
        model.close()
    truth = CameraPipeline("bu", load_config(None, env={}), pose_model).detect(frame).keypoints
    assert len(truth) >= 1 and len(found) == len(truth) == len(boxes)
    assert ((boxes >= 0) & (boxes <= 1)).all() and (scores >= 0.3).all()
    used = set()
    for person in truth:
        oks = [reference_oks(person, other, size) for other in found]
        best = int(np.argmax(oks))
        assert oks[best] >= 0.8 and best not in used, (image, np.round(oks, 3))
        used.add(best)
        # the person's box, mapped back through the letterbox, holds the centre of their parts
        seen = person[person[:, 2] > 0]
        cx, cy = seen[:, 0].mean(), seen[:, 1].mean()
        assert any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes), (image, boxes)


def _spec_variant(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(DETECTOR_SPEC.read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "bad-detector.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize("change, field", [
    (lambda r: r["input"].update(tensor="input"), "input.tensor: 'input' is not the input of"),
    (lambda r: r["input"].update(size=[640, 640]), "input.size: [640, 640] but"),
    (lambda r: r["input"].update(layout="NHWC"), "input.layout: NHWC but"),
    (lambda r: r["outputs"].update(boxes="boxes"), "outputs.boxes: 'boxes' is not an output of"),
    (lambda r: r["outputs"].update(num_dets="det_scores"), "outputs.num_dets:"),
    (lambda r: r["outputs"].update(scores="det_boxes"), "outputs.scores:"),
])
def test_a_detector_spec_that_does_not_fit_the_model_is_refused_at_open(change, field, standin, detector_onnx,
                                                                       tmp_path):
    spec = _spec_variant(tmp_path, change)
    config = load_config(detector_config(tmp_path, standin, detector_onnx, spec), env={})
    with pytest.raises(EngineError) as err:
        open_pose_model(config)
    message = str(err.value)
    assert message.startswith("%s: %s" % (spec, field)) and "\n" not in message, message


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(family="top_down"), "family: is 'top_down'; a person detector's spec says family: detector"),
    (lambda r: r["outputs"].update(layout="yolo_raw"), "outputs.layout: is 'yolo_raw'; allowed: efficient_nms"),
    (lambda r: r.pop("person_class"), "person_class: expected the class id of a person"),
    (lambda r: r["input"].update(std=[255, 0, 255]), "input.std: a channel's std is 0"),
])
def test_a_bad_detector_spec_is_refused_by_the_config_naming_file_and_field(change, field, standin, detector_onnx,
                                                                           tmp_path):
    spec = _spec_variant(tmp_path, change)
    with pytest.raises(ConfigError) as err:
        load_config(detector_config(tmp_path, standin, detector_onnx, spec), env={})
    assert str(err.value).endswith("topdown.detector.spec: %s: %s" % (spec, field)) or \
        "topdown.detector.spec: %s: %s" % (spec, field) in str(err.value), str(err.value)


def test_a_pose_spec_is_not_a_detector_spec():
    with pytest.raises(ValueError) as err:
        load_detector_spec(REPO / "tests" / "specs" / "poseresnet-standin.yaml")
    assert "poseresnet-standin.yaml: family: is 'top_down'" in str(err.value)


def test_replay_with_the_detector_as_crop_source_reports_the_fall(standin, detector_onnx, tmp_path):
    """`fallwatch replay` of a GMDCSA24 fall clip (sitting, then a fall to the right side at 1.8 s), top-down
    with the detector as the only crop source (no seed): the person before the fall from the detector's
    boxes, the fall reported. The detector does not see the lying person (no neck peak: the stand-in's
    limit); the track's box, turned upright by the torso, keeps them."""
    config = detector_config(tmp_path, standin, detector_onnx)
    skeletons, events = tmp_path / "skeletons.jsonl", tmp_path / "events.jsonl"
    proc = run_cli("replay", "-c", str(config), "--max-fps", "3", "--record-skeletons", str(skeletons),
                   "--events-out", str(events), str(shared_data("gmdcsa24", "subject1", "Fall", "15.mp4")))
    assert proc.returncode == 0, proc.stderr
    assert "find nobody" not in proc.stderr
    lines = [json.loads(line) for line in skeletons.read_text().splitlines()]
    assert len(lines) >= 15
    before = [line["people"] for line in lines if line["t"] < 1.5]
    assert before and all(len(p) == 1 for p in before)
    falls = [e for e in map(json.loads, events.read_text().splitlines()) if e["type"] == "fall_detected"]
    assert len(falls) == 1, falls
    assert falls[0]["track_id"] in {p.get("track") for line in lines for p in line["people"]}


def constant_detector(path: Path, boxes, scores, classes, num: int) -> Path:
    """A real ONNX model with the stand-in's input and EfficientNMS outputs that always gives these
    detections (batch of one): the arithmetic of the mapping, with no network in the way."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = len(scores)
    values = {"num_dets": np.array([[num]], np.int32), "det_boxes": np.asarray([boxes], np.float32),
              "det_scores": np.asarray([scores], np.float32), "det_classes": np.asarray([classes], np.int32)}
    nodes = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(v, name + "_value"))
             for name, v in values.items()]
    types = {"num_dets": (TensorProto.INT32, [1, 1]), "det_boxes": (TensorProto.FLOAT, [1, k, 4]),
             "det_scores": (TensorProto.FLOAT, [1, k]), "det_classes": (TensorProto.INT32, [1, k])}
    graph = helper.make_graph(nodes, "constant_detector",
                              [helper.make_tensor_value_info(DET_INPUT, TensorProto.FLOAT, [1, 3, 368, 432])],
                              [helper.make_tensor_value_info(n, *types[n]) for n in DET_OUTPUTS])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def test_detector_boxes_come_back_through_the_letterbox_persons_only(tmp_path):
    """A 1280x720 frame letterboxed into 432x368: scale 432/1280 = 0.3375, the picture 432x243 at rows
    62..305. Input-pixel boxes -> frame fractions by hand; a non-person class, a box past num_dets and a
    score under min_score are dropped; a box over the edge is clipped to the frame."""
    from edge.inference.detector import PersonDetector
    from edge.inference.engines.onnxruntime import OnnxRuntimeEngine

    s = 0.3375
    boxes = [[320 * s, 62 + 180 * s, 640 * s, 62 + 540 * s],  # frame (320, 180)-(640, 540)
             [0, 0, 100, 100],  # a car (class 2)
             [1000 * s, 62 + 72 * s, 1400 * s, 62 + 648 * s],  # frame x 1000..1400: past the right edge
             [10, 70, 20, 80],  # score 0.2 < min_score
             [50, 100, 60, 120]]  # past num_dets
    model = constant_detector(tmp_path / "c.onnx", boxes, [0.9, 0.8, 0.7, 0.2, 0.9], [0, 2, 0, 0, 0], 4)
    detector = PersonDetector(load_detector_spec(DETECTOR_SPEC), OnnxRuntimeEngine(model), min_score=0.3)
    found, scores = detector.detect(np.zeros((720, 1280, 3), np.uint8))
    detector.close()
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    assert found.tolist()[0] == pytest.approx([320 / 1280, 180 / 720, 640 / 1280, 540 / 720], abs=1e-4)
    assert found.tolist()[1] == pytest.approx([1000 / 1280, 72 / 720, 1.0, 648 / 720], abs=1e-4)


def test_a_detector_box_on_part_of_a_tracked_lying_person_is_widened_to_the_track_and_turned(standin, tmp_path):
    """The detector (a real constant ONNX model) boxes only the head and shoulders of a person the track
    knows lying (head to the right), and somebody else elsewhere: the first crop holds the track's box as
    well and is turned like the track's skeleton (-90: head up); the other is a crop of its own, upright."""
    # 640x480 letterboxed into 432x368: scale 0.675, the picture 432x324 at rows 22..346
    def to_input(x0, y0, x1, y1):
        return [x0 * 432, 22 + y0 * 324, x1 * 432, 22 + y1 * 324]

    model_file = constant_detector(tmp_path / "c.onnx", [to_input(0.40, 0.70, 0.50, 0.85),
                                                         to_input(0.70, 0.10, 0.80, 0.50)], [0.9, 0.8], [0, 0], 2)
    config = load_config(detector_config(tmp_path, standin, model_file), env={})
    model = open_pose_model(config)
    try:
        pipeline = CameraPipeline("cam", config, model)
        lying = np.zeros((18, 3))
        parts = {"nose": (0.48, 0.78), "neck": (0.44, 0.80), "r_shoulder": (0.44, 0.76), "l_shoulder": (0.44, 0.84),
                 "r_hip": (0.30, 0.77), "l_hip": (0.30, 0.83), "r_knee": (0.20, 0.77), "l_knee": (0.20, 0.83),
                 "r_ankle": (0.10, 0.77), "l_ankle": (0.10, 0.83)}
        from edge.skeleton import KEYPOINT_INDEX

        for name, (x, y) in parts.items():
            lying[KEYPOINT_INDEX[name]] = (x, y, 0.9)
        pipeline.topdown.observe(lying[None], [], 0.0)
        job = pipeline.topdown.prepare(Frame("cam", 1, 0.1, 0.1, np.zeros((480, 640, 3), np.uint8)))
        job.after = None  # nothing else is tracked before it
        pipeline.topdown.infer(job)
    finally:
        model.close()
    assert job.detected == 2 and job.rotations == (-90, 0)
    assert job.boxes.tolist()[0] == pytest.approx([0.10, 0.70, 0.50, 0.85], abs=1e-4)  # the track's and the box
    assert job.boxes.tolist()[1] == pytest.approx([0.70, 0.10, 0.80, 0.50], abs=1e-4)
