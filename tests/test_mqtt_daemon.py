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
from pathlib import Path

import yaml
from conftest import MODELS_DIR, REPO
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
