#!/usr/bin/env python3
"""What the review recorder costs the daemon's post-processing thread, per frame and per fall.

    python scripts/bench_review.py [--frames 3000] [--people 1] [--fps 30]

Makes ``--frames`` real frame records (edge.pipeline.CameraPipeline.track on a standing skeleton
with a little noise, ``--people`` of them, a 640x480 image attached as the daemon's records have),
then times, in turn and twice, ``frame(record)`` of edge.review.ReviewRecorder (default review
settings, state under a temporary folder) and of the ``--record-skeletons`` sink
(edge.alerts.sinks.SkeletonRecorder, into memory) as the reference; then one fall: ``emit`` (the
snapshot is rendered) and the write of its folder (``close``). Medians of the two passes; compare
the columns as ratios, on the same run.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.alerts.sinks import SkeletonRecorder  # noqa: E402
from edge.config import load_config  # noqa: E402
from edge.pipeline import CameraPipeline  # noqa: E402
from edge.review import ReviewRecorder  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--people", type=int, default=1)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text("paths: {state_dir: %s}\ncameras: [{name: hall, uri: /dev/video0}]\n"
                               % (Path(tmp) / "state"))
        config = load_config(config_file, env={})
        pipeline = CameraPipeline("hall", config)
        rng = np.random.default_rng(0)
        image = np.zeros((480, 640, 3), np.uint8)
        base = np.zeros((args.people, 18, 3))
        base[..., 2] = 0.9
        base[..., 0] = (np.arange(args.people)[:, None] + 0.5) / args.people
        base[..., 1] = np.linspace(0.2, 0.8, 18)
        records = []
        for k in range(args.frames):
            kp = base.copy()
            kp[..., :2] += rng.normal(0, 0.002, kp[..., :2].shape)
            record, _ = pipeline.track(kp, k / args.fps, time.time(), (640, 480), image=image)
            records.append(record)
        review = ReviewRecorder(config)
        reference = SkeletonRecorder(io.StringIO())
        times = {"review": [], "record-skeletons": []}
        for _ in range(2):
            for name, sink in (("review", review), ("record-skeletons", reference)):
                started = time.perf_counter()
                for record in records:
                    sink.frame(record)
                times[name].append((time.perf_counter() - started) / len(records) * 1e6)
        started = time.perf_counter()
        review.emit({"event_id": "bench", "type": "fall_detected", "camera": "hall", "track_id": 1,
                     "timestamp": "x", "t": records[-1].t, "features": {}})
        emit_ms = (time.perf_counter() - started) * 1e3
        started = time.perf_counter()
        review.close()
        write_ms = (time.perf_counter() - started) * 1e3
        clip = Path(tmp) / "state" / "review" / "events" / "bench" / "skeletons.jsonl"
        size = os.path.getsize(str(clip))
        lines = sum(1 for _ in open(str(clip)))
    print("frame(): review %.1f us, record-skeletons %.1f us per frame (%d frames, %d people, %g fps; medians of 2)"
          % (statistics.median(times["review"]), statistics.median(times["record-skeletons"]), args.frames,
             args.people, args.fps))
    print("one fall: emit (snapshot rendered) %.1f ms, folder written %.1f ms; clip %d lines, %.0f KB"
          % (emit_ms, write_ms, lines, size / 1024.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
