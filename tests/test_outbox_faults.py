"""Nothing on the disk may hold back an alert, and a restart mid-fall keeps Home Assistant's sensor ON.

The producer is tests/mqtt_driver.py (the real MqttSink and Outbox in their own process, fed the
driver's event stream: event ``i`` is camera ``room1`` when ``i`` is even, else ``room2``, and
cycles fall_detected, long_lie, fall_cleared per camera), the broker a real Mosquitto, the
subscriber a persistent session that records every message in arrival order. The outbox is
damaged as a power cut does it (tests/damage.py: valid header, overwritten pages), at start and
under the running producer, or replaced by garbage; the events on the overwritten pages are the
only ones allowed to go missing, and the file is kept aside.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Set

import yaml
from damage import damage_pages, write_garbage
from test_mqtt_durability import Producer, fall_ids

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


def retained(broker: Broker, topics: tuple) -> dict:
    """What a subscriber arriving now gets as retained messages."""
    import time

    late = Subscriber(broker, topics, client_id="late-%d" % time.monotonic_ns(), persistent=False).start()
    time.sleep(0.3)
    late.stop()
    return {t: payload for _, t, payload, flag in late.snapshot() if flag}
