"""Nothing on the disk may hold back an alert, and a restart mid-fall keeps Home Assistant's sensor ON.

The producer is tests/mqtt_driver.py (the real MqttSink and Outbox in their own process, fed the
driver's event stream, fast and deterministic; the last test runs the real ``fallwatch run`` on a
looped fall clip instead: event ``i`` is camera ``room1`` when ``i`` is even, else ``room2``, and
cycles fall_detected, long_lie, fall_cleared per camera), the broker a real Mosquitto, the
subscriber a persistent session that records every message in arrival order. The outbox is
damaged as a power cut does it (tests/damage.py: valid header, overwritten pages), at start and
under the running producer, or replaced by garbage; the events on the overwritten pages are the
only ones allowed to go missing, and the file is kept aside.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Set

from conftest import shared_data
from damage import damage_pages, write_garbage
from test_mqtt_durability import FALL_VIDEOS, DaemonRun, Producer, fall_ids, small_model  # noqa: F401 (fixture)
from test_mqtt_durability import write_daemon_config

from mosquitto import Broker, Subscriber, broker, certs, write_config  # noqa: F401 (fixtures)

DEVICE = "dev1"


def ids(first: int, last: int) -> List[str]:
    return ["drv-%06d" % i for i in range(first, last)]


def arrived(sub: Subscriber) -> Set[str]:
    return {e["event_id"] for e in fall_ids(sub.snapshot())}


def damage_errors(log: Path) -> List[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if " ERROR " in line and "was damaged" in line]


def aside(state: Path) -> List[Path]:
    return sorted(p for p in state.glob("outbox.sqlite3.damaged-*") if not p.name.endswith(("-wal", "-shm")))


def test_an_outbox_damaged_at_start_is_set_aside_and_every_readable_and_new_event_arrives(
        broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "device", broker, device_id=DEVICE, stats_interval_s=0)
    state = tmp_path / "device" / "state"
    sub = Subscriber(broker, ("fallwatch/%s/+/fall" % DEVICE,), client_id="watcher-start").start()
    broker.stop()
    log = tmp_path / "driver.log"
    p = Producer(config, broker.env(), 0, 60, 200.0, log)
    p.wait_emitted(60)
    p.kill()  # the power cut: 60 events on disk, never sent
    lost = damage_pages(state / "outbox.sqlite3")
    broker.start()
    p = Producer(config, broker.env(), 60, 20, 50.0, log)
    assert p.wait() == 0 and p.closed
    want = set(ids(0, 80)) - lost
    assert sub.wait_for(lambda m: want <= arrived(sub), 15), "missing: %s\n%s" % (
        sorted(want - arrived(sub))[:10], log.read_text()[-3000:])
    sub.stop()
    assert set(ids(60, 80)) <= arrived(sub) and 0 < len(lost) <= 20
    [kept] = aside(state)
    assert kept.stat().st_size > 0 and len(damage_errors(log)) == 1
    print("\ndamaged at start: 80 produced, %d on damaged pages, %d arrived" % (len(lost), len(arrived(sub))))


def test_an_outbox_damaged_under_the_running_producer_is_replaced_and_every_new_event_arrives(
        broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "device", broker, device_id=DEVICE, stats_interval_s=0)
    state = tmp_path / "device" / "state"
    sub = Subscriber(broker, ("fallwatch/%s/+/fall" % DEVICE,), client_id="watcher-running").start()
    broker.stop()
    log = tmp_path / "driver.log"
    p = Producer(config, broker.env(), 0, 140, 20.0, log)
    try:
        p.wait_emitted(60)
        lost = damage_pages(state / "outbox.sqlite3")  # the card fails under the running producer
        before = set(p.emitted)
        p.wait_emitted(len(p.emitted) + 20)
        broker.start()
        assert p.wait() == 0 and p.closed
    finally:
        if p.process.poll() is None:
            p.kill()
    after = set(ids(0, 140)) - before
    want = set(ids(0, 140)) - lost
    assert sub.wait_for(lambda m: want <= arrived(sub), 15), "missing: %s\n%s" % (
        sorted(want - arrived(sub))[:10], log.read_text()[-3000:])
    sub.stop()
    assert len(after) >= 20 and after <= arrived(sub) and 0 < len(lost) <= 20
    assert len(aside(state)) == 1 and len(damage_errors(log)) == 1
    print("\ndamaged while running: 140 produced, %d on damaged pages, %d arrived" % (len(lost), len(arrived(sub))))


def test_a_garbage_outbox_at_start_is_set_aside_and_events_flow(broker: Broker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "device", broker, device_id=DEVICE, stats_interval_s=0)
    state = tmp_path / "device" / "state"
    write_garbage(state / "outbox.sqlite3")
    sub = Subscriber(broker, ("fallwatch/%s/+/fall" % DEVICE,), client_id="watcher-garbage").start()
    p = Producer(config, broker.env(), 0, 6, 50.0, tmp_path / "driver.log")
    assert p.wait() == 0 and p.closed
    assert sub.wait_for(lambda m: set(ids(0, 6)) <= arrived(sub), 10)
    sub.stop()
    assert len(aside(state)) == 1 and len(damage_errors(tmp_path / "driver.log")) == 1


def test_after_sigkill_mid_fall_the_state_is_on_before_the_resent_fall_and_off_only_after_it_clears(
        broker: Broker, tmp_path: Path) -> None:
    """Broker down, a fall on each camera, SIGKILL, restart, broker up: ``state`` ON (retained)
    before the fall is delivered again, and OFF only after its ``fall_cleared``."""
    config = write_config(tmp_path / "device", broker, device_id=DEVICE, stats_interval_s=0, close_timeout_s=15)
    topics = tuple("fallwatch/%s/%s/%s" % (DEVICE, c, k) for c in ("room1", "room2") for k in ("fall", "state"))
    sub = Subscriber(broker, topics, client_id="watcher-state").start()
    broker.stop()
    log = tmp_path / "driver.log"
    p = Producer(config, broker.env(), 0, 2, 50.0, log)  # drv-0 room1, drv-1 room2: fall_detected
    p.wait_emitted(2)
    p.kill()
    p = Producer(config, broker.env(), 2, 0, 50.0, log)  # the restart: no new event, only the outbox
    broker.start()
    assert p.wait() == 0 and p.closed
    assert sub.wait_for(lambda m: {"drv-000000", "drv-000001"} <= arrived(sub), 10)
    kept = retained(broker, topics)
    assert kept == {"fallwatch/dev1/room1/state": b"ON", "fallwatch/dev1/room2/state": b"ON"}, kept
    p = Producer(config, broker.env(), 2, 4, 50.0, log)  # long_lie, then fall_cleared, on each camera
    assert p.wait() == 0 and p.closed
    assert sub.wait_for(lambda m: set(ids(0, 6)) <= arrived(sub), 10)
    assert sub.wait_for(lambda m: retained(broker, topics) == {"fallwatch/dev1/room1/state": b"OFF",
                                                                "fallwatch/dev1/room2/state": b"OFF"}, 10)
    sub.stop()
    for camera in ("room1", "room2"):
        seen = [(t.rsplit("/", 1)[1], json.loads(m)["type"] if t.endswith("/fall") else m.decode())
                for _, t, m, _ in sub.snapshot() if t.startswith("fallwatch/dev1/%s/" % camera)]
        states = [v for k, v in seen if k == "state"]
        falls = [v for k, v in seen if k == "fall"]
        assert falls == ["fall_detected", "long_lie", "fall_cleared"], seen
        assert states[0] == "ON" and seen.index(("state", "ON")) < seen.index(("fall", "fall_detected")), seen
        offs = [i for i, kv in enumerate(seen) if kv == ("state", "OFF")]
        assert offs == [len(seen) - 1] and offs[0] > seen.index(("fall", "fall_cleared")), seen


def test_the_real_daemon_killed_mid_fall_with_the_broker_down_turns_the_sensor_on_before_the_resent_fall(
        broker: Broker, tmp_path: Path, small_model: Path) -> None:
    """The issue's reproduction with ``fallwatch run`` on a looped fall clip: broker down, fall
    detected, SIGKILL, restart, broker up. The subscriber (MQTT 5, TLS) sees room1's state ON
    before the fall run 1 left in the outbox arrives, and OFF only after a fall_cleared."""
    config = write_daemon_config(tmp_path / "device", broker,
                                 {"room1": shared_data("gmdcsa24", *FALL_VIDEOS["room1"])})
    topics = ("fallwatch/%s/room1/fall" % DEVICE, "fallwatch/%s/room1/state" % DEVICE)
    sub = Subscriber(broker, topics, client_id="watcher-daemon-state", protocol="5", tls=True).start()
    broker.stop()
    runs: List[DaemonRun] = []

    def start() -> DaemonRun:
        n = len(runs) + 1
        runs.append(DaemonRun(config, broker.env(), tmp_path / ("events-%d.jsonl" % n),
                              tmp_path / ("daemon-%d.log" % n)))
        return runs[-1]

    def wait(predicate, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert runs[-1].process.poll() is None and time.monotonic() < deadline, "%s: not within %g s\n%s" % (
                what, timeout_s, runs[-1].stderr_tail())
            time.sleep(0.05)

    try:
        d = start()
        wait(lambda: any(e["type"] == "fall_detected" for e in d.produced()), "run 1 detects a fall", 150)
        d.kill()
        [first] = [e["event_id"] for e in d.produced() if e["type"] == "fall_detected"][:1]
        d = start()
        wait(lambda: "MQTT: connection refused" in d.stderr_tail(), "run 2 tries the broker", 60)
        broker.start()
        wait(lambda: first in arrived(sub), "the saved fall arrives", 30)
        wait(lambda: any(t.endswith("/state") and m == b"OFF" for _, t, m, _ in sub.snapshot()),
             "a fall_cleared turns the state OFF", 120)
        assert d.terminate() == 0
    finally:
        for r in runs:
            if r.process.poll() is None:
                r.kill()
    sub.stop()
    seen = [("state", m.decode()) if t.endswith("/state") else ("fall", json.loads(m)["type"], json.loads(m)["event_id"])
            for _, t, m, _ in sub.snapshot()]
    resent = next(i for i, kv in enumerate(seen) if kv[0] == "fall" and kv[2] == first)
    assert seen[0] == ("state", "ON") and 0 < resent, seen
    cleared = next(i for i, kv in enumerate(seen) if kv[:2] == ("fall", "fall_cleared"))
    assert ("state", "OFF") not in seen[:cleared] and seen[cleared + 1] == ("state", "OFF"), seen
    print("\nreal daemon, SIGKILL mid-fall with the broker down: %s" % ", ".join(
        kv[1] if kv[0] == "state" else "%s %s" % (kv[1], kv[2][:8]) for kv in seen))


def retained(broker: Broker, topics: tuple) -> dict:
    """What a subscriber arriving now gets as retained messages."""
    late = Subscriber(broker, topics, client_id="late-%d" % time.monotonic_ns(), persistent=False).start()
    time.sleep(0.3)
    late.stop()
    return {t: payload for _, t, payload, flag in late.snapshot() if flag}
