#!/usr/bin/env python3
"""Alert latency, end to end: a person reaching the floor -> the subscriber's on_message, in real time.

From the labelled frame in which a person reaches the floor to the subscriber's ``on_message``, on
the GMDCSA24 fall clips played in real time through ``fallwatch run`` and MQTT.

    scripts/bench_alert_latency.py [--data ../shared/data/gmdcsa24] [--clip FILE ...] [--rounds N]
                                   [--threads N] [--max-fps F] [--keep DIR] [--json]

For each fall clip of ``labels.csv`` (or each ``--clip``, a path relative to ``--data``), one at a
time: a real Mosquitto (tests/mosquitto.py: password file, ACL, persistence, TLS with a client
certificate, free loopback ports; one broker for the whole run; ``--rounds`` plays every clip
that many times, one round after the other), a paho subscriber on
``fallwatch/dev1/+/fall`` (MQTT 5 over TLS) that stamps each message with ``time.time()`` in its
``on_message``, and a real ``fallwatch run`` (a new process per clip: the default model on the CPU
backend, views ``auto``, the default tracker and fall detector; MQTT 5 over TLS to that broker)
whose only camera is the clip, a video file played at its own frame rate (``realtime: true``, the
default): frames that the pipeline does not take in time are overwritten by newer ones and lost, as
with a live camera. The daemon ends by itself when the file ends.

The clock: the daemon logs (at info) the wall time at which the camera read the clip's first frame
(``streaming`` line). The realtime source reads frame ``k`` at ``k / fps`` after it (it sleeps
until then; ``playback_lag_s`` checks it kept pace: the time the file ended minus ``frames / fps``).
So the labelled frame ``k_L`` was presented at ``frame0_wall + k_L / fps``, and the event's
``timestamp`` (the capture time of the frame that confirmed the fall, in milliseconds) places that
frame at ``timestamp - frame0_wall`` seconds into the clip. All times are this machine's wall clock
(the daemon and the subscriber run here), to about a millisecond.

The labels: GMDCSA24 labels only when the fall *starts* (``fall_start_s``, the first "Falling"
second of the dataset's Fall.csv). :data:`LANDED` is the frame in which the person first rests on
the floor (buttocks or knees; a hand alone does not count), read from the frames for this benchmark
(about +-2 frames); in subject2/Fall/14 the person falls onto the bed and never reaches the floor,
so it is the frame of landing on the bed. Both anchors are reported.

:func:`decompose` splits the time from landing to ``on_message`` into

* ``confirmation_s`` — the detector's share: the confirming frame's place in the clip minus the
  landing, itself ``until_down_s`` (landing -> the first processed frame the detector counted
  "down": the rest of the fall, pose quality, and frames not processed) plus ``down_s`` (held down
  that long before ``fall_detected``: ``fall.min_down_s``, 0.6 s by default, plus the gap to the
  next processed frame; from the event's ``features.down_s``);
* ``computation_s`` — capture of the confirming frame -> ``on_message``: waiting for the engine,
  preprocessing, one to three engine passes (views), parsing, tracking, the outbox fsync, MQTT.

Computation also lengthens ``confirmation_s``: a frame the pipeline never took cannot start or end
the ``min_down_s`` clock. ``fallwatch evaluate`` (every frame, no clock) gives the detector's time
without that; BENCHMARKS.md sets them side by side.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from mosquitto import Broker, Subscriber, make_certs  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "gmdcsa24"
MODELS_DIR = REPO / "models"
CAMERA = "room1"
DEVICE = "dev1"

# The frame (index from 0, as OpenCV reads the file) in which the person first rests on the floor,
# read from the frames for this benchmark (about +-2 frames), and what happens there.
LANDED = {
    "subject1/Fall/13.mp4": (31, "buttocks on the floor (backward fall; lying from about frame 46)"),
    "subject1/Fall/14.mp4": (33, "buttocks on the floor (backward fall; lying from about frame 46)"),
    "subject1/Fall/15.mp4": (70, "knees on the floor (forward off a chair; hands first at frame 66, lying at 86)"),
    "subject2/Fall/12.mp4": (117, "buttocks on the floor (backward fall; lying from about frame 124)"),
    "subject2/Fall/13.mp4": (52, "buttocks on the floor (backward fall; lying from about frame 62)"),
    "subject2/Fall/14.mp4": (56, "on the bed, not the floor (backward onto the bed, lying at frame 60)"),
}


# ---------------------------------------------------------------- the arithmetic


def parse_iso(text: str) -> float:
    """ISO 8601 UTC (``2024-05-01T12:00:00.123Z``) -> seconds since the epoch."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_log_time(line: str) -> float:
    """The wall time of a daemon log line (``2026-12-01 21:04:31,123 INFO ...``, local time, as
    ``logging`` writes ``asctime``) in seconds since the epoch."""
    stamp, millis = line[:19], line[20:23]
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000.0


def decompose(landed_s: float, frame0_wall: float, event: Dict[str, Any], arrival_wall: float) -> Dict[str, float]:
    """Where the time from landing to the subscriber went, in seconds.

    ``landed_s``: the labelled frame's place in the clip; ``frame0_wall``: when the source read the
    clip's first frame; ``event``: the ``fall_detected`` payload (its ``timestamp``: capture of the
    confirming frame; ``features.down_s``: how long the detector had counted the person down);
    ``arrival_wall``: the subscriber's ``on_message``. ``total_s = confirmation_s + computation_s``
    and ``confirmation_s = until_down_s + down_s``."""
    confirm_wall = parse_iso(event["timestamp"])
    confirm_clip_s = confirm_wall - frame0_wall
    down_s = float(event.get("features", {}).get("down_s", 0.0))
    confirmation = confirm_clip_s - landed_s
    return {"total_s": arrival_wall - (frame0_wall + landed_s), "confirmation_s": confirmation,
            "until_down_s": confirmation - down_s, "down_s": down_s,
            "computation_s": arrival_wall - confirm_wall, "confirming_frame_clip_s": confirm_clip_s}


def summary(values: List[float]) -> Dict[str, Optional[float]]:
    return {"median": round(statistics.median(values), 3) if values else None,
            "worst": round(max(values), 3) if values else None}


# ---------------------------------------------------------------- one clip


class WallSubscriber(Subscriber):
    """The tests' subscriber, stamping each message with the wall clock (the daemon's timestamps
    are wall-clock too)."""

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((time.time(), message.topic, bytes(message.payload), message.retain))


def video_info(path: Path) -> Dict[str, float]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return {"fps": float(capture.get(cv2.CAP_PROP_FPS)), "frames": int(capture.get(cv2.CAP_PROP_FRAME_COUNT))}
    finally:
        capture.release()


def write_config(folder: Path, broker: Broker, clip: Path, threads: int, max_fps: float) -> Path:
    config = {"device_id": DEVICE, "log_level": "info",
              "paths": {"models_dir": str(MODELS_DIR), "state_dir": str(folder / "state")},
              "engine": {"threads": threads},
              "daemon": {"stats_interval_s": 5},
              "cameras": [{"name": CAMERA, "uri": str(clip), "max_fps": max_fps}],
              "mqtt": broker.mqtt_config(tls=True, protocol="5", stats_interval_s=0)}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def run_clip(broker: Broker, folder: Path, data: Path, row: Dict[str, str], threads: int,
             max_fps: float) -> Dict[str, Any]:
    clip = (data / row["file"]).resolve()
    info = video_info(clip)
    folder.mkdir(parents=True, exist_ok=True)
    config_file = write_config(folder, broker, clip, threads, max_fps)
    log_file, events_file, stats_file = folder / "daemon.log", folder / "events.jsonl", folder / "stats.jsonl"
    sub = WallSubscriber(broker, ("fallwatch/%s/+/fall" % DEVICE,), client_id="bench-latency", protocol="5",
                         tls=True, persistent=False).start()
    load_before = os.getloadavg()
    command = [sys.executable, "-m", "edge", "--config", str(config_file), "run", "--events-out", str(events_file),
               "--stats-out", str(stats_file), "--record-skeletons", str(folder / "skeletons.jsonl")]
    print("%s: fallwatch run, %d frames at %.2f fps ..." % (row["file"], info["frames"], info["fps"]), file=sys.stderr)
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(command, cwd=str(REPO), env=dict(os.environ, **broker.env()),
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            code = proc.wait(float(row["clip_s"] or 30) + 120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    load_after = os.getloadavg()
    time.sleep(0.5)  # a last message still on its way
    sub.stop()
    if code != 0:
        raise SystemExit("fallwatch run exited with status %d on %s; see %s" % (code, clip, log_file))
    lines = log_file.read_text(errors="replace").splitlines()
    started = [line for line in lines if "fallwatch.sources" in line and ": streaming " in line]
    ended = [line for line in lines if "fallwatch.sources" in line and " ended (set loop" in line]
    if not started:
        raise SystemExit("no 'streaming' line in %s: cannot place the clip's first frame" % log_file)
    frame0_wall = parse_log_time(started[0])
    stats = [json.loads(line) for line in stats_file.read_text().splitlines() if line.strip()]
    final = stats[-1] if stats else {}
    camera = final.get("cameras", {}).get(CAMERA, {})
    stages = final.get("stages", {})
    result: Dict[str, Any] = {
        "clip": row["file"], "fps": round(info["fps"], 3), "frames": info["frames"],
        "fall_start_s": float(row["fall_start_s"]),
        "playback_lag_s": (round(parse_log_time(ended[0]) - frame0_wall - info["frames"] / info["fps"], 3)
                           if ended else None),
        "frames_processed": camera.get("frames_processed"), "frames_dropped": camera.get("dropped"),
        "views": camera.get("views"),
        "engine_median_ms": stages.get("engine", {}).get("median_ms"),
        "pipeline_latency_median_ms": stages.get("latency", {}).get("median_ms"),
        "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after],
        "log": str(log_file)}
    if row["file"] in LANDED:
        index, note = LANDED[row["file"]]
        result.update(landed_frame=index, landed_s=round(index / info["fps"], 3), landed_note=note)
    first = None
    for wall, _, payload, _ in sub.snapshot():
        event = json.loads(payload)
        if event.get("type") == "fall_detected":
            first = (wall, event)
            break
    if first is None:
        result["fall_detected"] = False
        return result
    wall, event = first
    result["fall_detected"] = True
    result["event"] = {k: event.get(k) for k in ("timestamp", "t", "track_id", "confidence", "features")}
    if "landed_s" in result:
        result["from_landing"] = {k: round(v, 3) for k, v in
                                  decompose(result["landed_s"], frame0_wall, event, wall).items()}
    result["from_fall_start"] = {k: round(v, 3) for k, v in
                                 decompose(result["fall_start_s"], frame0_wall, event, wall).items()}
    return result


# ---------------------------------------------------------------- main


def fall_rows(data: Path, clips: List[str]) -> List[Dict[str, str]]:
    with open(str(data / "labels.csv"), newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == "fall"]
    if clips:
        by_file = {r["file"]: r for r in rows}
        missing = [c for c in clips if c not in by_file]
        if missing:
            raise SystemExit("not a fall clip of %s/labels.csv: %s" % (data, ", ".join(missing)))
        rows = [by_file[c] for c in clips]
    return rows


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    except OSError:
        return "load average %.2f, %.2f, %.2f" % os.getloadavg()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the GMDCSA24 folder (with labels.csv)")
    parser.add_argument("--clip", action="append", default=[], help="only this fall clip (as in labels.csv); "
                                                                     "repeatable")
    parser.add_argument("--rounds", type=int, default=1, help="play every clip this many times (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="engine.threads (default 0, the library's)")
    parser.add_argument("--max-fps", type=float, default=0.0, help="the camera's max_fps (default 0, no limit)")
    parser.add_argument("--keep", type=Path, help="keep each clip's config, log, events, stats and skeletons here")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    rows = fall_rows(args.data, args.clip)
    up_before = uptime()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        work = Path(tmp)
        keep = args.keep or work
        broker = Broker(work / "broker", make_certs(work / "pki"))
        broker.start()
        try:
            for n in range(args.rounds):
                for row in rows:
                    folder = keep / ("%s-%d" % (row["file"].replace("/", "_").replace(".mp4", ""), n + 1))
                    results.append(dict(run_clip(broker, folder, args.data, row, args.threads, args.max_fps),
                                        round=n + 1))
        finally:
            broker.stop()
    import numpy as np

    report = {"command": command, "uptime_before": up_before, "uptime_after": uptime(),
              "machine": "%s, %d cores, Python %s, NumPy %s" % (platform.machine(), os.cpu_count() or 0,
                                                                platform.python_version(), np.__version__),
              "config": {"engine.threads": args.threads, "max_fps": args.max_fps, "model": "default",
                         "views.policy": "auto (default)", "mqtt": "5, TLS 1.3 + client certificate"},
              "clips": results}
    report["caught"] = "%d of %d" % (sum(r["fall_detected"] for r in results), len(results))
    for anchor in ("from_landing", "from_fall_start"):
        caught = [r[anchor] for r in results if anchor in r]
        report[anchor] = {k: summary([c[k] for c in caught]) for k in
                          ("total_s", "confirmation_s", "until_down_s", "down_s", "computation_s")}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print_report(report)
    return 0


def print_report(report: Dict[str, Any]) -> None:
    print("command: %s" % report["command"])
    print("machine: %s" % report["machine"])
    print("before: %s" % report["uptime_before"])
    print("after:  %s" % report["uptime_after"])
    print()
    print("| clip | round | landed (s) | alert | landing -> on_message | confirmation | until down | down_s | computation "
          "| fall start -> on_message | frames processed / in clip | engine median ms | playback lag s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["clips"]:
        d, s = r.get("from_landing"), r.get("from_fall_start")
        cells = (["%.3f" % d[k] for k in ("total_s", "confirmation_s", "until_down_s", "down_s", "computation_s")]
                 if d else ["-"] * 5)
        print("| %s | %d | %s | %s | %s | %s | %s/%d | %s | %s | %.2f |" % (
            r["clip"], r["round"], r.get("landed_s", "-"),
            ("%.3f s in" % d["confirming_frame_clip_s"]) if d else ("yes" if r["fall_detected"] else "MISSED"),
            " | ".join(cells), "%.3f" % s["total_s"] if s else "-", r["frames_processed"], r["frames"],
            r["engine_median_ms"], r["playback_lag_s"], r["load_after"][0]))
    print()
    print("fall_detected in %s runs" % report["caught"])
    for anchor in ("from_landing", "from_fall_start"):
        print("%s: %s" % (anchor, ", ".join("%s median %s worst %s" % (k, v["median"], v["worst"])
                                            for k, v in report[anchor].items())))


if __name__ == "__main__":
    sys.exit(main())
