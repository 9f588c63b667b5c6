"""The fall detector on constructed skeleton sequences: falls are caught, daily life is not."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from edge.config import ConfigError
from edge.fall import FallConfig, FallDetector, Zone, observe, zones_of
from skeletons import (BENDING, KNEELING, LYING_BED, LYING_DEPTH, LYING_LEFT, LYING_RIGHT, SITTING_BED,
                       SITTING_CHAIR, SITTING_FLOOR, STANDING, sequence)

FRAME = (640, 480)
RATES = (5, 15, 30)

# name -> (keyframes, time the person reaches the floor)
FALLS = {
    "sideways to the right": ([(0, STANDING), (2.0, STANDING), (2.8, LYING_RIGHT)], 2.8),
    "sideways to the left": ([(0, STANDING), (2.0, STANDING), (2.7, LYING_LEFT)], 2.7),
    "backward, seen end-on": ([(0, STANDING), (2.0, STANDING), (2.8, LYING_DEPTH)], 2.8),
    "forward, stumbling first": ([(0, STANDING), (2.0, STANDING), (2.4, KNEELING), (2.9, LYING_RIGHT)], 2.9),
    "from a chair": ([(0, SITTING_CHAIR), (2.0, SITTING_CHAIR), (2.8, LYING_RIGHT)], 2.8),
    "slow collapse (1.2 s)": ([(0, STANDING), (2.0, STANDING), (3.2, LYING_LEFT)], 3.2),
}
DAILY_LIFE = {
    "sitting down on a chair": [(0, STANDING), (2.0, STANDING), (2.8, SITTING_CHAIR)],
    "dropping onto a chair": [(0, STANDING), (2.0, STANDING), (2.4, SITTING_CHAIR)],
    "bending to pick something up": [(0, STANDING), (2.0, STANDING), (2.8, BENDING), (4.0, BENDING), (5.0, STANDING)],
    "kneeling": [(0, STANDING), (2.0, STANDING), (2.8, KNEELING)],
    "sitting on the floor": [(0, STANDING), (2.0, STANDING), (3.0, KNEELING), (4.5, SITTING_FLOOR)],
    "sitting on the floor briskly": [(0, STANDING), (2.0, STANDING), (3.0, SITTING_FLOOR)],
    "lying down slowly on a bed": [(0, STANDING), (1.0, STANDING), (2.5, SITTING_BED), (4.0, SITTING_BED),
                                   (6.5, LYING_BED)],
    "picking something up from a chair": [(0, SITTING_CHAIR), (2.0, SITTING_CHAIR), (2.8, BENDING),
                                          (3.5, BENDING), (4.3, SITTING_CHAIR)],
    "standing up from the floor": [(0, SITTING_FLOOR), (2.0, SITTING_FLOOR), (3.5, KNEELING), (4.5, STANDING)],
}


def run(frames, detector=None, track_id=1, frame=FRAME):
    detector = detector or FallDetector()
    events = []
    for t, kp in frames:
        track = SimpleNamespace(id=track_id, keypoints=kp, last_t=t)
        events += [dict(e, t=t) for e in detector.update([track], t, frame)]
    return events


def kinds(events):
    return [e["type"] for e in events]


@pytest.mark.parametrize("fps", RATES)
@pytest.mark.parametrize("name", sorted(FALLS))
def test_a_fall_raises_one_alert_within_two_seconds_of_reaching_the_floor(name, fps):
    keyframes, on_floor = FALLS[name]
    events = run(sequence(keyframes, fps, 10.0))
    assert kinds(events) == ["fall_detected"], (name, fps, events)
    event = events[0]
    assert on_floor - 1.0 < event["t"] <= on_floor + 2.0
    assert 0 < event["confidence"] <= 1
    features = event["features"]
    assert features["descent_bh_per_s"] >= 0.5 and features["head_height_bh"] <= 0.5
    assert event["keypoints"].shape == (18, 3)


@pytest.mark.parametrize("fps", RATES)
@pytest.mark.parametrize("name", sorted(DAILY_LIFE))
def test_daily_life_raises_nothing(name, fps):
    assert run(sequence(DAILY_LIFE[name], fps, 10.0)) == []


@pytest.mark.parametrize("size", [90.0, 420.0])
def test_near_and_far_people_are_judged_alike(size):
    floor_y = 470.0 if size > 300 else 250.0
    fall = sequence(FALLS["sideways to the right"][0], 15, 8.0, size=size, floor_y=floor_y)
    sit = sequence(DAILY_LIFE["sitting down on a chair"], 15, 8.0, size=size, floor_y=floor_y)
    assert kinds(run(fall)) == ["fall_detected"] and run(sit) == []


def test_a_walking_person_who_falls_is_caught():
    frames = sequence(FALLS["sideways to the left"][0], 15, 8.0, x=150.0, x_end=450.0)
    assert kinds(run(frames)) == ["fall_detected"]


@pytest.mark.parametrize("seed", range(4))
def test_missing_keypoints_degrade_gracefully(seed):
    """30% of the parts missing at random in every frame: falls still caught, daily life still quiet."""
    for name in ("sideways to the right", "from a chair", "backward, seen end-on"):
        frames = sequence(FALLS[name][0], 15, 8.0, drop_fraction=0.3, seed=seed)
        assert kinds(run(frames)) == ["fall_detected"], name
    for name in ("sitting down on a chair", "bending to pick something up", "sitting on the floor",
                 "lying down slowly on a bed"):
        assert run(sequence(DAILY_LIFE[name], 15, 8.0, drop_fraction=0.3, seed=seed)) == [], name


def test_a_half_seen_lying_person_is_still_caught():
    """No legs and no face at all (as often when someone lies on the floor)."""
    frames = sequence(FALLS["sideways to the right"][0], 15, 8.0, drop_parts=(9, 10, 12, 13, 0, 14, 15))
    assert kinds(run(frames)) == ["fall_detected"]


@pytest.mark.parametrize("seed", range(3))
def test_jittery_keypoints(seed):
    assert kinds(run(sequence(FALLS["from a chair"][0], 30, 8.0, noise_px=3.0, seed=seed))) == ["fall_detected"]
    assert run(sequence(DAILY_LIFE["dropping onto a chair"], 30, 8.0, noise_px=3.0, seed=seed)) == []


def unseen(frames, start, end):
    """The frames with those in [start, end) dropped: the network lost the person meanwhile."""
    return [(t, kp) for t, kp in frames if not start <= t < end]


@pytest.mark.parametrize("fps", RATES)
def test_a_fall_the_network_loses_halfway_down_is_caught_when_the_person_is_found_lying(fps):
    """Backwards onto a bed, legs in the air: the person is lost halfway down (about 0.3 body
    heights below standing, going down fast: not yet a descent by itself) and found lying 1.3 s
    later. The descent seen before the gap carries across it."""
    frames = unseen(sequence([(0, STANDING), (2.0, STANDING), (3.0, LYING_BED)], fps, 8.0), 2.62, 3.9)
    events = run(frames)
    assert kinds(events) == ["fall_detected"], events
    assert 3.9 <= events[0]["t"] <= 3.9 + 2.0
    assert events[0]["features"]["descent_bh_per_s"] >= 0.5 and events[0]["features"]["drop_bh"] >= 0.35
    # without the carry (a gap shorter than gap_s never counts as one) the same frames raise nothing
    assert run(frames, FallDetector(FallConfig(gap_s=2.0))) == []


@pytest.mark.parametrize("fps", RATES)
def test_going_to_bed_unseen_is_not_a_fall(fps):
    """Sitting down on the bed briskly, a second sitting there, then lying back while the network
    has lost them: nothing was going down fast when they were lost."""
    keyframes = [(0, STANDING), (2.0, STANDING), (2.5, SITTING_BED), (3.5, SITTING_BED), (4.5, LYING_BED)]
    assert run(unseen(sequence(keyframes, fps, 10.0), 3.45, 5.0)) == []
    # nor lying down slowly with the middle unseen
    assert run(unseen(sequence(DAILY_LIFE["lying down slowly on a bed"], fps, 10.0), 4.5, 6.0)) == []


@pytest.mark.parametrize("fps", RATES)
def test_a_person_gone_longer_than_confirm_within_s_is_not_carried(fps):
    frames = unseen(sequence([(0, STANDING), (2.0, STANDING), (3.0, LYING_BED)], fps, 10.0), 2.62, 5.7)
    assert run(frames) == []


@pytest.mark.parametrize("fps", (15, 30))
def test_frames_that_cannot_tell_do_not_reset_the_down_clock(fps):
    """On the floor, every other frame shows only the face (no neck, shoulders or hips: no torso
    angle). Those frames cannot tell whether the person is down; they must not restart min_down_s."""
    frames = sequence(FALLS["sideways to the right"][0], fps, 8.0)
    face_only = [0, 14, 15, 16, 17]
    flicker = []
    for i, (t, kp) in enumerate(frames):
        if t > 2.8 and i % 2:
            kp = kp.copy()
            kp[[j for j in range(18) if j not in face_only]] = 0.0
        flicker.append((t, kp))
    events = run(flicker)
    assert kinds(events) == ["fall_detected"]
    assert events[0]["t"] <= 2.8 + 2.0


@pytest.mark.parametrize("fps", RATES)
def test_long_lie_then_getting_up_clears_the_fall(fps):
    keyframes = [(0, STANDING), (2.0, STANDING), (2.8, LYING_RIGHT), (70.0, LYING_RIGHT), (71.5, SITTING_FLOOR),
                 (72.5, KNEELING), (73.5, STANDING)]
    events = run(sequence(keyframes, fps, 80.0))
    assert kinds(events) == ["fall_detected", "long_lie", "fall_cleared"]
    detected, long_lie, cleared = (e["t"] for e in events)
    assert 60.0 <= long_lie - detected < 60.0 + 2.0 / fps + 1e-6
    assert 73.5 <= cleared <= 73.5 + 2.0 + 1.0 / fps + 1e-6


def test_one_alert_per_fall_and_a_second_fall_after_the_cooldown_is_reported():
    keyframes = [(0, STANDING), (2.0, STANDING), (2.8, LYING_RIGHT), (8.0, LYING_RIGHT), (9.0, KNEELING),
                 (10.0, STANDING), (25.0, STANDING), (25.8, LYING_LEFT)]
    events = run(sequence(keyframes, 15, 32.0))
    assert kinds(events) == ["fall_detected", "fall_cleared", "fall_detected"]


def test_cooldown_holds_back_a_repeat_right_after_getting_up():
    keyframes = [(0, STANDING), (2.0, STANDING), (2.8, LYING_RIGHT), (5.0, LYING_RIGHT), (6.0, STANDING),
                 (9.0, STANDING), (9.8, LYING_LEFT)]
    events = run(sequence(keyframes, 15, 14.0), FallDetector(FallConfig(cooldown_s=10.0)))
    assert kinds(events) == ["fall_detected", "fall_cleared"]


def test_ignore_zone_suppresses_and_floor_zones_restrict():
    frames = sequence(FALLS["sideways to the right"][0], 15, 8.0)
    hips_at = observe(frames[-1][1], frames[-1][0], FRAME, 0.1).centre
    around = tuple((hips_at[0] + dx, hips_at[1] + dy) for dx, dy in ((-.1, -.1), (.1, -.1), (.1, .1), (-.1, .1)))
    elsewhere = ((0.0, 0.0), (0.2, 0.0), (0.2, 0.2), (0.0, 0.2))
    assert run(frames, FallDetector(zones=[Zone("ignore", around)])) == []
    assert kinds(run(frames, FallDetector(zones=[Zone("ignore", elsewhere)]))) == ["fall_detected"]
    assert run(frames, FallDetector(zones=[Zone("floor", elsewhere)])) == []
    assert kinds(run(frames, FallDetector(zones=[Zone("floor", around)]))) == ["fall_detected"]


def test_zone_polygon_contains():
    square = Zone("ignore", ((0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)))
    assert square.contains(0.4, 0.4) and not square.contains(0.7, 0.4) and not square.contains(0.1, 0.1)
    tri = Zone("floor", ((0.0, 1.0), (1.0, 1.0), (0.5, 0.0)))
    assert tri.contains(0.5, 0.8) and not tri.contains(0.1, 0.2)


# ------------------------------------------------------------------ hostile streams


def test_nan_inf_and_out_of_frame_keypoints_never_crash_or_alert():
    rng = np.random.default_rng(1)
    detector = FallDetector()
    for i in range(300):
        t = i / 15
        kp = rng.uniform(-3, 3, (18, 3))
        kp[rng.random(18) < 0.3] = np.nan
        kp[rng.random(18) < 0.1] = np.inf
        kp[rng.random(18) < 0.1, :2] = 1e9
        assert detector.update([SimpleNamespace(id=1, keypoints=kp, last_t=t)], t, FRAME) == []


def test_a_person_seen_for_one_frame_and_fifty_jittering_people_raise_nothing():
    rng = np.random.default_rng(2)
    detector = FallDetector()
    standing = sequence([(0, STANDING)], 15, 0.1)[0][1]
    for i in range(150):
        t = i / 15
        tracks = []
        for pid in range(50):
            kp = standing.copy()
            kp[:, 0] = kp[:, 0] * 0.3 + pid / 60
            kp[:, :2] += rng.normal(0, 0.01, (18, 2))
            tracks.append(SimpleNamespace(id=pid + 1, keypoints=kp, last_t=t))
        if i == 40:  # a ghost lying on the floor for one frame
            ghost = sequence([(0, LYING_RIGHT)], 15, 0.1)[0][1]
            tracks.append(SimpleNamespace(id=999, keypoints=ghost, last_t=t))
        assert detector.update(tracks, t, FRAME) == []


def test_timestamps_going_backwards_reset_the_track_instead_of_alerting():
    frames = sequence(FALLS["sideways to the right"][0], 15, 8.0)
    # replay the fall's frames with time running backwards: the descent never looks like a descent
    detector = FallDetector()
    events = []
    for (t, _), (_, kp) in zip(frames, reversed(frames)):
        events += detector.update([SimpleNamespace(id=1, keypoints=kp, last_t=8.0 - t)], 8.0 - t, FRAME)
    assert events == []
    # a clock jump backwards in the middle of normal standing
    detector = FallDetector()
    standing = sequence([(0, STANDING)], 15, 3.0)
    for t, kp in standing + [(t - 2.0, kp) for t, kp in standing]:
        assert detector.update([SimpleNamespace(id=1, keypoints=kp, last_t=t)], t, FRAME) == []


def test_tracks_that_vanish_are_forgotten():
    detector = FallDetector()
    frames = sequence(FALLS["sideways to the right"][0], 15, 2.5)
    for t, kp in frames:
        detector.update([SimpleNamespace(id=7, keypoints=kp, last_t=t)], t, FRAME)
    detector.update([], 3.0, FRAME)
    assert 7 not in detector._tracks


def test_observe_measures_posture_in_pixels():
    standing = observe(sequence([(0, STANDING)], 15, 0.1, size=300)[0][1], 0.0, FRAME, 0.1)
    lying = observe(sequence([(0, LYING_RIGHT)], 15, 0.1, size=300)[0][1], 0.0, FRAME, 0.1)
    assert standing.torso_angle_deg < 5 and lying.torso_angle_deg > 80
    assert abs(standing.size - 300) < 15 and abs(lying.size - 300) < 15
    assert standing.aspect < 0.6 and lying.aspect > 2
    assert observe(np.zeros((18, 3)), 0.0, FRAME, 0.1) is None


def test_settings_are_checked_when_made_in_code():
    with pytest.raises(ConfigError, match="up_head_height_bh: got 0.3 .*must be above max_head_height_bh") as info:
        FallConfig(up_head_height_bh=0.3)
    assert info.value.key == "up_head_height_bh"
    with pytest.raises(ConfigError, match="descent_window_s") as info:
        FallConfig(descent_window_s=0)
    assert info.value.key == "descent_window_s"
    assert not math.isnan(FallConfig().min_down_s)


def test_config_section_and_detector_share_their_defaults(tmp_path):
    from edge.config import load_config

    assert load_config(None, env={}).fall == FallConfig()
    path = tmp_path / "c.yaml"
    path.write_text("cameras:\n  - name: hall\n    uri: v.mp4\n    zones:\n      - kind: ignore\n"
                    "        polygon: [[0.1, 0.5], [0.5, 0.5], [0.5, 0.9]]\nfall:\n  long_lie_s: 120\n")
    config = load_config(path, env={})
    assert isinstance(config.fall, FallConfig) and config.fall.long_lie_s == 120
    (zone,) = zones_of(config.cameras[0])
    assert zone.kind == "ignore" and zone.contains(0.4, 0.6)


@pytest.mark.parametrize("polygon", ["[[0.1, 0.5], [0.5, 0.5]]", "[[0.1, 0.5], [0.5, 0.5], [1.5, 0.2]]",
                                     "[[0.1, 0.5, 0.3], [0.5, 0.5], [0.5, 0.2]]"])
def test_bad_zone_is_rejected_with_its_key_path(tmp_path, polygon):
    from edge.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("cameras:\n  - name: hall\n    zones:\n      - kind: floor\n        polygon: %s\n" % polygon)
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.zones\[0\]\.polygon: got .*at least 3 corners"):
        load_config(path, env={})


def test_a_hostile_stream_through_the_tracker_and_detector_never_crashes_or_alerts():
    """What the network could hand the daemon: NaN and infinite coordinates, parts far outside the
    frame, a person for one frame, 50 jittering people, time running backwards, empty frames."""
    from edge.config import load_config
    from edge.pipeline import CameraPipeline

    config = load_config(None, env={})
    tail = CameraPipeline("hall", config)
    rng = np.random.default_rng(5)
    standing = sequence([(0, STANDING)], 15, 0.1)[0][1]
    places = rng.uniform(0, 0.8, (50, 1))  # where each of the 50 stands (so tracks do form)
    t, most_tracks = 0.0, 0
    for i in range(400):
        t += 1 / 15 if i % 97 else -3.0  # now and then the clock jumps back
        n = int(rng.integers(0, 51)) if i % 5 else 50
        people = np.repeat(standing[None], n, axis=0)
        people[:, :, 0] = people[:, :, 0] * 0.2 + places[:n]
        people[:, :, :2] += rng.normal(0, 0.01, (n, 18, 2))
        if n:
            hostile = rng.random((n, 18)) < 0.1
            people[hostile] = rng.choice([np.nan, np.inf, -np.inf, 1e9, -5.0], size=(int(hostile.sum()), 1))
        _, events = tail.track(people, t, t, FRAME)
        assert events == [], (i, events)
        most_tracks = max(most_tracks, len(tail.tracker.tracks))
    assert most_tracks >= 10  # the stream did reach the detector as tracks


def test_parts_jitter_around_the_down_threshold_does_not_reset_the_down_clock():
    """Lying on the floor, but every other frame the parts come out a little higher (hips about 0.4 body
    heights up instead of 0.08: just above max_hip_height_bh). The person never came up: such a
    frame keeps the clock running (down_margin_bh); with no margin it restarts it every time."""
    lift = 0.34 * 300.0 / FRAME[1]  # body heights -> normalised rows, for sequence()'s 300 px figure
    frames = []
    for i, (t, kp) in enumerate(sequence(FALLS["sideways to the right"][0], 15, 8.0)):
        if t > 2.8 and i % 2:
            kp = kp.copy()
            kp[:, 1] -= lift
        frames.append((t, kp))
    events = run(frames)
    assert kinds(events) == ["fall_detected"] and events[0]["t"] <= 2.8 + 2.0
    assert run(frames, FallDetector(FallConfig(down_margin_bh=0.0))) == []


def _through_the_tracker(frames, config):
    """The frames as the daemon sees them: the real tracker, then the detector (edge.pipeline); a
    frame without the person is ``(t, None)``."""
    from edge.pipeline import CameraPipeline

    pipeline, events = CameraPipeline("hall", config), []
    for t, kp in frames:
        events += pipeline.track(np.zeros((0, 18, 3)) if kp is None else kp[None], t, t, FRAME)[1]
    return events


@pytest.mark.parametrize("fps", (15, 30))
def test_a_fall_seen_in_a_third_of_the_frames_is_caught(fps):
    """A dark room: the network finds the person in a third of the frames, at random. Through the
    real tracker, every fall is still reported and daily life stays quiet, over several draws."""
    from edge.config import load_config

    config = load_config(None, env={})
    for seed in range(4):
        rng = np.random.default_rng(seed)
        for name, (keyframes, on_floor) in sorted(FALLS.items()):
            frames = [(t, kp if rng.random() < 1 / 3 else None) for t, kp in sequence(keyframes, fps, 10.0)]
            events = _through_the_tracker(frames, config)
            assert kinds(events) == ["fall_detected"], (name, seed, events)
            assert events[0]["t"] <= on_floor + 3.0, (name, seed)
        for name, keyframes in sorted(DAILY_LIFE.items()):
            frames = [(t, kp if rng.random() < 1 / 3 else None) for t, kp in sequence(keyframes, fps, 10.0)]
            assert _through_the_tracker(frames, config) == [], (name, seed)


def _run_people(people, until=None, frame=FRAME):
    """people: {track id: [(t, keypoints)]}; each frame hands the detector the tracks seen at t."""
    by_t = {}
    for track_id, frames in people.items():
        for t, kp in frames:
            if until is None or t <= until:
                by_t.setdefault(round(t, 6), []).append(SimpleNamespace(id=track_id, keypoints=kp, last_t=t))
    detector, events = FallDetector(), []
    for t in sorted(by_t):
        events += [dict(e, t=t) for e in detector.update(by_t[t], t, frame)]
    return events


def _shifted(frames, dx, drop=(), scale=1.0):
    """The frames' skeleton scaled about the frame's centre, moved right by dx, parts dropped."""
    out = []
    for t, kp in frames:
        kp = np.array(kp, dtype=np.float64)
        kp[:, :2] = 0.5 + scale * (kp[:, :2] - 0.5)
        kp[:, 0] += dx
        kp[list(drop), :] = 0.0
        out.append((t, kp))
    return out


def test_a_fallen_person_seen_twice_raises_one_alert_and_two_people_apart_raise_two():
    frames = sequence(FALLS["sideways to the right"][0], 15, 8.0)
    # a second, partial skeleton of the same person (no face, no left leg) a few pixels aside: one incident
    echo = _shifted(frames, 0.01, drop=(0, 14, 15, 16, 17, 12, 13))
    events = _run_people({1: frames, 2: echo})
    assert kinds(events) == ["fall_detected"]
    # two people falling three body heights apart are two incidents (each a third of the size, so both fit)
    size = observe(frames[0][1], 0.0, FRAME, 0.1).size / 3 / FRAME[0]  # body height, as a share of the width
    events = _run_people({1: _shifted(frames, -1.5 * size, scale=1 / 3), 2: _shifted(frames, 1.5 * size, scale=1 / 3)})
    assert kinds(events) == ["fall_detected", "fall_detected"] and {e["track_id"] for e in events} == {1, 2}


def test_when_the_first_skeleton_is_lost_the_second_one_carries_the_incident():
    keyframes = [(0, STANDING), (2.0, STANDING), (2.8, LYING_RIGHT), (70.0, LYING_RIGHT), (71.5, SITTING_FLOOR),
                 (72.5, KNEELING), (73.5, STANDING)]
    frames = sequence(keyframes, 10, 80.0)
    first = [(t, kp) for t, kp in frames if t < 10.0]  # the tracker loses it at 10 s
    events = _run_people({1: first, 2: _shifted(frames, 0.01, drop=(0, 14, 15, 16, 17))})
    assert kinds(events) == ["fall_detected", "long_lie", "fall_cleared"]
    assert events[0]["t"] < 10.0 and events[1]["track_id"] == events[2]["track_id"] == 2
    # and while the first is still tracked, the second stays silent to the end
    events = _run_people({1: frames, 2: _shifted(frames, 0.01, drop=(0, 14, 15, 16, 17))})
    assert kinds(events) == ["fall_detected", "long_lie", "fall_cleared"]
    assert {e["track_id"] for e in events} == {events[0]["track_id"]}
