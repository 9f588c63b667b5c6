"""MqttSink against a real Mosquitto: status and Last Will, camera state, Home Assistant discovery, stats, snapshots."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest
from conftest import shared_data

from mosquitto import Broker, Subscriber, broker, certs, wait_until, write_config  # noqa: F401 (fixtures)
from mqtt_driver import make_event

from edge.config import load_config
from edge.alerts.publisher import MqttSink

DRIVER = Path(__file__).resolve().parent / "mqtt_driver.py"


def start_sink(folder: Path, broker: Broker, **mqtt: Any) -> MqttSink:
    config = load_config(write_config(folder, broker, **mqtt), env=broker.env())
    return MqttSink(config).start()


def on(sub: Subscriber, topic: str) -> List[bytes]:
    return [payload for _, t, payload, _ in sub.snapshot() if t == topic]


def retained(broker: Broker, topics: tuple) -> Dict[str, bytes]:
    """What a subscriber arriving now gets as retained messages."""
    late = Subscriber(broker, topics, client_id="late-%d" % time.monotonic_ns(), persistent=False).start()
    time.sleep(0.3)
    late.stop()
    return {t: payload for _, t, payload, flag in late.snapshot() if flag}


def event(i: int, kind: str, camera: str = "room1") -> Dict[str, Any]:
    e = make_event(i, "dev1", ["room1", "room2"])
    e.update(type=kind, camera=camera)
    return e


def test_status_state_and_home_assistant_discovery(broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber(broker, ("fallwatch/#", "homeassistant/#"), persistent=False).start()
    sink = start_sink(tmp_path, broker, stats_interval_s=0)
    try:
        assert sub.wait_for(lambda m: on(sub, "fallwatch/dev1/room2/state") == [b"OFF"], 5)
        assert on(sub, "fallwatch/dev1/status") == [b"online"]
        assert on(sub, "fallwatch/dev1/room1/state") == [b"OFF"]
        config = json.loads(on(sub, "homeassistant/binary_sensor/dev1/room1_fall/config")[0])
        assert config["device_class"] == "safety" and config["unique_id"] == "fallwatch_dev1_room1_fall"
        assert (config["state_topic"], config["payload_on"], config["payload_off"]) == (
            "fallwatch/dev1/room1/state", "ON", "OFF")
        assert (config["availability_topic"], config["payload_available"], config["payload_not_available"]) == (
            "fallwatch/dev1/status", "online", "offline")
        assert config["json_attributes_topic"] == "fallwatch/dev1/room1/fall"
        assert "value_json.event_id" in config["json_attributes_template"]
        assert config["device"]["identifiers"] == ["fallwatch_dev1"]
        assert json.loads(on(sub, "homeassistant/binary_sensor/dev1/room2_fall/config")[0])["state_topic"] == \
            "fallwatch/dev1/room2/state"

        sink.emit(event(0, "fall_detected"))
        assert sub.wait_for(lambda m: on(sub, "fallwatch/dev1/room1/state") == [b"OFF", b"ON"], 5)
        sink.emit(event(1, "long_lie"))
        sink.emit(event(2, "fall_cleared"))
        assert sub.wait_for(lambda m: len(on(sub, "fallwatch/dev1/room1/fall")) == 3, 5)
        assert sub.wait_for(lambda m: on(sub, "fallwatch/dev1/room1/state")[-1:] == [b"OFF"], 5)
        assert on(sub, "fallwatch/dev1/room2/state") == [b"OFF"]
        assert [json.loads(p)["type"] for p in on(sub, "fallwatch/dev1/room1/fall")] == [
            "fall_detected", "long_lie", "fall_cleared"]

        kept = retained(broker, ("fallwatch/#", "homeassistant/#"))
        assert kept["fallwatch/dev1/status"] == b"online" and kept["fallwatch/dev1/room1/state"] == b"OFF"
        assert "homeassistant/binary_sensor/dev1/room2_fall/config" in kept
        assert not any(t.endswith("/fall") for t in kept)  # events are never retained

        # Home Assistant restarts: its birth message makes the sink announce everything again.
        sub.clear()
        sub.client.publish("homeassistant/status", "online", qos=1)
        assert sub.wait_for(lambda m: len(on(sub, "homeassistant/binary_sensor/dev1/room2_fall/config")) == 1, 5)
        assert len(on(sub, "homeassistant/binary_sensor/dev1/room1_fall/config")) == 1
        assert sub.wait_for(lambda m: on(sub, "fallwatch/dev1/room1/state") == [b"OFF"], 5)
        sub.clear()
        sub.client.publish("homeassistant/status", "offline", qos=1)
        time.sleep(0.5)
        assert not any(t.startswith("homeassistant/binary_sensor") for _, t, _, _ in sub.snapshot())
    finally:
        sink.close()
    assert sub.wait_for(lambda m: on(sub, "fallwatch/dev1/status")[-1:] == [b"offline"], 5)  # clean shutdown
    sub.stop()
    assert retained(broker, ("fallwatch/dev1/status",)) == {"fallwatch/dev1/status": b"offline"}


def test_last_will_says_offline_when_the_process_dies(broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber(broker, ("fallwatch/dev1/status",), persistent=False).start()
    config = write_config(tmp_path, broker, stats_interval_s=0)
    env = dict(os.environ, **broker.env())
    proc = subprocess.Popen([sys.executable, str(DRIVER), "--config", str(config), "--count", "1000", "--rate", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        assert sub.wait_for(lambda m: on(sub, "fallwatch/dev1/status") == [b"online"], 10)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert sub.wait_for(lambda m: on(sub, "fallwatch/dev1/status") == [b"online", b"offline"], 5)
    sub.stop()


def test_stats_carry_the_daemon_figures_and_the_outbox(broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber(broker, ("fallwatch/dev1/stats",), persistent=False).start()
    sink = start_sink(tmp_path, broker, stats_interval_s=0.3)
    try:
        figures = {"type": "stats", "cameras": {"room1": {"fps": 9.5, "latency_ms": {"engine": 41.0},
                                                          "dropped_frames": 2, "tracks": 1}}}
        assert sub.wait_for(lambda m: sink.snapshot_counters()["connected"], 5)
        sink.stats(figures)  # the first figures go out at once
        assert sub.wait_for(lambda m: len(on(sub, "fallwatch/dev1/stats")) >= 1, 5)
        sink.emit(event(0, "fall_detected"))
        sink.stats(figures)  # within mqtt.stats_interval_s of the last message: not published
        time.sleep(0.35)
        sink.stats(figures)
        assert sub.wait_for(lambda m: len(on(sub, "fallwatch/dev1/stats")) >= 2, 5)
        time.sleep(0.3)
        assert len(on(sub, "fallwatch/dev1/stats")) == 2  # only when the daemon hands figures over
    finally:
        sink.close()
        sub.stop()
    first, stats = [json.loads(p) for p in on(sub, "fallwatch/dev1/stats")]
    assert first["mqtt"]["events_emitted"] == 0 and sorted(first) == sorted(stats)
    assert list(stats)[0] == "type" and stats["type"] == "stats"
    assert stats["device"] == "dev1" and stats["timestamp"].endswith("Z")
    assert stats["cameras"]["room1"] == {"fps": 9.5, "latency_ms": {"engine": 41.0}, "dropped_frames": 2,
                                         "tracks": 1}
    m = stats["mqtt"]
    assert m["connected"] is True and m["events_emitted"] == 1 and m["outbox_dropped"] == 0
    assert m["outbox_depth"] in (0, 1) and m["connects"] == 1
    assert "jetson" not in stats  # no jtop here: the Jetson part is left out, not faked


def _record(image: np.ndarray) -> Dict[str, Any]:
    """A skeleton JSONL record (contract 2) with the frame: one person standing in the left third."""
    h, w = image.shape[:2]
    x, kp = 0.15, []
    ys = [0.1, 0.2, 0.2, 0.3, 0.4, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 0.5, 0.65, 0.8, 0.08, 0.08, 0.09, 0.09]
    dx = [0, 0, -0.05, -0.07, -0.08, 0.05, 0.07, 0.08, -0.03, -0.03, -0.03, 0.03, 0.03, 0.03, -0.01, 0.01, -0.02, 0.02]
    for y, d in zip(ys, dx):
        kp.append([x + d, y, 0.9])
    return {"t": 1.0, "camera": "room1", "width": w, "height": h, "people": [{"keypoints": kp, "track": 1}],
            "image": image}


def _sharpness(gray: np.ndarray) -> float:
    return float(cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F).var())


@pytest.mark.parametrize("mode", ["blank", "blur"])
def test_snapshot_at_a_fall_is_retained_and_private(broker: Broker, tmp_path: Path, mode: str) -> None:
    image = cv2.imread(str(shared_data("images", "apollo11_crew.jpg")), cv2.IMREAD_COLOR)
    sink = start_sink(tmp_path, broker, stats_interval_s=0,
                      snapshot={"enabled": True, "mode": mode, "width_px": 320, "jpeg_quality": 90})
    try:
        sink.frame(_record(image))
        sink.emit(event(0, "fall_detected"))
        deadline = time.monotonic() + 5
        kept: Dict[str, bytes] = {}
        while "fallwatch/dev1/room1/snapshot" not in kept and time.monotonic() < deadline:
            kept = retained(broker, ("fallwatch/dev1/room1/snapshot",))
    finally:
        sink.close()
    jpeg = kept["fallwatch/dev1/room1/snapshot"]
    snap = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    assert snap.shape == (round(320 * h / w), 320, 3)
    gray = cv2.cvtColor(snap, cv2.COLOR_BGR2GRAY)
    right = gray[:, snap.shape[1] // 2:]  # no skeleton there: only what is under it
    neck = (int(0.15 * 320), int(0.2 * snap.shape[0]))
    assert gray[neck[1] - 3:neck[1] + 4, neck[0] - 3:neck[0] + 4].max() > 200  # the skeleton is drawn
    original = cv2.cvtColor(cv2.resize(image, (320, snap.shape[0]), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    if mode == "blank":
        assert right.max() < 24  # nothing of the room, only JPEG ringing
    else:
        assert right.mean() > 20  # the room is there ...
        assert _sharpness(right) < 0.05 * _sharpness(original[:, snap.shape[1] // 2:])  # ... and unrecognisable


def test_emit_refuses_what_it_cannot_send(broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber(broker, ("#",), client_id="numpy-check", persistent=False).start()
    sink = start_sink(tmp_path, broker, stats_interval_s=0)
    with pytest.raises(ValueError, match="without event_id"):
        sink.emit({"type": "fall_detected", "camera": "room1"})
    with pytest.raises(ValueError, match="cannot be an MQTT topic level"):
        sink.emit(dict(event(0, "fall_detected"), camera="room1/#"))
    e = event(1, "fall_detected")
    e["confidence"], e["bbox"] = np.float32(0.75), np.array([0.1, 0.2, 0.3, 0.4])
    sink.emit(e)  # NumPy values become JSON numbers
    # read it where it arrives: the outbox may already have been emptied by the broker's PUBACK
    deadline = time.monotonic() + 10
    falls: List[bytes] = []
    while not falls and time.monotonic() < deadline:
        falls = [p for _, t, p, _ in sub.snapshot() if t.endswith("/room1/fall")]
        time.sleep(0.05)
    sub.stop()
    assert falls, "the event never reached the broker"
    payload = json.loads(falls[0])
    assert payload["confidence"] == 0.75 and payload["bbox"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    sink.close()
    with pytest.raises(RuntimeError, match="after close"):
        sink.emit(event(2, "fall_detected"))


def test_events_the_disk_cannot_take_are_still_delivered(broker: Broker, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The outbox file may not grow (a real SQLITE_FULL, as on a full SD card): the events are
    kept in memory, said in one error line each, counted in stats, and arrive in order."""
    sub = Subscriber(broker, ("fallwatch/dev1/+/fall",), persistent=False).start()
    sink = start_sink(tmp_path, broker, stats_interval_s=0)
    try:
        sink.emit(event(0, "fall_detected"))
        pages = sink.outbox._db.execute("PRAGMA main.page_count").fetchone()[0]
        sink.outbox._db.execute("PRAGMA main.max_page_count = %d" % pages)
        with caplog.at_level("ERROR", logger="fallwatch.outbox"):
            for i in range(1, 4):
                e = event(i, "fall_cleared" if i % 2 else "fall_detected")
                e["padding"] = "x" * 20000  # needs new pages
                sink.emit(e)
        assert sub.wait_for(lambda m: len(m) >= 4, 10)
        assert sink.snapshot_counters()["outbox_in_memory_only"] == 3
        assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 3
        assert wait_until(lambda: sink.outbox.depth() == 0, 5)
    finally:
        sink.close()
        sub.stop()
    assert [json.loads(p)["event_id"] for _, _, p, _ in sub.snapshot()] == ["drv-%06d" % i for i in range(4)]
