"""``fallwatch run`` with MQTT on: the real daemon on a real video, publishing through MqttSink to a real broker.

The clip here is the first 0.6 s of an everyday-activity video (somebody eating, seated on a bed),
far too short for a fall, so no fall event comes: this checks the wiring around the events
(status, camera state, Home Assistant discovery, the daemon's stats, offline at the end) and that
an unusable state folder does not stop the daemon (its outbox lives in memory, and it says so). Fall events from the real daemon on
real fall videos, through broker restarts and a SIGKILL: tests/test_mqtt_durability.py
(``test_the_real_daemon_on_looped_fall_videos_loses_no_event``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import MODELS_DIR, REPO, shared_data
from test_sources import make_clip

from mosquitto import Broker, Subscriber, broker, certs  # noqa: F401 (fixtures)


def test_fallwatch_run_publishes_status_state_discovery_and_stats(broker: Broker, tmp_path: Path,
                                                                  model_onnx: Path) -> None:
    clip = make_clip(tmp_path / "clip.avi", frames=6, fps=10)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": "dev1", "paths": {"models_dir": str(MODELS_DIR), "state_dir": str(tmp_path / "state")},
        "cameras": [{"name": "hall", "uri": str(clip)}], "daemon": {"stats_interval_s": 0.5},
        "mqtt": broker.mqtt_config(stats_interval_s=0.5)}))
    sub = Subscriber(broker, ("fallwatch/#", "homeassistant/#"), persistent=False).start()
    env = dict(os.environ, **broker.env())
    proc = subprocess.run([sys.executable, "-m", "edge", "--config", str(config), "run"], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sub.wait_for(lambda m: any(t == "fallwatch/dev1/status" and p == b"offline" for _, t, p, _ in m), 5)
    sub.stop()
    got = [(t, p) for _, t, p, _ in sub.snapshot()]
    assert [p for t, p in got if t == "fallwatch/dev1/status"] == [b"online", b"offline"]
    assert [p for t, p in got if t == "fallwatch/dev1/hall/state"] == [b"OFF"]
    [discovery] = [json.loads(p) for t, p in got if t == "homeassistant/binary_sensor/dev1/hall_fall/config"]
    assert discovery["state_topic"] == "fallwatch/dev1/hall/state"
    stats = [json.loads(p) for t, p in got if t == "fallwatch/dev1/stats"]
    assert stats and stats[-1]["cameras"]["hall"]["frames_processed"] >= 1 and "engine" in stats[-1]["stages"]
    assert stats[-1]["mqtt"]["outbox_depth"] == 0 and stats[-1]["device"] == "dev1"
    assert not any(t.endswith("/fall") for t, _ in got)
    assert broker.users["fallwatch"] not in proc.stderr + proc.stdout
    assert "MQTT: connected to 127.0.0.1:%d" % broker.port in proc.stderr


def test_fallwatch_run_with_an_unusable_state_folder_keeps_running_and_says_so(broker: Broker, tmp_path: Path,
                                                                              model_onnx: Path) -> None:
    """No outbox file can exist (a file where the state folder should be): under systemd an exit
    would soon turn detection off, so the daemon runs with its outbox in memory, and says so."""
    (tmp_path / "state").write_text("a file where the state folder should be")
    clip = make_clip(tmp_path / "clip.avi", frames=6, fps=10)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": "dev1", "paths": {"models_dir": str(MODELS_DIR), "state_dir": str(tmp_path / "state")},
        "cameras": [{"name": "hall", "uri": str(clip)}], "daemon": {"stats_interval_s": 0.5},
        "mqtt": broker.mqtt_config(stats_interval_s=0.5)}))
    sub = Subscriber(broker, ("fallwatch/dev1/#",), persistent=False).start()
    proc = subprocess.run([sys.executable, "-m", "edge", "--config", str(config), "run"], cwd=str(REPO),
                          env=dict(os.environ, **broker.env()), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sub.wait_for(lambda m: any(t == "fallwatch/dev1/status" and p == b"offline" for _, t, p, _ in m), 5)
    sub.stop()
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line and "outbox" in line]
    assert len(errors) == 1 and "cannot open %s" % (tmp_path / "state" / "outbox.sqlite3") in errors[0]
    assert "kept in memory only" in errors[0] and "Traceback" not in proc.stderr
    got = [(t, p) for _, t, p, _ in sub.snapshot()]
    assert [p for t, p in got if t == "fallwatch/dev1/hall/state"] == [b"OFF"]
    stats = [json.loads(p)["mqtt"] for t, p in got if t == "fallwatch/dev1/stats"]
    assert stats and stats[-1]["outbox_state"] == "memory"
    assert str(tmp_path / "state") in stats[-1]["outbox_state_reason"]


def test_stats_of_the_real_daemon_are_current_alike_and_carry_tracks(broker: Broker, tmp_path: Path,
                                                                       model_onnx: Path) -> None:
    """`fallwatch run` on a real fall clip (read at the pipeline's pace): every stats message has the
    same keys, type first; the daemon's event count equals mqtt.events_emitted in each (the figures are
    from one instant, not one interval apart); each camera says how many tracks it follows; the last
    message is the final one and counts every fall event the subscriber got."""
    clip = shared_data("gmdcsa24", "subject1", "Fall", "13.mp4")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": "dev1", "paths": {"models_dir": str(MODELS_DIR), "state_dir": str(tmp_path / "state")},
        "cameras": [{"name": "hall", "uri": str(clip), "realtime": False, "max_fps": 8}],
        "daemon": {"stats_interval_s": 0.5}, "mqtt": broker.mqtt_config(stats_interval_s=0.5)}))
    sub = Subscriber(broker, ("fallwatch/dev1/stats", "fallwatch/dev1/hall/fall", "fallwatch/dev1/status"),
                     persistent=False).start()
    proc = subprocess.run([sys.executable, "-m", "edge", "--config", str(config), "run"], cwd=str(REPO),
                          env=dict(os.environ, **broker.env()), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sub.wait_for(lambda m: any(p == b"offline" for _, t, p, _ in m), 5)
    sub.stop()
    got = [(t, p) for _, t, p, _ in sub.snapshot()]
    falls = [json.loads(p) for t, p in got if t.endswith("/fall")]
    stats = [json.loads(p) for t, p in got if t.endswith("/stats")]
    assert "fall_detected" in [e["type"] for e in falls]
    assert len(stats) >= 3
    keys = sorted(stats[0])
    for message in stats:
        assert list(message)[0] == "type" and message["type"] == "stats"
        assert sorted(message) == keys and sorted(message["cameras"]["hall"]) == sorted(stats[0]["cameras"]["hall"])
        assert message["events"] == message["mqtt"]["events_emitted"], message
        hall = message["cameras"]["hall"]
        assert hall["tracks"] == len(hall["track_ids"])
    assert [m["final"] for m in stats] == [False] * (len(stats) - 1) + [True]
    assert stats[-1]["events"] == len(falls)
    assert max(m["cameras"]["hall"]["tracks"] for m in stats) >= 1
    assert any(m["events"] >= 1 for m in stats[:-1])  # the fall was in a message while the clip still ran


def _retained(broker: Broker, topic_filter: str) -> dict:
    """What the broker retains under ``topic_filter`` now: a fresh subscriber gets exactly that."""
    sub = Subscriber(broker, (topic_filter,), client_id="retained-reader", persistent=False).start()
    time.sleep(0.5)
    sub.stop()
    return {t: p for _, t, p, retained in sub.snapshot() if retained}


def test_discovery_configs_of_removed_cameras_are_cleared_at_start(broker: Broker, tmp_path: Path,
                                                                  model_onnx: Path) -> None:
    """Retained Home Assistant configs of this device's cameras that are gone from the config are
    cleared (empty retained payload) when `fallwatch run` starts; its own cameras, other devices'
    cameras and other objects stay."""
    import paho.mqtt.client as mqtt

    old = {"homeassistant/binary_sensor/dev1/%s_fall/config" % name: json.dumps({"name": "Fall %s" % name}).encode()
           for name in ("kitchen", "garage")}
    keep = {"homeassistant/binary_sensor/dev2/kitchen_fall/config": b'{"name": "Fall kitchen (dev2)"}',
            "homeassistant/binary_sensor/dev1/door/config": b'{"name": "a door sensor of someone else"}'}
    writer = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-history")
    writer.username_pw_set("watcher", broker.users["watcher"])
    writer.connect("127.0.0.1", broker.port)
    writer.loop_start()
    for topic, payload in dict(old, **keep).items():
        writer.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    writer.disconnect()
    writer.loop_stop()
    assert set(_retained(broker, "homeassistant/#")) == set(old) | set(keep)

    clip = make_clip(tmp_path / "clip.avi", frames=6, fps=10)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": "dev1", "paths": {"models_dir": str(MODELS_DIR), "state_dir": str(tmp_path / "state")},
        "cameras": [{"name": "hall", "uri": str(clip)}], "mqtt": broker.mqtt_config()}))
    proc = subprocess.run([sys.executable, "-m", "edge", "--config", str(config), "run"], cwd=str(REPO),
                          env=dict(os.environ, **broker.env()), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    retained = _retained(broker, "homeassistant/#")
    assert set(retained) == set(keep) | {"homeassistant/binary_sensor/dev1/hall_fall/config"}, retained
    assert all(retained[t] == p for t, p in keep.items())
    for name in ("kitchen", "garage"):
        assert "camera %s is not configured any more" % name in proc.stderr
