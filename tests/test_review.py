"""Alert review (issue 19): the real daemon keeps a skeleton clip of a real fall, `fallwatch review`
lists, labels and plots it, and `fallwatch evaluate` reads the site dataset it builds."""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import MODELS_DIR, REPO, run_cli, shared_data

CLIP = ("subject2", "Fall", "13.mp4")  # 8 s, 15 fps; labelled fall start 2.5 s (GMDCSA24 labels.csv)
FPS = 5  # the camera's max_fps: frames are 1/5 s apart
BEFORE_S, AFTER_S = 4.0, 2.0
DAY_S = 86400.0


def _fake_event(root: Path, event_id: str, wall: float) -> None:
    folder = root / event_id
    folder.mkdir(parents=True)
    (folder / "skeletons.jsonl").write_text('{"t": 0.0, "camera": "hall", "width": 640, "height": 480, "people": []}\n')
    (folder / "event.json").write_text(json.dumps({
        "camera": "hall", "wall": wall, "complete": True,
        "event": {"event_id": event_id, "type": "fall_detected", "track_id": 9, "timestamp": "x"}}))


@pytest.fixture(scope="module")
def ran(tmp_path_factory, model_onnx):
    """One real `fallwatch run` on a GMDCSA24 fall clip (read at the pipeline's pace), with an events
    folder that already holds one event 40 days old and three recent ones (review.max_events 3)."""
    tmp = tmp_path_factory.mktemp("review")
    clip = shared_data("gmdcsa24", *CLIP)
    state = tmp / "state"
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({
        "paths": {"models_dir": str(MODELS_DIR), "state_dir": str(state)},
        "cameras": [{"name": "hall", "uri": str(clip), "realtime": False, "max_fps": FPS}],
        "review": {"before_s": BEFORE_S, "after_s": AFTER_S, "keep_days": 30, "max_events": 3}}))
    events = state / "review" / "events"
    now = time.time()
    _fake_event(events, "old-event", now - 40 * DAY_S)
    for hours in (1, 2, 3):
        _fake_event(events, "recent-%dh" % hours, now - hours * 3600.0)
    proc = run_cli("--config", str(config), "run", "--events-out", str(tmp / "events.jsonl"),
                   "--record-skeletons", str(tmp / "all.jsonl"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    published = [json.loads(line) for line in (tmp / "events.jsonl").read_text().splitlines()]
    falls = [e for e in published if e["type"] == "fall_detected"]
    assert len(falls) == 1, published
    return {"tmp": tmp, "config": config, "state": state, "events": events, "fall": falls[0], "stderr": proc.stderr,
            "recorded": [json.loads(line) for line in (tmp / "all.jsonl").read_text().splitlines()]}


def _cli(ran, *args):
    return run_cli("--config", str(ran["config"]), *args)


def test_the_daemon_keeps_the_skeletons_around_a_fall(ran):
    fall = ran["fall"]
    assert 2.5 < fall["t"] < 8.0  # after the labelled fall start, within the clip
    folder = ran["events"] / fall["event_id"]
    info = json.loads((folder / "event.json").read_text())
    assert info["event"] == fall  # the payload as published
    assert info["camera"] == "hall" and info["complete"] is True
    # the clip is the daemon's own frames (as --record-skeletons wrote them) from before_s before the
    # event to after_s after it, counted from the clip's first frame
    window = [r for r in ran["recorded"] if fall["t"] - BEFORE_S - 1e-6 <= r["t"] <= fall["t"] + AFTER_S + 1e-6]
    lines = [json.loads(line) for line in (folder / "skeletons.jsonl").read_text().splitlines()]
    t0 = window[0]["t"]
    assert lines == [dict(r, t=round(r["t"] - t0, 6)) for r in window]
    assert fall["t"] - BEFORE_S <= t0 <= fall["t"] - BEFORE_S + 1.0 / FPS + 0.05
    assert fall["t"] + AFTER_S - 1.0 / FPS - 0.05 <= window[-1]["t"] <= fall["t"] + AFTER_S
    assert abs(len(lines) - (BEFORE_S + AFTER_S) * FPS) <= 1
    assert lines[0]["t"] == 0.0 and info["event_clip_t"] == pytest.approx(fall["t"] - t0, abs=1e-6)
    assert any(p.get("track") == fall["track_id"] for p in lines[-1]["people"])
    snapshot = cv2.imread(str(folder / "snapshot.jpg"))
    assert snapshot.shape == (480, 640, 3) and (snapshot > 100).any()  # a skeleton drawn on black (mode blank)
    assert (snapshot.max(axis=2) > 30).mean() < 0.05  # nothing of the picture: lines on black


def test_old_and_surplus_clips_are_pruned_with_a_log_line(ran):
    kept = sorted(p.name for p in ran["events"].iterdir())
    assert kept == sorted([ran["fall"]["event_id"], "recent-1h", "recent-2h"])
    assert "pruned 1 event clip(s) under %s: 1 older than review.keep_days (30), 0 beyond" % ran["events"] \
        in ran["stderr"]
    assert "pruned 1 event clip(s) under %s: 0 older than review.keep_days (30), 1 beyond review.max_events (3)" \
        % ran["events"] in ran["stderr"]


def test_review_list_shows_the_newest_first(ran):
    listed = _cli(ran, "review", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    events = json.loads(listed.stdout)
    assert [e["id"] for e in events] == [ran["fall"]["event_id"], "recent-1h", "recent-2h"]
    first = events[0]
    assert (first["camera"], first["time"], first["track_id"], first["label"]) == (
        "hall", ran["fall"]["timestamp"], ran["fall"]["track_id"], None)
    assert first["clip"] == str(ran["events"] / ran["fall"]["event_id"] / "skeletons.jsonl")
    table = _cli(ran, "review", "list")
    assert table.returncode == 0 and table.stdout.splitlines()[1].startswith(ran["fall"]["event_id"])


def _rows(site: Path):
    with open(str(site / "labels.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_false_alarm_then_a_real_fall_go_into_the_site_dataset_that_evaluate_reads(ran):
    fall, site = ran["fall"], ran["state"] / "site"  # review.site_dir's default
    event_id = fall["event_id"]
    labelled = _cli(ran, "review", "label", event_id, "false-alarm")
    assert labelled.returncode == 0, labelled.stderr
    rows = _rows(site)
    assert len(rows) == 1 and rows[0]["label"] == "adl" and rows[0]["fall_start_s"] == ""
    assert rows[0]["event_id"] == event_id and rows[0]["camera"] == "hall"
    assert (site / rows[0]["file"]).read_bytes() == (ran["events"] / event_id / "skeletons.jsonl").read_bytes()
    assert json.loads(_cli(ran, "review", "list", "--json").stdout)[0]["label"] == "adl"
    evaluated = _cli(ran, "evaluate", str(site))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    row = next(line for line in evaluated.stdout.splitlines() if line.startswith("| " + rows[0]["file"]))
    assert row.split(" | ")[1] == "adl" and row.split(" | ")[5] == "1"  # the alert the daemon raised
    assert "false-alert clips 1 of 1 ADL clips" in evaluated.stdout

    # labelled again: the row is replaced, and a real fall's start is estimated from the event
    relabelled = _cli(ran, "review", "label", event_id, "fall")
    assert relabelled.returncode == 0, relabelled.stderr
    rows = _rows(site)
    assert [r["label"] for r in rows] == ["fall"]
    f = fall["features"]
    info = json.loads((ran["events"] / event_id / "event.json").read_text())
    start = info["event_clip_t"] - f["down_s"] - f["drop_bh"] / f["descent_bh_per_s"]
    assert float(rows[0]["fall_start_s"]) == pytest.approx(start, abs=2e-3)
    assert 0 < float(rows[0]["fall_start_s"]) < info["event_clip_t"]
    evaluated = _cli(ran, "evaluate", str(site))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    row = next(line for line in evaluated.stdout.splitlines() if line.startswith("| " + rows[0]["file"]))
    cells = row.split(" | ")
    assert cells[1] == "fall" and float(cells[3]) == pytest.approx(info["event_clip_t"], abs=0.01)
    assert "recall 1.0 (1 of 1 fall clips)" in evaluated.stdout


def test_an_unknown_event_or_answer_is_refused(ran, tmp_path):
    for bad in ("no-such-event", "../state"):
        proc = _cli(ran, "review", "label", bad, "fall", "--site", str(tmp_path / "site"))
        assert proc.returncode == 1
        assert "no event %r under %s" % (bad, ran["events"]) in proc.stderr and "fallwatch review list" in proc.stderr
        assert not (tmp_path / "site").exists()
    proc = _cli(ran, "review", "label", ran["fall"]["event_id"], "maybe")
    assert proc.returncode == 2 and "invalid choice: 'maybe'" in proc.stderr


def test_the_timeline_of_an_event_is_drawn(ran, tmp_path):
    out = tmp_path / "timeline.png"
    proc = _cli(ran, "review", "plot", ran["fall"]["event_id"], str(out))
    assert proc.returncode == 0, proc.stderr
    image = cv2.imread(str(out))
    assert image.shape == (990, 1080, 3)  # edge.plots' figure: 12 x 11 inches at 90 dpi
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # lines and text, not a blank page


def test_plot_without_matplotlib_says_how_to_install_it(ran, tmp_path):
    hidden = tmp_path / "hide"
    (hidden / "matplotlib").mkdir(parents=True)
    (hidden / "matplotlib" / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    proc = run_cli("--config", str(ran["config"]), "review", "plot", ran["fall"]["event_id"],
                   str(tmp_path / "t.png"), env={"PYTHONPATH": os.pathsep.join([str(hidden), str(REPO)])})
    assert proc.returncode == 1
    assert "needs matplotlib, which is not installed; pip install 'fallwatch[plots]'" in proc.stderr
    assert not (tmp_path / "t.png").exists()


def test_a_fall_still_waiting_at_stop_is_written_with_what_there_is(tmp_path):
    """The recorder in-process on real frame records: stopped 1 s after a fall, the clip ends there
    and says it was cut short; a stream that starts again (t going back) is a new history."""
    from edge.config import load_config
    from edge.pipeline import CameraPipeline
    from edge.review import ReviewRecorder, list_events

    config = tmp_path / "config.yaml"
    config.write_text("paths: {state_dir: %s}\ncameras: [{name: hall, uri: /dev/video0}]\n" % (tmp_path / "state"))
    cfg = load_config(config, env={})
    pipeline = CameraPipeline("hall", cfg)
    recorder = ReviewRecorder(cfg)
    now = time.time()  # wall times: a clip dated long ago would be pruned as soon as it is written
    standing = np.zeros((1, 18, 3))
    standing[0, :, 2] = 0.9
    standing[0, :, 0] = 0.5
    standing[0, :, 1] = np.linspace(0.2, 0.8, 18)
    for k in range(30):  # 3 s at 10 fps, then the stream restarts at t = 0
        record, _ = pipeline.track(standing, 100.0 + k / 10.0, now + k / 10.0, (640, 480))
        recorder.frame(record)
    record, _ = pipeline.track(standing, 0.0, now + 3.0, (640, 480))
    recorder.frame(record)
    for k in range(1, 15):
        record, _ = pipeline.track(standing, k / 10.0, now + 3.0 + k / 10.0, (640, 480))
        recorder.frame(record)
        if k == 5:
            recorder.emit({"event_id": "e-1", "type": "fall_detected", "camera": "hall", "track_id": 1,
                           "timestamp": "2001-09-09T01:46:43.500Z", "t": 0.5, "features": {}})
        if k == 12:
            recorder.emit({"event_id": "e-2", "type": "fall_cleared", "camera": "hall", "track_id": 1,
                           "timestamp": "2001-09-09T01:46:44.200Z", "t": 1.2})
            recorder.emit({"event_id": "e-3", "type": "fall_cleared", "camera": "kitchen", "track_id": 4,
                           "timestamp": "2001-09-09T01:46:44.200Z", "t": 1.2})
    recorder.close()
    [event] = list_events(tmp_path / "state")
    assert event["id"] == "e-1" and event["complete"] is False
    lines = [json.loads(line) for line in Path(event["clip"]).read_text().splitlines()]
    assert [round(line["t"] * 10) for line in lines] == list(range(0, 15))  # 0 .. 1.4 s: nothing from before
    info = json.loads((Path(event["clip"]).parent / "event.json").read_text())
    assert [(e["event_id"], e["type"], e["clip_t"]) for e in info["later_events"]] == [("e-2", "fall_cleared", 1.2)]
    assert info["event_clip_t"] == 0.5 and info["fall_start_s"] == 0.5  # no descent features: the event's time


def test_labelling_keeps_the_rows_and_columns_added_by_hand(tmp_path):
    """A site folder that already lists a video with a description column: labelling an event adds its
    row beside it (the description empty), keeps the rest, and leaves no temporary file behind."""
    from edge.review import ReviewError, label_event

    events = tmp_path / "state" / "review" / "events"
    _fake_event(events, "e-2", time.time())
    site = tmp_path / "site"
    site.mkdir()
    (site / "labels.csv").write_text("file,label,fall_start_s,description\nkitchen.mp4,fall,1.5,fell by the sink\n")
    clip = label_event(tmp_path / "state", site, "e-2", "adl")
    assert clip.read_bytes() == (events / "e-2" / "skeletons.jsonl").read_bytes()
    rows = _rows(site)
    assert rows[0] == {"file": "kitchen.mp4", "label": "fall", "fall_start_s": "1.5", "description": "fell by the sink",
                       "event_id": "", "camera": "", "timestamp": ""}
    assert rows[1]["file"] == clip.relative_to(site).as_posix() and rows[1]["label"] == "adl"
    assert rows[1]["description"] == "" and len(rows) == 2
    assert sorted(p.name for p in site.iterdir()) == [".labels.lock", "clips", "labels.csv"]
    assert [p.name for p in (site / "clips").iterdir()] == [clip.name]
    with pytest.raises(ReviewError, match="label 'maybe': expected fall"):
        label_event(tmp_path / "state", site, "e-2", "maybe")


def test_the_daemon_runs_without_review_when_its_folder_cannot_be_made(tmp_path, model_onnx):
    """Alerts matter more than their review: a state_dir that is a file is logged, and the run goes on."""
    blocker = tmp_path / "state"
    blocker.write_text("not a folder")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "paths": {"models_dir": str(MODELS_DIR), "state_dir": str(blocker)},
        "cameras": [{"name": "hall", "uri": str(shared_data("gmdcsa24", "subject1", "ADL", "10.mp4")),
                     "realtime": False, "max_fps": 2}]}))
    proc = run_cli("--config", str(config), "run", "--events-out", str(tmp_path / "events.jsonl"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "review: cannot keep fall clips under %s (" % blocker in proc.stderr
    assert "running without alert review" in proc.stderr and "every camera ended" in proc.stderr
