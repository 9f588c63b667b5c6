"""Failures against a real Mosquitto: one clear log line, a retry with backoff, events kept until the way is open.

Wrong password, an ACL that denies publishing (MQTT 5, where the broker can say so), an untrusted
server certificate and a missing client certificate: each gives exactly one ERROR line that names
the fix, the sink keeps retrying with a doubling, capped delay (no crash loop, no busy loop), the
events stay in the outbox, and once the cause is fixed they arrive. The password never appears in
any log line.
"""
from __future__ import annotations

import logging
import re
import secrets
import time
from pathlib import Path
from typing import List

import pytest

from mosquitto import DEFAULT_ACL, Broker, Subscriber, broker, certs, wait_until, write_config  # noqa: F401 (fixtures)
from mqtt_driver import make_event

from edge.config import load_config
from edge.alerts.publisher import MqttSink

CAMERAS = ["room1", "room2"]


def errors(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def retry_delays(caplog: pytest.LogCaptureFixture) -> List[float]:
    found = (re.search(r"next connection attempt in ([\d.]+) s", r.getMessage()) for r in caplog.records)
    return [float(m.group(1)) for m in found if m]


def fall_event_ids(sub: Subscriber) -> List[str]:
    import json

    return [json.loads(p)["event_id"] for _, t, p, _ in sub.snapshot() if t.endswith("/fall")]


def start_sink(folder: Path, broker: Broker, password: str, **kwargs: object) -> MqttSink:
    config = load_config(write_config(folder, broker, stats_interval_s=0, **kwargs),
                         env={"FALLWATCH_MQTT_PASSWORD": password})
    return MqttSink(config).start()


def emit(sink: MqttSink, n: int) -> None:
    for i in range(n):
        sink.emit(make_event(i, "dev1", CAMERAS))


def test_wrong_password(broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fallwatch")
    right, wrong = broker.users["fallwatch"], "wrong-%s" % secrets.token_hex(6)
    sub = Subscriber(broker, ("fallwatch/dev1/+/fall",)).start()
    sink = start_sink(tmp_path, broker, wrong)
    try:
        emit(sink, 3)
        assert wait_until(lambda: sink.counters["connect_failures"] >= 5, 10)
        assert sink._thread is not None and sink._thread.is_alive()
        [line] = errors(caplog)
        assert "refused the login as user 'fallwatch'" in line and "check mqtt.username and the password" in line
        assert "$FALLWATCH_MQTT_PASSWORD" in line and "event(s) wait in the outbox" in line
        delays = retry_delays(caplog)
        assert delays[:4] == [0.1, 0.2, 0.4, 0.8] and max(delays) == 1.0  # doubling, capped at reconnect_max_s
        assert sink.outbox.depth() == 3 and fall_event_ids(sub) == []

        broker.set_users(dict(broker.users, fallwatch=wrong))  # the fix, on the broker's side this time
        broker.restart()
        assert sub.wait_for(lambda msgs: len([m for m in msgs if m[1].endswith("/fall")]) >= 3, 15)
        assert fall_event_ids(sub) == ["drv-000000", "drv-000001", "drv-000002"]
        assert wait_until(lambda: sink.outbox.depth() == 0, 5)
        assert any("connected to" in r.getMessage() and "failed attempt(s)" in r.getMessage() for r in caplog.records)
    finally:
        sink.close()
        sub.stop()
    assert len(errors(caplog)) == 1
    assert right not in caplog.text and wrong not in caplog.text


def test_acl_denial_with_mqtt5(broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fallwatch")
    sub = Subscriber(broker, ("fallwatch/dev1/+/fall",), protocol="5").start()
    sink = start_sink(tmp_path, broker, broker.users["readonly"], user="readonly", protocol="5")
    try:
        emit(sink, 3)
        assert wait_until(lambda: sink.counters["events_rejected"] >= 1, 10)
        time.sleep(1.6)  # refused, paused 0.1 s, sent again, refused, paused 0.2 s, 0.4 s, 0.8 s ...
        assert 9 <= sink.counters["events_rejected"] <= 18  # 3 to 6 rounds of 3 events: retrying, not spinning
        assert sink.counters["connects"] == 1 and sink._thread is not None and sink._thread.is_alive()
        [line] = errors(caplog)
        assert "refuses publishes of user 'readonly' (Not authorized" in line
        assert "ACL must let this user write fallwatch/dev1/# and homeassistant/#" in line
        assert "events stay in the outbox" in line
        assert sink.outbox.depth() == 3 and fall_event_ids(sub) == []
        pauses = sorted({float(m.group(1)) for m in (re.search(r"sent again in ([\d.]+) s", r.getMessage())
                                                      for r in caplog.records) if m})
        assert pauses[:3] == [0.1, 0.2, 0.4] and pauses[-1] <= 1.0

        broker.set_acl(DEFAULT_ACL.replace("user readonly\ntopic read fallwatch/#\ntopic read homeassistant/#",
                                           "user readonly\ntopic readwrite fallwatch/#\ntopic readwrite homeassistant/#"))
        broker.restart()
        assert sub.wait_for(lambda msgs: len(msgs) >= 3, 15)
        assert fall_event_ids(sub) == ["drv-000000", "drv-000001", "drv-000002"]
        assert wait_until(lambda: sink.outbox.depth() == 0, 5)
    finally:
        sink.close()
        sub.stop()
    assert len(errors(caplog)) == 1
    assert broker.users["readonly"] not in caplog.text


def test_untrusted_server_certificate(broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fallwatch")
    c = broker.certs
    sink = start_sink(tmp_path, broker, broker.users["fallwatch"],
                      tls={"ca_file": str(c.rogue_ca), "cert_file": str(c.client_cert), "key_file": str(c.client_key)})
    try:
        emit(sink, 2)
        assert wait_until(lambda: sink.counters["connect_failures"] >= 4, 10)
        assert sink._thread is not None and sink._thread.is_alive()
        [line] = errors(caplog)
        assert "TLS: the broker's certificate is not trusted" in line
        assert "set mqtt.tls.ca_file to the CA that signed it (now %s)" % c.rogue_ca in line
        assert sink.outbox.depth() == 2
    finally:
        sink.close()
    # The fix is on the device: trust the right CA; the next start sends what waited on disk.
    sub = Subscriber(broker, ("fallwatch/dev1/+/fall",), tls=True).start()
    sink = start_sink(tmp_path, broker, broker.users["fallwatch"], tls=True)
    try:
        assert sub.wait_for(lambda msgs: len(msgs) >= 2, 10)
        assert fall_event_ids(sub) == ["drv-000000", "drv-000001"]
    finally:
        sink.close()
        sub.stop()
    assert broker.users["fallwatch"] not in caplog.text


def test_missing_client_certificate(broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fallwatch")
    sink = start_sink(tmp_path, broker, broker.users["fallwatch"], tls={"ca_file": str(broker.certs.ca)})
    try:
        emit(sink, 1)
        assert wait_until(lambda: sink.counters["connect_failures"] >= 3, 10)
        [line] = errors(caplog)
        assert "closed the TLS connection before answering CONNECT" in line
        assert "set mqtt.tls.cert_file and mqtt.tls.key_file" in line
        assert sink.outbox.depth() == 1
    finally:
        sink.close()


def test_broker_down_at_start_is_one_line_and_no_busy_loop(broker: Broker, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fallwatch")
    broker.stop()
    sink = start_sink(tmp_path, broker, broker.users["fallwatch"], reconnect_min_s=0.2, reconnect_max_s=0.4)
    try:
        emit(sink, 1)
        time.sleep(2.0)
        attempts = sink.counters["connect_failures"]
        assert 4 <= attempts <= 8  # 2 s at 0.2, 0.4, 0.4, ... s: retrying, but not spinning
        [line] = errors(caplog)
        assert "connection refused by 127.0.0.1:%d: is the broker running" % broker.port in line
        broker.start()
        assert wait_until(lambda: sink.outbox.depth() == 0, 5)
    finally:
        sink.close()
