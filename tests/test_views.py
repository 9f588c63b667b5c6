"""Views (issue 9): rotated views map back exactly, merging finds one person per person, the
policy runs extra views only when something looks like a fall, and on the real clips."""
from __future__ import annotations

import importlib.util
import math
import sys
import threading

import numpy as np
import pytest

from edge.config import ConfigError
from edge.inference.specs import KEYPOINT_INDEX as K
from edge.inference.specs import load_spec
from edge.track import Tracker, TrackerConfig
from edge.inference.views import (MIRROR, TrackFeatures, ViewPolicy, ViewsConfig, make_views, max_views, merge_people,
                        person_distance, track_features)

from conftest import REPO, shared_data

SPECS = {"openpose-mobilenet-thin": (368, 432), "bodyposenet": (288, 384), "trt_pose": (224, 224)}


def _blob_frame(h, w, cx, cy, r):
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.zeros((h, w, 3), np.uint8)
    frame[(xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r] = 255
    return frame


# ------------------------------------------------------------------------------ views map back


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
@pytest.mark.parametrize("frame_hw", [(480, 640), (720, 1280)])
def test_every_view_maps_a_spot_back_to_where_it_was(spec_name, mode, frame_hw):
    spec, input_hw = load_spec(spec_name), SPECS[spec_name]
    h, w = frame_hw
    cx, cy = 0.3 * w, 0.65 * h  # off-centre, so a wrong rotation or flip lands far away
    batch, transforms = make_views(_blob_frame(h, w, cx, cy, r=min(h, w) // 16), spec, input_hw, mode, (0, 90, -90))
    ih, iw = input_hw
    assert batch.shape == ((3, ih, iw, 3) if spec.input_layout == "NHWC" else (3, 3, ih, iw))
    for view, transform in enumerate(transforms):
        img = batch[view, :, :, 0] if spec.input_layout == "NHWC" else batch[view, 0]
        weight = img - img.min()  # the black frame and the padding are the minimum; the spot is above it
        ys, xs = np.mgrid[0:ih, 0:iw]
        u, v = ((xs + 0.5) * weight).sum() / weight.sum(), ((ys + 0.5) * weight).sum() / weight.sum()
        fx, fy = transform.to_frame(np.array([u / iw, v / ih]))
        px_per_input = max(w, h) / min(ih, iw)  # the coarsest scale any view of this frame has
        assert abs(fx * w - cx) < 0.6 * px_per_input and abs(fy * h - cy) < 0.6 * px_per_input


def test_upright_view_is_exactly_plain_preprocess():
    from edge.inference.preprocess import preprocess

    frame = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    spec = load_spec("openpose-mobilenet-thin")
    batch, transforms = make_views(frame, spec, (368, 432), "letterbox", (0,))
    tensor, transform = preprocess(frame, spec, (368, 432), "letterbox")
    assert np.array_equal(batch, tensor) and transforms == (transform,)


def test_max_views_is_the_batch_the_engine_needs():
    assert max_views("never") == 1
    assert max_views("auto") == max_views("always") == 3
    assert max_views("auto", "cw") == 2
    with pytest.raises(ValueError, match="views.policy"):
        max_views("sometimes")


def test_an_engine_with_a_smaller_batch_than_the_views_need_is_reported_at_start(tmp_path, caplog):
    """Such an engine still works (the views run in passes), so opening it warns and says how to fix it."""
    from types import SimpleNamespace

    from edge.config import load_config
    from edge.inference.model import _warn_if_batch_too_small

    auto = load_config(None, env={})
    path = tmp_path / "never.yaml"
    path.write_text("views:\n  policy: never\n")
    never = load_config(path, env={})
    with caplog.at_level("WARNING", logger="fallwatch.pose"):
        _warn_if_batch_too_small(SimpleNamespace(max_batch=3), auto)
        _warn_if_batch_too_small(SimpleNamespace(max_batch=1), never)
        _warn_if_batch_too_small(SimpleNamespace(), auto)  # ONNX Runtime: no fixed maximum
        assert caplog.messages == []
        _warn_if_batch_too_small(SimpleNamespace(max_batch=1), auto)
    assert caplog.messages == ["the engine takes at most 1 image(s) per batch but views.policy auto can ask for 3: "
                               "those frames will run in 3 passes; rebuild it with fallwatch-calibrate --batch-size 3"]


# ------------------------------------------------------------------------------------ merging

W, H = 640, 480


def skeleton(hip_x, hip_y, height_px, angle_deg=0.0, parts=None, conf=0.8):
    """A person in frame coordinates (640x480): hips at (hip_x, hip_y) pixels, ``height_px`` tall,
    the body axis turned ``angle_deg`` from vertical (90 = lying, head to the right)."""
    a = math.radians(angle_deg)
    up = np.array([math.sin(a), -math.cos(a)])  # from the hips towards the head
    side = np.array([-up[1], up[0]])  # towards the person's left
    place = {  # along the body axis (fraction of the height from the hips) and across it
        "nose": (0.42, 0.0), "neck": (0.33, 0.0), "r_shoulder": (0.32, -0.1), "l_shoulder": (0.32, 0.1),
        "r_elbow": (0.15, -0.13), "l_elbow": (0.15, 0.13), "r_wrist": (0.0, -0.14), "l_wrist": (0.0, 0.14),
        "r_hip": (0.0, -0.05), "l_hip": (0.0, 0.05), "r_knee": (-0.25, -0.05), "l_knee": (-0.25, 0.05),
        "r_ankle": (-0.5, -0.05), "l_ankle": (-0.5, 0.05), "r_eye": (0.44, -0.02), "l_eye": (0.44, 0.02),
        "r_ear": (0.43, -0.04), "l_ear": (0.43, 0.04)}
    kp = np.zeros((18, 3), np.float32)
    for name, (along, across) in place.items():
        if parts is None or name in parts:
            x, y = np.array([hip_x, hip_y]) + height_px * (along * up + across * side)
            kp[K[name]] = (x / W, y / H, conf)
    return kp


def _merge(views, **kw):
    kps = [np.array(v, np.float32).reshape(-1, 18, 3) for v in views]
    scores = [np.full(len(k), 0.7, np.float32) for k in kps]
    return merge_people(kps, scores, frame_size=(W, H), **kw)


def test_one_person_seen_in_two_views_is_one_person_and_the_more_complete_skeleton_is_kept():
    upper = ["nose", "neck", "r_shoulder", "l_shoulder", "r_elbow", "l_elbow", "r_hip", "l_hip"]
    partial = skeleton(300, 300, 200, 85, parts=upper)
    full = skeleton(303, 297, 200, 88)  # the rotated view's skeleton: a little off, all 18 parts
    kps, scores, view = _merge([[partial], [full], []])
    assert len(kps) == 1 and view.tolist() == [1] and np.array_equal(kps[0], full)


def test_sides_swapped_between_views_still_match():
    a = skeleton(300, 300, 200, 80)
    b = skeleton(302, 301, 200, 82)[MIRROR]  # left and right labelled the other way round
    assert person_distance(a, b, (W, H)) < 0.05
    assert len(_merge([[a], [b]])[0]) == 1


def test_two_people_side_by_side_stay_two():
    left, right = skeleton(200, 400, 250), skeleton(330, 400, 250)  # shoulders ~50 px apart
    kps, _, view = _merge([[left, right], [right.copy()], [left.copy()]])
    assert len(kps) == 2 and sorted(view.tolist()) == [0, 0]


def test_people_of_one_view_are_never_merged_with_each_other():
    a, b = skeleton(300, 300, 200), skeleton(302, 300, 200)  # the parser said two: it stays two
    assert len(_merge([[a, b]])[0]) == 2


def test_a_lying_person_and_someone_kneeling_at_their_shoulders_stay_two():
    lying = skeleton(300, 400, 220, 90)  # head to the right, shoulders near x = 370
    kneeling = skeleton(420, 360, 160, 0, parts=["nose", "neck", "r_shoulder", "l_shoulder", "r_hip", "l_hip",
                                                  "r_knee", "l_knee"])
    kps, _, view = _merge([[kneeling], [lying]])
    assert len(kps) == 2 and sorted(view.tolist()) == [0, 1]


def test_ties_in_completeness_keep_the_more_confident_skeleton():
    a, b = skeleton(300, 300, 200, conf=0.5), skeleton(301, 300, 200, conf=0.5)
    kps, scores, view = merge_people([a[None], b[None]], [np.array([0.4]), np.array([0.9])], frame_size=(W, H))
    assert view.tolist() == [1] and scores.tolist() == [pytest.approx(0.9)]


def test_merge_maps_each_view_back_with_its_transform():
    spec = load_spec("openpose-mobilenet-thin")
    _, transforms = make_views(np.zeros((H, W, 3), np.uint8), spec, (368, 432), "letterbox", (0, 90, -90))
    person = skeleton(320, 380, 200, 90)  # lying, in frame coordinates
    per_view = []
    for t in transforms:  # where the network would find this person in each view's input
        m = np.vstack([np.asarray(t.matrix), [0, 0, 1]])
        inv = np.linalg.inv(m)
        kp = person.copy()
        kp[:, :2] = kp[:, :2] @ inv[:2, :2].T + inv[:2, 2]
        per_view.append(kp[None])
    kps, _, view = merge_people(per_view, [np.ones(1)] * 3, transforms, frame_size=(W, H))
    assert len(kps) == 1 and np.allclose(kps[0], person, atol=1e-5)


def test_no_people_anywhere_gives_empty_arrays():
    kps, scores, view = _merge([[], [], []])
    assert kps.shape == (0, 18, 3) and scores.shape == (0,) and view.shape == (0,)


# ------------------------------------------------------------------------------------- policy


def test_never_and_always_do_what_they_say():
    for policy, n in (("never", 1), ("always", 3)):
        p = ViewPolicy(ViewsConfig(policy=policy))
        lying = TrackFeatures(torso_angle_deg=90.0, descent_bh_per_s=2.0, missed_s=0.0, drop_bh=0.8)
        for t in range(20):
            p.observe([lying], t / 10, (W, H))
            assert len(p.views_for(t / 10 + 0.1)) == n
        assert p.stats.as_dict()["views_per_frame"] == n


def _fall_scene(t):
    """One person: standing until 2.0 s, falls (hips down 0.4 of the height, body turning to
    lying) until 2.6 s, lies until 6.0 s, gets up until 6.5 s and stands."""
    if t < 2.0:
        return skeleton(300 + 20 * t, 300, 240, 0)
    if t < 2.6:
        f = (t - 2.0) / 0.6
        return skeleton(340 + 40 * f, 300 + 100 * f, 240, 90 * f)
    if t < 6.0:
        return skeleton(380, 400, 240, 90)
    f = min(1.0, (t - 6.0) / 0.5)
    return skeleton(380, 400 - 100 * f, 240, 90 * (1 - f))


def _run(scene, fps, params, duration=9.0):
    """Feed ``scene(t)`` through the real tracker and the policy; return (t, number of views) per frame."""
    policy, tracker = ViewPolicy(params), Tracker(TrackerConfig())
    out = []
    for k in range(int(duration * fps)):
        t = k / fps
        views = policy.views_for(t)
        out.append((t, len(views)))
        person = scene(t)
        tracker.update(np.zeros((0, 18, 3)) if person is None else person[None], t, (W, H))
        policy.observe(tracker.tracks, t, (W, H))
    return out, policy


@pytest.mark.parametrize("fps", [5, 10, 15, 30])
@pytest.mark.parametrize("release", [30.0, 0.0])
def test_auto_runs_extra_views_from_the_fall_until_the_person_stands_again(fps, release):
    """With ``release_upright_deg`` the extra views stop once the person is seen standing (torso
    within 30 degrees of vertical, hips back up); without it, ``hold_s`` after the last
    suspicious frame."""
    params = ViewsConfig(policy="auto", hold_s=1.5, release_upright_deg=release)
    frames, policy = _run(_fall_scene, fps, params)
    extra = [t for t, n in frames if n == 3]
    assert all(n in (1, 3) for _, n in frames)
    assert extra, "no extra views at all"
    # quiet before the fall: one view per frame while the person stands
    assert min(extra) > 2.0
    # switched on during the fall, within two frames of the start of the descent's measurable speed,
    # plus the frame of lag (a frame's views follow from the observation two frames before it)
    lag = 1.0 / fps
    assert min(extra) <= 2.6 + lag + 1e-9
    # on for the whole time on the floor
    assert all(n == 3 for t, n in frames if 2.6 + lag <= t < 6.0 + 1.0 / fps)
    # the person gets up between 6.0 and 6.5 s: the torso is within 60 degrees of vertical from
    # 6.17 s and within 30 degrees, with the hips less than 0.15 body heights low, from 6.33 s
    if release:
        assert 6.33 - 1e-9 <= max(extra) <= 6.5 + 1.0 / fps + lag + 1e-9
    else:
        assert 6.0 + params.hold_s - 1.0 / fps - 1e-9 <= max(extra) <= 6.17 + params.hold_s + lag + 1e-9
    # and it stays off
    assert all(n == 3 for t, n in frames if min(extra) <= t <= max(extra))
    assert policy.stats.reasons.get("torso", 0) > 0


def _run_found(scene, fps, params, seen_in, duration=9.0):
    """Like :func:`_run`, but the person is only found in some views: ``seen_in(t)`` is the set
    of rotations whose view finds them at time t (the first of them that ran gives the skeleton)."""
    policy, tracker = ViewPolicy(params), Tracker(TrackerConfig())
    out = []
    for k in range(int(duration * fps)):
        t = k / fps
        ran = policy.views_for(t)
        out.append((t, ran))
        found = [r for r in ran if r in seen_in(t)]
        person = scene(t) if found else None
        ids = tracker.update(np.zeros((0, 18, 3)) if person is None else person[None], t, (W, H))
        found_in = {int(ids[0]): found[0]} if found and ids[0] else {}
        policy.observe(tracker.tracks, t, (W, H), found_in, ran)
    return out, policy


def _lying_found_cw_then_ccw(t):
    """Upright view until 2.6 s (standing, falling); lying, found only in the clockwise view until
    5.0 s, then only in the counter-clockwise one."""
    if t < 2.6:
        return {0, 90, -90}
    return {90} if t < 5.0 else {-90}


@pytest.mark.parametrize("fps", [5, 10, 30])
def test_a_person_lying_still_costs_two_views_per_frame_not_three(fps):
    params = ViewsConfig(policy="auto", recheck_s=1.0)
    frames, policy = _run_found(_fall_scene, fps, params, _lying_found_cw_then_ccw, duration=6.0)
    lying = [(t, ran) for t, ran in frames if 3.0 <= t < 6.0]
    # every frame on the floor looks in the view the person was found in ...
    assert all((90 in ran) if t < 5.0 else (-90 in ran or t < 5.0 + 2.0 / fps) for t, ran in lying), lying
    # ... and in every view at least once a second (recheck_s), but not much more often
    full = [t for t, ran in lying if len(ran) == 3]
    assert full and max(np.diff([3.0] + full + [6.0])) <= 1.0 + 2.0 / fps + 1e-9
    assert len(full) <= 3.0 * (1.0 + 2.0) + 1
    # when the person is no longer found in the followed view, the next frame runs every view
    switch = [ran for t, ran in frames if 5.0 <= t < 5.0 + 2.0 / fps + 1e-9]
    assert (0, 90, -90) in switch
    assert (0, -90) in [ran for t, ran in frames if 5.0 + 2.0 / fps < t < 6.0]
    views = sum(len(ran) for _, ran in lying) / len(lying)
    assert 2.0 < views <= 2.0 + (1.0 / (fps * 1.0) + 1.0 / len(lying)) * 2 + 1e-9, views
    assert policy.stats.followed_frames > 0


def test_recheck_zero_always_runs_every_view():
    frames, policy = _run_found(_fall_scene, 10, ViewsConfig(policy="auto", recheck_s=0), _lying_found_cw_then_ccw,
                                duration=6.0)
    assert all(len(ran) == 3 for t, ran in frames if t >= 2.6)
    assert policy.stats.followed_frames == 0


def test_a_second_track_held_but_never_found_rotated_keeps_every_view():
    """Two people are down: one is found in the clockwise view, the other in none (only tracked in
    the upright view): the policy cannot know where to look for the second, so it runs all views."""
    policy = ViewPolicy(ViewsConfig(policy="auto"))
    lying = TrackFeatures(torso_angle_deg=90.0, descent_bh_per_s=0.0, missed_s=0.0, drop_bh=0.8, tilted_s=2.0)
    for k in range(10):
        t = k / 10
        ran = policy.views_for(t)
        policy.observe([lying, lying], t, (W, H), {0: 90}, ran)
        # the first two frames have no observation two frames before them
        assert ran == ((0, 90, -90) if k >= 2 else (0,))
    single = ViewPolicy(ViewsConfig(policy="auto"))
    runs = []
    for k in range(10):
        t = k / 10
        runs.append(single.views_for(t))
        single.observe([lying], t, (W, H), {0: 90}, runs[-1])
    assert runs[:2] == [(0,), (0,)] and runs[2] == (0, 90, -90) and set(runs[3:]) == {(0, 90)}


@pytest.mark.parametrize("fps", [5, 15, 30])
def test_a_quiet_room_costs_one_view_per_frame(fps):
    walking = lambda t: skeleton(100 + 50 * t, 320 + 5 * math.sin(3 * t), 250, 5 * math.sin(2 * t))  # noqa: E731
    frames, policy = _run(walking, fps, ViewsConfig(policy="auto"))
    assert all(n == 1 for _, n in frames)
    assert policy.stats.as_dict()["views_per_frame"] == 1.0


@pytest.mark.parametrize("fps", [5, 15, 30])
def test_a_track_lost_inside_the_picture_turns_extra_views_on_and_one_that_walks_out_does_not(fps):
    params = ViewsConfig(policy="auto", hold_s=1.0, lost_near_floor_s=2.0)

    def slumps(t):  # sinks slowly (not fast enough to count as a fall) and is no longer seen from 3 s
        if t < 1.0:
            return skeleton(300, 300, 240)
        return skeleton(300, 300 + 30 * (t - 1.0), 240) if t < 3.0 else None

    def vanishes(t):  # walks in the middle of the room and is no longer seen from 3 s (fell out of sight)
        return skeleton(200 + 40 * t, 300, 240) if t < 3.0 else None

    for scene in (slumps, vanishes):
        frames, policy = _run(scene, fps, params)
        extra = [t for t, n in frames if n == 3]
        assert extra and 3.0 <= min(extra) <= 3.0 + 2.0 / fps + 1e-9, scene.__name__  # a frame of lag
        # last seen at about 3.0 s: suspicious until lost_near_floor_s after it, then held for hold_s
        assert max(extra) <= 3.0 + params.lost_near_floor_s + params.hold_s + 1.0 / fps + 1e-9, scene.__name__
        assert set(policy.stats.reasons) <= {"lost", "hold"}, policy.stats.reasons

    def walks_out(t):  # walks to the right edge of the picture; parts beyond it are not seen
        person = skeleton(300 + 150 * t, 300, 240)
        person[person[:, 0] >= 1.0] = 0.0
        return person if (person[:, 2] > 0).sum() >= 4 else None

    frames, _ = _run(walks_out, fps, params)
    assert all(n == 1 for _, n in frames)


def test_probe_runs_extra_views_now_and_then_in_a_quiet_room():
    frames, policy = _run(lambda t: skeleton(300, 300, 240), 10, ViewsConfig(policy="auto", probe_every_s=2.0),
                          duration=10.0)
    assert [t for t, n in frames if n == 3] == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0])
    assert policy.stats.reasons == {"probe": 5}


def test_track_features_units():
    size = (W, H)
    times = np.array([0.0, 0.5, 1.0])
    kps = np.stack([skeleton(300, 300 + 120 * t, 240, 0) for t in times])  # hips down 120 px/s
    f = track_features(times, kps, now=1.0, frame_size=size)
    body = 0.33 * 240 * 3.0  # the torso is 0.33 of this skeleton's height, times TORSO_TO_BODY_HEIGHT
    assert f.descent_bh_per_s == pytest.approx(120 / body, rel=1e-3)
    assert f.torso_angle_deg == pytest.approx(0.0, abs=1e-3) and f.missed_s == 0.0
    assert f.drop_bh == pytest.approx(120 / body, rel=1e-3)
    lying = track_features(np.array([0.0]), skeleton(300, 300, 240, 90)[None], now=0.4, frame_size=size)
    assert lying.torso_angle_deg == pytest.approx(90.0, abs=1e-3) and lying.descent_bh_per_s is None
    assert lying.missed_s == pytest.approx(0.4)


def test_track_features_tilt_lasts_from_the_first_tilted_observation():
    times = np.arange(0.0, 3.01, 0.25)
    angles = [0, 0, 10, 70, 80, 90, 90, 90, 40, 90, 90, 90, 90]  # upright, tilted from 0.75 s, a dip at 2.0 s
    kps = np.stack([skeleton(300, 300, 240, a) for a in angles])
    f = track_features(times, kps, now=3.0, frame_size=(W, H), tilt_deg=60.0, window_s=0.5)
    assert f.torso_angle_deg == pytest.approx(90.0, abs=1e-3)
    assert f.tilted_s == pytest.approx(3.0 - 2.25)  # counted from 2.25 s, after the dip
    g = track_features(times[:8], kps[:8], now=1.75, frame_size=(W, H), tilt_deg=60.0, window_s=0.5)
    assert g.tilted_s == pytest.approx(1.75 - 0.75)
    upright = track_features(times[:3], kps[:3], now=0.5, frame_size=(W, H), tilt_deg=60.0)
    assert upright.tilted_s == 0.0 and upright.torso_angle_deg < 60


def test_track_features_edge_gap_is_the_distance_to_the_nearest_border():
    person = skeleton(300, 300, 240)
    xy = person[person[:, 2] > 0, :2]
    expected = min(xy[:, 0].min(), xy[:, 1].min(), 1 - xy[:, 0].max(), 1 - xy[:, 1].max())
    f = track_features(np.array([0.0]), person[None], now=0.0, frame_size=(W, H))
    assert f.edge_gap == pytest.approx(expected) and 0.05 < expected < 0.5
    at_edge = skeleton(620, 300, 240)
    at_edge[at_edge[:, 0] >= 1.0] = 0.0
    assert track_features(np.array([0.0]), at_edge[None], now=0.0, frame_size=(W, H)).edge_gap < 0.03


def test_params_come_from_the_config_section():
    from edge.config import load_config

    config = load_config(REPO / "config.yaml")
    params = config.views
    assert params == ViewsConfig() and max_views(params.policy, params.rotated_views) == 3
    with pytest.raises(ConfigError, match="policy: got 'often'") as info:
        ViewsConfig(policy="often")
    assert info.value.key == "policy"


# ------------------------------------------------------------------------------ the real clips
# The real model on the real GMDCSA24 clips, sampled (the network costs ~0.15-0.3 s a view on two
# CPU cores): every parsed view is remembered for the session, so the tests share the work.

ADL_FPS = 1.0  # ADL clips: 16 frames, all three views each (policy always: the hardest case for merging)
FALL_FPS = 2.0  # fall clips: ~90 frames (67 after the fall), only the views the auto policy asks for
# Issue 9's goal: a >= 6-part skeleton in at least 80% of post-fall frames with auto. Measured at
# 10 fps: 80.9% (BENCHMARKS.md, Views). At 2 fps from each clip's first frame: 55 of 67 (82.1%),
# the same on NumPy 2 / OpenCV 5 and NumPy 1 / OpenCV 4; other sampling phases at 2 fps give
# 75-83%, so this goal has about one frame of margin here: a change that loses the fallen person
# in two more post-fall frames fails it.
GOAL_POST_FALL = 0.8


def _load_eval():
    spec = importlib.util.spec_from_file_location("eval_views", str(REPO / "scripts" / "eval_views.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_views"] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def clip_runner(model_onnx):
    shared_data("gmdcsa24", "labels.csv")
    from edge.config import ModelConfig
    from edge.inference.engines.onnxruntime import OnnxRuntimeEngine

    ev = _load_eval()
    engine = OnnxRuntimeEngine(model_onnx)
    yield ev, ev.ViewRunner(engine, ModelConfig().resize)  # as the daemon runs by default
    engine.close()


def _clips(ev, label):
    clips = [c for c in ev.read_labels(ev.DATA) if c.label == label]
    assert clips, "labels.csv lists no %s clip" % label
    return clips


def test_adl_clips_one_person_is_never_two_after_merging(clip_runner):
    ev, runner = clip_runner
    found = frames = 0
    for clip in _clips(ev, "adl"):
        views = ev.load_views(runner, clip, ADL_FPS)
        result = ev.replay(views, ViewsConfig(policy="always"))
        assert result.max_people <= 1, "%s: %d skeletons in one frame with every view merged" % (
            clip.file, result.max_people)
        found, frames = found + result.found, frames + result.frames
    # and the one person is there: the test is not passing on empty frames
    assert found >= 0.9 * frames, "a >= 6-part skeleton in only %d of %d ADL frames" % (found, frames)


def test_adl_clips_cost_little_with_auto(clip_runner):
    ev, runner = clip_runner
    views = frames = 0
    for clip in _clips(ev, "adl"):  # the views of these frames are already parsed (the test above)
        result = ev.replay(ev.load_views(runner, clip, ADL_FPS), ViewsConfig(policy="auto"))
        views, frames = views + result.views, frames + result.frames
    assert views <= 1.3 * frames, "auto ran %.2f views per ADL frame; the goal is at most 1.3" % (views / frames)


MULTI_PERSON_IMAGES = ["apollo11_crew.jpg"] + ["coco/COCO_val2014_000000000%s.jpg" % n for n in (
    "192", "241", "257", "328", "395", "488", "536", "544")]  # 3 to 5 people each, side by side


def test_merging_keeps_everyone_the_upright_view_found_in_group_photos(pose_model):
    import cv2

    from edge.config import load_config
    from edge.pipeline import CameraPipeline, parse_views, still_frame

    pipeline = CameraPipeline("photos", load_config(None, env={}), pose_model)
    for name in MULTI_PERSON_IMAGES:
        image = cv2.imread(str(shared_data("images", name)))
        job = pipeline.prepare(still_frame(image), (0, 90, -90))
        people = parse_views(pose_model.spec, *pipeline.decode(pipeline.infer(job)))
        kps = pipeline.merge(job, people).keypoints
        upright = len(people[0][0])
        assert upright >= 2, "%s: the upright view found %d people; this test needs a group" % (name, upright)
        # people of the upright view are never merged away (a rotated view may add someone it missed)
        assert len(kps) >= upright, "%s: %d people upright, %d after merging" % (name, upright, len(kps))
        assert len(kps) <= upright + 1, "%s: %d people upright, %d after merging (duplicates?)" % (
            name, upright, len(kps))


def test_auto_finds_the_fallen_person_in_most_post_fall_frames(clip_runner):
    ev, runner = clip_runner
    post = post_found = views = frames = 0
    lines = []
    for clip in _clips(ev, "fall"):
        frames_of_clip = ev.load_views(runner, clip, FALL_FPS, rotations=())
        r = ev.replay(frames_of_clip, ViewsConfig(policy="auto"), clip.fall_start_s, runner=runner, clip=clip.file)
        lines.append("%s: %d/%d post-fall frames, %.2f views/frame" % (
            clip.file, r.post_found, r.post_frames, r.views_per_frame))
        post, post_found = post + r.post_frames, post_found + r.post_found
        views, frames = views + r.views, frames + r.frames
    print("\n".join(lines))
    assert post_found >= GOAL_POST_FALL * post, "auto: %d of %d post-fall frames (%.0f%%) have a >= 6-part " \
        "skeleton; the goal is %.0f%%:\n%s" % (post_found, post, 100.0 * post_found / post, 100 * GOAL_POST_FALL,
                                                "\n".join(lines))


def test_latest_follows_the_newest_observation_and_the_default_the_one_two_frames_back():
    """The daemon's frame path asks for every frame and gets the views of the observation two frames
    back (so run and replay agree); a caller that asks now and then (the top-down seed) passes
    ``latest`` and gets those of the newest observation before the frame."""
    lying = TrackFeatures(torso_angle_deg=90.0, descent_bh_per_s=0.0, missed_s=0.0, drop_bh=0.8, tilted_s=2.0)
    standing = TrackFeatures(torso_angle_deg=0.0, descent_bh_per_s=0.0, missed_s=0.0, drop_bh=0.0)
    every, sparse = ViewPolicy(ViewsConfig(policy="auto", hold_s=0)), ViewPolicy(ViewsConfig(policy="auto", hold_s=0))
    seen = []
    for k in range(6):
        t = k / 10
        person = lying if k == 2 else standing
        seen.append(every.views_for(t))
        every.observe([person], t, (W, H))
        sparse.observe([person], t, (W, H))
        if k in (2, 3):
            seen.append(sparse.views_for(t + 0.05, latest=True))
    # every frame: the lying observation of frame 2 decides frame 4 only
    assert [len(v) for v in seen[:3] + seen[4:5] + seen[6:]] == [1, 1, 1, 1, 3, 1]
    # now and then: right after frame 2 (lying) all views, right after frame 3 (standing) one
    assert (len(seen[3]), len(seen[5])) == (3, 1)


def test_a_frame_never_tracked_holds_up_no_later_frame_and_stopping_ends_every_wait():
    """The daemon calls skip(t) for a frame whose post-processing failed, and cancel() when it stops:
    the views of later frames are then chosen without waiting (no late observation counted); without
    skip, the frame two after it waits out wait_s and is counted late."""
    lying = TrackFeatures(torso_angle_deg=90.0, descent_bh_per_s=0.0, missed_s=0.0, drop_bh=0.8, tilted_s=2.0)

    def run(skip: bool) -> ViewPolicy:
        policy = ViewPolicy(ViewsConfig(policy="auto"))
        policy.wait_s = 0.2
        for k in range(6):  # as in the daemon: frame k is prepared before frame k-1 is tracked
            policy.views_for(k / 10)
            done = (k - 1) / 10
            if k - 1 == 2:  # frame 2 fails after the engine: never observed
                if skip:
                    policy.skip(done)
            elif k >= 1:
                policy.observe([lying], done, (W, H))
        return policy

    assert run(skip=True).stats.late_observations == 0
    assert run(skip=False).stats.late_observations == 1
    stopping = ViewPolicy(ViewsConfig(policy="auto"))
    stopping.wait_s = 10.0
    stopping.views_for(0.0)
    stopping.views_for(0.1)
    threading.Timer(0.1, stopping.cancel).start()  # the daemon stops while frame 0 is still being tracked
    stopping.views_for(0.2)  # waits for frame 0's observation until the cancel
    assert stopping.stats.late_observations == 0
