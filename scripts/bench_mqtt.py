#!/usr/bin/env python3
"""MQTT alert latency: from ``MqttSink.emit()`` to a subscriber holding the event, on a loopback Mosquitto.

    scripts/bench_mqtt.py [--events 500] [--interval-ms 20] [--state-dir DIR] [--json]

``emit()`` stands for "the frame that confirms a fall": the fall detector calls it on that frame
(today the daemon's sink set calls it right after the detector returns the event). Measured per
event: the time ``emit()`` takes (the outbox write, fsynced) and the time from calling ``emit()`` to
the subscriber's ``on_message`` (outbox write + fsync, wake-up of the network thread, publish,
broker, delivery). Events are spaced ``--interval-ms`` apart so this is latency, not throughput.
Runs two setups: MQTT 3.1.1 over plain TCP, and MQTT 5 over TLS with a client certificate, both
with a password, the broker started here on free loopback ports (tests/mosquitto.py). The outbox
lives in ``--state-dir`` (default: a temporary folder): put it on the device's real disk, since the
fsync is most of the cost.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from mosquitto import Broker, Subscriber, make_certs, write_config  # noqa: E402

from edge.config import load_config  # noqa: E402
from edge.alerts.publisher import MqttSink  # noqa: E402


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[k]


def run(broker: Broker, folder: Path, protocol: str, tls: bool, events: int, interval_s: float) -> Dict[str, Any]:
    config = load_config(write_config(folder, broker, protocol=protocol, tls=tls, stats_interval_s=0),
                         env=broker.env())
    sub = Subscriber(broker, ("fallwatch/dev1/+/fall",), client_id="bench-%s" % protocol, protocol=protocol,
                     tls=tls, persistent=False).start()
    sink = MqttSink(config).start()
    deadline = time.monotonic() + 10
    while not sink.snapshot_counters()["connected"] and time.monotonic() < deadline:
        time.sleep(0.01)
    emitted: Dict[str, float] = {}
    emit_s: List[float] = []
    try:
        for i in range(events + 20):  # the first 20 warm up and are not counted
            event = {"event_id": "bench-%06d" % i, "type": "fall_detected", "device": "dev1", "camera": "room1",
                     "track_id": 1, "timestamp": "2026-01-01T00:00:00.000Z", "confidence": 0.9,
                     "bbox": [0.2, 0.5, 0.7, 0.9], "keypoints": [[0.5, 0.6, 0.8]] * 18}
            t0 = time.perf_counter()
            sink.emit(event)
            t1 = time.perf_counter()
            if i >= 20:
                emitted[event["event_id"]] = t0
                emit_s.append(t1 - t0)
            time.sleep(max(0.0, interval_s - (time.perf_counter() - t0)))
        want = set(emitted)
        sub.wait_for(lambda msgs: want <= {json.loads(p)["event_id"] for _, _, p, _ in msgs}, 30)
    finally:
        sink.close()
        sub.stop()
    arrival: Dict[str, float] = {}
    for t, _, payload, _ in sub.snapshot():
        arrival.setdefault(json.loads(payload)["event_id"], t)
    latency = [arrival[e] - t0 for e, t0 in emitted.items() if e in arrival]
    ms = lambda v: round(1000.0 * v, 2)  # noqa: E731
    return {"setup": "MQTT %s %s" % (protocol, "TLS" if tls else "plain TCP"), "events": len(emitted),
            "delivered": len(latency),
            "emit_to_subscriber_ms": {"median": ms(statistics.median(latency)), "p99": ms(percentile(latency, 99)),
                                      "max": ms(max(latency))},
            "emit_call_ms": {"median": ms(statistics.median(emit_s)), "p99": ms(percentile(emit_s, 99))}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="events per setup (default 500)")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="time between events (default 20)")
    parser.add_argument("--state-dir", help="where the outbox lives (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_mqtt_") as tmp:
        work = Path(tmp)
        state = Path(args.state_dir) if args.state_dir else work
        broker = Broker(work / "broker", make_certs(work / "pki"))
        broker.start()
        try:
            results = [run(broker, state / "plain", "3.1.1", False, args.events, args.interval_ms / 1000.0),
                       run(broker, state / "tls", "5", True, args.events, args.interval_ms / 1000.0)]
        finally:
            broker.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("%s, Python %s, %d events per setup, %g ms apart" % (
        platform.machine(), platform.python_version(), args.events, args.interval_ms))
    print("%-22s %12s %12s %12s %16s %14s" % ("setup", "median ms", "p99 ms", "max ms", "emit() median", "emit() p99"))
    for r in results:
        e2e, call = r["emit_to_subscriber_ms"], r["emit_call_ms"]
        print("%-22s %12.2f %12.2f %12.2f %16.2f %14.2f  (%d/%d delivered)" % (
            r["setup"], e2e["median"], e2e["p99"], e2e["max"], call["median"], call["p99"], r["delivered"],
            r["events"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
