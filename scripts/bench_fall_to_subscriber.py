#!/usr/bin/env python3
"""Fall alert latency: from the frame that confirms a fall to a subscriber holding the event, through a real Mosquitto.

    scripts/bench_fall_to_subscriber.py [--falls 200] [--skeletons FILE.jsonl] [--video FILE]
                                        [--state-dir DIR] [--daemon-seconds 60] [--json]

``--falls 0`` runs part 2 only, ``--daemon-seconds 0`` part 1 only.

Part 1, after inference ("confirming frame -> subscriber"): the daemon's own post-inference path
for one camera, built as ``fallwatch run`` builds it: an :class:`edge.pipeline.CameraPipeline` with the
real tracker, view policy and :class:`edge.fall.FallDetector` of the default configuration, and the
sink set of ``cmd_run`` (``MqttSink`` with its fsynced SQLite outbox first, then the events JSONL).
It is fed the skeletons of a real fall clip frame by frame, as the daemon's post thread would,
until the detector confirms the fall; the time runs from handing that frame to the tail
(``CameraPipeline.track``, then ``sinks.frame`` and ``sinks.emit`` as ``Daemon._post_loop`` calls
them) to the subscriber's ``on_message`` for the event (same process, same clock). Each fall uses
a fresh tail (new tracker and detector: no cooldown), track ids keep counting as in the daemon, and
the next fall starts only once the event arrived (latency, not throughput). The camera's retained
``state`` turns ON at the first fall only (the clip ends with the person on the floor, so no
``fall_cleared`` comes between falls). Two setups: MQTT 5 over TLS with a client certificate, and
MQTT 3.1.1 over plain TCP, both with a password, on a broker started here (tests/mosquitto.py:
password file, ACL, persistence on) on free loopback ports.

The skeletons: ``--skeletons`` (a skeleton JSONL, DESIGN.md contract 2, e.g. what
``fallwatch replay VIDEO --record-skeletons FILE`` writes), else they are computed at start from
``--video`` with the real default model (``fallwatch replay``'s own code: default configuration,
every frame; about half a minute on two cores; the model is fetched into models/ if absent).

Part 2, with inference ("capture -> subscriber", ``--daemon-seconds``, 0 to skip): a real
``fallwatch run`` on ``--video`` played in a loop (one camera, the default model, views and
tracker; ``fall.min_up_s: 0.5`` and ``fall.cooldown_s: 0`` so that the person falls again at each
loop) publishing over MQTT 5 + TLS. Measured per ``fall_detected``: the event's ``timestamp``
(ISO UTC, to the millisecond, of the capture of the confirming frame) to the subscriber's receive
time (wall clock). This includes the wait for the engine, preprocessing, inference, parsing,
tracking and detection of that frame, so it depends mostly on the machine's inference speed.

The outbox lives in ``--state-dir`` (default: a temporary folder): put it on the device's real
disk, since its fsync is part of the alert's latency.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
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
from typing import Any, Dict, List

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from mosquitto import Broker, Subscriber, make_certs, write_config  # noqa: E402

from edge.config import load_config  # noqa: E402
from edge.pipeline import CameraPipeline, People  # noqa: E402
from edge.alerts.publisher import MqttSink  # noqa: E402
from edge.replay import read_skeletons  # noqa: E402
from edge.alerts.sinks import open_sinks  # noqa: E402

DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "gmdcsa24" / "subject1" / "Fall" / "13.mp4"
MODELS_DIR = REPO / "models"
CAMERA = "room1"
WARMUP = 5  # falls before the counted ones


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[k]


def figures(values_s: List[float]) -> Dict[str, float]:
    ms = [1000.0 * v for v in values_s]
    return {"n": len(ms), "median": round(statistics.median(ms), 2), "p99": round(percentile(ms, 99), 2),
            "max": round(max(ms), 2)}


# ---------------------------------------------------------------- skeletons


def compute_skeletons(video: Path, work: Path) -> Path:
    """The clip's skeletons with the real default model, as ``fallwatch replay VIDEO --record-skeletons``."""
    from edge.inference.models import fetch_default_model
    from edge.inference.model import open_pose_model
    from edge.replay import replay_video
    from edge.alerts.sinks import SinkSet, SkeletonRecorder

    folder = work / "skeletons"
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump({"paths": {"models_dir": str(MODELS_DIR), "state_dir": str(folder)}}))
    config = load_config(config_file, env={})
    fetch_default_model(MODELS_DIR, (config.model.input_height, config.model.input_width), log=None)
    out = folder / (video.stem + ".jsonl")
    print("computing the skeletons of %s with the default model (every frame) ..." % video, file=sys.stderr)
    started = time.monotonic()
    model = open_pose_model(config)
    sinks = SinkSet([SkeletonRecorder(out)])
    try:
        summary = replay_video(video, config, model, sinks, camera=CAMERA)
    finally:
        model.close()
        sinks.close()
    print("... %d frames in %.0f s" % (summary.frames_processed, time.monotonic() - started), file=sys.stderr)
    return out


def load_frames(path: Path) -> List[Dict[str, Any]]:
    frames = []
    for _, record in read_skeletons(path):
        keypoints = np.asarray([p["keypoints"] for p in record["people"]], dtype=np.float64).reshape(-1, 18, 3)
        view = np.asarray([int(p.get("view", 0)) for p in record["people"]], dtype=np.int64)
        frames.append({"t": float(record["t"]), "size": (int(record["width"]), int(record["height"])),
                       "people": People(keypoints, view)})
    return frames


# ---------------------------------------------------------------- part 1: after inference


class Watcher(Subscriber):
    """The test subscriber, also setting :attr:`arrived` at each message, so that the benchmark waits
    for an event without polling (a poll that parses payloads would hold the GIL while the network
    threads work, and add to what is measured)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import threading

        super().__init__(*args, **kwargs)
        self.arrived = threading.Event()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        super()._on_message(client, userdata, message)
        self.arrived.set()



def wait_connected(sink: MqttSink, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not sink.snapshot_counters()["connected"]:
        if time.monotonic() > deadline:
            raise SystemExit("the MQTT sink did not connect to the benchmark's broker within %g s" % timeout_s)
        time.sleep(0.01)


def run_tail(broker: Broker, folder: Path, protocol: str, tls: bool, frames: List[Dict[str, Any]],
             falls: int) -> Dict[str, Any]:
    config = load_config(write_config(folder, broker, cameras=(CAMERA,), protocol=protocol, tls=tls,
                                      stats_interval_s=0), env=broker.env())
    sub = Watcher(broker, ("fallwatch/%s/+/fall" % config.device_id,), client_id="bench-fall-%s" % protocol,
                  protocol=protocol, tls=tls, persistent=False).start()
    # As cmd_run builds them: the events file, then the MQTT sink (its outbox) first.
    sinks = open_sinks(str(folder / "events.jsonl"), cameras=[CAMERA])
    sink = MqttSink(config).start()
    sinks.add(sink, first=True)
    wait_connected(sink)
    ids = itertools.count(1)  # the daemon's track id counter, shared by its cameras and reloads
    sent: Dict[str, Dict[str, float]] = {}
    confirm_t: List[float] = []
    try:
        for n in range(WARMUP + falls):
            tail = CameraPipeline(CAMERA, config, ids=ids, view_policy=True)
            confirmed = None
            sub.arrived.clear()
            for frame in frames:
                t0 = time.perf_counter()
                record, events = tail.track(frame["people"], frame["t"], time.time(), frame["size"])
                t1 = time.perf_counter()
                sinks.frame(record)
                for event in events:
                    sinks.emit(event)
                t2 = time.perf_counter()
                fall = next((e for e in events if e["type"] == "fall_detected"), None)
                if fall is not None:
                    confirmed = fall["event_id"]
                    if n >= WARMUP:
                        sent[confirmed] = {"t0": t0, "process": t1 - t0, "sinks": t2 - t1}
                        confirm_t.append(frame["t"])
                    break
            if confirmed is None:
                raise SystemExit("the fall detector confirmed no fall on these skeletons: use a fall clip")
            if not sub.arrived.wait(10):
                raise SystemExit("event %s did not reach the subscriber within 10 s" % confirmed)
            time.sleep(0.02)  # then check it was this event; the next fall starts once it is there
            if not any(json.loads(p)["event_id"] == confirmed for _, _, p, _ in sub.snapshot()[-3:]):
                raise SystemExit("the subscriber got another message than event %s" % confirmed)
    finally:
        sinks.close()
        sub.stop()
    arrival: Dict[str, float] = {}
    for t, _, payload, _ in sub.snapshot():
        arrival.setdefault(json.loads(payload)["event_id"], t)
    total = [arrival[e] - s["t0"] for e, s in sent.items()]
    after = [arrival[e] - s["t0"] - s["process"] - s["sinks"] for e, s in sent.items()]
    return {"setup": "MQTT %s %s" % (protocol, "TLS" if tls else "plain TCP"), "falls": len(sent),
            "confirming_frame_t_s": round(statistics.median(confirm_t), 3),
            "frame_to_subscriber_ms": figures(total),
            "track_and_detect_ms": figures([s["process"] for s in sent.values()]),
            "sinks_ms": figures([s["sinks"] for s in sent.values()]),
            "after_emit_to_subscriber_ms": figures(after)}


# ---------------------------------------------------------------- part 2: the daemon, with inference


def parse_iso(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_daemon(broker: Broker, folder: Path, video: Path, seconds: float) -> Dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"device_id": "dev1", "paths": {"models_dir": str(MODELS_DIR), "state_dir": str(folder / "state")},
              "daemon": {"stats_interval_s": 10},
              "fall": {"min_up_s": 0.5, "cooldown_s": 0},
              "cameras": [{"name": CAMERA, "uri": str(video), "loop": True}],
              "mqtt": broker.mqtt_config(tls=True, protocol="5", stats_interval_s=0)}
    config_file = folder / "config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    config_file.chmod(0o600)
    from edge.inference.models import fetch_default_model

    defaults = load_config(config_file, env=broker.env())
    fetch_default_model(MODELS_DIR, (defaults.model.input_height, defaults.model.input_width), log=None)
    sub = Subscriber(broker, ("fallwatch/dev1/+/fall",), client_id="bench-daemon", protocol="5", tls=True,
                     persistent=False).start()
    # The subscriber stamps arrivals with perf_counter; events carry wall-clock timestamps.
    offset = time.time() - time.perf_counter()
    log_file = folder / "daemon.log"
    print("running fallwatch run on %s (looped) for %g s ..." % (video, seconds), file=sys.stderr)
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config_file), "run", "--events-out",
                                 str(folder / "events.jsonl")], cwd=str(REPO), env=dict(os.environ, **broker.env()),
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            time.sleep(seconds)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    time.sleep(0.5)
    sub.stop()
    if code != 0:
        raise SystemExit("fallwatch run exited with status %d; see %s" % (code, log_file))
    first: Dict[str, Any] = {}
    for t, _, payload, _ in sub.snapshot():
        event = json.loads(payload)
        first.setdefault(event["event_id"], (t + offset, event))
    falls = [wall - parse_iso(e["timestamp"]) for wall, e in first.values() if e["type"] == "fall_detected"]
    others = [wall - parse_iso(e["timestamp"]) for wall, e in first.values() if e["type"] != "fall_detected"]
    stats = [line for line in log_file.read_text(errors="replace").splitlines() if "stats:" in line]
    result: Dict[str, Any] = {"setup": "fallwatch run, MQTT 5 TLS", "seconds": seconds, "events": len(first),
                              "falls": len(falls), "last_stats": stats[-1].split("stats: ", 1)[1] if stats else None}
    if falls:
        result["capture_to_subscriber_ms"] = figures(falls)
    if others:
        result["other_events_capture_to_subscriber_ms"] = figures(others)
    return result


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--falls", type=int, default=200,
                        help="falls measured per setup in part 1 (default 200; 0 skips part 1)")
    parser.add_argument("--skeletons", type=Path, help="a skeleton JSONL of a fall clip (default: computed from "
                                                       "--video with the default model)")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO,
                        help="the fall clip (default ../shared/data/gmdcsa24/subject1/Fall/13.mp4)")
    parser.add_argument("--state-dir", type=Path, help="where the outboxes live (default: a temporary folder)")
    parser.add_argument("--daemon-seconds", type=float, default=60.0,
                        help="part 2: run fallwatch run this long (default 60; 0 skips it)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_fall_") as tmp:
        work = Path(tmp)
        state = args.state_dir or work
        if (args.skeletons is None or args.daemon_seconds > 0) and not args.video.is_file():
            raise SystemExit("%s: no such video (give --video, or --skeletons and --daemon-seconds 0)" % args.video)
        skeletons = None
        if args.falls > 0:
            skeletons = args.skeletons or compute_skeletons(args.video, work)
            frames = load_frames(skeletons)
        broker = Broker(work / "broker", make_certs(work / "pki"))
        broker.start()
        try:
            results = [] if args.falls <= 0 else [
                run_tail(broker, state / "tail-tls", "5", True, frames, args.falls),
                run_tail(broker, state / "tail-plain", "3.1.1", False, frames, args.falls)]
            daemon = (run_daemon(broker, state / "daemon", args.video.resolve(), args.daemon_seconds)
                      if args.daemon_seconds > 0 else None)
        finally:
            broker.stop()
    machine = "%s, %d cores, Python %s, NumPy %s; load average %.1f at the start, %.1f at the end" % (
        platform.machine(), os.cpu_count() or 0, platform.python_version(), np.__version__, load_before,
        os.getloadavg()[0])
    if args.json:
        print(json.dumps({"command": command, "machine": machine, "skeletons": str(skeletons),
                          "after_inference": results, "with_inference": daemon}, indent=2))
        return 0
    print("command: %s" % command)
    print("machine: %s" % machine)
    if results:
        print("skeletons: %s" % (skeletons if args.skeletons else "computed from %s" % args.video))
        print()
        print_part1(results, args.falls)
    if daemon is not None:
        print()
        print_part2(daemon)
    return 0


def print_part1(results: List[Dict[str, Any]], falls: int) -> None:
    print("Part 1: confirming frame handed to the camera's tail -> subscriber (no inference), %d falls per setup"
          % falls)
    print("%-20s %9s %9s %9s   %-26s %-26s %-26s" % ("setup", "median ms", "p99 ms", "max ms", "track+detect med/p99",
                                                     "sinks med/p99", "after emit med/p99"))
    for r in results:
        total = r["frame_to_subscriber_ms"]
        parts = ["%.2f / %.2f" % (r[k]["median"], r[k]["p99"])
                 for k in ("track_and_detect_ms", "sinks_ms", "after_emit_to_subscriber_ms")]
        print("%-20s %9.2f %9.2f %9.2f   %-26s %-26s %-26s" % (r["setup"], total["median"], total["p99"], total["max"],
                                                              *parts))


def print_part2(daemon: Dict[str, Any]) -> None:
    print("Part 2: capture of the confirming frame (event timestamp) -> subscriber, INCLUDING inference, "
          "fallwatch run for %g s" % daemon["seconds"])
    if "capture_to_subscriber_ms" in daemon:
        f = daemon["capture_to_subscriber_ms"]
        print("%d fall_detected events: median %.0f ms, p99 %.0f ms, max %.0f ms (%d events in all)"
              % (f["n"], f["median"], f["p99"], f["max"], daemon["events"]))
    else:
        print("no fall_detected event arrived (%d events in all)" % daemon["events"])
    if daemon.get("other_events_capture_to_subscriber_ms"):
        f = daemon["other_events_capture_to_subscriber_ms"]
        print("other events (fall_cleared): %d, median %.0f ms, p99 %.0f ms" % (f["n"], f["median"], f["p99"]))
    if daemon["last_stats"]:
        print("daemon's last stats: %s" % daemon["last_stats"])


if __name__ == "__main__":
    sys.exit(main())
