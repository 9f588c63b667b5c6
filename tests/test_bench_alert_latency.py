"""scripts/bench_alert_latency.py: how it splits an alert's latency, how it reads the daemon's clock,
and its landing labels against the dataset's. No timing here: the benchmark itself measures."""
from __future__ import annotations

import calendar
import csv
import importlib.util
import io
import logging
from pathlib import Path

import pytest

from conftest import shared_data

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_alert_latency",
                                                  str(REPO / "scripts" / "bench_alert_latency.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decompose_splits_landing_to_subscriber_into_detector_and_computation():
    bench = _bench()
    frame0 = float(calendar.timegm((2027, 1, 15, 8, 0, 0)))  # the clip's first frame read at 08:00:00 UTC
    # landed 1.0 s into the clip; the frame captured at 08:00:02.500 confirmed the fall after the
    # detector had counted the person down for 0.7 s; the subscriber got it 0.6 s after that capture
    event = {"type": "fall_detected", "timestamp": "2027-01-15T08:00:02.500Z", "features": {"down_s": 0.7}}
    parts = bench.decompose(1.0, frame0, event, frame0 + 3.1)
    assert parts["confirming_frame_clip_s"] == pytest.approx(2.5, abs=1e-6)
    assert parts["confirmation_s"] == pytest.approx(1.5, abs=1e-6)
    assert parts["down_s"] == pytest.approx(0.7, abs=1e-6)
    assert parts["until_down_s"] == pytest.approx(0.8, abs=1e-6)
    assert parts["computation_s"] == pytest.approx(0.6, abs=1e-6)
    assert parts["total_s"] == pytest.approx(2.1, abs=1e-6)


def test_log_time_reads_the_daemons_log_lines_to_the_millisecond():
    bench = _bench()
    created = []
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))  # edge/commands.py
    handler.addFilter(lambda record: created.append(record.created) or True)
    log = logging.getLogger("fallwatch.sources.test")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info("camera room1 (/x.mp4): streaming 640x480 at 29.6 fps")
    finally:
        log.removeHandler(handler)
    wall = bench.parse_log_time(stream.getvalue())
    assert 0.0 <= created[0] - wall < 0.001


def test_every_fall_clip_has_a_landing_after_its_labelled_start_and_inside_the_clip():
    import cv2

    bench = _bench()
    data = shared_data("gmdcsa24")
    with open(str(data / "labels.csv"), newline="") as fh:
        falls = {r["file"]: r for r in csv.DictReader(fh) if r["label"] == "fall"}
    assert sorted(bench.LANDED) == sorted(falls)
    for name, (frame, _note) in bench.LANDED.items():
        capture = cv2.VideoCapture(str(data / name))
        fps, frames = capture.get(cv2.CAP_PROP_FPS), capture.get(cv2.CAP_PROP_FRAME_COUNT)
        capture.release()
        assert float(falls[name]["fall_start_s"]) < frame / fps < frames / fps, name
