"""No fall event is lost: a real Mosquitto stopped and started several times, the producer SIGKILLed mid-stream.

The producer is tests/mqtt_driver.py (the real Outbox and MqttSink fed a steady stream of events
for two cameras) standing in for ``fallwatch run``/``replay`` until the daemon and the fall
detector exist: swap :class:`Producer` for a process that runs the daemon on fall videos and
reports its event ids. The subscriber holds a persistent session (MQTT 3.1.1 clean_session=False,
MQTT 5 clean_start=False with a session expiry) so the broker keeps its messages across restarts.
Every event id the producer reported as emitted must arrive at least once, new ids must arrive in
order per camera, and duplicates are counted (and must be byte-identical re-sends).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from mosquitto import Broker, Subscriber, broker, certs, write_config  # noqa: F401 (fixtures)

from edge.outbox import Outbox

DRIVER = Path(__file__).resolve().parent / "mqtt_driver.py"
DEVICE = "dev1"


class Producer:
    """One run of the driver; ``emitted`` fills as it prints, ``kill()`` is SIGKILL."""

    def __init__(self, config: Path, env: Dict[str, str], start: int, count: int, rate: float, log: Path) -> None:
        self.emitted: List[str] = []
        self.closed = False
        self._log = open(log, "ab")
        full_env = dict(os.environ)
        full_env.update(env)
        self.process = subprocess.Popen(
            [sys.executable, str(DRIVER), "--config", str(config), "--start", str(start), "--count", str(count),
             "--rate", str(rate)], stdout=subprocess.PIPE, stderr=self._log, env=full_env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            text = line.decode().strip()
            if text.startswith("emitted "):
                self.emitted.append(text.split(" ", 1)[1])
            elif text == "closed":
                self.closed = True

    def wait_emitted(self, n: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.emitted) < n:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError("the driver emitted %d of %d events (exit %s)"
                                     % (len(self.emitted), n, self.process.poll()))
            time.sleep(0.01)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(5)
        self._log.close()

    def wait(self, timeout_s: float = 60.0) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(5)
        self._log.close()
        return code


def fall_ids(messages: list) -> List[dict]:
    return [json.loads(payload) for _, topic, payload, _ in messages if topic.endswith("/fall")]


@pytest.mark.parametrize("protocol,tls", [("5", True), ("3.1.1", False)], ids=["mqtt5-tls", "mqtt311-plain"])
def test_every_event_arrives_through_broker_restarts_and_sigkill(broker: Broker, tmp_path: Path, protocol: str,
                                                                 tls: bool) -> None:
    total, rate = 260, 40.0
    config = write_config(tmp_path / "device", broker, device_id=DEVICE, tls=tls, protocol=protocol,
                          stats_interval_s=0)
    sub = Subscriber(broker, ("fallwatch/%s/+/fall" % DEVICE,), client_id="watcher-%s" % protocol,
                     protocol=protocol, tls=tls).start()
    log = tmp_path / "driver.log"
    runs: List[Producer] = []

    def produce(start: int) -> Producer:
        runs.append(Producer(config, broker.env(), start, total - start, rate, log))
        return runs[-1]

    def next_index() -> int:
        return sum(len(r.emitted) for r in runs)

    try:
        p = produce(0)
        p.wait_emitted(30)
        broker.stop()  # restart 1: events pile up in the outbox
        time.sleep(0.6)
        broker.start()
        p.wait_emitted(70)
        broker.stop()  # restart 2, and the producer dies while the broker is away
        time.sleep(0.3)
        p.kill()
        p = produce(next_index())
        p.wait_emitted(10)
        broker.start()
        p.wait_emitted(60)
        p.kill()  # SIGKILL mid-stream with the broker up: events in flight, unacknowledged
        p = produce(next_index())
        p.wait_emitted(40)
        broker.stop()  # restart 3
        time.sleep(0.5)
        broker.start()
        assert p.wait() == 0 and p.closed
    finally:
        for r in runs:
            if r.process.poll() is None:
                r.kill()

    emitted = [e for r in runs for e in r.emitted]
    assert emitted == ["drv-%06d" % i for i in range(total)]
    want = set(emitted)
    arrived = sub.wait_for(lambda msgs: want <= {e["event_id"] for e in fall_ids(msgs)}, timeout_s=20)
    sub.stop()
    events = fall_ids(sub.snapshot())
    got_ids = [e["event_id"] for e in events]
    missing = sorted(want - set(got_ids))
    assert arrived and not missing, "%d event(s) never arrived, first %s; driver log: %s" % (
        len(missing), missing[:5], log.read_text()[-3000:])

    # New ids arrive in order per camera; every repeat is the same message sent again.
    first: Dict[str, dict] = {}
    last_new: Dict[str, int] = {}
    duplicates = 0
    for e in events:
        if e["event_id"] in first:
            duplicates += 1
            assert e == first[e["event_id"]]
            continue
        first[e["event_id"]] = e
        index = int(e["event_id"].split("-")[1])
        assert index > last_new.get(e["camera"], -1), "camera %s: %s arrived after a later event" % (
            e["camera"], e["event_id"])
        last_new[e["camera"]] = index
    assert set(last_new) == {"room1", "room2"}
    print("\n%s: %d events, %d arrivals, %d duplicates, 3 broker restarts, 2 SIGKILLs"
          % (protocol, total, len(events), duplicates))

    with Outbox(tmp_path / "device" / "state" / "outbox.sqlite3") as outbox:
        assert outbox.depth() == 0  # the last run drained it before closing


def test_events_emitted_while_broker_is_down_wait_on_disk_and_arrive_after_a_restart(
        broker: Broker, tmp_path: Path) -> None:
    """The daemon starts with no broker, emits, is killed; the next start delivers them, oldest first."""
    config = write_config(tmp_path / "device", broker, device_id=DEVICE)
    broker.stop()
    p = Producer(config, broker.env(), 0, 12, 50.0, tmp_path / "driver.log")
    p.wait_emitted(12)
    p.kill()
    with Outbox(tmp_path / "device" / "state" / "outbox.sqlite3") as outbox:
        assert [r.event_id for r in outbox.pending(0, 100)] == ["drv-%06d" % i for i in range(12)]
    broker.start()
    sub = Subscriber(broker, ("fallwatch/%s/+/fall" % DEVICE,), client_id="watcher-offline").start()
    p = Producer(config, broker.env(), 12, 2, 50.0, tmp_path / "driver.log")
    assert p.wait() == 0
    assert sub.wait_for(lambda msgs: len(fall_ids(msgs)) >= 14, timeout_s=10)
    sub.stop()
    assert [e["event_id"] for e in fall_ids(sub.snapshot())] == ["drv-%06d" % i for i in range(14)]
