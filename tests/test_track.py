"""The tracker: assignment, stable ids, missed frames, partial skeletons, history."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge.config import ConfigError
from edge.skeleton import skeleton_bbox
from edge.track import Tracker, TrackerConfig, assign

W, H = 640, 480
# A standing person in body heights: x from the body's centre line, y from the top of the head.
TEMPLATE = np.array([
    (0.0, 0.06), (0.0, 0.15), (-0.1, 0.16), (-0.13, 0.3), (-0.14, 0.42), (0.1, 0.16), (0.13, 0.3), (0.14, 0.42),
    (-0.06, 0.5), (-0.06, 0.72), (-0.06, 0.95), (0.06, 0.5), (0.06, 0.72), (0.06, 0.95),
    (-0.02, 0.04), (0.02, 0.04), (-0.04, 0.05), (0.04, 0.05)])
UPPER_BODY = [0, 1, 2, 3, 4, 5, 6, 7, 14, 15, 16, 17]


def person(cx_px: float, top_px: float, height_px: float, parts=None, rng=None, noise_px: float = 0.0) -> np.ndarray:
    """(18, 3) normalised keypoints of the template placed in a W x H frame."""
    xy = TEMPLATE * height_px + np.array([cx_px, top_px])
    if rng is not None:
        xy = xy + rng.normal(0, noise_px, xy.shape)
    kp = np.zeros((18, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = xy[:, 0] / W, xy[:, 1] / H, 0.8
    if parts is not None:
        missing = [i for i in range(18) if i not in parts]
        kp[missing] = 0.0
    return kp


def frames(*people):
    return np.stack(people) if people else np.zeros((0, 18, 3))


# ------------------------------------------------------------------ assignment


def brute_force_cost(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
    return min(sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m))


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (5, 2), (3, 4), (5, 5), (1, 4)])
def test_assignment_is_optimal(shape):
    rng = np.random.default_rng(sum(shape) * 7 + shape[0])
    for _ in range(20):
        cost = rng.uniform(0, 10, shape)
        if rng.random() < 0.5:
            cost = np.round(cost)  # ties
        pairs = assign(cost)
        rows, cols = [r for r, _ in pairs], [c for _, c in pairs]
        assert len(pairs) == min(shape) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert sum(cost[r, c] for r, c in pairs) == pytest.approx(brute_force_cost(cost))


def test_assignment_of_nothing():
    assert assign(np.zeros((0, 3))) == [] and assign(np.zeros((2, 0))) == []


# ------------------------------------------------------------------ tracking


def test_two_walking_people_keep_their_ids_whatever_the_detection_order():
    rng = np.random.default_rng(1)
    tracker = Tracker(TrackerConfig(min_hits=3))
    seen = []
    for k in range(60):
        t = k / 15
        a = person(100 + 3 * k, 80, 300, rng=rng, noise_px=2)
        b = person(520 - 2 * k, 120, 250, rng=rng, noise_px=2)
        order = [a, b] if k % 3 else [b, a]
        ids = tracker.update(frames(*order), t, (W, H))
        seen.append(ids if k % 3 else ids[::-1])
    seen = np.array(seen)
    assert (seen[:2] == 0).all()  # tentative until seen in min_hits frames
    assert len(set(seen[2:, 0])) == 1 and len(set(seen[2:, 1])) == 1  # each person keeps one id
    assert {seen[2, 0], seen[2, 1]} == {1, 2}
    assert [tr.id for tr in tracker.tracks] == [1, 2]


def test_a_ghost_seen_once_never_gets_an_id_nor_uses_one():
    tracker = Tracker(TrackerConfig(min_hits=2))
    ids = [tracker.update(frames(person(200, 100, 300)), k / 10, (W, H)) for k in range(3)]
    assert [i.tolist() for i in ids] == [[0], [1], [1]]
    ghost = tracker.update(frames(person(204, 100, 300), person(560, 300, 100)), 0.3, (W, H))
    assert ghost.tolist() == [1, 0]
    after = [tracker.update(frames(person(208, 100, 300)), 0.4 + k / 10, (W, H)) for k in range(3)]
    assert [i.tolist() for i in after] == [[1], [1], [1]]
    newcomer = [tracker.update(frames(person(210, 100, 300), person(500, 100, 300)), 1.0 + k / 10, (W, H))
                for k in range(2)]
    assert newcomer[-1].tolist() == [1, 2]  # the ghost did not use up id 2


def lying(cx_px: float, y_px: float, length_px: float) -> np.ndarray:
    """(18, 3) the template turned on its side (head to the left), centred at (cx_px, y_px)."""
    xy = TEMPLATE[:, ::-1] * np.array([-1.0, 1.0]) * length_px + np.array([cx_px + 0.5 * length_px, y_px])
    kp = np.zeros((18, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = xy[:, 0] / W, xy[:, 1] / H, 0.5
    return kp


def test_a_person_missed_for_a_frame_does_not_take_over_a_ghost_next_to_them():
    """A ghost (a pillow the network takes for somebody lying) sits beside a standing person; when
    the person is missed for one frame the ghost, which continues its own tentative track, must not
    become the person (their track would "fall" onto the pillow)."""
    tracker = Tracker(TrackerConfig(min_hits=3))
    standing = [person(320, 60, 300) for _ in range(4)]
    ghost = lying(200, 230, 130)
    for k in range(4):
        tracker.update(frames(standing[k], ghost), k / 15, (W, H))
    assert [tr.id for tr in tracker.tracks] == [1, 2]
    assert tracker.update(frames(ghost), 4 / 15, (W, H)).tolist() == [2]  # the person is missed
    assert tracker.update(frames(person(322, 60, 300), ghost), 5 / 15, (W, H)).tolist() == [1, 2]


def test_a_missed_person_does_not_take_a_tentative_ghost_either():
    """The same with the ghost still tentative (seen twice, min_hits 3): it is not handed to the
    person missed for a frame, and gets its own id on its third sighting."""
    tracker = Tracker(TrackerConfig(min_hits=3))
    ghost = lying(200, 230, 130)
    for k in range(3):
        tracker.update(frames(person(320, 60, 300)), k / 15, (W, H))
    for k in (3, 4):
        assert tracker.update(frames(person(320, 60, 300), ghost), k / 15, (W, H)).tolist() == [1, 0]
    assert tracker.update(frames(ghost), 5 / 15, (W, H)).tolist() == [2]
    assert tracker.update(frames(person(322, 60, 300), ghost), 6 / 15, (W, H)).tolist() == [1, 2]


def test_a_second_skeleton_seen_once_never_pushes_the_person_off_their_detection():
    """One frame shows the person twice (two views not merged): the extra skeleton starts a
    tentative track. Next frame the person is where they were and something else appears within
    their gate: the person keeps their own detection; the one-off tentative track gets nothing."""
    tracker = Tracker(TrackerConfig(min_hits=3))
    for k in range(3):
        tracker.update(frames(person(320, 60, 300)), k / 15, (W, H))
    assert tracker.update(frames(person(320, 60, 300), person(345, 70, 290)), 3 / 15, (W, H)).tolist() == [1, 0]
    got = tracker.update(frames(person(321, 60, 300), person(250, 60, 300)), 4 / 15, (W, H))
    assert got.tolist() == [1, 0]
    assert tracker._tracks[0].id == 1 and tracker._tracks[0].keypoints[1, 0] == pytest.approx(321 / W)


def test_a_track_survives_missed_frames_up_to_max_missed_s_and_ids_are_never_reused():
    params = TrackerConfig(min_hits=1, max_missed_s=1.0)
    tracker = Tracker(params)
    assert tracker.update(frames(person(300, 100, 300)), 0.0, (W, H)).tolist() == [1]
    for t in (0.2, 0.5, 0.9):
        assert tracker.update(frames(), t, (W, H)).tolist() == []
        assert [tr.id for tr in tracker.tracks] == [1]
    assert tracker.update(frames(person(305, 100, 300)), 1.0, (W, H)).tolist() == [1]  # back within 1 s
    tracker.update(frames(), 2.0, (W, H))
    assert [tr.id for tr in tracker.tracks] == [1]
    tracker.update(frames(), 2.01, (W, H))  # 1.01 s since last seen
    assert tracker.tracks == []
    assert tracker.update(frames(person(305, 100, 300)), 2.1, (W, H)).tolist() == [2]


def test_partial_skeletons_keep_the_id():
    rng = np.random.default_rng(2)
    tracker = Tracker(TrackerConfig(min_hits=1))
    got = []
    for k in range(30):
        parts = UPPER_BODY if k % 4 == 1 else ([0, 1, 2, 5, 14, 15] if k % 4 == 2 else None)
        got.append(int(tracker.update(frames(person(200 + 4 * k, 90, 320, parts, rng, 2)), k / 15, (W, H))[0]))
    assert set(got) == {1}


def test_a_fall_keeps_the_id():
    """Standing, then lying on the floor within 0.6 s (at 15 fps): the skeleton rotates by 90 degrees."""
    tracker = Tracker(TrackerConfig(min_hits=1))
    got = []
    for k in range(20):
        angle = min(k, 9) / 9 * np.pi / 2
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pivot = np.array([0.0, 0.95])  # the ankles stay put
        xy = (TEMPLATE - pivot) @ rot.T + pivot
        kp = np.zeros((18, 3))
        kp[:, :2] = (xy * 300 + np.array([300, 60])) / np.array([W, H])
        kp[:, 2] = 0.7
        got.append(int(tracker.update(kp[None], k / 15, (W, H))[0]))
    assert got == [1] * 20


def test_distances_are_in_person_heights_whatever_the_size():
    params = TrackerConfig(min_hits=1)
    for height in (60, 120, 400):
        tracker = Tracker(params)
        tracker.update(frames(person(300, 20, height)), 0.0, (W, H))
        moved = person(300 + 0.25 * height, 20, height)  # a quarter of a body height to the right
        d = tracker.distances(tracker._tracks, moved[None], skeleton_bbox(moved[None], 0.05), (W, H))
        # the box's larger side is the height (0.91 of the template), so 0.25 / 0.91
        assert d[0, 0] == pytest.approx(0.25 / 0.91, rel=1e-3)


def test_a_jump_beyond_the_gate_starts_a_new_track():
    params = TrackerConfig(min_hits=1, max_match_distance_heights=0.5, max_speed_heights_per_s=2.0)
    tracker = Tracker(params)
    assert tracker.update(frames(person(150, 100, 200)), 0.0, (W, H)).tolist() == [1]
    # 300 px = 1.65 person sizes (box 182 px) away after 0.1 s: beyond 0.5 + 2 * 0.1
    assert tracker.update(frames(person(450, 100, 200)), 0.1, (W, H)).tolist() == [2]


def test_the_gate_grows_while_a_track_is_unseen():
    """The same jump after 0.6 s unseen (a fall the network missed) is within 0.5 + 2 * 0.6."""
    params = TrackerConfig(min_hits=1, max_match_distance_heights=0.5, max_speed_heights_per_s=2.0)
    tracker = Tracker(params)
    tracker.update(frames(person(150, 100, 200)), 0.0, (W, H))
    np.testing.assert_allclose(tracker.gates(tracker.tracks, 0.6), [1.7])
    tracker.update(frames(), 0.3, (W, H))
    assert tracker.update(frames(person(450, 100, 200)), 0.6, (W, H)).tolist() == [1]
    still = Tracker(TrackerConfig(min_hits=1, max_match_distance_heights=0.5, max_speed_heights_per_s=0.0))
    still.update(frames(person(150, 100, 200)), 0.0, (W, H))
    assert still.update(frames(person(450, 100, 200)), 0.6, (W, H)).tolist() == [2]


def test_history_is_ordered_and_bounded_in_time():
    tracker = Tracker(TrackerConfig(min_hits=1, history_s=1.0))
    for k in range(30):
        tracker.update(frames(person(100 + k, 100, 300)), k / 10, (W, H))
    (track,) = tracker.tracks
    hist = track.history()
    assert len(hist) == 11 and hist.t[0] == pytest.approx(1.9) and hist.t[-1] == pytest.approx(2.9)
    assert np.all(np.diff(hist.t) > 0)
    assert hist.keypoints.shape == (11, 18, 3) and hist.bbox.shape == (11, 4)
    np.testing.assert_array_equal(hist.keypoints[-1], track.keypoints)
    assert len(track.history(since_t=2.5)) == 5
    x0, y0, x1, y1 = track.bbox
    assert x0 < x1 and y0 < y1 and track.missed_s(3.0) == pytest.approx(0.1)


def test_tracking_is_deterministic():
    rng = np.random.default_rng(3)
    scene = [frames(*[person(100 + 200 * i + rng.normal(0, 30), 100, 250, rng=rng, noise_px=5)
                      for i in range(rng.integers(0, 4))]) for _ in range(40)]
    runs = []
    for _ in range(2):
        tracker = Tracker(TrackerConfig(min_hits=2))
        runs.append([tracker.update(kp, k / 15, (W, H)).tolist() for k, kp in enumerate(scene)])
    assert runs[0] == runs[1]


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="min_hits: got 0 ") as info:
        TrackerConfig(min_hits=0)
    assert info.value.key == "min_hits"


def test_params_from_the_config_section():
    from edge.config import load_config

    config = load_config(None, env={})
    assert isinstance(config.tracker, TrackerConfig)
    assert config.tracker == TrackerConfig() == TrackerConfig(**config.tracker.to_dict())


def test_a_half_seen_person_keeps_the_size_they_had_standing():
    """Seen whole, then only the upper body, moving fast: distances stay in the standing size."""
    upper = [0, 1, 2, 3, 4, 5, 6, 7, 14, 15, 16, 17]
    frames_seen = [person(100, 60, 300)] + [person(100 + 100 * k, 60, 300, upper) for k in (1, 2, 3)]
    for memory_s, expected in ((5.0, [1, 1, 1, 1]), (0.0, [1, 1, 2, 3])):
        tracker = Tracker(TrackerConfig(min_hits=1, size_memory_s=memory_s, max_match_distance_heights=0.5,
                                        max_speed_heights_per_s=2.0))
        got = [int(tracker.update(kp[None], k / 15, (W, H))[0]) for k, kp in enumerate(frames_seen)]
        assert got == expected, memory_s
    assert tracker.tracks[-1].size_px == pytest.approx((0.42 - 0.04) * 300)  # eyes to wrists: the upper body


def test_a_person_seen_in_every_other_frame_gets_an_id_and_a_ghost_still_does_not():
    """In a dark room the network finds a person in every other frame (15 fps): the tentative track
    survives the misses (tentative_max_missed_s) and gets its id after min_hits sightings; with 0 it
    is dropped at every miss and never does. A ghost seen once still gets nothing."""
    def run(config):
        tracker, ids = Tracker(config), []
        for k in range(12):
            seen = [person(200, 100, 300)] if k % 2 == 0 else []
            ids.append(tracker.update(frames(*seen), k / 15, (W, H)).tolist())
        return ids

    ids = run(TrackerConfig(min_hits=3))
    assert ids[:4] == [[0], [], [0], []] and ids[4] == [1] and ids[-2] == [1]
    assert all(i in ([], [0]) for i in run(TrackerConfig(min_hits=3, tentative_max_missed_s=0.0)))
    tracker = Tracker(TrackerConfig(min_hits=2))
    assert [tracker.update(frames(person(560, 300, 100)) if k == 0 else frames(), k / 15, (W, H)).tolist()
            for k in range(15)] == [[0]] + [[]] * 14
    assert tracker.update(frames(person(560, 300, 100)), 1.0, (W, H)).tolist() == [0]  # a new tentative track
