"""The floor plane from feet (edge/floor.py, `fallwatch floor estimate`).

Synthetic but honest: people walk on a known floor (world: X right, Y forward, Z up, the floor Z = 0) in
front of a tilted and rolled camera; their joints are projected with a pinhole camera for the 2D keypoints,
and their 3D keypoints (camera coordinates) get noise, and some whole skeletons a depth error (a monocular
model's typical mistake: the person placed 15-30% too far along the rays). Outliers: a person sitting on a
chair (knees bent), a person lying on a bed 0.5 m up, and the swing leg of every walker. The expected plane
is the generator's floor in camera coordinates, never the fit's: normal within ``NORMAL_TOL_DEG``, the
camera's height within ``HEIGHT_TOL_M``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import MODELS_DIR, run_cli, shared_data
from edge import floor
from edge.config import ConfigError, load_config

W, H = 1280, 720
FX = FY = 900.0
CAMERA = np.array([0.4, -0.3, 2.4])  # world metres
PITCH, ROLL, YAW = math.radians(28.0), math.radians(4.0), math.radians(-7.0)
ANKLE_Z = 0.08
NORMAL_TOL_DEG = 1.0
HEIGHT_TOL_M = 0.03


def _rotation() -> np.ndarray:
    """Rows: the camera's x (right), y (down), z (forward) axes in world coordinates."""
    base = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # level, looking along +Y

    def about(axis, a):
        c, s = math.cos(a), math.sin(a)
        x, y, z = axis
        return np.array([[c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
                         [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
                         [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)]])
    # camera turned (yaw) about world Z, then pitched down about its x, then rolled about its z
    r = base @ about((0, 0, 1), -YAW)
    r = about((1, 0, 0), PITCH) @ r
    return about((0, 0, 1), ROLL) @ r


R = _rotation()
# height above the floor = n_w . (R^T p + C) = (R n_w) . p + C_z
TRUE_PLANE = np.concatenate([R @ np.array([0.0, 0.0, 1.0]), [CAMERA[2]]])


def person(at, heading: float, phase: float, pose: str = "walk") -> np.ndarray:
    """World joints (18, 3), the project's order, of a person whose feet are around ``at`` (X, Y)."""
    h = np.array([math.cos(heading), math.sin(heading), 0.0])
    u = np.array([math.sin(heading), -math.cos(heading), 0.0])  # to the person's right
    z = np.array([0.0, 0.0, 1.0])
    base = np.array([at[0], at[1], 0.0])

    def p(right, fwd, up):
        return base + right * u + fwd * h + up * z

    if pose == "lying":  # on a bed 0.5 m up, along the heading
        body = [p(0, 1.6, 0.6), p(0, 1.45, 0.6), p(0.18, 1.42, 0.6), p(0.22, 1.15, 0.6), p(0.24, 0.9, 0.6),
                p(-0.18, 1.42, 0.6), p(-0.22, 1.15, 0.6), p(-0.24, 0.9, 0.6), p(0.1, 0.92, 0.6), p(0.1, 0.5, 0.6),
                p(0.1, 0.08, 0.6), p(-0.1, 0.92, 0.6), p(-0.1, 0.5, 0.6), p(-0.1, 0.08, 0.6)]
    elif pose == "sitting":  # on a chair, thighs level, shins vertical, feet on the floor
        body = [p(0, -0.3, 1.18), p(0, -0.4, 1.03), p(0.18, -0.4, 1.0), p(0.22, -0.3, 0.75), p(0.24, -0.1, 0.6),
                p(-0.18, -0.4, 1.0), p(-0.22, -0.3, 0.75), p(-0.24, -0.1, 0.6), p(0.1, -0.4, 0.5),
                p(0.1, 0.02, 0.5), p(0.1, 0.02, ANKLE_Z), p(-0.1, -0.4, 0.5), p(-0.1, 0.02, 0.5),
                p(-0.1, 0.02, ANKLE_Z)]
    else:  # walking: the stance leg straight, the swing leg's knee bent (ankle up behind) half of the time
        stride = 0.3 * math.sin(phase)
        swing = math.cos(phase) > 0  # the left leg swings
        r_ank = p(0.1, stride, ANKLE_Z)
        r_knee = p(0.1, stride / 2, 0.5)
        if swing:
            l_knee, l_ank = p(-0.1, 0.15, 0.48), p(-0.1, -0.2, 0.25)  # knee angle about 100 degrees
        else:
            l_ank = p(-0.1, -stride, ANKLE_Z)
            l_knee = p(-0.1, -stride / 2, 0.5)
        body = [p(0, 0.08, 1.6), p(0, 0, 1.45), p(0.18, 0, 1.42), p(0.22, 0, 1.15), p(0.24, 0, 0.9),
                p(-0.18, 0, 1.42), p(-0.22, 0, 1.15), p(-0.24, 0, 0.9), p(0.1, 0, 0.92), r_knee, r_ank,
                p(-0.1, 0, 0.92), l_knee, l_ank]
    head = body[0]
    body += [head + 0.07 * h + 0.03 * u + 0.04 * z, head + 0.07 * h - 0.03 * u + 0.04 * z,
             head + 0.07 * u + 0.02 * z, head - 0.07 * u + 0.02 * z]
    return np.array(body)


def seen(world: np.ndarray, rng, noise_m: float = 0.015, depth_error: float = 1.0):
    """(2D keypoints (18, 3) normalised, 3D (18, 3) camera metres with noise and the depth error)."""
    cam = (world - CAMERA) @ R.T
    u = FX * cam[:, 0] / cam[:, 2] + W / 2
    v = FY * cam[:, 1] / cam[:, 2] + H / 2
    kp = np.stack([u / W, v / H, np.full(18, 0.8)], axis=1)
    return kp, cam * depth_error + rng.normal(0, noise_m, cam.shape)


def walk(frames: int = 300, seed: int = 1, noise_m: float = 0.015, depth_errors: float = 0.15,
         extras=("sitting", "lying"), path="room"):
    """Frames ``(keypoints (N, 18, 3), keypoints3d (N, 18, 3), width / height)`` of one person walking ``path`` (room: a loop
    over 3.6 m x 2.4 m of floor; line: back and forth along one line; spot: standing in one place), plus a
    sitting and a lying person. ``depth_errors`` of the walker's frames are placed 15-30% too far."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        a = 2 * math.pi * i / frames
        if path == "room":
            at, heading = (1.8 * math.cos(a), 4.5 + 1.2 * math.sin(a)), a + math.pi / 2
        elif path == "line":
            at, heading = (1.8 * math.sin(a), 4.5), 0.0 if math.cos(a) > 0 else math.pi
        else:
            at, heading = (0.2, 4.0), 1.0
        error = 1.0 + rng.uniform(0.15, 0.3) if rng.random() < depth_errors else 1.0
        people = [seen(person(at, heading, i * 0.7, "walk" if path != "spot" else "stand"), rng, noise_m, error)]
        for k, pose in enumerate(extras):
            people.append(seen(person((-1.2 + 2.2 * k, 6.0), 0.3, 0.0, pose), rng, noise_m))
        out.append((np.stack([p[0] for p in people]), np.stack([p[1] for p in people]), W / H))
    return out


def angle_deg(n1, n2) -> float:
    n1, n2 = np.asarray(n1[:3]) / np.linalg.norm(n1[:3]), np.asarray(n2[:3]) / np.linalg.norm(n2[:3])
    return math.degrees(math.acos(min(1.0, float(n1 @ n2))))


def test_the_generator_puts_standing_ankles_at_ankle_height():
    kp, kp3 = seen(person((0.5, 4.0), 0.4, math.pi), np.random.default_rng(0), noise_m=0.0)
    heights = kp3 @ TRUE_PLANE[:3] + TRUE_PLANE[3]
    assert heights[[10, 13]] == pytest.approx([ANKLE_Z, ANKLE_Z]) and heights[0] == pytest.approx(1.6)
    assert abs(np.linalg.norm(TRUE_PLANE[:3]) - 1) < 1e-12 and angle_deg(TRUE_PLANE, [0, -1, 0]) > 20  # tilted


def test_the_fit_recovers_the_generators_floor_through_noise_and_outliers():
    frames = walk()
    points, used, people = floor.collect(frames)
    fit = floor.fit_plane(points)
    assert angle_deg(fit.plane, TRUE_PLANE) <= NORMAL_TOL_DEG, (fit, TRUE_PLANE)
    assert abs(fit.plane[3] - TRUE_PLANE[3]) <= HEIGHT_TOL_M, (fit, TRUE_PLANE)
    assert abs(np.linalg.norm(fit.plane[:3]) - 1) < 1e-9
    # the sitting and lying people and the swing legs gave no points; the depth errors are outliers
    assert people == len(frames) and used == len(frames)
    assert len(points) == sum(1 if math.cos(i * 0.7) > 0 else 2 for i in range(len(frames)))
    assert 0.7 * len(points) <= fit.inliers <= 0.95 * len(points)
    assert fit.rms_m <= 0.03 and fit.extent_m[0] >= 3.0 and fit.extent_m[1] >= 2.0


def test_the_same_feet_fit_without_ransac_would_be_off():
    """The depth errors matter: a least-squares plane through every point misses the floor (so RANSAC's
    inlier choice is what the test above checks)."""
    points, _, _ = floor.collect(walk())
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre)[2][2]
    normal = normal if -normal @ centre > 0 else -normal
    assert angle_deg(normal, TRUE_PLANE) > 2 * NORMAL_TOL_DEG or \
        abs(-normal @ centre + ANKLE_Z - TRUE_PLANE[3]) > 2 * HEIGHT_TOL_M


@pytest.mark.parametrize("path, frames, message", [
    ("room", 10, "foot points (at least 30 needed)"),
    ("spot", 300, "they are all in one spot"),
    ("line", 300, "they are all along one line"),
])
def test_degenerate_feet_are_refused(path, frames, message):
    points, _, _ = floor.collect(walk(frames, path=path, depth_errors=0.0))
    with pytest.raises(floor.FloorError) as err:
        floor.fit_plane(points)
    assert message in str(err.value), str(err.value)


def test_people_who_are_not_standing_give_no_feet():
    rng = np.random.default_rng(0)
    for pose in ("sitting", "lying"):
        assert floor.foot_points(*seen(person((0.0, 4.0), 0.2, 0.0, pose), rng)).shape == (0, 3)
    standing = seen(person((0.0, 4.0), 0.2, math.pi), rng)  # phase pi: both legs straight
    assert floor.foot_points(*standing).shape == (2, 3)
    low = standing[0].copy()
    low[13, 2] = 0.1  # the left ankle hardly seen: nobody's feet
    assert floor.foot_points(low, standing[1]).shape == (0, 3)


# ---------------------------------------------------------------- the command

CONFIG = """\
# a site's config: these comments must survive
model:
  spec: openpose-mobilenet-thin   # the 2D model (the JSONL carries the 3D)
cameras:
  - name: hall
    uri: /dev/video0
    # the floor, from `fallwatch floor estimate`
    zones: []
  - name: room2   # second camera
    uri: /dev/video1
    floor_plane: [0, -1, 0, 2.0]
fall:
  use_3d: %s
mqtt:
  enabled: false
"""


def write_jsonl(path: Path, frames, camera="hall") -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, (kp, kp3, _) in enumerate(frames):
            people = [{"keypoints": np.round(k, 5).tolist(), "keypoints3d": np.round(k3, 4).tolist()}
                      for k, k3 in zip(kp, kp3)]
            fh.write(json.dumps({"t": i / 10, "camera": camera, "width": W, "height": H, "people": people}) + "\n")
    return path


def printed_plane(stdout: str):
    (line,) = [x for x in stdout.splitlines() if x.startswith("floor_plane: ")]
    return yaml.safe_load(line)["floor_plane"]


@pytest.mark.parametrize("use_3d", ["false", "true"])
def test_estimate_prints_the_plane_and_writes_it_keeping_comments(use_3d, tmp_path):
    """From a skeleton JSONL, the command prints the fit and the line, and --write sets the camera's plane:
    one line added, the rest of the file as it was, mode kept, and the file loads. With fall.use_3d on, the
    config without hall's plane is refused everywhere else, but this command measures it."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG % use_3d, encoding="utf-8")
    config.chmod(0o640)
    if use_3d == "true":
        with pytest.raises(ConfigError) as err:
            load_config(config, env={})
        assert "cameras[0].floor_plane" in str(err.value) and "fallwatch floor estimate --camera hall" in str(err.value)
    data = write_jsonl(tmp_path / "hall.jsonl", walk())
    proc = run_cli("-c", str(config), "floor", "estimate", str(data), "--camera", "hall", "--write")
    assert proc.returncode == 0, proc.stderr
    plane = printed_plane(proc.stdout)
    assert angle_deg(plane, TRUE_PLANE) <= NORMAL_TOL_DEG and abs(plane[3] - TRUE_PLANE[3]) <= HEIGHT_TOL_M
    assert "# foot points: " in proc.stdout and "residual RMS" in proc.stdout and "spread" in proc.stdout
    before, after = (CONFIG % use_3d).splitlines(), config.read_text(encoding="utf-8").splitlines()
    added = [line for line in after if line not in before]
    assert added == ["    floor_plane: [%s]" % ", ".join("%.4f" % v for v in plane)], added
    assert [line for line in after if line not in added] == before
    assert after.index(added[0]) == before.index("  - name: room2   # second camera")  # under hall
    assert config.stat().st_mode & 0o777 == 0o640
    cams = load_config(config, env={}).cameras
    assert cams[0].floor_plane == tuple(plane) and cams[1].floor_plane == (0, -1, 0, 2.0)
    assert not list(tmp_path.glob(".config.yaml.*"))  # no temporary file left
    # again: the value is replaced where it now is
    proc = run_cli("-c", str(config), "floor", "estimate", str(data), "--camera", "room2", "--write")
    assert proc.returncode == 1 and "no frame of camera 'room2'" in proc.stderr
    assert config.read_text(encoding="utf-8").splitlines() == after


def test_estimate_replaces_an_existing_plane(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG % "false", encoding="utf-8")
    data = write_jsonl(tmp_path / "r2.jsonl", walk(), camera="room2")
    proc = run_cli("-c", str(config), "floor", "estimate", str(data), "--camera", "room2", "--write")
    assert proc.returncode == 0, proc.stderr
    plane = printed_plane(proc.stdout)
    after = config.read_text(encoding="utf-8")
    assert after == (CONFIG % "false").replace("[0, -1, 0, 2.0]", "[%s]" % ", ".join("%.4f" % v for v in plane))


def test_estimate_writes_through_a_symlinked_config_like_the_zone_editor(tmp_path):
    """/etc/fallwatch/config.yaml may be a link to a managed file: --write changes the file it points to
    and keeps the link (the zone editor's writer, edge.configedit.write_atomic)."""
    real = tmp_path / "managed" / "config.yaml"
    real.parent.mkdir()
    real.write_text(CONFIG % "false", encoding="utf-8")
    link = tmp_path / "config.yaml"
    link.symlink_to(real)
    data = write_jsonl(tmp_path / "r2.jsonl", walk(), camera="room2")
    proc = run_cli("-c", str(link), "floor", "estimate", str(data), "--camera", "room2", "--write")
    assert proc.returncode == 0, proc.stderr
    plane = printed_plane(proc.stdout)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert real.read_text(encoding="utf-8") == (CONFIG % "false").replace(
        "[0, -1, 0, 2.0]", "[%s]" % ", ".join("%.4f" % v for v in plane))


@pytest.mark.parametrize("case, message", [
    ("line", "they are all along one line"),
    ("no3d", "no person has keypoints3d"),
    ("two_cameras", "several cameras (a, b): say which with --camera"),
])
def test_estimate_refuses_what_cannot_give_a_plane_and_writes_nothing(case, message, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG % "false", encoding="utf-8")
    data = tmp_path / "in.jsonl"
    if case == "line":
        write_jsonl(data, walk(path="line"))
    elif case == "no3d":
        write_jsonl(data, walk(20))
        lines = [json.loads(x) for x in data.read_text().splitlines()]
        for line in lines:
            for p in line["people"]:
                del p["keypoints3d"]
        data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    else:
        write_jsonl(data, walk(20), camera="a")
        write_jsonl(tmp_path / "b.jsonl", walk(20), camera="b")
        data.write_text(data.read_text() + (tmp_path / "b.jsonl").read_text().replace('"t": ', '"t": 10'))
    proc = run_cli("-c", str(config), "floor", "estimate", str(data), *(
        ["--camera", "hall", "--write"] if case != "two_cameras" else []))
    assert proc.returncode in (1, 2) and message in proc.stderr, proc.stderr
    assert "floor_plane: [" not in proc.stdout
    assert config.read_text(encoding="utf-8") == CONFIG % "false"


@pytest.mark.parametrize("args", [[], ["--seconds", "5"], ["x.jsonl", "--camera", "hall", "--seconds", "5"]])
def test_estimate_needs_files_or_a_camera_to_watch(args, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG % "false", encoding="utf-8")
    proc = run_cli("-c", str(config), "floor", "estimate", *args)
    assert proc.returncode == 2 and "give skeleton JSONL files or a video file, or (no file) --camera NAME " \
        "--seconds N" in proc.stderr, proc.stderr


def test_watching_a_camera_needs_a_3d_model(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG % "false", encoding="utf-8")
    proc = run_cli("-c", str(config), "floor", "estimate", "--camera", "hall", "--seconds", "5")
    assert proc.returncode == 1 and "model.spec openpose-mobilenet-thin is a bottom_up model and gives no 3D " \
        "keypoints" in proc.stderr, proc.stderr


def test_a_camera_written_in_flow_style_is_not_edited(tmp_path):
    from edge.floor_estimate import FloorInputError, edited_text

    with pytest.raises(FloorInputError) as err:
        edited_text("cameras:\n  - {name: hall, uri: /dev/video0}\n", "hall", [0, -1, 0, 2], "c.yaml")
    assert "flow style" in str(err.value) and "add the line yourself" in str(err.value)
    with pytest.raises(FloorInputError) as err:
        edited_text("mqtt: {enabled: false}\n", "hall", [0, -1, 0, 2], "c.yaml")
    assert "no camera named hall under cameras:" in str(err.value)
    # a last line without a newline, and a trailing comment, are kept
    text = "cameras:\n  - name: hall\n    uri: /dev/video0  # the hall\n    zones: []"
    assert edited_text(text, "hall", [0, -1, 0, 2]) == text + "\n    floor_plane: [0.0000, -1.0000, 0.0000, 2.0000]\n"
    text = "cameras:\n  - name: hall\n    uri: /dev/video0  # the hall\n"
    assert edited_text(text, "hall", [0, -1, 0, 2]) == text + "    floor_plane: [0.0000, -1.0000, 0.0000, 2.0000]\n"


# ---------------------------------------------------------------- through the BodyPose3DNet stand-in

def test_estimate_from_a_gmdcsa24_recording_through_the_3d_standin(tmp_path):
    """`fallwatch replay` of two GMDCSA24 clips of one camera (walking; standing, then a fall: the person lying
    is an outlier) with the BodyPose3DNet stand-in records keypoints3d; `fallwatch floor estimate` fits them.
    The stand-in's flat-figure camera model (tests/bodypose3dnet_onnx.py) has no floor of its own: each person
    is a flat cut-out at the depth where their neck-to-pelvis length is 492.7 mm, so its "floor" is only as
    level as those depths, and there is no known plane to compare with. What is checked: the default spread
    refuses (the walker covers less than 1 m x 0.5 m: here the tilt of a plane through their feet depends on
    which feet are taken by tens of degrees, which is what the refusal is for), and a lower spread gives a
    plane that most feet lie on (RMS at most 30 mm), whose normal points up in the picture (within 30 degrees)
    with the camera above it."""
    from test_body3d import write_config
    from bodypose3dnet_onnx import write_bodypose3dnet_like

    graph = MODELS_DIR / "openpose-mobilenet-thin" / "graph_opt.pb"
    if not graph.is_file():
        pytest.skip("the default model's graph_opt.pb is absent (run `fallwatch model fetch`)")
    standin = write_bodypose3dnet_like(graph, tmp_path / "standin.onnx")
    config = write_config(tmp_path, standin)
    recordings = []
    for clip in ("subject1/ADL/10.mp4", "subject1/Fall/13.mp4"):
        out = tmp_path / (clip.replace("/", "_") + ".jsonl")
        proc = run_cli("replay", "-c", str(config), "--max-fps", "10", "--record-skeletons", str(out),
                       "--events-out", str(tmp_path / "ev.jsonl"), str(shared_data("gmdcsa24", *clip.split("/"))),
                       timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        recordings.append(str(out))
    refused = run_cli("-c", str(config), "floor", "estimate", *recordings)
    assert refused.returncode == 1 and "of the floor (at least 1.0 m x 0.5 m needed)" in refused.stderr, refused.stderr
    proc = run_cli("-c", str(config), "floor", "estimate", *recordings, "--min-spread-m", "0.5x0.2")
    assert proc.returncode == 0, proc.stderr
    plane = np.asarray(printed_plane(proc.stdout))
    points, inliers = (int(v) for v in re.search(r"# foot points: (\d+), inliers (\d+)", proc.stdout).groups())
    assert points >= 30 and inliers >= 0.6 * points
    assert angle_deg(plane, [0, -1, 0]) <= 30 and plane[3] > 0  # up in the picture, camera above it
    rms = float(re.search(r"residual RMS ([0-9.]+) mm", proc.stdout).group(1))
    assert rms <= 30
    # a video goes through the same pipeline: the same frames, the same fit as its recording
    one = run_cli("-c", str(config), "floor", "estimate", recordings[0], "--min-spread-m", "0.3x0.1")
    video = run_cli("-c", str(config), "floor", "estimate", str(shared_data("gmdcsa24", "subject1", "ADL", "10.mp4")),
                    "--max-fps", "10", "--min-spread-m", "0.3x0.1", timeout=900)
    assert one.returncode == 0 and video.returncode == 0, (one.stderr, video.stderr[-3000:])
    assert video.stdout == one.stdout and "floor_plane: [" in video.stdout
    # and so does a configured camera watched live (a video-file camera read at the pipeline's pace)
    clip = shared_data("gmdcsa24", "subject1", "ADL", "10.mp4")
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    live_config = write_config(live_dir, standin, cameras=[{"name": "cam", "uri": str(clip), "realtime": False,
                                                             "max_fps": 10}])
    live = run_cli("-c", str(live_config), "floor", "estimate", "--camera", "cam", "--seconds", "600",
                   "--min-spread-m", "0.3x0.1", timeout=900)
    assert live.returncode == 0, live.stderr[-3000:]
    assert live.stdout == one.stdout


def test_a_camera_named_outside_the_config_is_said_to_be_judged_in_2d(tmp_path):
    """The loader refuses a configured camera without floor_plane under fall.use_3d; a camera that is not in
    the config (a replayed recording's, `run --camera URI`'s) cannot have one: a warning names it."""
    config = tmp_path / "config.yaml"
    config.write_text("cameras:\n  - name: room2\n    uri: /dev/video1\n    floor_plane: [0, -1, 0, 2.0]\n"
                      "fall:\n  use_3d: true\nmqtt:\n  enabled: false\n", encoding="utf-8")
    data = write_jsonl(tmp_path / "hall.jsonl", walk(20))
    proc = run_cli("-c", str(config), "replay", str(data), "--events-out", str(tmp_path / "ev.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "camera hall: fall.use_3d is on, but this camera is not configured with a floor_plane" in proc.stderr
    assert proc.stderr.count("fall.use_3d is on") == 1
