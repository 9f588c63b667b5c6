#!/usr/bin/env python3
"""The web page's cost to the engine's throughput: the daemon with the page off, and on with a client
polling the live view.

In rounds that alternate *off* and *on* (so that load from other processes hits both alike), each
round runs the daemon (edge.daemon.Daemon: the real capture thread, schedule + preprocess, engine,
post threads, the configured model on ONNX Runtime) on a video file read with ``realtime: false``
(every frame at the pipeline's pace, as ``fallwatch replay``) and ``loop: true``, and counts the
frames that went through in ``--per-round`` frames' time after the first one:

* *off*: ``web.enabled: false`` -- no hook (``Daemon(live=None)``), no server;
* *on*: the hook (edge.web.live.LiveFrames) and the page's server (edge.web.server.WebServer, on
  loopback, no TLS), with a client in another process (standing for the browser) fetching
  ``/api/live/<camera>.jpg`` and ``/api/live/<camera>/people`` ``--poll-fps`` times a second;
  every picture is drawn in the server's thread.

Reports frames per second of each round, the ratio on/off as the ratio of medians, of totals and
the median of each round's on/off ratio (the two halves of a round run back to back),
the pictures the client got in 20 s and their median time (a picture and its people list), the
median time to draw and encode one picture of 640 px (not cached) in each background mode, and the
load average before and after.

Example (figures in BENCHMARKS.md, section "Web page"):

    python scripts/bench_web.py --video ../shared/data/gmdcsa24/subject1/Fall/14.mp4 --rounds 6 --per-round 20
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POLLER = r"""
import sys, time, urllib.request
base, camera, fps, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
got, took = 0, []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t0 = time.monotonic()
    try:
        for path in ("/api/live/%s.jpg" % camera, "/api/live/%s/people" % camera):
            with urllib.request.urlopen(base + path, timeout=10) as r:
                r.read()
        got += 1
        took.append(time.monotonic() - t0)
    except Exception:
        pass
    time.sleep(max(0.0, 1.0 / fps - (time.monotonic() - t0)))
took.sort()
print(got, took[len(took) // 2] if took else -1)
"""


def run_round(config, model, web, per_round: int, poll_fps: float):
    import itertools

    from edge.alerts.sinks import SinkSet
    from edge.daemon import Daemon

    t0 = time.monotonic()
    daemon = Daemon(config, model, SinkSet(), clock=lambda: time.monotonic() - t0, ids=itertools.count(1),
                    live=web.live if web is not None else None)
    poller = None
    daemon.start()
    try:
        if web is not None:
            web.attach(daemon)
            poller = subprocess.Popen([sys.executable, "-c", POLLER, "http://127.0.0.1:%d" % web.port,
                                       config.cameras[0].name, str(poll_fps), "100000"],
                                      stdout=subprocess.PIPE, text=True)
        while daemon.completed < 1:
            time.sleep(0.02)
        start, first = time.monotonic(), daemon.completed
        while daemon.completed < first + per_round:
            if daemon.fatal:
                raise SystemExit(daemon.fatal)
            time.sleep(0.02)
        elapsed = time.monotonic() - start
        frames = daemon.completed - first
    finally:
        if poller is not None:
            poller.terminate()
            poller.wait(10)
        daemon.stop()
    return frames / elapsed, frames, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, help="a GMDCSA24 clip")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each kind (default 6)")
    parser.add_argument("--per-round", type=int, default=20, help="frames per round (default 20)")
    parser.add_argument("--poll-fps", type=float, default=3.0, help="live view pictures a second (default 3)")
    parser.add_argument("--max-fps", type=float, default=0, help="the camera's max_fps (default 0: every frame)")
    args = parser.parse_args()

    import yaml

    from edge.config import load_config
    from edge.inference.model import open_pose_model
    from edge.web.server import WebServer

    repo = Path(__file__).resolve().parents[1]
    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    raw = {"paths": {"models_dir": str(repo / "models"), "state_dir": str(folder / "state")},
           "cameras": [{"name": "room", "uri": str(Path(args.video).resolve()), "loop": True, "realtime": False,
                        "max_fps": args.max_fps}],
           "web": {"enabled": True, "port": 18000 + os.getpid() % 1000, "background": "blur"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(folder / "config.yaml", env={})
    model = open_pose_model(config)
    web = WebServer(config).start()
    port = web.port
    load_before = os.getloadavg()
    results = {"off": [], "on": []}
    frames = {"off": 0, "on": 0}
    seconds = {"off": 0.0, "on": 0.0}
    # a warm-up round, not counted
    run_round(config, model, None, max(3, args.per_round // 4), args.poll_fps)
    for r in range(args.rounds):
        for kind in (("off", "on") if r % 2 == 0 else ("on", "off")):
            fps, n, t = run_round(config, model, web if kind == "on" else None, args.per_round, args.poll_fps)
            results[kind].append(fps)
            frames[kind] += n
            seconds[kind] += t
            print("round %d %-3s %.3f frames/s (%d frames in %.1f s)" % (r + 1, kind, fps, n, t), flush=True)
    # the client's view of the page, on a daemon of its own: pictures it got and their time
    probe = subprocess.Popen([sys.executable, "-c", POLLER, "http://127.0.0.1:%d" % port, "room",
                              str(args.poll_fps), "20"], stdout=subprocess.PIPE, text=True)
    run_round(config, model, web, max(5, args.per_round // 2), args.poll_fps)
    got, median_s = probe.communicate(timeout=120)[0].split()
    # what one picture costs the page's thread when it is not cached: drawn and encoded from the
    # newest frame record, in each background mode
    from edge.alerts.snapshot import render_snapshot

    record = web.live.latest("room")[0]
    render_ms = {}
    for mode in ("blank", "blur", "video"):
        took = []
        for _ in range(20):
            t0 = time.perf_counter()
            render_snapshot(record, mode, 640, 12.0, 80)
            took.append(time.perf_counter() - t0)
        render_ms[mode] = round(statistics.median(took) * 1000, 2)
    web.stop()
    model.close()
    load_after = os.getloadavg()
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    summary = {
        "video": args.video, "rounds": args.rounds, "per_round": args.per_round, "poll_fps": args.poll_fps,
        "fps_off_median": round(off, 3), "fps_on_median": round(on, 3), "ratio_of_medians": round(on / off, 3),
        "ratio_of_totals": round((frames["on"] / seconds["on"]) / (frames["off"] / seconds["off"]), 3),
        "ratio_median_of_rounds": round(statistics.median(a / b for a, b in zip(results["on"], results["off"])), 3),
        "client_requests_20s": int(got), "client_median_ms": round(float(median_s) * 1000, 1),
        "render_ms_median": render_ms,
        "loadavg_before": [round(v, 2) for v in load_before], "loadavg_after": [round(v, 2) for v in load_after]}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
