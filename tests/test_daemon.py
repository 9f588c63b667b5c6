"""The daemon: the real model on real video, cameras that fail and come back, signals, exit status."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from conftest import MODELS_DIR, REPO
from edge.config import load_config
from edge.daemon import Daemon
from edge.pipeline import RateLimiter
from edge.capture.sources import opencv_has_gstreamer
from test_sources import make_clip, wait_for


class Collect:
    """A sink that keeps what it gets."""

    def __init__(self) -> None:
        self.records: List[Any] = []
        self.events: List[Dict[str, Any]] = []
        self.stats_seen: List[Dict[str, Any]] = []
        self.closed = False

    def emit(self, event):
        self.events.append(event)

    def frame(self, record):
        self.records.append(record)

    def stats(self, stats):
        self.stats_seen.append(stats)

    def close(self):
        self.closed = True


def write_config(path: Path, cameras: List[Dict[str, Any]], **sections: Any) -> Path:
    raw = {"paths": {"models_dir": str(MODELS_DIR), "state_dir": str(path.parent / "state")}, "cameras": cameras,
           "daemon": dict({"reconnect_min_s": 0.05, "reconnect_max_s": 0.3, "stats_interval_s": 0.5},
                          **sections.pop("daemon", {}))}
    raw.update(sections)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_rate_limiter_takes_frames_on_a_grid():
    limiter = RateLimiter(10)
    taken = [k for k in range(90) if limiter.take(k / 30)]  # 3 s of a 30 fps camera
    assert taken == list(range(0, 90, 3))
    uneven = RateLimiter(10)
    times = [0.0, 0.04, 0.08, 0.101, 0.15, 0.21, 0.5, 0.55, 0.61]
    assert [t for t in times if uneven.take(t)] == [0.0, 0.101, 0.21, 0.5, 0.61]
    assert all(RateLimiter(0).take(k / 30) for k in range(10))


def test_daemon_keeps_running_while_cameras_fail_and_recover(tmp_path, model_onnx, pose_model, caplog):
    """Two cameras share the engine: a real clip that is moved away and back, and a device that does
    not exist. The clip's frames go through the whole pipeline before, not during, and after."""
    clip = make_clip(tmp_path / "clip.avi", frames=8, fps=20)
    config = load_config(write_config(tmp_path / "config.yaml", [
        {"name": "hall", "uri": str(clip), "loop": True, "max_fps": 4},
        {"name": "door", "uri": "/dev/video_fallwatch_absent"}]))
    sinks = Collect()
    t0 = time.monotonic()
    daemon = Daemon(config, pose_model, sinks, clock=lambda: time.monotonic() - t0)
    daemon.start()
    try:
        wait_for(lambda: daemon.processed["hall"] >= 3, 60, "frames of camera hall through the pipeline")
        stats = daemon.stats()
        door = stats["cameras"]["door"]
        assert door["state"] in ("reconnecting", "connecting") and door["frames"] == 0
        assert "/dev/video_fallwatch_absent does not exist" in door["last_error"]
        assert stats["cameras"]["hall"]["state"] == "streaming"
        for stage in ("preprocess", "engine", "engine_idle", "decode", "parse", "track", "detect", "latency"):
            assert stats["stages"][stage]["median_ms"] > 0, stage
        assert daemon._inputs.buffers <= config.daemon.queue_size + 1  # the input batches are reused
        assert stats["rss_mb"] > 50

        os.replace(clip, tmp_path / "away.avi")
        wait_for(lambda: daemon.stats()["cameras"]["hall"]["state"] in ("reconnecting", "connecting")
                 and "does not exist" in (daemon.stats()["cameras"]["hall"]["last_error"] or ""), 10,
                 "camera hall to report the missing file")
        time.sleep(1.0)
        assert daemon.fatal is None and all(t.is_alive() for t in daemon._threads)
        during = daemon.processed["hall"]
        os.replace(tmp_path / "away.avi", clip)
        wait_for(lambda: daemon.processed["hall"] >= during + 3, 60, "frames after the file came back")
        hall = daemon.stats()["cameras"]["hall"]
        assert hall["state"] == "streaming" and hall["reconnects"] >= 1 and hall["last_error"] is None
    finally:
        daemon.stop()
    assert daemon.fatal is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("camera door: /dev/video_fallwatch_absent does not exist") and "retrying in" in m
               for m in warnings)
    assert any(m.startswith("camera hall: video file %s does not exist; retrying in" % clip) for m in warnings)
    hall_records = [r for r in sinks.records if r.camera == "hall"]
    assert len(hall_records) == daemon.processed["hall"] and not any(r.camera == "door" for r in sinks.records)
    assert all(b.t > a.t for a, b in zip(hall_records, hall_records[1:]))
    assert all(len(r.keypoints) == 1 for r in hall_records)  # one person in the clip
    assert {int(i) for r in hall_records for i in r.track_ids if i} == {1}


# ------------------------------------------------------------------ fallwatch run as a process


def start_run(config: Path, *args: str) -> subprocess.Popen:
    """``python -m edge --config CONFIG run ARGS`` from the repository, as tests/conftest.run_cli does."""
    return subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config), "run"] + list(args),
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lines(path: Path) -> List[Dict[str, Any]]:
    """The complete JSON lines of a file another process may be writing."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1]]


def test_run_reloads_on_sighup_and_stops_on_sigterm_within_2_s(tmp_path, model_onnx):
    clip = make_clip(tmp_path / "clip.avi", frames=8, fps=20)
    cam = {"name": "hall", "uri": str(clip), "loop": True, "max_fps": 3}
    config = write_config(tmp_path / "config.yaml", [cam])
    skeletons, stats, events = tmp_path / "skeletons.jsonl", tmp_path / "stats.jsonl", tmp_path / "events.jsonl"
    proc = start_run(config, "--record-skeletons", str(skeletons), "--stats-out", str(stats),
                     "--events-out", str(events))
    try:
        wait_for(lambda: len(lines(stats)) >= 1 and lines(stats)[-1]["frames_processed"] >= 2, 90,
                 "frames processed (from the stats file)")
        before = lines(stats)[-1]["frames_processed"]
        # a broken configuration: refused, the daemon goes on with the running one (no restart)
        good = config.read_text()
        config.write_text(good.replace("max_fps: 3", "max_fps: fast"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: lines(stats)[-1]["frames_processed"] >= before + 2, 60, "frames after a bad SIGHUP")
        assert not any(s.get("final") for s in lines(stats))
        # a good one: applied, the pipeline restarts with it
        config.write_text(good.replace("max_fps: 3", "max_fps: 2"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len([s for s in lines(stats) if s.get("final")]) == 1 and not lines(stats)[-1].get("final")
                 and lines(stats)[-1]["frames_processed"] >= 2, 60, "frames after the pipeline restarted")
        time.sleep(1.5)
        t_signal = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t_signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert elapsed < 2.0, "stopped in %.2f s" % elapsed
    assert "SIGHUP: the new configuration is not valid, keeping the running one" in err and "max_fps" in err
    assert "SIGHUP: configuration reloaded" in err and "SIGTERM received: stopping" in err
    records = lines(skeletons)  # every line complete: the file was flushed and closed
    assert len(records) >= 4 and all(r["camera"] == "hall" and r["width"] == 320 for r in records)
    assert all(b["t"] > a["t"] for a, b in zip(records, records[1:]))  # one clock across reloads
    finals = [s for s in lines(stats) if s.get("final")]
    assert len(finals) == 2  # the reload and the stop
    assert finals[-1]["cameras"]["hall"]["frames_processed"] >= 1 and finals[-1]["stages"]["engine"]["count"] >= 1
    assert events.exists() and lines(events) == []  # nobody falls in this clip: no events


def test_run_stops_on_sigint_and_exits_0_when_every_camera_ended(tmp_path, model_onnx):
    clip = make_clip(tmp_path / "clip.avi", frames=6, fps=10)
    config = write_config(tmp_path / "config.yaml", [{"name": "hall", "uri": str(clip)}])
    proc = start_run(config, "--record-skeletons", str(tmp_path / "s.jsonl"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "video file %s ended" % clip in err and "every camera ended" in err
    assert 1 <= len(lines(tmp_path / "s.jsonl")) <= 6 and out == ""

    looping = write_config(tmp_path / "loop.yaml", [{"name": "hall", "uri": str(clip), "loop": True}])
    proc = start_run(looping, "--record-skeletons", str(tmp_path / "l.jsonl"))
    try:
        wait_for(lambda: len(lines(tmp_path / "l.jsonl")) >= 1 or proc.poll() is not None, 90, "a frame")
        t_signal = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t_signal
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and elapsed < 2.0 and "SIGINT received: stopping" in err


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer, so csi:// would be tried")
def test_run_with_a_csi_camera_and_no_gstreamer_fails_at_start_saying_why(tmp_path, model_onnx):
    config = write_config(tmp_path / "config.yaml", [{"name": "front", "uri": "csi://0"}])
    proc = start_run(config)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "camera front (csi://0)" in err and "built without GStreamer" in err and "pip uninstall" in err


def test_run_exits_1_with_the_reason_on_a_fatal_error(tmp_path, model_onnx):
    """The model named is 368x432 but the configuration says 256x320: the engine refuses the first
    frame; the daemon stops with the engine's message instead of going on without inference."""
    clip = make_clip(tmp_path / "clip.avi", frames=4, fps=10)
    config = write_config(tmp_path / "config.yaml", [{"name": "hall", "uri": str(clip), "loop": True}],
                          model={"onnx": str(model_onnx), "input_height": 256, "input_width": 320})
    proc = start_run(config)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "fatal: the engine stage failed" in err and "does not fit the model" in err

    missing = write_config(tmp_path / "missing.yaml", [{"name": "hall", "uri": str(clip)}],
                           model={"onnx": str(tmp_path / "nope.onnx")})
    proc = start_run(missing)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "nope.onnx does not exist" in err


def test_run_without_cameras_is_a_usage_error(tmp_path):
    config = write_config(tmp_path / "config.yaml", [])
    proc = start_run(config)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no cameras configured" in err


# ------------------------------------------------------------------ outputs


def test_a_failing_output_does_not_stop_the_others(tmp_path, caplog):
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    import numpy as np

    from edge.pipeline import FrameRecord
    from edge.alerts.sinks import EventLines, SinkSet, SkeletonRecorder

    good = tmp_path / "events.jsonl"
    sinks = SinkSet([EventLines("/dev/full"), EventLines(good), SkeletonRecorder(tmp_path / "s.jsonl")])
    record = FrameRecord("hall", 0.5, 0.5, 640, 480, np.zeros((1, 18, 3)), np.array([3]))
    for k in range(3):
        sinks.emit({"type": "fall_detected", "n": k, "keypoints": np.zeros((18, 3))})
        sinks.frame(record)
    sinks.close()
    assert [json.loads(line)["n"] for line in good.read_text().splitlines()] == [0, 1, 2]
    assert json.loads(good.read_text().splitlines()[0])["keypoints"] == [[0.0] * 3] * 18
    assert lines(tmp_path / "s.jsonl") == [{"t": 0.5, "camera": "hall", "width": 640, "height": 480,
                                            "people": [{"keypoints": [[0.0] * 3] * 18, "track": 3}]}] * 3
    failures = [r for r in caplog.records if "EventLines: emit failed" in r.getMessage()]
    assert len(failures) == 1 and "No space left on device" in failures[0].getMessage()
