"""``fallwatch mqtt-test``: connect with the configured settings one step at a time and say what failed.

Steps, each an :class:`~edge.health.checks.CheckResult` ``ok``, ``fail`` (with the fix) or ``skip``: DNS
(resolve ``mqtt.host``), TCP (connect to ``mqtt.port``), TLS (handshake and certificate check with
``mqtt.tls``), login (CONNECT/CONNACK with the user name and password), publish (a test event, QoS 1,
on ``<prefix>/<device>/mqtt-test``, never a camera's topic: nobody gets a false alarm), delivery (the
test client subscribes to that topic and must get its event back). The last step is what catches an
ACL denial under MQTT 3.1.1, where Mosquitto acknowledges a denied publish and silently drops it.
The test client's id is ``<client_id>-test`` so that it does not take over a running daemon's
connection. :func:`check_connection` is the same run for ``fallwatch doctor``.
"""
from __future__ import annotations

import socket
import ssl
import threading
import time
import uuid
from typing import Any, Dict, List, Optional

from edge.health.checks import FAIL, OK, SKIP, CheckResult, any_failed, format_result
from edge.alerts.events import encode_event, iso_utc
from edge.alerts.client import ConnectFailure, new_client, open_connection, refusal, ssl_context, tls_verify_failure
from edge.alerts.topics import Topics

NAME_WIDTH = 9  # the longest step name, "delivery", and a space


def _failed(name: str, failure: ConnectFailure) -> CheckResult:
    return CheckResult(name, FAIL, failure.what, failure.fix)


def _ms(t0: float) -> str:
    return "%.1f ms" % (1000.0 * (time.perf_counter() - t0))


def check_network(mqtt: Any, timeout_s: float) -> List[CheckResult]:
    """DNS, TCP and TLS, without MQTT: which of the three fails is the answer."""
    host, port = mqtt.host, mqtt.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return [CheckResult("DNS", FAIL, "cannot resolve %r (%s)" % (host, exc.strerror or exc),
                            "check mqtt.host, or name resolution on this device (/etc/hosts, DNS)")]
    steps = [CheckResult("DNS", OK, "%s -> %s" % (host, ", ".join(sorted({i[4][0] for i in infos}))))]
    t0 = time.perf_counter()
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        return steps + [CheckResult("TCP", FAIL, "connection refused by %s:%d" % (host, port),
                                    "start the broker, or set mqtt.port to its listener (usually 1883, 8883 with TLS)")]
    except (socket.timeout, TimeoutError):
        return steps + [CheckResult("TCP", FAIL, "no answer from %s:%d within %g s" % (host, port, timeout_s),
                                    "check mqtt.host and mqtt.port, and firewalls between here and the broker")]
    except OSError as exc:
        return steps + [CheckResult("TCP", FAIL, "cannot connect to %s:%d (%s)" % (host, port, exc.strerror or exc),
                                    "check mqtt.host, mqtt.port and the network")]
    steps.append(CheckResult("TCP", OK, "connected to %s:%d in %s" % (sock.getpeername()[0], port, _ms(t0))))
    try:
        if not mqtt.tls.enabled:
            steps.append(CheckResult("TLS", SKIP, "off (mqtt.tls.enabled: false): plain TCP"))
            return steps
        try:
            ctx = ssl_context(mqtt.tls)
        except ConnectFailure as exc:
            return steps + [_failed("TLS", exc)]
        t0 = time.perf_counter()
        try:
            tls_sock = ctx.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            return steps + [_failed("TLS", tls_verify_failure(exc, mqtt))]
        except (ssl.SSLError, OSError) as exc:
            return steps + [CheckResult("TLS", FAIL, "handshake with %s:%d failed (%s)" % (host, port, exc),
                                        "is mqtt.port a TLS listener? does the broker want a client certificate "
                                 "(mqtt.tls.cert_file, key_file)?")]
        subject = dict(x[0] for x in (tls_sock.getpeercert() or {}).get("subject", ()))
        steps.append(CheckResult("TLS", OK, "%s, broker certificate %r verified%s, in %s" % (
            tls_sock.version(), subject.get("commonName", "?"),
            " (host name not checked: mqtt.tls.insecure)" if mqtt.tls.insecure else "", _ms(t0))))
        tls_sock.close()
        return steps
    finally:
        sock.close()


class _Probe:
    """Callbacks of the test client, recorded for the steps to read."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.connack: Any = None
        self.suback: Optional[List[Any]] = None
        self.puback: Any = None
        self.messages: List[bytes] = []

    def on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connack = reason_code

    def on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self.suback = list(reason_codes)

    def on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self.puback = reason_code

    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.messages.append(bytes(message.payload))


def _loop_until(client: Any, done: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline or client.socket() is None:
            return bool(done())
        client.loop(0.05)
    return True


def check_mqtt(config: Any, timeout_s: float) -> List[CheckResult]:
    """Login, publish a test event and see it come back."""
    mqtt = config.mqtt
    topic = Topics.for_config(config).test
    probe = _Probe()
    client_id = (mqtt.client_id + "-test")[:128]
    try:
        client = new_client(mqtt, client_id)
    except ConnectFailure as exc:
        return [_failed("login", exc)]
    for name in ("on_connect", "on_subscribe", "on_publish", "on_message"):
        setattr(client, name, getattr(probe, name))
    t0 = time.perf_counter()
    try:
        open_connection(client, mqtt)
    except ConnectFailure as exc:
        return [_failed("login", exc)]
    try:
        if not _loop_until(client, lambda: probe.connack is not None, timeout_s):
            return [CheckResult("login", FAIL, "no CONNACK from the broker within %g s" % timeout_s,
                                "is mqtt.port an MQTT listener, and does mqtt.tls.enabled match it?")]
        if probe.connack.is_failure:
            return [_failed("login", refusal(probe.connack, mqtt))]
        who = "user %r" % mqtt.username if mqtt.username else "no user name"
        steps = [CheckResult("login", OK, "accepted: %s, MQTT %s, client id %s, in %s" % (
            who, mqtt.protocol, client_id, _ms(t0)))]
        client.subscribe(topic, qos=1)
        _loop_until(client, lambda: probe.suback is not None, timeout_s)
        can_read = bool(probe.suback) and not probe.suback[0].is_failure
        event: Dict[str, Any] = {"event_id": "mqtt-test-" + uuid.uuid4().hex, "type": "test",
                                 "device": config.device_id, "camera": "mqtt-test", "timestamp": iso_utc()}
        payload = encode_event(event).encode("utf-8")
        t0 = time.perf_counter()
        client.publish(topic, payload, qos=1)
        if not _loop_until(client, lambda: probe.puback is not None, timeout_s):
            return steps + [CheckResult("publish", FAIL, "no PUBACK for the test event within %g s" % timeout_s,
                                        "the connection was lost or the broker is overloaded: see its log")]
        if probe.puback.is_failure:
            return steps + [CheckResult("publish", FAIL, "the broker refused the test event on %s (%s)" % (
                topic, probe.puback), "let user %r write %s/# in the broker's ACL" % (
                mqtt.username, Topics.for_config(config).base))]
        steps.append(CheckResult("publish", OK, "test event %s acknowledged (PUBACK) on %s in %s" % (
            event["event_id"], topic, _ms(t0))))
        if not can_read:
            steps.append(CheckResult("delivery", SKIP, "not verifiable: the broker refused the subscription to %s (%s)"
                                     % (topic, probe.suback[0] if probe.suback else "no SUBACK")))
            return steps
        if _loop_until(client, lambda: payload in probe.messages, timeout_s):
            steps.append(CheckResult("delivery", OK, "the test event came back in %s" % _ms(t0)))
        else:
            steps.append(CheckResult("delivery", FAIL, "the broker acknowledged the test event but did not deliver it "
                              "within %g s: with MQTT 3.1.1, Mosquitto acknowledges and silently drops what its ACL "
                              "denies" % timeout_s,
                              "let user %r write %s/# (and %s/# for Home Assistant) in the broker's ACL" % (
                                  mqtt.username, Topics.for_config(config).base,
                                  mqtt.homeassistant.discovery_prefix)))
        return steps
    finally:
        try:
            client.disconnect()
            client.loop(0.05)
        except (OSError, ValueError):
            pass


def run_checks(config: Any, timeout_s: float = 5.0) -> List[CheckResult]:
    """Every step, in order, stopping at the first failure."""
    steps = check_network(config.mqtt, timeout_s)
    if any_failed(steps):
        return steps
    return steps + check_mqtt(config, timeout_s)


def check_connection(config: Any, timeout_s: float = 5.0) -> str:
    """What ``fallwatch doctor`` asks: connect, log in, publish a test event and get it back.

    Returns a one-line summary; raises ConnectFailure (``kind``: the step's name) with the step's
    message and fix (``fallwatch mqtt-test`` prints every step)."""
    steps = run_checks(config, timeout_s)
    for step in steps:
        if step.status == FAIL:
            raise ConnectFailure(step.name, "%s failed: %s" % (step.name, step.message), step.fix, joint="; fix: ")
    return "; ".join("%s %s" % (s.name, "ok" if s.status == OK else "skipped") for s in steps)


def format_report(config: Any, steps: List[CheckResult]) -> str:
    mqtt = config.mqtt
    lines = ["fallwatch mqtt-test: broker %s:%d, MQTT %s, %s, TLS %s" % (
        mqtt.host, mqtt.port, mqtt.protocol, "user %r" % mqtt.username if mqtt.username else "no user name",
        "on" if mqtt.tls.enabled else "off")]
    if not mqtt.enabled:
        lines.append("note: mqtt.enabled is false, so the daemon will not publish; testing the settings anyway")
    lines += [format_result(step, NAME_WIDTH, indent="  ") for step in steps]
    failed = [s.name for s in steps if s.status == FAIL]
    lines.append("FAILED at %s" % failed[0] if failed else "all checks passed")
    return "\n".join(lines)
