"""MQTT out: fall events that are never lost, camera state, stats, snapshots, Home Assistant discovery.

:class:`MqttSink` is the daemon's MQTT sink. :meth:`MqttSink.emit` writes the event to the
:class:`~edge.alerts.outbox.Outbox` (fsynced) and returns; from then on the event survives SIGKILL and
power loss. The pieces, one job each:

- :mod:`edge.alerts.topics`: the topics (DESIGN.md contract 4);
- :mod:`edge.alerts.link`: the network thread: connect, reconnect with backoff, name each failure;
- :mod:`edge.alerts.delivery`: the outbox pump, the in-flight window and PUBACK bookkeeping (at least
  once, in order per camera);
- :mod:`edge.alerts.camerastate`: each camera's retained ``ON``/``OFF`` state (in step with its events,
  derived from the outbox after a restart) and snapshot frames;
- :mod:`edge.alerts.hass`: Home Assistant discovery payloads;
- this module: the sink's interface, ``online``/``offline`` (the Last Will), and the ``stats`` message.

The ``stats`` message is published when the daemon hands over its figures (:meth:`MqttSink.stats`,
every ``daemon.stats_interval_s``), at most once per ``mqtt.stats_interval_s``, and its ``mqtt``
part is counted at that moment: the daemon's figures and this sink's counters describe the same
instant, and every message carries the same keys (``type`` first). Figures that arrive while the
broker is unreachable are not sent later (they would be stale); the daemon's final figures go out
at :meth:`MqttSink.close`, before ``offline``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, Optional

from edge.alerts.camerastate import CameraStates, state_of
from edge.alerts.delivery import Delivery
from edge.alerts.events import encode_event, iso_utc
from edge.alerts.link import MqttLink, Session
from edge.alerts.outbox import Outbox
from edge.alerts.topics import Topics, is_topic_level

log = logging.getLogger("fallwatch.mqtt")

_REQUIRED_KEYS = ("event_id", "type", "camera")
_EXPIRE_EVERY_S = 60.0
_STATS_EARLY = 0.1  # figures arriving this share of mqtt.stats_interval_s early still go out (timer jitter)


class MqttSink(Session):
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
        self._closed = False
        self._cameras = CameraStates([c.name for c in config.cameras], self._cfg.snapshot.enabled)
        self._daemon_stats: Dict[str, Any] = {}
        self._stats_due = False  # the daemon handed over figures not published yet
        self._stats_counters: Dict[str, int] = {}  # self.counters when it did
        self._appended = 0  # events stored by emit(); the network thread compares it with what it saw
        self.counters: Dict[str, int] = dict(
            events_emitted=0, events_acked=0, events_resent=0, events_rejected=0, connects=0,
            connect_failures=0, disconnects=0)
        self._delivery = Delivery(self._cfg, self.topics, outbox, self._count)
        self._link = MqttLink(self._cfg, self.topics.status, self, self._count)
        self._next_stats = 0.0  # the daemon's figures are published from then on (the first ones at once)
        self._next_expire = 0.0
        self._started_at = time.monotonic()

    @property
    def _thread(self) -> Optional[threading.Thread]:
        return self._link.thread

    # ---------------------------------------------------------------- the daemon's interface

    def start(self) -> "MqttSink":
        """Start the network thread (connects, and reconnects for as long as the sink is open)."""
        self._link.start()
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
        if not is_topic_level(camera):
            raise ValueError("fall event %s: camera %r cannot be an MQTT topic level (no /, #, + or spaces)"
                             % (event["event_id"], camera))
        self.outbox.append(str(event["event_id"]), camera, encode_event(event).encode("utf-8"),
                           state=state_of(event["type"]))
        with self._lock:
            self.counters["events_emitted"] += 1
            self._appended += 1
        self._cameras.event(camera, event["type"])
        self._link.wake()

    def frame(self, record: Any) -> None:
        """The latest skeleton record of a camera (kept only for snapshots)."""
        self._cameras.frame(record)

    def stats(self, stats: Dict[str, Any]) -> None:
        """The daemon's figures (frame rates, stage latencies, drops, tracks): published now, with this
        sink's counters, unless the last stats message is younger than ``mqtt.stats_interval_s``."""
        interval, now = self._cfg.stats_interval_s, time.monotonic()
        with self._lock:
            self._daemon_stats = dict(stats)
            self._stats_counters = dict(self.counters)
            if interval > 0 and (stats.get("final") or now >= self._next_stats - _STATS_EARLY * interval):
                self._stats_due, self._next_stats = True, now + interval
            due = self._stats_due
        if due:
            self._link.wake()

    def close(self) -> None:
        """Deliver what can be delivered within ``mqtt.close_timeout_s``, publish ``offline``, disconnect.

        What the broker has not acknowledged stays in the outbox for the next start."""
        if self._closed:
            return
        self._closed = True
        if not self._link.stop(self._cfg.close_timeout_s + 2.0):
            # e.g. still inside a TCP connect: it ends by itself; nothing is lost
            log.warning("MQTT: not closed within mqtt.close_timeout_s; unacknowledged events stay in %s "
                        "for the next start", self.outbox.path)
            return
        if self._owns_outbox:
            self.outbox.close()
        self._link.close()

    def snapshot_counters(self, counters: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
        """Counters (``counters``, else the current ones) and the outbox's figures now, as in the ``mqtt``
        part of the stats message."""
        with self._lock:
            out: Dict[str, Any] = dict(counters if counters is not None else self.counters)
        out.update(connected=self._link.connected, outbox_depth=self.outbox.depth(),
                   outbox_dropped=self.outbox.dropped, outbox_in_memory_only=self.outbox.volatile,
                   outbox_state=self.outbox.state, outbox_state_reason=self.outbox.state_reason,
                   outbox_damaged_files=[p.name for p in self.outbox.damaged], outbox_salvaged=self.outbox.salvaged)
        age = self.outbox.oldest_age_s()
        out["outbox_oldest_age_s"] = None if age is None else round(age, 1)
        return out

    def stats_message(self) -> Dict[str, Any]:
        """The ``stats`` payload: the daemon's last figures, this sink's counters as they were when the
        daemon handed them over (so ``events`` and ``mqtt.events_emitted`` agree), the outbox now, and
        Jetson figures when there are any."""
        from edge.health.jetson import read_stats

        with self._lock:
            message: Dict[str, Any] = {"type": "stats", "device": self._config.device_id, "timestamp": iso_utc(),
                                       "uptime_s": round(time.monotonic() - self._started_at, 1)}
            message.update(self._daemon_stats)
            counters = dict(self._stats_counters) if self._daemon_stats else None
        message["mqtt"] = self.snapshot_counters(counters)
        jetson = read_stats()
        if jetson:
            message["jetson"] = jetson
        return message

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    # ---------------------------------------------------------------- the session (network thread)

    def waiting(self) -> int:
        return self.outbox.depth()

    def connected(self, client: Any, properties: Any) -> None:
        # MQTT 5: never more QoS 1 messages unacknowledged than the broker's Receive Maximum
        # (exceeding it is a protocol error, and Mosquitto closes the connection).
        self._delivery.reset(getattr(properties, "ReceiveMaximum", None) if properties is not None else None)
        self._count("connects")
        self._delivery.queue(self.topics.status, b"online", retain=True)
        if self._cfg.homeassistant.enabled:
            from edge.alerts.hass import discovery_filter

            client.subscribe(self._birth_topic(), qos=1)
            client.subscribe(discovery_filter(self._cfg.homeassistant.discovery_prefix, self._config.device_id), qos=1)
            self._announce()
        self._delivery.queue_states(self._cameras.known())
        with self._lock:
            self._stats_due = False  # figures from before this connection are stale: wait for the next ones

    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self._birth_topic() and bytes(message.payload).strip() == b"online":
            log.info("MQTT: Home Assistant came online (%s); announcing the cameras again", message.topic)
            self._announce()
            self._delivery.requeue_states()
        elif message.retain and message.payload:
            self._clear_if_removed(message.topic)

    def _clear_if_removed(self, topic: str) -> None:
        """A retained discovery config of this device for a camera it no longer has: clear it."""
        from edge.alerts.hass import announced_camera

        camera = announced_camera(topic, self._cfg.homeassistant.discovery_prefix, self._config.device_id)
        if camera is None or camera in self._cameras:
            return
        log.info("MQTT: camera %s is not configured any more: clearing its Home Assistant discovery config (%s)",
                 camera, topic)
        self._delivery.queue(topic, b"", retain=True)

    def on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._delivery.on_publish(mid, reason_code)

    def work(self, client: Any, now: float) -> None:
        self._side_messages()
        with self._lock:
            appended = self._appended
        self._delivery.send(client, appended)
        if now >= self._next_expire:
            self._next_expire = now + _EXPIRE_EVERY_S
            self.outbox.expire()
        if self._stats_due:
            self._publish_stats(client)

    def timeout_s(self, now: float) -> float:
        t = 1.0
        hold = self._delivery.hold_s(now)
        if hold is not None:
            t = min(t, hold)
        return t

    def close_step(self, client: Any, elapsed_s: float) -> bool:
        """Deliver what can be delivered within close_timeout_s, then the last stats, ``offline``, DISCONNECT."""
        timeout = self._cfg.close_timeout_s
        delivery = self._delivery
        if delivery.last_mid is None and (delivery.drained() or elapsed_s >= timeout):
            if self._stats_due:  # the daemon's final figures, then goodbye
                self._publish_stats(client)
            delivery.send_last(client, self.topics.status, b"offline", retain=True)
        if delivery.last_mid is not None and (delivery.last_acked or elapsed_s >= timeout + 1.0):
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

    # ---------------------------------------------------------------- side messages (network thread)

    def _birth_topic(self) -> str:
        hass = self._cfg.homeassistant
        return hass.birth_topic or hass.discovery_prefix + "/status"

    def _announce(self) -> None:
        from edge.alerts.hass import discovery_messages

        for topic, payload in discovery_messages(self._cfg.homeassistant.discovery_prefix, self._config.device_id,
                                                 self._cameras.cameras(), self.topics):
            self._delivery.queue(topic, payload, retain=True)

    def _side_messages(self) -> None:
        """Queue what emit() and frame() asked for: announcements and snapshots (states go with the events)."""
        changes = self._cameras.take()
        if changes.announce and self._cfg.homeassistant.enabled:
            self._announce()
        for camera, record in changes.snapshots.items():
            self._publish_snapshot(camera, record)

    def _publish_snapshot(self, camera: str, record: Any) -> None:
        from edge.alerts.snapshot import render_snapshot

        snap = self._cfg.snapshot
        try:
            jpeg = render_snapshot(record, snap.mode, snap.width_px, snap.blur_sigma_px, snap.jpeg_quality)
        except Exception as exc:  # a snapshot is a courtesy: never let it stop the events
            log.warning("MQTT: cannot render the snapshot of camera %s (%s); no snapshot sent", camera, exc)
            return
        self._delivery.queue(self.topics.snapshot(camera), jpeg, retain=True)

    def _publish_stats(self, client: Any) -> None:
        with self._lock:
            self._stats_due = False
        client.publish(self.topics.stats, encode_event(self.stats_message()).encode("utf-8"), qos=0)

