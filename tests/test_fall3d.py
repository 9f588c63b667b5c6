"""Fall detection in metric 3D (``fall.use_3d`` with a camera ``floor_plane``) on constructed sequences.

A person 5 m in front of a camera 2.2 m high, pitched 20 degrees down, with known intrinsics: their 3D
joints (world: X right, Y forward, Z up, metres) are moved through a fall towards the camera (the body
turns about the ankles until it lies on the floor) and through sitting down on a chair. The camera
coordinates, the floor plane and the 2D keypoints (pinhole projection) are computed here, independently
of edge.fall; everything goes through the real pipeline (tracker, detector) as a 3D model's people would.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.config import ConfigError, load_config
from edge.pipeline import CameraPipeline, People

W, H = 1280, 720
FX = FY = 800.0
PITCH = math.radians(20.0)
CAMERA = np.array([0.0, 0.0, 2.2])
# camera axes in world coordinates: x right, y down, z forward (looking 20 degrees below the horizon)
R = np.array([[1.0, 0.0, 0.0],
              [0.0, -math.sin(PITCH), -math.cos(PITCH)],
              [0.0, math.cos(PITCH), -math.sin(PITCH)]])
# the floor Z = 0 in camera coordinates: height = n_w . (R^T p + C) = (R n_w) . p + 2.2, n_w = (0, 0, 1)
FLOOR_PLANE = [float(v) for v in R @ np.array([0.0, 0.0, 1.0])] + [2.2]
FEET = np.array([0.3, 5.0, 0.0])

# project order: nose, neck, r_sho, r_elb, r_wri, l_sho, l_elb, l_wri, r_hip, r_knee, r_ank, l_hip, l_knee,
# l_ank, r_eye, l_eye, r_ear, l_ear; offsets from the point between the feet, metres (Y towards the back)
STANDING = np.array([
    (0, -0.08, 1.60), (0, 0, 1.45), (-0.18, 0, 1.42), (-0.22, 0, 1.15), (-0.24, 0, 0.90), (0.18, 0, 1.42),
    (0.22, 0, 1.15), (0.24, 0, 0.90), (-0.10, 0, 0.92), (-0.10, 0, 0.50), (-0.10, 0, 0.08), (0.10, 0, 0.92),
    (0.10, 0, 0.50), (0.10, 0, 0.08), (-0.03, -0.07, 1.64), (0.03, -0.07, 1.64), (-0.07, 0, 1.62),
    (0.07, 0, 1.62)])
SITTING = np.array([  # on a chair behind them: thighs level, torso upright
    (0, 0.34, 1.18), (0, 0.42, 1.03), (-0.18, 0.42, 1.00), (-0.22, 0.35, 0.75), (-0.24, 0.20, 0.60),
    (0.18, 0.42, 1.00), (0.22, 0.35, 0.75), (0.24, 0.20, 0.60), (-0.10, 0.42, 0.50), (-0.10, 0, 0.50),
    (-0.10, 0, 0.08), (0.10, 0.42, 0.50), (0.10, 0, 0.50), (0.10, 0, 0.08), (-0.03, 0.35, 1.22),
    (0.03, 0.35, 1.22), (-0.07, 0.42, 1.20), (0.07, 0.42, 1.20)])
FPS = 10


def fallen(phi: float) -> np.ndarray:
    """STANDING turned by ``phi`` about the line through the ankles (X axis), falling towards the camera."""
    y, z = STANDING[:, 1], STANDING[:, 2] - 0.08
    c, s = math.cos(phi), math.sin(phi)
    return np.stack([STANDING[:, 0], y * c - z * s, y * s + z * c + 0.08], axis=1)


def fall_sequence():
    for i in range(8 * FPS):
        t = i / FPS
        phi = min(max((t - 2.0) / 0.6, 0.0), 1.0) * math.pi / 2
        yield t, fallen(phi)


def sit_sequence():
    for i in range(8 * FPS):
        t = i / FPS
        a = min(max(t - 2.0, 0.0), 1.0)
        yield t, (1 - a) * STANDING + a * SITTING


def camera_view(body: np.ndarray):
    """World joints (offsets from FEET) -> (2D keypoints (18, 3) normalised, 3D (18, 3) camera metres)."""
    points = (body + FEET - CAMERA) @ R.T
    u = FX * points[:, 0] / points[:, 2] + W / 2
    v = FY * points[:, 1] / points[:, 2] + H / 2
    assert (points[:, 2] > 0).all() and (u > 0).all() and (u < W).all() and (v > 0).all() and (v < H).all()
    return np.stack([u / W, v / H, np.full(18, 0.9)], axis=1), points


def run(tmp_path: Path, sequence, use_3d: bool = True, plane=FLOOR_PLANE, with_3d: bool = True):
    raw = {"cameras": [{"name": "room1", "uri": "/dev/video0", "floor_plane": list(plane)}],
           "fall": {"use_3d": use_3d}, "mqtt": {"enabled": False}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    pipeline = CameraPipeline("room1", load_config(path, env={}))
    events = []
    for t, body in sequence:
        kp, kp3 = camera_view(body)
        people = People(kp[None], np.zeros(1, np.int64), keypoints3d=kp3[None] if with_3d else None)
        events += pipeline.track(people, t, t, (W, H))[1]
    return events


def test_the_floor_plane_here_puts_the_feet_on_the_floor():
    _, kp3 = camera_view(STANDING)
    n, d = np.array(FLOOR_PLANE[:3]), FLOOR_PLANE[3]
    assert np.allclose(kp3 @ n + d, STANDING[:, 2])  # height above the plane = the joint's Z


def test_a_fall_towards_the_camera_is_detected_in_3d(tmp_path):
    events = run(tmp_path, fall_sequence())
    falls = [e for e in events if e["type"] == "fall_detected"]
    assert len(falls) == 1 and 2.6 <= falls[0]["t"] <= 3.6, events
    f = falls[0]["features"]
    # metric: lying on the floor (heights about 0.1 m of a 1.7 m body), torso level with the floor
    assert f["head_height_bh"] <= 0.15 and f["hip_height_bh"] <= 0.15 and f["torso_angle_deg"] >= 80, f
    assert f["drop_bh"] >= 0.35


def test_sitting_down_is_not_a_fall_in_3d(tmp_path):
    assert run(tmp_path, sit_sequence()) == []


def head_and_hips(body: np.ndarray):
    """World height (Z, metres) of the head (mean of nose, eyes, ears) and of the hips."""
    return float(body[[0, 14, 15, 16, 17], 2].mean()), float(body[[8, 11], 2].mean())


def picture_torso_angle_deg(body: np.ndarray) -> float:
    """The neck-to-hips axis on the picture (pixels of the pinhole projection) from the picture's vertical."""
    kp, _ = camera_view(body)
    neck = kp[1, :2] * (W, H)
    hips = (kp[8, :2] + kp[11, :2]) / 2 * (W, H)
    return math.degrees(math.atan2(abs(hips[0] - neck[0]), hips[1] - neck[1]))


def at(t: float) -> np.ndarray:
    """The falling body at time t of fall_sequence."""
    return dict(fall_sequence())[round(t * FPS) / FPS]


def test_3d_is_opt_in(tmp_path):
    """The fall towards the camera, measured two ways, each checked against the constructed geometry.
    With fall.use_3d, the features are metric: the torso level with the floor (90 degrees) and the head as
    high above the floor as the constructed head is, in body heights (the body's segments give about 1.7 m;
    0.1 bh of slack). Without it, the same people with the same 3D keypoints are judged on the picture: the
    torso's angle is the projected one (more than 90 degrees: the head lies below the hips in the picture),
    and the head is below the floor line, because the person lies nearer the camera than where the feet
    stood, so the projected head is lower in the picture than the projected standing ankles."""
    metric = [e for e in run(tmp_path, fall_sequence()) if e["type"] == "fall_detected"]
    flat = [e for e in run(tmp_path, fall_sequence(), use_3d=False) if e["type"] == "fall_detected"]
    assert len(metric) == 1 and len(flat) == 1
    m, f = metric[0], flat[0]
    head_z, _ = head_and_hips(at(m["t"]))
    assert m["features"]["torso_angle_deg"] == pytest.approx(90.0, abs=1.0)
    assert m["features"]["head_height_bh"] == pytest.approx(head_z / 1.7, abs=0.1)
    body = at(f["t"])
    assert f["features"]["torso_angle_deg"] == pytest.approx(picture_torso_angle_deg(body), abs=1.0)
    assert picture_torso_angle_deg(body) > 150
    head_row = camera_view(body)[0][[0, 14, 15, 16, 17], 1].mean()
    ankle_row = camera_view(STANDING)[0][[10, 13], 1].max()
    assert head_row > ankle_row and f["features"]["head_height_bh"] < 0


def test_use_3d_without_a_floor_plane_is_refused_naming_the_camera(tmp_path):
    """fall.use_3d with a camera that has no floor_plane would judge that camera in 2D without a word: the
    config is refused, naming the camera's key and the command that measures the plane."""
    raw = {"cameras": [{"name": "room1", "uri": "/dev/video0", "floor_plane": FLOOR_PLANE},
                       {"name": "hall", "uri": "/dev/video1"}],
           "fall": {"use_3d": True}, "mqtt": {"enabled": False}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert message.startswith("%s: cameras[1].floor_plane: got []; fall.use_3d is true" % path), message
    assert "fallwatch floor estimate --camera hall" in message
    raw["fall"]["use_3d"] = False
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert load_config(path, env={}).cameras[1].floor_plane == ()


def test_time_going_back_starts_the_track_over(tmp_path):
    """A looped file that restarts its clock: the fall is played, then from t = 0 again, and again after a
    fall a person who only sits down. Each play's fall is reported once, at its own time, and the fallen
    state of the first play does not stick: no fall_cleared or long_lie after the restart, and sitting
    down after it is no fall."""
    def fall_then_sit():
        yield from fall_sequence()
        yield from sit_sequence()

    events = run(tmp_path, list(fall_sequence()) + list(fall_sequence()))
    assert [e["type"] for e in events] == ["fall_detected", "fall_detected"], events
    assert all(2.6 <= e["t"] <= 3.6 for e in events) and events[0]["t"] == events[1]["t"]
    events = run(tmp_path, fall_then_sit())
    assert [e["type"] for e in events] == ["fall_detected"], events


def test_time_going_back_ends_the_views_hold(tmp_path):
    """The views policy (auto) holds the rotated views while the fallen person lies there; when the clock
    goes back to a person standing at t = 0, the frames after it run the upright view only, instead of
    holding the old hold until the clock passes its time again."""
    raw = {"cameras": [{"name": "room1", "uri": "/dev/video0", "floor_plane": FLOOR_PLANE}],
           "fall": {"use_3d": True}, "mqtt": {"enabled": False}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    pipeline = CameraPipeline("room1", load_config(path, env={}), view_policy=True)
    every = pipeline.view_params.rotations
    assert len(every) == 3
    for t, body in list(fall_sequence()) + list(sit_sequence())[:3]:
        if t == 0.0 and pipeline._last_t > 0:
            assert pipeline.rotations(7.95, latest=True) == every  # held while lying
        kp, kp3 = camera_view(body)
        pipeline.track(People(kp[None], np.zeros(1, np.int64), keypoints3d=kp3[None]), t, t, (W, H))
    assert pipeline.rotations(0.25, latest=True) == (0,)
