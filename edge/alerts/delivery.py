"""What is in flight on one MQTT connection: outbox rows until their PUBACK, and the other QoS 1 messages.

Only while connected, outbox rows are published in order, QoS 1, at most ``mqtt.inflight_max``
unacknowledged, and a row is deleted from the :class:`~edge.alerts.outbox.Outbox` when the PUBACK for its
message id arrives (``on_publish``; the return value of ``publish`` only says the packet was
queued). After a reconnect or a restart every unacknowledged row is sent again, oldest first
(:meth:`Delivery.reset`). With MQTT 5 the window also respects the broker's Receive Maximum. An
event whose PUBACK was lost on the way is therefore delivered twice with the same ``event_id``: at
least once, in order per camera, never silently dropped. Subscribers drop repeats by ``event_id``.

With MQTT 5 a publish the broker's ACL denies comes back as a PUBACK with reason "Not authorized":
the event stays in the outbox, one ERROR line, and publishing pauses with the reconnect backoff,
then starts again from the oldest row. With MQTT 3.1.1 the protocol has no way to say so:
Mosquitto acknowledges a denied publish and drops it. Use MQTT 5, or check the ACL with
``fallwatch mqtt-test``.

Side messages (status, discovery, snapshots, the camera states of a new connection) go first; a
newer one for a topic replaces a queued older one. A camera's retained state that an event changes
is published in line with the events (:class:`~edge.alerts.camerastate.RetainedStates`): ``ON``
just before a fall leaves, ``OFF`` just after its ``fall_cleared``. Used by the network thread only.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, Optional, Set, Tuple

from edge.alerts.camerastate import RetainedStates, kind_of, state_of
from edge.alerts.link import backoff_s
from edge.alerts.outbox import Outbox
from edge.alerts.topics import Topics

log = logging.getLogger("fallwatch.mqtt")

WINDOW_SPARE = 16  # room in the window for side messages beyond mqtt.inflight_max events


class Delivery:
    """Publishing state of one connection. ``count(name)`` is called for ``events_acked``,
    ``events_resent`` and ``events_rejected``."""

    def __init__(self, mqtt_config: Any, topics: Topics, outbox: Outbox, count: Callable[[str], None]) -> None:
        self._cfg = mqtt_config
        self._topics = topics
        self._outbox = outbox
        self._count = count
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
        self._reported_rejections: Set[str] = set()
        self.last_mid: Optional[int] = None  # the last message of this connection ("offline"), once sent
        self.last_acked = False
        self._states = RetainedStates()

    def reset(self, receive_max: Optional[int]) -> None:
        """A new connection: nothing in flight, every row of the outbox to send (again) from the oldest."""
        self._window = min(self._cfg.inflight_max + WINDOW_SPARE, receive_max or 65535)
        self._inflight.clear()
        self._side_inflight.clear()
        self._side_queue.clear()
        self._cursor, self._more, self._rewind, self.last_mid, self.last_acked = 0, True, False, None, False

    def queue_states(self, cameras: Iterable[str]) -> None:
        """Queue every camera's state as the outbox implies it (a new connection, or after a restart)."""
        waiting = set()
        cursor = 0
        while True:
            rows = self._outbox.pending(cursor, 500)
            for row in rows:
                if state_of(kind_of(row.payload)) is not None:
                    waiting.add(row.camera)
            if len(rows) < 500:
                break
            cursor = rows[-1].seq
        for camera, state in self._states.start(cameras, self._outbox.states(), waiting).items():
            self.queue(self._topics.state(camera), state.encode("ascii"), retain=True)

    def requeue_states(self) -> None:
        """Queue every camera's state as shown now (Home Assistant restarted)."""
        for camera, state in sorted(self._states.shown.items()):
            self.queue(self._topics.state(camera), state.encode("ascii"), retain=True)

    def queue(self, topic: str, payload: bytes, retain: bool) -> None:
        """Queue a QoS 1 message that is not an event; a newer one for the same topic replaces it."""
        self._side_queue.pop(topic, None)
        self._side_queue[topic] = (payload, retain)

    def send(self, client: Any, appended: int) -> None:
        """Publish what waits, within the in-flight window: side messages first, then outbox rows.
        ``appended``: how many events were ever stored (a change means new rows)."""
        if self.last_mid is not None:  # shutting down: the last message is out
            return
        while self._side_queue and self._room() > 0:
            topic, (payload, retain) = self._side_queue.popitem(last=False)
            info = client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != 0:
                return
            self._side_inflight[info.mid] = topic
        self._pump(client, appended)

    def send_last(self, client: Any, topic: str, payload: bytes, retain: bool) -> None:
        """Publish the connection's last message (QoS 1); nothing is sent after it."""
        self.last_mid = client.publish(topic, payload, qos=1, retain=retain).mid

    def drained(self) -> bool:
        """Nothing in flight or queued, and nothing left to send (or sending paused by a refusal)."""
        return not self._inflight and not self._side_queue and (
            self._rewind or not self._outbox.pending(self._cursor, 1))

    def hold_s(self, now: float) -> Optional[float]:
        """Seconds until publishing resumes after a refusal; None when not paused."""
        return self._hold_until - now if self._rewind and self._hold_until > now else None

    def _room(self) -> int:
        return self._window - len(self._inflight) - len(self._side_inflight)

    def _pump(self, client: Any, appended: int) -> None:
        """Publish outbox rows past the cursor while the in-flight window has room."""
        if self._rewind:
            if self._inflight or time.monotonic() < self._hold_until:
                return
            self._rewind, self._cursor, self._more = False, 0, True
        if appended != self._seen_appended:  # read before the query: a later append shows up next time
            self._seen_appended, self._more = appended, True
        room = min(self._cfg.inflight_max - len(self._inflight), self._room())
        while self._more and room > 0:
            rows = self._outbox.pending(self._cursor, room)
            if len(rows) < room:
                self._more = False
            for row in rows:
                kind = kind_of(row.payload)
                state = self._states.before(row.camera, kind)
                if state is not None and not self._publish_state(client, row.camera, state):
                    self._more = True
                    return
                if self._room() <= 0:  # the state took the window's last place
                    self._more = True
                    return
                info = client.publish(self._topics.fall(row.camera), row.payload, qos=1)
                if info.rc != 0:  # not connected any more, or paho's queue is full: try again later
                    self._more = True
                    return
                self._inflight[info.mid] = row.seq
                self._cursor = row.seq
                if row.seq <= self._max_sent_seq:
                    self._count("events_resent")
                self._max_sent_seq = max(self._max_sent_seq, row.seq)
                room -= 1
                state = self._states.after(row.camera, kind)
                if state is not None and not self._publish_state(client, row.camera, state):
                    # sent before any later event: queued side messages go first
                    self._states.shown[row.camera] = state
                    self.queue(self._topics.state(row.camera), state.encode("ascii"), retain=True)
                    self._more = True
                    return
            if not rows:
                break

    def _publish_state(self, client: Any, camera: str, state: str) -> bool:
        """Publish ``camera``'s retained state now, in line with the events; False when it cannot."""
        if self._room() <= 0:
            return False
        topic = self._topics.state(camera)
        info = client.publish(topic, state.encode("ascii"), qos=1, retain=True)
        if info.rc != 0:
            return False
        self._side_inflight[info.mid] = topic
        self._states.shown[camera] = state
        return True

    # ---------------------------------------------------------------- acknowledgements

    def on_publish(self, mid: int, reason_code: Any) -> None:
        """A PUBACK: delete the event from the outbox, or, when refused, pause and send again."""
        seq = self._inflight.pop(mid, None)
        if seq is None:
            topic = self._side_inflight.pop(mid, None)
            if mid == self.last_mid:
                self.last_acked = True
            if topic is not None and reason_code.is_failure:
                self._report_refusal(topic, reason_code, "")
            return
        if reason_code.is_failure:
            self._rejected(seq, reason_code)
            return
        self._outbox.delete(seq)
        self._more = True
        self._count("events_acked")
        if seq == self._rejected_seq:
            self._rejected_seq, self._reject_attempt = None, 0
            self._reported_rejections.clear()
            log.info("MQTT: the broker accepts events again")

    def _rejected(self, seq: int, reason_code: Any) -> None:
        rows = [r for r in self._outbox.pending(seq - 1, 1) if r.seq == seq]
        camera = rows[0].camera if rows else "?"
        event_id = rows[0].event_id if rows else "?"
        topic = self._topics.fall(camera)
        delay = backoff_s(self._cfg, self._reject_attempt)
        self._count("events_rejected")
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
                  self._cfg.username, reason_code, topic, detail, self._topics.base, hass, self._cfg.reconnect_min_s,
                  self._cfg.reconnect_max_s)
