"""MQTT out: fall events that are never lost, camera state, stats, snapshots, Home Assistant discovery.

Topics (DESIGN.md contract 4), all under ``<mqtt.topic_prefix>/<device_id>``:

==================== ===========================================================================
``status``           ``online`` (retained, QoS 1, published on every connect); ``offline`` as the
                     Last Will and at a clean shutdown
``<camera>/fall``    fall events, JSON, QoS 1, not retained
``<camera>/state``   ``ON`` after ``fall_detected``/``long_lie``, ``OFF`` after ``fall_cleared`` and
                     at start; retained, QoS 1
``<camera>/snapshot`` JPEG of the skeletons at a fall, retained (``mqtt.snapshot``)
``stats``            JSON every ``mqtt.stats_interval_s``, QoS 0
==================== ===========================================================================

Delivery. :meth:`MqttSink.emit` writes the event to the :class:`~edge.outbox.Outbox` (fsynced) and
returns; from then on the event survives SIGKILL and power loss. One network thread owns the paho
client. Only while connected, it publishes outbox rows in order, QoS 1, at most
``mqtt.inflight_max`` unacknowledged, and deletes a row when the PUBACK for its message id arrives
(``on_publish``; the return value of ``publish`` only says the packet was queued). Every connection
is a fresh paho client on a clean session, so paho never holds a queue of its own while offline
(a kept session would have paho re-send its in-flight messages on top of ours: more duplicates,
and a queue that grows while offline); after a reconnect or a restart every unacknowledged row is
sent again, oldest first. With MQTT 5 the window also respects the broker's Receive Maximum. An event whose
PUBACK was lost on the way is therefore delivered twice with the same ``event_id``: at least once,
in order per camera, never silently dropped. Subscribers drop repeats by ``event_id``.

Failures (DNS, TCP, TLS, refused login, no CONNACK) give one ERROR line naming the fix and a retry
after ``mqtt.reconnect_min_s``, doubling to ``mqtt.reconnect_max_s``; the same failure again is
logged at DEBUG only. With MQTT 5 a publish the broker's ACL denies comes back as a PUBACK with
reason "Not authorized": the event stays in the outbox, one ERROR line, and publishing pauses with
the same backoff. With MQTT 3.1.1 the protocol has no way to say so: Mosquitto acknowledges a
denied publish and drops it. Use MQTT 5, or check the ACL with ``fallwatch mqtt-test``.
"""
from __future__ import annotations

import datetime
import json
import logging
import re
import select
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional, Set, Tuple

from edge.mqttclient import ConnectFailure, new_client, open_connection, refusal_message
from edge.outbox import Outbox

log = logging.getLogger("fallwatch.mqtt")
_paho_log = logging.getLogger("fallwatch.mqtt.paho")  # paho's own trace (no secrets), DEBUG only

STATE_ON_TYPES = ("fall_detected", "long_lie")
STATE_OFF_TYPES = ("fall_cleared",)
_REQUIRED_KEYS = ("event_id", "type", "camera")
_TOPIC_LEVEL = re.compile(r"[^/#+\s]{1,64}")
_EXPIRE_EVERY_S = 60.0


@dataclass(frozen=True)
class Topics:
    """Every topic of one device; ``base`` is ``<topic_prefix>/<device_id>``."""

    base: str

    @classmethod
    def for_config(cls, config: Any) -> "Topics":
        return cls("%s/%s" % (config.mqtt.topic_prefix, config.device_id))

    @property
    def status(self) -> str:
        return self.base + "/status"

    @property
    def stats(self) -> str:
        return self.base + "/stats"

    @property
    def test(self) -> str:
        """Where ``fallwatch mqtt-test`` publishes its test event (never a camera's topic)."""
        return self.base + "/mqtt-test"

    def fall(self, camera: str) -> str:
        return "%s/%s/fall" % (self.base, camera)

    def state(self, camera: str) -> str:
        return "%s/%s/state" % (self.base, camera)

    def snapshot(self, camera: str) -> str:
        return "%s/%s/snapshot" % (self.base, camera)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return value.tolist()
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise TypeError("cannot put a %s into a JSON event" % type(value).__name__)


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_connection(config: Any, timeout_s: float = 5.0) -> str:
    """What ``fallwatch doctor`` asks: connect, log in, publish a test event and get it back.

    Returns a one-line summary; raises ConnectFailure naming the step that failed and its fix
    (``fallwatch mqtt-test`` prints every step)."""
    from edge.mqttcheck import run_checks

    steps = run_checks(config, timeout_s)
    for step in steps:
        if step.ok is False:
            raise ConnectFailure(step.name, "%s failed: %s%s" % (step.name, step.detail,
                                                                  "; fix: " + step.fix if step.fix else ""))
    return "; ".join("%s %s" % (s.name, "ok" if s.ok else "skipped") for s in steps)


# ---------------------------------------------------------------- the sink


class MqttSink:
    """The daemon's MQTT sink: ``start()``, ``emit(event)``, ``frame(record)``, ``stats(dict)``, ``close()``.

    ``emit`` is durable when it returns and never blocks on the network; the other calls only
    record what the network thread publishes. Thread-safe. ``outbox`` defaults to the file of
    ``mqtt.outbox`` (``<paths.state_dir>/outbox.sqlite3``)."""

    def __init__(self, config: Any, outbox: Optional[Outbox] = None) -> None:
        self._config = config
        self._cfg = config.mqtt
        self.topics = Topics.for_config(config)
        if outbox is None:
            ob = self._cfg.outbox
            outbox = Outbox(ob.file or config.paths.state_dir / "outbox.sqlite3", ob.max_events, ob.max_age_s)
            self._owns_outbox = True
        else:
            self._owns_outbox = False
        self.outbox = outbox
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # Shared with the caller's threads (under _lock).
        self._state: Dict[str, str] = {c.name: "OFF" for c in config.cameras}
        self._state_dirty: Set[str] = set(self._state)
        self._announce_due = False
        self._frames: Dict[str, Any] = {}
        self._snapshots_due: Dict[str, Any] = {}
        self._daemon_stats: Dict[str, Any] = {}
        self._appended = 0  # events stored by emit(); the network thread compares it with _seen_appended
        self.counters: Dict[str, int] = dict(
            events_emitted=0, events_acked=0, events_resent=0, events_rejected=0, connects=0,
            connect_failures=0, disconnects=0)
        # Owned by the network thread.
        self._client: Any = None
        self._connected = False
        self._connack: Any = None
        self._paho_error = ""
        self._inflight: Dict[int, int] = {}  # paho message id -> outbox seq, until its PUBACK
        self._side_inflight: Dict[int, str] = {}  # message id -> topic, for status/state/discovery/snapshot
        self._side_queue: "OrderedDict[str, Tuple[bytes, bool]]" = OrderedDict()  # topic -> (payload, retain)
        self._window = 0  # QoS 1 messages unacknowledged at most on this connection (all kinds)
        self._cursor = 0  # highest seq published on this connection
        self._max_sent_seq = 0  # highest seq ever published by this process (for counting re-sends)
        self._more = True  # the outbox may hold rows past the cursor
        self._seen_appended = 0
        self._rewind = False  # a publish was refused: pause, then send again from the oldest row
        self._hold_until = 0.0
        self._reject_attempt = 0
        self._rejected_seq: Optional[int] = None
        self._last_failure: Optional[Tuple[str, str]] = None
        self._last_unexpected = ""
        self._failures_in_row = 0
        self._reported_rejections: Set[str] = set()
        self._next_stats = 0.0
        self._next_expire = 0.0
        self._offline_mid: Optional[int] = None
        self._offline_acked = False
        self._started_at = time.monotonic()

    # ---------------------------------------------------------------- the daemon's interface

    def start(self) -> "MqttSink":
        """Start the network thread (connects, and reconnects for as long as the sink is open)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fallwatch-mqtt", daemon=True)
            self._thread.start()
        return self

    def emit(self, event: Dict[str, Any]) -> None:
        """Store a fall event durably and queue it for the broker; returns once it is on disk.

        ``event``: DESIGN.md contract 4 (``event_id``, ``type``, ``camera``, ``device``, ``track_id``,
        ``timestamp``, ``confidence``, ``bbox``, ``keypoints``); sent as JSON exactly as given."""
        if self._closed:
            raise RuntimeError("MqttSink.emit() after close(): event %s not stored" % event.get("event_id"))
        missing = [k for k in _REQUIRED_KEYS if not event.get(k)]
        if missing:
            raise ValueError("fall event without %s: %r" % (", ".join(missing), event))
        camera = str(event["camera"])
        if not _TOPIC_LEVEL.fullmatch(camera):
            raise ValueError("fall event %s: camera %r cannot be an MQTT topic level (no /, #, + or spaces)"
                             % (event["event_id"], camera))
        payload = json.dumps(event, separators=(",", ":"), default=_jsonable).encode("utf-8")
        self.outbox.append(str(event["event_id"]), camera, payload)
        with self._lock:
            self.counters["events_emitted"] += 1
            self._appended += 1
            if camera not in self._state:
                self._state[camera] = "OFF"
                self._announce_due = True
            kind = event["type"]
            if kind in STATE_ON_TYPES or kind in STATE_OFF_TYPES:
                new = "ON" if kind in STATE_ON_TYPES else "OFF"
                if new != self._state[camera]:
                    self._state[camera] = new
                    self._state_dirty.add(camera)
            if self._cfg.snapshot.enabled and kind in STATE_ON_TYPES and camera in self._frames:
                self._snapshots_due[camera] = self._frames[camera]
        self._wake()

    def frame(self, record: Any) -> None:
        """The latest skeleton record of a camera (kept only for snapshots)."""
        if not self._cfg.snapshot.enabled:
            return
        camera = record.get("camera") if isinstance(record, dict) else getattr(record, "camera", None)
        if camera:
            with self._lock:
                self._frames[str(camera)] = record

    def stats(self, stats: Dict[str, Any]) -> None:
        """The daemon's latest figures (frame rates, stage latencies, drops, tracks), merged into ``stats``."""
        with self._lock:
            self._daemon_stats = dict(stats)

    def close(self) -> None:
        """Deliver what can be delivered within ``mqtt.close_timeout_s``, publish ``offline``, disconnect.

        What the broker has not acknowledged stays in the outbox for the next start."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(self._cfg.close_timeout_s + 2.0)
            if self._thread.is_alive():  # e.g. still inside a TCP connect: it ends by itself; nothing is lost
                log.warning("MQTT: not closed within mqtt.close_timeout_s; unacknowledged events stay in %s "
                            "for the next start", self.outbox.path)
                return
        if self._owns_outbox:
            self.outbox.close()
        self._wake_r.close()
        self._wake_w.close()

    def snapshot_counters(self) -> Dict[str, Any]:
        """Counters and outbox figures, as in the ``mqtt`` part of the stats message."""
        with self._lock:
            out: Dict[str, Any] = dict(self.counters)
        out.update(connected=self._connected, outbox_depth=self.outbox.depth(), outbox_dropped=self.outbox.dropped,
                   outbox_in_memory_only=self.outbox.volatile)
        age = self.outbox.oldest_age_s()
        out["outbox_oldest_age_s"] = None if age is None else round(age, 1)
        return out

    # ---------------------------------------------------------------- the network thread

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # full (already awake) or closed
            pass

    def _backoff(self, attempt: int) -> float:
        lo, hi = self._cfg.reconnect_min_s, self._cfg.reconnect_max_s
        return max(lo, min(lo * (2.0 ** min(attempt, 30)), hi))

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            was_connected = False
            try:
                self._client = new_client(self._cfg, self._cfg.client_id, will_topic=self.topics.status)
                self._client.on_connect = self._on_connect
                self._client.on_publish = self._on_publish
                self._client.on_message = self._on_message
                self._client.on_log = self._on_log
                self._client.max_inflight_messages_set(0)  # we bound what is in flight ourselves: _window
                self._paho_error = ""
                open_connection(self._client, self._cfg)
                was_connected = self._serve(self._client)
            except ConnectFailure as failure:
                self._report_failure(failure, attempt)
            except Exception as exc:  # a bug must not end delivery: log it (once) and reconnect
                with self._lock:
                    self.counters["connect_failures"] += 1
                if repr(exc) != self._last_unexpected:
                    self._last_unexpected = repr(exc)
                    log.exception("MQTT: unexpected error in the network thread; reconnecting with backoff")
                else:
                    log.debug("MQTT: unexpected error again: %r", exc)
            finally:
                self._drop_client()
            if was_connected:
                attempt = 0
            if self._stop.is_set():
                break
            delay = self._backoff(attempt)
            attempt += 1
            log.debug("MQTT: next connection attempt in %.2f s", delay)
            self._stop.wait(delay)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._connected = False
        if client is not None:
            sock = client.socket()
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def _report_failure(self, failure: ConnectFailure, attempt: int) -> None:
        with self._lock:
            self.counters["connect_failures"] += 1
        self._failures_in_row += 1
        key = (failure.kind, failure.key)
        if key != self._last_failure:
            self._last_failure = key
            log.error("MQTT: %s; retrying in %.1f s, then doubling up to %g s; %d event(s) wait in the outbox",
                      failure, self._backoff(attempt), self._cfg.reconnect_max_s, self.outbox.depth())
        else:
            log.debug("MQTT: still failing (%s), %d attempts in a row", failure.kind, self._failures_in_row)

    def _serve(self, client: Any) -> bool:
        """Run one connection until it ends; True if the broker accepted it."""
        self._connack, self._connected = None, False
        deadline = time.monotonic() + self._cfg.connect_timeout_s
        closing_since: Optional[float] = None
        sock = client.socket()
        if sock is None:  # closed while sending CONNECT (a TLS alert, a reset)
            return self._ended(7)
        while True:
            now = time.monotonic()
            if self._stop.is_set():  # close(): finish this connection's work within close_timeout_s
                if closing_since is None:
                    closing_since = now
                if not self._connected:
                    if now - closing_since >= self._cfg.close_timeout_s:
                        return False
                elif self._close_step(client, now - closing_since):
                    return True
            pending = getattr(sock, "pending", None)
            timeout = 0.0 if pending is not None and pending() else self._timeout(now)
            wlist = [sock] if client.want_write() else []
            try:
                readable, writable, _ = select.select([sock, self._wake_r], wlist, [], timeout)
            except (OSError, ValueError):
                readable, writable = [sock], []  # the socket died under us: loop_read reports it
            if self._wake_r in readable:
                try:
                    self._wake_r.recv(4096)
                except OSError:
                    pass
            rc = 0
            if sock in readable or (pending is not None and pending()):
                rc = client.loop_read()
            if rc == 0 and client.socket() is not None and (sock in writable or client.want_write()):
                rc = client.loop_write()
            if rc == 0 and client.socket() is not None:
                rc = client.loop_misc()
            if rc != 0 or client.socket() is None:
                return self._ended(rc)
            if self._connected:
                self._side_messages()
                self._send(client)
                self._periodic(client, now)
            elif now > deadline:
                raise ConnectFailure("timeout", "no CONNACK from %s:%d within %g s: is mqtt.port an MQTT listener, "
                                                "and does mqtt.tls.enabled match it?"
                                     % (self._cfg.host, self._cfg.port, self._cfg.connect_timeout_s))

    def _timeout(self, now: float) -> float:
        t = 1.0
        if self._rewind and self._hold_until > now:
            t = min(t, self._hold_until - now)
        if self._connected and self._cfg.stats_interval_s > 0:
            t = min(t, max(0.0, self._next_stats - now))
        return max(t, 0.0)

    def _ended(self, rc: int) -> bool:
        """The connection is gone: report why (refusal and early close raise ConnectFailure)."""
        if self._connack is not None and self._connack.is_failure:
            kind, message = refusal_message(self._connack, self._cfg)
            raise ConnectFailure(kind, message)
        if not self._connected:
            detail = self._paho_error or "rc %d" % rc
            tls = self._cfg.tls
            if tls.enabled and not tls.cert_file:
                raise ConnectFailure("tls", "%s:%d closed the TLS connection before answering CONNECT (%s): if the "
                                            "broker requires client certificates, set mqtt.tls.cert_file and "
                                            "mqtt.tls.key_file" % (self._cfg.host, self._cfg.port, detail),
                                     key="closed before CONNACK")
            raise ConnectFailure("mqtt", "%s:%d closed the connection before answering CONNECT (%s): is mqtt.port an "
                                         "MQTT listener, and does mqtt.tls.enabled match it?"
                                 % (self._cfg.host, self._cfg.port, detail), key="closed before CONNACK")
        with self._lock:
            self.counters["disconnects"] += 1
        if not self._stop.is_set():
            log.warning("MQTT: lost the connection to %s:%d (%s); reconnecting; %d event(s) wait in the outbox",
                        self._cfg.host, self._cfg.port, self._paho_error or "closed", self.outbox.depth())
        return True

    def _close_step(self, client: Any, elapsed_s: float) -> bool:
        """One step of a clean shutdown; True when done (DISCONNECT sent)."""
        timeout = self._cfg.close_timeout_s
        drained = not self._inflight and not self._side_queue and (
            self._rewind or not self.outbox.pending(self._cursor, 1))
        if self._offline_mid is None and (drained or elapsed_s >= timeout):
            if self._cfg.stats_interval_s > 0:  # the daemon's last figures, then goodbye
                self._publish_stats(client)
            info = client.publish(self.topics.status, "offline", qos=1, retain=True)
            self._offline_mid = info.mid  # from now on _send publishes nothing more
        if self._offline_mid is not None and (self._offline_acked or elapsed_s >= timeout + 1.0):
            client.disconnect()
            for _ in range(10):
                if not client.want_write() or client.loop_write() != 0:
                    break
            left = self.outbox.depth()
            if left:
                log.info("MQTT: closed; %d unacknowledged event(s) stay in %s for the next start", left,
                         self.outbox.path)
            else:
                log.info("MQTT: closed; every event was acknowledged")
            return True
        return False

    # ---------------------------------------------------------------- paho callbacks (network thread)

    def _on_log(self, client: Any, userdata: Any, level: int, message: str) -> None:
        import paho.mqtt.client as paho

        if level == paho.MQTT_LOG_ERR:
            self._paho_error = message
        _paho_log.debug("%s", message)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connack = reason_code
        if reason_code.is_failure:
            return
        self._connected = True
        # MQTT 5: never more QoS 1 messages unacknowledged than the broker's Receive Maximum
        # (exceeding it is a protocol error, and Mosquitto closes the connection).
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        self._window = min(self._cfg.inflight_max + 16, receive_max or 65535)
        self._inflight.clear()
        self._side_inflight.clear()
        self._side_queue.clear()
        self._cursor, self._more, self._rewind, self._offline_mid, self._offline_acked = 0, True, False, None, False
        with self._lock:
            self.counters["connects"] += 1
            self._state_dirty = set(self._state)
        after = " after %d failed attempt(s)" % self._failures_in_row if self._failures_in_row else ""
        log.info("MQTT: connected to %s:%d as %r (MQTT %s%s)%s; %d event(s) to send from the outbox",
                 self._cfg.host, self._cfg.port, self._cfg.client_id, self._cfg.protocol,
                 ", TLS" if self._cfg.tls.enabled else "", after, self.outbox.depth())
        self._last_failure, self._failures_in_row = None, 0
        self._side_publish(self.topics.status, b"online", retain=True)
        hass = self._cfg.homeassistant
        if hass.enabled:
            client.subscribe(self._birth_topic(), qos=1)
            self._announce()
        self._next_stats = time.monotonic() + min(2.0, self._cfg.stats_interval_s)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self._birth_topic() and bytes(message.payload).strip() == b"online":
            log.info("MQTT: Home Assistant came online (%s); announcing the cameras again", message.topic)
            self._announce()
            with self._lock:
                self._state_dirty = set(self._state)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            topic = self._side_inflight.pop(mid, None)
            if mid == self._offline_mid:
                self._offline_acked = True
            if topic is not None and reason_code.is_failure:
                self._report_refusal(topic, reason_code, "")
            return
        if reason_code.is_failure:
            self._rejected(seq, reason_code)
            return
        self.outbox.delete(seq)
        self._more = True
        with self._lock:
            self.counters["events_acked"] += 1
        if seq == self._rejected_seq:
            self._rejected_seq, self._reject_attempt = None, 0
            self._reported_rejections.clear()
            log.info("MQTT: the broker accepts events again")

    def _rejected(self, seq: int, reason_code: Any) -> None:
        rows = [r for r in self.outbox.pending(seq - 1, 1) if r.seq == seq]
        camera = rows[0].camera if rows else "?"
        event_id = rows[0].event_id if rows else "?"
        topic = self.topics.fall(camera)
        delay = self._backoff(self._reject_attempt)
        with self._lock:
            self.counters["events_rejected"] += 1
        self._report_refusal(topic, reason_code, " (event %s, sent again in %.1f s)" % (event_id, delay))
        if not self._rewind:  # the first refusal of this round sets the pause
            self._reject_attempt += 1
            self._rewind, self._rejected_seq = True, seq
            self._hold_until = time.monotonic() + delay

    def _report_refusal(self, topic: str, reason_code: Any, detail: str) -> None:
        """One ERROR line per refusal reason (until events are accepted again), DEBUG after that."""
        if str(reason_code) in self._reported_rejections:
            log.debug("MQTT: refused again on %s (%s)%s", topic, reason_code, detail)
            return
        self._reported_rejections.add(str(reason_code))
        hass = " and %s/#" % self._cfg.homeassistant.discovery_prefix if self._cfg.homeassistant.enabled else ""
        log.error("MQTT: the broker refuses publishes of user %r (%s, first on %s)%s: its ACL must let this user "
                  "write %s/#%s; events stay in the outbox and are sent again with backoff (%g s doubling up to %g s)",
                  self._cfg.username, reason_code, topic, detail, self.topics.base, hass, self._cfg.reconnect_min_s,
                  self._cfg.reconnect_max_s)

    # ---------------------------------------------------------------- publishing (network thread)

    def _send(self, client: Any) -> None:
        """Publish what waits, within the in-flight window: side messages first, then outbox rows."""
        if self._offline_mid is not None:  # shutting down: "offline" was the last message
            return
        while self._side_queue and self._room() > 0:
            topic, (payload, retain) = self._side_queue.popitem(last=False)
            info = client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != 0:
                return
            self._side_inflight[info.mid] = topic
        self._pump(client)

    def _room(self) -> int:
        return self._window - len(self._inflight) - len(self._side_inflight)

    def _pump(self, client: Any) -> None:
        """Publish outbox rows past the cursor while the in-flight window has room."""
        if self._rewind:
            if self._inflight or time.monotonic() < self._hold_until:
                return
            self._rewind, self._cursor, self._more = False, 0, True
        with self._lock:
            appended = self._appended
        if appended != self._seen_appended:  # read before the query: a later append shows up next time
            self._seen_appended, self._more = appended, True
        room = min(self._cfg.inflight_max - len(self._inflight), self._room())
        while self._more and room > 0:
            rows = self.outbox.pending(self._cursor, room)
            if len(rows) < room:
                self._more = False
            for row in rows:
                info = client.publish(self.topics.fall(row.camera), row.payload, qos=1)
                if info.rc != 0:  # not connected any more, or paho's queue is full: try again later
                    self._more = True
                    return
                self._inflight[info.mid] = row.seq
                self._cursor = row.seq
                if row.seq <= self._max_sent_seq:
                    with self._lock:
                        self.counters["events_resent"] += 1
                self._max_sent_seq = max(self._max_sent_seq, row.seq)
                room -= 1
            if not rows:
                break

    def _side_publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Queue a QoS 1 message that is not an event; a newer one for the same topic replaces it."""
        self._side_queue.pop(topic, None)
        self._side_queue[topic] = (payload, retain)

    def _birth_topic(self) -> str:
        hass = self._cfg.homeassistant
        return hass.birth_topic or hass.discovery_prefix + "/status"

    def _announce(self) -> None:
        from edge.hass import discovery_messages

        with self._lock:
            cameras = sorted(self._state)
            self._announce_due = False
        for topic, payload in discovery_messages(self._cfg.homeassistant.discovery_prefix, self._config.device_id,
                                                 cameras, self.topics):
            self._side_publish(topic, payload, retain=True)

    def _side_messages(self) -> None:
        """Queue what emit() and frame() asked for: announcements, camera states, snapshots."""
        with self._lock:
            dirty = {camera: self._state[camera] for camera in self._state_dirty}
            self._state_dirty = set()
            snapshots, self._snapshots_due = self._snapshots_due, {}
            announce = self._announce_due and self._cfg.homeassistant.enabled
        if announce:
            self._announce()
        for camera, state in sorted(dirty.items()):
            self._side_publish(self.topics.state(camera), state.encode("ascii"), retain=True)
        for camera, record in snapshots.items():
            self._publish_snapshot(camera, record)

    def _publish_snapshot(self, camera: str, record: Any) -> None:
        from edge.snapshot import render_snapshot

        snap = self._cfg.snapshot
        try:
            jpeg = render_snapshot(record, snap.mode, snap.width_px, snap.blur_sigma_px, snap.jpeg_quality)
        except Exception as exc:  # a snapshot is a courtesy: never let it stop the events
            log.warning("MQTT: cannot render the snapshot of camera %s (%s); no snapshot sent", camera, exc)
            return
        self._side_publish(self.topics.snapshot(camera), jpeg, retain=True)

    def _periodic(self, client: Any, now: float) -> None:
        if now >= self._next_expire:
            self._next_expire = now + _EXPIRE_EVERY_S
            self.outbox.expire()
        if self._cfg.stats_interval_s > 0 and now >= self._next_stats:
            self._next_stats = now + self._cfg.stats_interval_s
            self._publish_stats(client)

    def _publish_stats(self, client: Any) -> None:
        payload = json.dumps(self.stats_message(), separators=(",", ":"), default=_jsonable).encode("utf-8")
        client.publish(self.topics.stats, payload, qos=0)

    def stats_message(self) -> Dict[str, Any]:
        """The ``stats`` payload: the daemon's figures, this sink's counters, and Jetson figures when there are any."""
        from edge.jetson import read_stats

        with self._lock:
            message: Dict[str, Any] = {"device": self._config.device_id, "timestamp": utc_now_iso(),
                                       "uptime_s": round(time.monotonic() - self._started_at, 1)}
            message.update(self._daemon_stats)
        message["mqtt"] = self.snapshot_counters()
        jetson = read_stats()
        if jetson:
            message["jetson"] = jetson
        return message
