#!/usr/bin/env python3
"""Reliability under disk and process faults: events produced, events delivered, events lost.

    scripts/bench_faults.py [--events 200] [--json]

Each fault runs the real MqttSink and Outbox in their own process (tests/mqtt_driver.py, the
stream of synthetic fall events the durability tests use) against a real Mosquitto started here
on free loopback ports (tests/mosquitto.py); a persistent subscriber records what arrives. The
outbox is damaged as a power cut on an SD card does it (tests/damage.py: the header stays,
whole pages in the middle of the events table are overwritten with random bytes). Faults:

- ``damaged at start``: broker down, ``--events`` events stored, SIGKILL, pages overwritten, then
  broker up and a new run that emits half as many again;
- ``damaged while running``: broker down, pages overwritten after ``--events`` events while the
  producer goes on emitting, broker up;
- ``truncated while running``: as the previous one, but the file is cut to half its pages (a
  file system repair after a power cut can do that);
- ``garbage file at start``: the outbox file is random bytes (no SQLite header);
- ``unwritable state dir``: a file stands where the state folder should be (the outbox can only
  live in memory), broker up;
- ``SIGKILL mid-fall, broker down``: broker down, one fall per camera, SIGKILL, restart, broker
  up, then the falls are cleared; also checks that each camera's retained state shows ON before
  its fall arrives and OFF only after its fall_cleared.

"destroyed" counts the events whose rows sat on the overwritten or cut-off pages (found from the
file's raw bytes, independently of the code under test): the damage itself erased them.
"lost" is every other produced event that never reached the subscriber, and must be 0.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Set

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from damage import damage_pages, truncate_half, write_garbage  # noqa: E402
from mosquitto import Broker, Subscriber, make_certs, write_config  # noqa: E402

DRIVER = REPO / "tests" / "mqtt_driver.py"


class Producer:
    """One run of tests/mqtt_driver.py; ``emitted`` fills as it prints."""

    def __init__(self, config: Path, env: Dict[str, str], start: int, count: int, rate: float, log: Path) -> None:
        self.emitted: List[str] = []
        self._log = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(DRIVER), "--config", str(config), "--start", str(start), "--count", str(count),
             "--rate", str(rate)], stdout=subprocess.PIPE, stderr=self._log, env=dict(os.environ, **env))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            text = line.decode().strip()
            if text.startswith("emitted "):
                self.emitted.append(text.split(" ", 1)[1])

    def wait_emitted(self, n: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.emitted) < n:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the driver emitted %d of %d events" % (len(self.emitted), n))
            time.sleep(0.01)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.finish()

    def finish(self, timeout_s: float = 120.0) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(5)
        self._log.close()
        return code


def arrived(sub: Subscriber) -> Set[str]:
    return {json.loads(p)["event_id"] for _, t, p, _ in sub.snapshot() if t.endswith("/fall")}


def kept_aside(state: Path) -> int:
    return sum(1 for p in state.glob("outbox.sqlite3.damaged-*") if not p.name.endswith(("-wal", "-shm")))


def fault(broker: Broker, folder: Path, name: str, events: int) -> Dict[str, Any]:
    t0 = time.monotonic()
    config = write_config(folder, broker, device_id="dev1", stats_interval_s=0, close_timeout_s=15)
    state, log = folder / "state", folder / "driver.log"
    topics = ("fallwatch/dev1/+/fall", "fallwatch/dev1/+/state")
    broker.start()
    sub = Subscriber(broker, topics, client_id="bench-%d" % time.monotonic_ns()).start()
    runs: List[Producer] = []
    destroyed: Set[str] = set()
    env = broker.env()

    def produce(start: int, count: int, rate: float) -> Producer:
        runs.append(Producer(config, env, start, count, rate, log))
        return runs[-1]

    if name == "damaged at start":
        broker.stop()
        p = produce(0, events, 200.0)
        p.wait_emitted(events)
        p.kill()
        destroyed = damage_pages(state / "outbox.sqlite3")
        broker.start()
        produce(events, events // 2, 100.0).finish()
    elif name in ("damaged while running", "truncated while running"):
        broker.stop()
        p = produce(0, 2 * events, 50.0)
        p.wait_emitted(events)
        destroyed = (damage_pages if name.startswith("damaged") else truncate_half)(state / "outbox.sqlite3")
        p.wait_emitted(events + events // 4)
        broker.start()
        p.finish()
    elif name == "garbage file at start":
        write_garbage(state / "outbox.sqlite3")
        produce(0, events, 100.0).finish()
    elif name == "unwritable state dir":
        state.write_text("a file where the state folder should be")
        produce(0, events, 100.0).finish()
    elif name == "SIGKILL mid-fall, broker down":
        broker.stop()
        p = produce(0, 2, 50.0)
        p.wait_emitted(2)
        p.kill()
        p = produce(2, 0, 50.0)
        broker.start()
        p.finish()
        produce(2, 4, 50.0).finish()
    else:
        raise ValueError(name)
    produced = [e for r in runs for e in r.emitted]
    sub.wait_for(lambda m: set(produced) - destroyed <= arrived(sub), 20)
    sub.stop()
    got = arrived(sub)
    result: Dict[str, Any] = {
        "fault": name, "produced": len(produced), "delivered": len(set(produced) & got),
        "destroyed": len(destroyed & (set(produced) - got)), "lost": len(set(produced) - got - destroyed),
        "lost_ids": sorted(set(produced) - got - destroyed),
        "damaged_files_kept": kept_aside(state) if state.is_dir() else 0,
        "exit_status": [r.process.returncode for r in runs], "wall_s": round(time.monotonic() - t0, 1)}
    if name.startswith("SIGKILL"):
        ok = True
        for camera in ("room1", "room2"):
            seen = [(t.rsplit("/", 1)[1], json.loads(m)["type"] if t.endswith("/fall") else m.decode())
                    for _, t, m, _ in sub.snapshot() if t.startswith("fallwatch/dev1/%s/" % camera)]
            offs = [i for i, kv in enumerate(seen) if kv == ("state", "OFF")]
            ok = ok and ("state", "ON") in seen and ("fall", "fall_cleared") in seen and \
                seen.index(("state", "ON")) < seen.index(("fall", "fall_detected")) and \
                all(i > seen.index(("fall", "fall_cleared")) for i in offs) and bool(offs)
        result["state_on_before_fall_off_after_clear"] = ok
    return result


FAULTS = ("damaged at start", "damaged while running", "truncated while running", "garbage file at start",
          "unwritable state dir", "SIGKILL mid-fall, broker down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200, help="events stored before a fault (default 200)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_faults_") as tmp:
        work = Path(tmp)
        broker = Broker(work / "broker", make_certs(work / "pki"))
        try:
            results = [fault(broker, work / ("fault%d" % i), name, args.events) for i, name in enumerate(FAULTS)]
        finally:
            broker.kill()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("%s, Python %s, --events %d" % (platform.machine(), platform.python_version(), args.events))
    print("| fault | produced | delivered | destroyed by the damage | lost | damaged files kept | wall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        extra = ""
        if "state_on_before_fall_off_after_clear" in r:
            extra = " (state ON before the fall, OFF after its clear: %s)" % (
                "yes" if r["state_on_before_fall_off_after_clear"] else "NO")
        print("| %s%s | %d | %d | %d | %d | %d | %.0f s |" % (r["fault"], extra, r["produced"], r["delivered"],
                                                              r["destroyed"], r["lost"], r["damaged_files_kept"],
                                                              r["wall_s"]))
    return 0 if all(r["lost"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
