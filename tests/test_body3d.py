"""The single-person 3D path (spec ``family: single_person_3d``) through a BodyPose3DNet stand-in.

The stand-in (``bodypose3dnet_onnx.py``) is the real mobilenet_thin behind BodyPose3DNet's I/O contract,
with 3D from a documented flat-figure camera model. What is compared is independent of the code under
test: the people the bottom-up path finds (OKS written out again in test_topdown.reference_oks), NVIDIA's
34 names and constants as the issue and NVIDIA's sample give them, and the camera model computed here.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import MODELS_DIR, run_cli, shared_data
from edge.config import load_config
from edge.inference.engines import EngineError
from edge.inference.model import open_pose_model
from edge.inference.specs import SpecError, load_spec
from edge.pipeline import CameraPipeline
from edge.replay import check_skeleton_line
from bodypose3dnet_onnx import INPUTS, OUTPUTS, write_bodypose3dnet_like
from test_topdown import reference_oks, video_frame

ort = pytest.importorskip("onnxruntime")

SPEC = load_spec("bodypose3dnet").source
# The (and NVIDIA's post_processor_bodypose.cpp) 34 keypoints, in order.
NVIDIA_34 = ["pelvis", "left_hip", "right_hip", "torso", "left_knee", "right_knee", "neck", "left_ankle",
             "right_ankle", "left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe", "left_heel",
             "right_heel", "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
             "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky_knuckle", "right_pinky_knuckle",
             "left_middle_tip", "right_middle_tip", "left_index_knuckle", "right_index_knuckle", "left_thumb_tip",
             "right_thumb_tip"]
NECK_TO_PELVIS_M = 0.4926854  # mean_limb_lengths[2] of NVIDIA's nvdsinitinputlayers_BodyPose3DNet.cpp, mm -> m
R_HIP, L_HIP, NECK = 8, 11, 1


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    graph = MODELS_DIR / "openpose-mobilenet-thin" / "graph_opt.pb"
    if not graph.is_file():
        pytest.skip("the default model's graph_opt.pb is absent (run `fallwatch model fetch`)")
    return write_bodypose3dnet_like(graph, tmp_path_factory.mktemp("b3d") / "bodypose3dnet_standin.onnx")


def write_config(folder: Path, standin: Path, spec=SPEC, cameras=(), hw=(256, 192)) -> Path:
    raw = {"paths": {"models_dir": str(MODELS_DIR), "state_dir": str(folder / "state")},
           "model": {"spec": str(spec), "onnx": str(standin), "input_height": hw[0], "input_width": hw[1]},
           "topdown": {"seed_spec": "openpose-mobilenet-thin"}, "cameras": list(cameras), "mqtt": {"enabled": False}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(standin, tmp_path_factory, pose_model):
    """(the 3D model through the stand-in with the mobilenet seed, its config's folder)."""
    folder = tmp_path_factory.mktemp("b3dcfg")
    config = load_config(write_config(folder, standin), env={})
    model = open_pose_model(config)
    yield model, config
    model.close()


def test_standin_has_bodypose3dnet_io_and_the_spec_names_it(standin):
    session = ort.InferenceSession(str(standin), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("input0", ["N", 3, 256, 192]), ("k_inv", ["N", 3, 3]), ("t_form_inv", ["N", 3, 3]),
        ("scale_normalized_mean_limb_lengths", ["N", 36]), ("mean_limb_lengths", ["N", 36])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [
        ("pose2d", ["N", 34, 3]), ("pose2d_org_img", ["N", 34, 3]), ("pose25d", ["N", 34, 4]), ("pose3d", ["N", 34, 3])]
    n = 3
    feeds = {"input0": np.zeros((n, 3, 256, 192), np.float32), "k_inv": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
             "t_form_inv": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
             "scale_normalized_mean_limb_lengths": np.ones((n, 36), np.float32),
             "mean_limb_lengths": np.ones((n, 36), np.float32)}
    assert [o.shape for o in session.run(None, feeds)] == [(n, 34, 3), (n, 34, 3), (n, 34, 4), (n, 34, 3)]
    spec = load_spec("bodypose3dnet")
    body = spec.body3d
    assert spec.family == "single_person_3d" and spec.input_tensor == "input0" and spec.input_layout == "NCHW"
    assert (spec.color, spec.mean, spec.std, spec.input_size) == ("BGR", (0, 0, 0), (255, 255, 255), (256, 192))
    assert (spec.input_tensor,) + body.input_names == INPUTS and spec.output_names == OUTPUTS
    assert list(body.keypoints) == NVIDIA_34 and body.pose3d_unit_m == 0.001
    lengths = dict(body.limb_lengths)
    assert len(lengths["mean_limb_lengths"]) == 36 and lengths["mean_limb_lengths"][2] == 492.6854
    assert lengths["scale_normalized_mean_limb_lengths"][:3] == (0.5, 0.5, 1.0)
    # 34 -> 18 by name: every project keypoint from the NVIDIA keypoint of the same body part
    side = {"r": "right", "l": "left"}
    from edge.skeleton import KEYPOINTS
    for project, channel in body.to_project:
        name = KEYPOINTS[project]
        expected = name if "_" not in name else "%s_%s" % (side[name[0]], name[2:])
        assert NVIDIA_34[channel] == expected
    assert sorted(p for p, _ in body.to_project) == list(range(18))


@pytest.mark.parametrize("source", ["apollo11_crew.jpg", "subject1/ADL/10.mp4@1.5", "subject1/Fall/15.mp4@0.5"])
def test_3d_path_finds_the_people_bottom_up_finds(source, models, pose_model):
    model, config = models
    if source.endswith(".jpg"):
        image = cv2.imread(str(shared_data("images", source)))
    else:
        clip, t = source.split("@")
        image = video_frame(clip, float(t))
    size = (image.shape[1], image.shape[0])
    truth = CameraPipeline("bu", load_config(None, env={}), pose_model).detect(image).keypoints
    found = CameraPipeline("b3d", config, model).detect(image)
    assert len(truth) >= 1 and len(found) == len(truth)
    assert found.keypoints.shape[1:] == (18, 3) and (found.keypoints[..., :2] >= 0).all()
    assert (found.keypoints[..., :2] <= 1).all()
    assert found.keypoints3d is not None and found.keypoints3d.shape == found.keypoints.shape
    used = set()
    for person in truth:
        scores = [reference_oks(person, other, size) for other in found.keypoints]
        best = int(np.argmax(scores))
        assert scores[best] >= 0.8 and best not in used, (source, np.round(scores, 3))
        used.add(best)


@pytest.mark.parametrize("intrinsics", [[], [500.0, 520.0, 280.0, 250.0]])
def test_3d_keypoints_follow_the_camera_model(intrinsics, standin, tmp_path):
    """The stand-in's 3D (a flat figure at the depth where neck to pelvis is 492.7 mm) projects through the
    camera's intrinsics onto the 2D keypoints: k_inv, t_form_inv and the limb lengths are fed right. The
    intrinsics are computed here: from the assumed 77.3 degree field of view, or the configured ones."""
    cams = [{"name": "room1", "uri": "/dev/video0", "intrinsics": intrinsics}]
    config = load_config(write_config(tmp_path, standin, cameras=cams), env={})
    model = open_pose_model(config)
    try:
        image = cv2.imread(str(shared_data("images", "apollo11_crew.jpg")))
        people = CameraPipeline("room1", config, model).detect(image)
    finally:
        model.close()
    h, w = image.shape[:2]
    if intrinsics:
        fx, fy, cx, cy = intrinsics
    else:
        fx = fy = (w / 2) / math.tan(math.radians(77.3 / 2))
        cx, cy = w / 2, h / 2
    checked = 0
    for kp, kp3 in zip(people.keypoints, people.keypoints3d):
        present = kp[:, 2] > 0
        _projects_onto_2d(kp, kp3, (w, h), fx, fy, cx, cy)
        if present[[R_HIP, L_HIP, NECK]].all():
            pelvis = (kp3[R_HIP] + kp3[L_HIP]) / 2
            assert np.linalg.norm(kp3[NECK] - pelvis) == pytest.approx(NECK_TO_PELVIS_M, rel=2e-3)
            checked += 1
    assert checked >= 1


def _projects_onto_2d(keypoints, keypoints3d, size, fx, fy, cx, cy) -> None:
    w, h = size
    present = keypoints[:, 2] > 0
    assert (np.isfinite(keypoints3d).all(axis=1) == present).all()
    x, y, z = keypoints3d[present].T
    assert (z > 0).all()
    assert np.abs(fx * x / z + cx - keypoints[present, 0] * w).max() < 0.5
    assert np.abs(fy * y / z + cy - keypoints[present, 1] * h).max() < 0.5


def test_a_lying_person_is_cropped_upright_and_t_form_inv_turns_back(models, pose_model):
    """A walking person (GMDCSA24) turned 90 degrees clockwise lies with the head to the right: their crop
    is shown upright (-90) and the model's 3D, made through t_form_inv, still projects onto the 2D found."""
    from edge.pipeline import still_frame

    model, config = models
    image = video_frame("subject1/ADL/10.mp4", 1.5)
    people = CameraPipeline("bu", load_config(None, env={}), pose_model).detect(image).keypoints
    standing = people[np.argmax((people[..., 2] > 0).sum(axis=1))]
    lying_image = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    lying = standing.copy()  # clockwise: (x, y) -> (1 - y, x), normalised
    lying[:, 0], lying[:, 1] = 1 - standing[:, 1], standing[:, 0]
    lying[standing[:, 2] <= 0] = 0
    pipeline = CameraPipeline("b3d", config, model)
    pipeline.topdown.observe(lying[None], [], 0.0)
    job = pipeline.topdown.prepare(still_frame(lying_image), seed=False, follow=False)
    found = pipeline.find_people(job, pipeline.infer(job))
    size = (lying_image.shape[1], lying_image.shape[0])
    assert job.rotations == (-90,) and len(found) == 1 and found.view.tolist() == [-90]
    assert reference_oks(lying, found.keypoints[0], size) >= 0.8
    f = (size[0] / 2) / math.tan(math.radians(77.3 / 2))
    _projects_onto_2d(found.keypoints[0], found.keypoints3d[0], size, f, f, size[0] / 2, size[1] / 2)


def test_run_and_replay_of_one_clip_give_the_same_3d_skeletons(standin, tmp_path):
    """`fallwatch run` (a video-file camera read at the pipeline's pace) and `fallwatch replay` of the same
    file with the 3D spec: byte-identical skeleton JSONL, keypoints3d included."""
    clip = shared_data("gmdcsa24", "subject1", "Fall", "15.mp4")
    config = write_config(tmp_path, standin, cameras=[{"name": "cam", "uri": str(clip), "realtime": False,
                                                       "max_fps": 3}])
    run = run_cli("--config", str(config), "run", "--events-out", str(tmp_path / "run-events.jsonl"),
                  "--record-skeletons", str(tmp_path / "run.jsonl"), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    replayed = run_cli("--config", str(config), "replay", str(clip), "--camera", "cam",
                       "--events-out", str(tmp_path / "replay-events.jsonl"),
                       "--record-skeletons", str(tmp_path / "replay.jsonl"), timeout=600)
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    recorded = (tmp_path / "run.jsonl").read_bytes()
    assert len(recorded.splitlines()) >= 15 and b'"keypoints3d"' in recorded
    assert recorded == (tmp_path / "replay.jsonl").read_bytes()


def _spec_variant(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(Path(SPEC).read_text(encoding="utf-8"))
    change(raw)
    path = tmp_path / "bad-spec.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize("change, field", [
    (lambda r: r["input"].update(tensor="input_1"), "input.tensor"),
    (lambda r: r["input"].update(k_inv="kinv"), "input.k_inv"),
    (lambda r: r["input"]["limb_lengths"].pop("scale_normalized_mean_limb_lengths"), "input"),
    (lambda r: r["input"]["limb_lengths"].update(mean_limb_lengths=[1.0] * 35), "input.limb_lengths.mean_limb_lengths"),
    (lambda r: r["outputs"].update(pose3d="pose_3d"), "outputs.pose3d"),
    (lambda r: r.update(keypoints=NVIDIA_34[:33]), "outputs.pose2d"),
    (lambda r: r["input"].update(size=[256, 256]), "input.size"),
])
def test_a_spec_that_does_not_fit_the_model_is_refused_at_open(change, field, standin, tmp_path):
    spec = _spec_variant(tmp_path, change)
    hw = yaml.safe_load(spec.read_text())["input"]["size"]
    config = load_config(write_config(tmp_path, standin, spec, hw=hw), env={})
    with pytest.raises(EngineError) as err:
        open_pose_model(config)
    message = str(err.value)
    assert message.startswith("%s: %s: " % (spec, field)) and "\n" not in message, message


@pytest.mark.parametrize("change, message", [
    (lambda r: r["outputs"].update(heatmaps={"tensor": "x", "channels": [0, 17], "stride": 4}),
     "family is single_person_3d but the spec has outputs.heatmaps"),
    (lambda r: r["to_project"].update(nose="snout"), "to_project.nose: 'snout' is not one of the model's keypoints"),
    (lambda r: r["to_project"].update(chest="torso"), "to_project.chest: 'chest' is not a keypoint"),
    (lambda r: r.update(keypoints="nvidia35"), "keypoints: 'nvidia35' is not a known set"),
    (lambda r: r["outputs"].update(pose3d_unit_m=0), "outputs.pose3d_unit_m: expected metres"),
    (lambda r: r["input"].pop("k_inv"), "missing field 'k_inv'"),
])
def test_a_bad_3d_spec_file_is_refused_naming_file_and_field(change, message, tmp_path):
    spec = _spec_variant(tmp_path, change)
    with pytest.raises(SpecError) as err:
        load_spec(str(spec))
    assert str(err.value).startswith("%s: %s" % (spec, message)), str(err.value)


# ---------------------------------------------------------------- contract 2's optional keypoints3d

def _line(t: float, people) -> str:
    return json.dumps({"t": t, "camera": "cam", "width": 640, "height": 480, "people": people})


def _person(dx: float, with_3d: bool):
    kp = [[0.5 + dx, 0.2 + 0.035 * i, 0.9] for i in range(18)]
    person = {"keypoints": kp}
    if with_3d:
        person["keypoints3d"] = [None if i == 3 else [0.1 * i, -0.5 + 0.1 * i, 3.0 + dx] for i in range(18)]
    return person


@pytest.mark.parametrize("with_3d", [False, True])
def test_skeleton_files_with_and_without_keypoints3d_both_replay(with_3d, tmp_path):
    """An old file (no keypoints3d) and a new one replay; re-recorded, 3D comes out exactly as it went in,
    and only where it was."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(_line(i / 10, [_person(0.002 * i, with_3d)]) + "\n" for i in range(20)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = run_cli("replay", str(path), "--record-skeletons", str(out), "--events-out", str(tmp_path / "ev.jsonl"))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    given = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 20
    for got, sent in zip(lines, given):
        assert ("keypoints3d" in got["people"][0]) == with_3d
        if with_3d:
            assert got["people"][0]["keypoints3d"] == sent["people"][0]["keypoints3d"]


@pytest.mark.parametrize("bad", [
    [[0.0, 0.0, 1.0]] * 17,  # 17 entries
    [[0.0, 0.0]] + [None] * 17,  # a row of 2
    [[0.0, "1", 1.0]] + [None] * 17,  # a string
    [[True, 0.0, 1.0]] + [None] * 17,  # a boolean
    [[0.0, 0.0, 1e6]] + [None] * 17,  # a kilometre away
    {"nose": [0, 0, 1]},
])
def test_check_skeleton_line_refuses_a_bad_keypoints3d(bad):
    person = _person(0.0, False)
    person["keypoints3d"] = bad
    with pytest.raises(ValueError) as err:
        check_skeleton_line(_line(0.0, [person]))
    assert str(err.value).startswith("people[0].keypoints3d must be 18 entries"), str(err.value)
    person["keypoints3d"] = [None] * 17 + [[0.5, -1.0, 4.0]]
    assert check_skeleton_line(_line(0.0, [person]))["people"][0]["keypoints3d"][17] == [0.5, -1.0, 4.0]


def test_replay_of_a_clip_with_the_3d_spec_end_to_end(standin, tmp_path):
    """`fallwatch replay` of a GMDCSA24 fall clip with model.spec bodypose3dnet (the stand-in), the mobilenet
    seed: 18-keypoint skeletons in frame coordinates with keypoints3d (metres, in front of the camera), the
    person lying on the floor found in an upright-turned crop, and the fall reported."""
    config = write_config(tmp_path, standin)
    skeletons, events = tmp_path / "skeletons.jsonl", tmp_path / "events.jsonl"
    proc = run_cli("replay", "-c", str(config), "--max-fps", "3", "--record-skeletons", str(skeletons),
                   "--events-out", str(events), str(shared_data("gmdcsa24", "subject1", "Fall", "15.mp4")),
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in skeletons.read_text().splitlines()]
    assert len(lines) >= 15
    for line in lines:
        check_skeleton_line(json.dumps(line))
    people = [p for line in lines for p in line["people"]]
    assert people and all(len(p["keypoints"]) == 18 and "keypoints3d" in p for p in people)
    for p in people:
        for kp, kp3 in zip(p["keypoints"], p["keypoints3d"]):
            assert (kp3 is None) == (kp[2] == 0) and (kp3 is None or kp3[2] > 0)
    lying = [line["people"] for line in lines if line["t"] >= 3.3]
    assert lying and all(len(p) == 1 and p[0].get("view") == 90 for p in lying), lying
    falls = [e for e in map(json.loads, events.read_text().splitlines()) if e["type"] == "fall_detected"]
    assert len(falls) == 1


def test_a_person_whose_keypoints3d_is_null_has_no_3d_and_the_line_is_kept():
    person = _person(0.0, False)
    person["keypoints3d"] = None
    assert check_skeleton_line(_line(0.0, [person]))["people"][0]["keypoints3d"] is None
