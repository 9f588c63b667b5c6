"""Replay: the real model on the real GMDCSA24 clips, stable tracks, and skeleton JSONL round trips."""
from __future__ import annotations

import csv
import json
import re
from typing import Dict, List, Sequence

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA, run_cli, shared_data
from edge.config import load_config
from edge.pipeline import FallDetector
from edge.replay import ReplayError, replay_skeletons, replay_video
from edge.alerts.sinks import SinkSet, SkeletonRecorder
from test_daemon import Collect, write_config

# The clips are replayed at this many frames per second of video time (the daemon's max_fps): all
# nine at full rate take ~18 minutes on a 2-core CI machine (1288 frames), at 3 fps 177 frames.
REPLAY_FPS = 3.0


def clips() -> List[str]:
    labels = SHARED_DATA / "gmdcsa24" / "labels.csv"
    if not labels.exists():
        return ["absent"]
    with open(labels, newline="") as fh:
        return [row["file"] for row in csv.DictReader(fh)]


class TrackEvents(FallDetector):
    """A test detector that reports often (falls are rare in these clips): an event when a track first
    shows and when it goes, so that the event path (ids, timestamps, completion) is exercised end to end."""

    def __init__(self) -> None:
        self.known: Dict[int, float] = {}

    def update(self, tracks, t, frame_size):
        events = []
        for track in tracks:
            if track.id not in self.known:
                events.append({"type": "track_seen", "track_id": track.id, "confidence": 1.0})
            self.known[track.id] = t
        for tid in [i for i in self.known if i not in {tr.id for tr in tracks}]:
            events.append({"type": "track_lost", "track_id": tid, "confidence": 1.0, "bbox": [0, 0, 0, 0],
                           "keypoints": np.zeros((18, 3))})
            del self.known[tid]
        return events


@pytest.fixture(scope="module")
def config():
    """The defaults with the upright view only: these tests are about tracking and replay. With
    rotated views (views.policy auto) a fallen person with bent legs is sometimes seen as two
    skeletons by two views (a known limit of merging, see README "People on the floor"); merging is
    tested on its own in tests/test_views.py and the whole pipeline by tests/test_evaluate.py."""
    import dataclasses

    defaults = load_config(None, env={})
    return dataclasses.replace(defaults, views=dataclasses.replace(defaults.views, policy="never"))


@pytest.fixture(scope="module")
def clip_runs(tmp_path_factory, pose_model, config):
    """Every GMDCSA24 clip replayed at REPLAY_FPS with the real model: records, events, the JSONL written."""
    out = tmp_path_factory.mktemp("replays")
    runs = {}
    for clip in clips():
        path = shared_data("gmdcsa24", *clip.split("/"))
        jsonl = out / (clip.replace("/", "_") + ".jsonl")
        collect = Collect()
        sinks = SinkSet([collect, SkeletonRecorder(jsonl)])
        summary = replay_video(path, config, pose_model, sinks, camera="room", max_fps=REPLAY_FPS,
                               make_detector=lambda camera: TrackEvents())
        sinks.close()
        runs[clip] = dict(records=collect.records, events=collect.events, jsonl=jsonl, summary=summary)
    return runs


@pytest.mark.parametrize("clip", clips())
def test_one_stable_track_per_person_through_each_clip(clip, clip_runs):
    """Each clip shows one person: once confirmed (min_hits frames), they are track 1 in every frame
    they are seen until the network loses them for good (lying people are often missed: issue 9);
    no second id ever appears."""
    run = clip_runs[clip]
    records = run["records"]
    assert run["summary"].frames_processed == len(records)
    single = [int(r.track_ids[0]) for r in records if len(r.keypoints) == 1]
    assert len(single) >= 8, "the person is seen in too few frames to judge"
    ids = [int(i) for r in records for i in r.track_ids if i]
    assert set(ids) == {1}
    first, last = single.index(1), len(single) - 1 - single[::-1].index(1)
    assert first <= 4 and single[first:last + 1] == [1] * (last + 1 - first)
    assert all(sum(1 for i in r.track_ids if i) <= 1 for r in records)


def test_replay_is_timed_by_the_video_and_takes_frames_at_max_fps(clip_runs):
    run = clip_runs["subject1/Fall/13.mp4"]
    fps = 29.620487503856836  # what the file says
    times = [r.t for r in run["records"]]
    assert times[0] == 0.0 and all(b > a for a, b in zip(times, times[1:]))
    steps = np.diff(times)
    assert np.all(steps >= 1 / REPLAY_FPS - 1 / fps) and np.all(steps <= 1 / REPLAY_FPS + 1 / fps)
    for r in run["records"]:
        index = round(r.t * fps)
        assert r.t == round(index / fps, 6)  # frame index / frame rate, to the microsecond
        assert r.wall == pytest.approx(r.t) and r.width == 640 and r.height == 480


def test_events_carry_the_contract_fields(clip_runs):
    events = clip_runs["subject1/ADL/10.mp4"]["events"]
    seen = [e for e in events if e["type"] == "track_seen"]
    assert len(seen) == 1
    event = seen[0]
    assert set(event) >= {"event_id", "type", "device", "camera", "track_id", "timestamp", "confidence", "bbox",
                          "keypoints", "t"}
    assert event["device"] == "fallwatch" and event["camera"] == "room" and event["track_id"] == 1
    record = next(r for r in clip_runs["subject1/ADL/10.mp4"]["records"] if 1 in r.track_ids)
    ms = int(record.t * 1000)
    assert event["t"] == record.t and event["timestamp"] == "1970-01-01T00:00:%02d.%03dZ" % (ms // 1000, ms % 1000)
    assert event["keypoints"] == record.keypoints[0].tolist()
    x0, y0, x1, y1 = event["bbox"]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    for run in clip_runs.values():  # unique within a run (and stable: see the skeleton round trip)
        ids = [e["event_id"] for e in run["events"]]
        assert len(ids) == len(set(ids))


@pytest.mark.parametrize("clip", ["subject2/Fall/13.mp4", "subject1/Fall/15.mp4"])
def test_recorded_skeletons_replay_to_identical_tracks_and_events(clip, clip_runs, config, tmp_path):
    run = clip_runs[clip]
    collect = Collect()
    again = tmp_path / "again.jsonl"
    sinks = SinkSet([collect, SkeletonRecorder(again)])
    summary = replay_skeletons(run["jsonl"], config, sinks, make_detector=lambda camera: TrackEvents())
    sinks.close()
    assert summary.frames_processed == len(run["records"])
    assert run["events"] and run["events"][0]["type"] == "track_seen"
    assert collect.events == run["events"]
    assert again.read_bytes() == run["jsonl"].read_bytes()  # t, keypoints and track ids, bit for bit
    for a, b in zip(collect.records, run["records"]):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.track_ids, b.track_ids)


def test_skeleton_jsonl_follows_the_contract(clip_runs):
    lines = clip_runs["subject1/Fall/14.mp4"]["jsonl"].read_text().splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["t", "camera", "width", "height", "people"]
    assert first["camera"] == "room" and (first["width"], first["height"]) == (640, 480)
    for line in lines:
        for person in json.loads(line)["people"]:
            kp = np.array(person["keypoints"])
            assert kp.shape == (18, 3) and np.all((kp >= 0) & (kp <= 1))
            assert set(person) <= {"keypoints", "track"}


# ------------------------------------------------------------------ the command


def test_cli_replay_of_video_then_of_its_skeletons(tmp_path, model_onnx):
    clip = shared_data("gmdcsa24", "subject1", "ADL", "16.mp4")
    config = write_config(tmp_path / "config.yaml", [{"name": "kitchen", "uri": "/dev/video0", "max_fps": 2}])
    skeletons, events = tmp_path / "s.jsonl", tmp_path / "e.jsonl"
    preview = tmp_path / "preview.mp4"
    done = run_cli("--config", str(config), "replay", str(clip), "--camera", "kitchen", "--record-skeletons",
                   str(skeletons), "--events-out", str(events), "--start-time", "2024-05-01T12:00:00Z",
                   "--preview", str(preview))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stderr.strip().splitlines()[-1])
    assert summary["kind"] == "video" and summary["frames_read"] == 104 and summary["tracks"] == 1
    # 104 frames at 29.53 fps, one every 0.5 s: frames 0, 15, 30, 45, 60, 74, 89
    assert summary["frames_processed"] == len(skeletons.read_text().splitlines()) == 7
    assert events.read_text() == "" and done.stdout == ""  # an ADL clip: no fall events
    video = cv2.VideoCapture(str(preview))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 7 and video.get(cv2.CAP_PROP_FRAME_WIDTH) == 1280
    ok, drawn = video.read()
    video.release()
    original = cv2.VideoCapture(str(clip))
    _, first = original.read()
    original.release()
    changed = np.abs(drawn.astype(int) - first.astype(int)).max(axis=2) > 60  # the skeleton drawn over it
    assert ok and 200 < changed.sum() < 0.05 * changed.size

    again = tmp_path / "again.jsonl"
    done = run_cli("--config", str(config), "replay", str(skeletons), "--record-skeletons", str(again))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1])["kind"] == "skeletons"
    assert again.read_bytes() == skeletons.read_bytes() and done.stdout == ""


def test_cli_replay_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 0, "camera": "a", "width": 10, "height": 10, "people": []}\n{"t": 1, "camera": "a"}\n')
    done = run_cli("replay", str(bad), "--strict")  # (without it, the line is skipped: tests/test_bad_inputs.py)
    assert done.returncode == 1 and "bad.jsonl: line 2: missing width, height, people" in done.stderr
    done = run_cli("replay", str(tmp_path / "nothing.mp4"))
    assert done.returncode == 1 and "nothing.mp4 does not exist" in done.stderr


@pytest.mark.parametrize("lines, message", [
    (['{"t": 0, "camera": "a", "width": 10, "height": 10, "people": [{"keypoints": [[0, 0, 0]]}]}'],
     "line 1: people[0].keypoints must be 18 rows"),
    (['{"t": 1, "camera": "a", "width": 10, "height": 10, "people": []}',
      '{"t": 0.5, "camera": "a", "width": 10, "height": 10, "people": []}'], "line 2: t goes back in time"),
    (['not json'], "line 1: not JSON"),
    (['{"t": "soon", "camera": "a", "width": 10, "height": 10, "people": []}'], "line 1: t must be a number"),
])
def test_bad_skeleton_files_are_refused(tmp_path, config, lines: Sequence[str], message: str):
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReplayError, match=re.escape(message)):
        replay_skeletons(path, config, Collect())


def test_skeleton_replay_applies_max_fps_by_timestamps(tmp_path, config):
    path = tmp_path / "s.jsonl"
    path.write_text("".join('{"t": %r, "camera": "a", "width": 10, "height": 10, "people": []}\n' % (k / 30)
                            for k in range(60)))
    collect = Collect()
    summary = replay_skeletons(path, config, collect, max_fps=5)
    assert summary.frames_read == 60 and [round(r.t * 30) for r in collect.records] == list(range(0, 60, 6))


def test_run_and_replay_of_one_clip_go_through_the_same_pipeline(tmp_path):
    """`fallwatch run` on a video-file camera read at the pipeline's pace (realtime: false) and
    `fallwatch replay` of the same file give byte-identical skeletons and the same events: one frame
    path, whichever command drives it. The fall clip must raise fall_detected (so events are there
    to compare), and every frame the rate limit takes must have gone through."""
    clip = shared_data("gmdcsa24", "subject1", "Fall", "13.mp4")
    config = write_config(tmp_path / "config.yaml", [{"name": "cam", "uri": str(clip), "realtime": False,
                                                      "max_fps": 8}])
    run = run_cli("--config", str(config), "run", "--events-out", str(tmp_path / "run-events.jsonl"),
                  "--record-skeletons", str(tmp_path / "run-skeletons.jsonl"), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    replayed = run_cli("--config", str(config), "replay", str(clip), "--camera", "cam",
                       "--events-out", str(tmp_path / "replay-events.jsonl"),
                       "--record-skeletons", str(tmp_path / "replay-skeletons.jsonl"), timeout=600)
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    run_skeletons = (tmp_path / "run-skeletons.jsonl").read_bytes()
    assert run_skeletons == (tmp_path / "replay-skeletons.jsonl").read_bytes()
    cap = cv2.VideoCapture(str(clip))
    frames, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert len(run_skeletons.splitlines()) >= int(frames * 8 / fps) - 1

    def events(name):
        lines = (tmp_path / name).read_text().splitlines()
        # the wall-clock time (and the event id made from it) is the only difference: run stamps
        # the capture time, replay 1970-01-01 + t
        return [{k: v for k, v in json.loads(line).items() if k not in ("timestamp", "event_id")} for line in lines]

    ran = events("run-events.jsonl")
    assert ran == events("replay-events.jsonl")
    assert "fall_detected" in [e["type"] for e in ran]


def test_the_readme_try_it_replay_prints_the_fall_and_says_what_it_skipped(model_onnx):
    """The replay of README's first command, as a newcomer runs it (repo folder, its config.yaml):
    the fall_detected event on stdout, and on stderr how many frames were processed and skipped."""
    from conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if line.startswith("python3 -m venv .venv && "))
    replay = line.split("&& .venv/bin/fallwatch replay ", 1)[1].split()
    clip, options = replay[0], replay[1:]
    assert clip == "../shared/data/gmdcsa24/subject1/Fall/13.mp4" and options == ["--max-fps", "8"]
    proc = run_cli("replay", str(shared_data("gmdcsa24", "subject1", "Fall", "13.mp4")), *options)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["type"] for e in events] == ["fall_detected"]
    done = [line for line in proc.stderr.splitlines() if ": done in " in line]
    assert len(done) == 1
    processed, read, skipped = map(int, re.search(r"(\d+) of (\d+) frames processed .* (\d+) skipped", done[0]).groups())
    assert read == 128 and processed + skipped == read and 30 <= processed <= 40  # 8 of every 29.6 frames
    assert "at most 8 frames per second are processed, the rest skipped" in proc.stderr
