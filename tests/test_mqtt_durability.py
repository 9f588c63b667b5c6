"""No fall event is lost: a real Mosquitto stopped and started several times, the producer SIGKILLed mid-stream.

Two producers. :func:`test_the_real_daemon_on_looped_fall_videos_loses_no_event` runs the real
``fallwatch run`` (pose network, tracker, fall detector, MqttSink with its SQLite outbox) on two
looped fall videos over MQTT 5 and TLS; the event ids it produced are the lines of its
``--events-out`` file (the MQTT sink is first in the sink set, so an event is in the outbox
before it is written there). The driver-based tests use tests/mqtt_driver.py (the real Outbox and
MqttSink fed a steady stream of synthetic events for two cameras), which stresses hundreds of
events in seconds, over MQTT 3.1.1 and 5. In every test the subscriber holds a persistent session
(MQTT 3.1.1 clean_session=False, MQTT 5 clean_start=False with a session expiry) so the broker
keeps its messages across restarts. Every event id the producer reported as emitted must arrive at
least once, new ids must arrive in order per camera, and duplicates are counted (and must be
byte-identical re-sends).
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
import yaml
from conftest import MODELS_DIR, REPO, shared_data

from mosquitto import Broker, Subscriber, broker, certs, write_config  # noqa: F401 (fixtures)

from edge.alerts.outbox import Outbox

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


# ---------------------------------------------------------------- the real daemon

# Two real fall clips of ../shared/data/gmdcsa24 (the person is down about 2 s into each), played
# in a loop, so the person falls again every 4-6 s of video.
FALL_VIDEOS = {"room1": ("subject1", "Fall", "13.mp4"), "room2": ("subject1", "Fall", "14.mp4")}
EVENT_TYPES = ("fall_detected", "long_lie", "fall_cleared")
DAEMON_INPUT = (184, 216)  # the network's input, height x width (see write_daemon_config)


def write_daemon_config(folder: Path, broker: Broker, videos: Dict[str, Path]) -> Path:
    """A config for ``fallwatch run``: the cameras play ``videos`` in a loop, MQTT 5 over TLS.

    Chosen so that a shared 2-core machine produces events steadily, about 30 a minute (4 with
    the defaults, which also slow to a crawl when other jobs take the cores). The network runs at
    :data:`DAEMON_INPUT` (the same weights; a quarter of the pixels of the default 368x432, so
    about 15 frames per second and camera instead of 3-8), and ``views.policy: never``, because the
    rotated views triple the engine's batch while someone is down; ``fall.min_up_s: 0.5`` and
    ``fall.cooldown_s: 0`` because the looped clip puts the person back on their feet at once, and
    the defaults (up for 2 s, then 10 s of cooldown) would let each person fall only every third
    loop. This test is about delivery, not about detection (tests/test_evaluate.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "device_id": DEVICE, "log_level": "info",
        "paths": {"models_dir": str(MODELS_DIR), "state_dir": str(folder / "state")},
        "model": {"input_height": DAEMON_INPUT[0], "input_width": DAEMON_INPUT[1]},
        "daemon": {"stats_interval_s": 10},
        "views": {"policy": "never"},
        "fall": {"min_up_s": 0.5, "cooldown_s": 0},
        "cameras": [{"name": name, "uri": str(path), "loop": True} for name, path in videos.items()],
        "mqtt": broker.mqtt_config(tls=True, protocol="5", stats_interval_s=0),
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def small_model(model_onnx: Path) -> Path:
    """The default model converted at :data:`DAEMON_INPUT` (from the graph ``model_onnx`` fetched)."""
    from edge.inference.models import fetch_default_model

    return fetch_default_model(MODELS_DIR, DAEMON_INPUT, log=lambda *_: None, offline=True)


class DaemonRun:
    """One ``fallwatch run --events-out FILE`` of the real daemon, its stderr in ``log``.

    :meth:`produced` reads the events file as it grows: complete lines only, since a SIGKILL may
    cut the last one short."""

    def __init__(self, config: Path, env: Dict[str, str], events: Path, log: Path) -> None:
        self.events = events
        self.log = log
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(config), "run", "--events-out", str(events)],
            cwd=str(REPO), env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=self._log)

    def lines(self) -> List[bytes]:
        try:
            data = self.events.read_bytes()
        except FileNotFoundError:
            return []
        return [line for line in data.split(b"\n")[:-1] if line.strip()]

    def produced(self) -> List[dict]:
        return [json.loads(line) for line in self.lines()]

    def truncated_tail(self) -> bytes:
        """What follows the last complete line (a line cut short by SIGKILL), if anything."""
        return self.events.read_bytes().rpartition(b"\n")[2] if self.events.exists() else b""

    def stderr_tail(self, chars: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        self._log.close()
        return code


def test_the_real_daemon_on_looped_fall_videos_loses_no_event(broker: Broker, tmp_path: Path,
                                                              small_model: Path) -> None:
    """``fallwatch run`` on two looped fall videos, MQTT 5 over TLS: three broker restarts, and one
    SIGKILL while the broker is down (the next run must send the events the killed one left in the
    outbox). Every event in the events files arrives, first arrivals in order per camera."""
    videos = {name: shared_data("gmdcsa24", *parts) for name, parts in FALL_VIDEOS.items()}
    config = write_daemon_config(tmp_path / "device", broker, videos)
    outbox_file = tmp_path / "device" / "state" / "outbox.sqlite3"
    sub = Subscriber(broker, ("fallwatch/%s/+/fall" % DEVICE,), client_id="watcher-daemon", protocol="5",
                     tls=True).start()
    runs: List[DaemonRun] = []
    timeline: List[str] = []  # what happened, for the failure messages
    started = time.monotonic()

    def produced() -> List[dict]:
        return [e for r in runs for e in r.produced()]

    def note(what: str) -> None:
        timeline.append("%5.1f s  %s (%d events produced)" % (time.monotonic() - started, what, len(produced())))

    def context() -> str:
        return "\ntimeline:\n  %s\ndaemon stderr (run %d, last lines):\n%s\nbroker log (last lines):\n%s" % (
            "\n  ".join(timeline), len(runs), runs[-1].stderr_tail() if runs else "-", broker.log()[-1500:])

    def start_daemon() -> DaemonRun:
        n = len(runs) + 1
        runs.append(DaemonRun(config, broker.env(), tmp_path / ("events-%d.jsonl" % n),
                              tmp_path / ("daemon-%d.log" % n)))
        note("daemon run %d started" % n)
        return runs[-1]

    def wait_more(n: int, timeout_s: float = 90.0) -> None:
        """Until ``n`` more events were produced (by all runs together)."""
        want = len(produced()) + n
        deadline = time.monotonic() + timeout_s
        while len(produced()) < want:
            if runs[-1].process.poll() is not None:
                raise AssertionError("the daemon exited with status %s while %d more event(s) were awaited%s"
                                     % (runs[-1].process.returncode, want - len(produced()), context()))
            if time.monotonic() > deadline:
                raise AssertionError("the daemon produced %d of %d event(s) within %g s%s"
                                     % (len(produced()), want, timeout_s, context()))
            time.sleep(0.05)

    def broker_stop() -> None:
        broker.stop()
        note("broker stopped")

    def broker_start() -> None:
        broker.start()
        note("broker started")

    try:
        d = start_daemon()
        wait_more(3, timeout_s=120.0)  # the first one also waits for the model to load
        broker_stop()  # restart 1: events pile up in the outbox
        wait_more(2)
        broker_start()
        wait_more(3)
        broker_stop()  # restart 2, and the daemon is killed while the broker is away
        time.sleep(0.5)  # an event published just before the stop may show in its file a moment later
        down = {e["event_id"] for e in produced()}
        wait_more(2)
        down = {e["event_id"] for e in produced()} - down  # produced while the broker was down
        d.kill()
        note("daemon run 1 SIGKILLed")
        with Outbox(outbox_file) as outbox:
            left = {row.event_id for row in outbox.pending(0, 10000)}
        assert down <= left, "events produced while the broker was down are not in the outbox after SIGKILL: %s%s" % (
            sorted(down - left), context())
        d = start_daemon()  # same config, same state folder: it must send what run 1 left
        wait_more(2, timeout_s=120.0)
        broker_start()
        wait_more(3)
        broker_stop()  # restart 3
        wait_more(2)
        broker_start()
        wait_more(3)
        code = d.terminate()
        note("daemon run 2 stopped with SIGTERM, exit status %s" % code)
        assert code == 0, "the daemon exited with status %s after SIGTERM%s" % (code, context())
    finally:
        for r in runs:
            if r.process.poll() is None:
                r.kill()

    events = produced()
    lines = {json.loads(line)["event_id"]: line for r in runs for line in r.lines()}
    cut = [r.truncated_tail() for r in runs]
    assert not any(cut[1:]), "a cleanly stopped run left a partial line in its events file: %r" % cut[1:]
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids), "an event_id was produced twice: %s" % ids
    for camera in FALL_VIDEOS:
        assert any(e["camera"] == camera and e["type"] == "fall_detected" for e in events), (
            "no fall_detected on camera %s: %s%s" % (camera, [(e["camera"], e["type"]) for e in events], context()))
    want = set(ids)
    arrived = sub.wait_for(lambda msgs: want <= {e["event_id"] for e in fall_ids(msgs)}, timeout_s=30)
    sub.stop()
    messages = [(topic, payload) for _, topic, payload, _ in sub.snapshot() if topic.endswith("/fall")]
    got = [json.loads(payload) for _, payload in messages]
    missing = [i for i in ids if i not in {e["event_id"] for e in got}]
    assert arrived and not missing, "%d of %d event(s) never arrived: %s%s" % (len(missing), len(ids), missing,
                                                                              context())

    # Each arrival is the event as produced (the same JSON text as its events file line), on its
    # camera's topic, with the fields of contract 4; a repeat is the same bytes sent again.
    first: Dict[str, bytes] = {}
    order: Dict[str, List[str]] = {}
    duplicates = 0
    unlogged: List[str] = []
    for (topic, payload), e in zip(messages, got):
        assert topic == "fallwatch/%s/%s/fall" % (DEVICE, e["camera"])
        if e["event_id"] in first:
            duplicates += 1
            assert payload == first[e["event_id"]], "event %s arrived twice with different payloads" % e["event_id"]
            continue
        first[e["event_id"]] = payload
        check_contract_4(e)
        if e["event_id"] not in lines:
            unlogged.append(e["event_id"])  # in the outbox, but SIGKILL came before the events file line
            continue
        assert payload == lines[e["event_id"]], "event %s arrived changed:\n%r\nproduced:\n%r" % (
            e["event_id"], payload, lines[e["event_id"]])
        order.setdefault(e["camera"], []).append(e["event_id"])
    # The post thread emits one event at a time, MQTT sink first: SIGKILL can catch one event
    # between its outbox commit and its events file line, never more.
    assert len(unlogged) <= 1, "events arrived that no events file shows: %s" % unlogged
    for camera in FALL_VIDEOS:
        expected = [e["event_id"] for e in events if e["camera"] == camera]
        assert order.get(camera, []) == expected, "camera %s: events arrived in another order than produced%s" % (
            camera, context())
    with Outbox(outbox_file) as outbox:
        assert outbox.depth() == 0, "the outbox still holds %d event(s) after a clean stop" % outbox.depth()
    for r in runs:
        assert "MQTT: connected to 127.0.0.1:%d" % broker.tls_port in r.stderr_tail(10 ** 7)
    kinds = {k: sum(e["type"] == k for e in events) for k in EVENT_TYPES}
    print("\nreal daemon, MQTT 5 + TLS: %d events produced (%s; room1 %d, room2 %d), %d arrivals, %d duplicate(s), "
          "%d event(s) arrived that SIGKILL kept out of the events file, %d partial line(s) after SIGKILL, "
          "3 broker restarts, 1 SIGKILL, %.0f s"
          % (len(events), ", ".join("%s %d" % kv for kv in kinds.items()), len(order.get("room1", [])),
             len(order.get("room2", [])), len(got), duplicates, len(unlogged), sum(bool(c) for c in cut),
             time.monotonic() - started))
    print("  " + "\n  ".join(timeline))


def check_contract_4(event: dict) -> None:
    """The fields DESIGN.md contract 4 requires of a fall event, with their types and ranges."""
    import datetime

    where = "event %s" % event.get("event_id")
    assert isinstance(event["event_id"], str) and event["event_id"], where
    assert event["type"] in EVENT_TYPES, where
    assert event["device"] == DEVICE and event["camera"] in FALL_VIDEOS, where
    assert isinstance(event["track_id"], int) and event["track_id"] > 0, where
    assert event["timestamp"].endswith("Z"), where
    moment = datetime.datetime.fromisoformat(event["timestamp"][:-1] + "+00:00")
    assert abs(time.time() - moment.timestamp()) < 3600, where
    assert 0.0 <= event["confidence"] <= 1.0, where
    assert len(event["bbox"]) == 4 and all(0.0 <= v <= 1.0 for v in event["bbox"]), where
    assert event["bbox"][0] <= event["bbox"][2] and event["bbox"][1] <= event["bbox"][3], where
    assert len(event["keypoints"]) == 18 and all(len(k) == 3 for k in event["keypoints"]), where
    assert all(0.0 <= v <= 1.0 for k in event["keypoints"] for v in k[:2]), where
