"""The daemon's connection to the broker: a network thread that connects, serves, and reconnects.

Every connection is a fresh paho client on a clean session (:func:`edge.alerts.client.new_client`), so
paho never holds a queue of its own while offline; what to publish is the :class:`Session`'s
business. Failures (DNS, TCP, TLS, refused login, no CONNACK, closed before CONNACK) give one ERROR
line naming the fix and a retry after ``mqtt.reconnect_min_s``, doubling to ``mqtt.reconnect_max_s``;
the same failure again is logged at DEBUG only. A lost connection is a WARNING and an immediate
reconnect. Only the network thread touches the client.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
import time
from typing import Any, Callable, Optional, Tuple

from edge.alerts.client import ConnectFailure, new_client, open_connection, refusal

log = logging.getLogger("fallwatch.mqtt")
_paho_log = logging.getLogger("fallwatch.mqtt.paho")  # paho's own trace (no secrets), DEBUG only


def backoff_s(mqtt_config: Any, attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, ...): ``reconnect_min_s`` doubling up to ``reconnect_max_s``."""
    lo, hi = mqtt_config.reconnect_min_s, mqtt_config.reconnect_max_s
    return max(lo, min(lo * (2.0 ** min(attempt, 30)), hi))


class Session:
    """What the link asks of its user; every call comes from the network thread."""

    def connected(self, client: Any, properties: Any) -> None:
        """The broker accepted a new connection (``properties``: the CONNACK's, MQTT 5, or None)."""

    def on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        """paho's PUBACK callback."""

    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """paho's message callback."""

    def work(self, client: Any, now: float) -> None:
        """Publish what waits; called on every turn of the loop while connected."""

    def timeout_s(self, now: float) -> float:
        """How long the loop may sleep when nothing happens on the socket."""
        return 1.0

    def close_step(self, client: Any, elapsed_s: float) -> bool:
        """One step of a clean shutdown, ``elapsed_s`` after close was asked; True once DISCONNECT is sent."""
        return True

    def waiting(self) -> int:
        """Events that wait for the broker (for the log lines)."""
        return 0


class MqttLink:
    """The network thread of ``session``: ``start()``, ``wake()``, ``stop(timeout)``, ``close()``.

    ``count(name)`` is called for ``connect_failures`` and ``disconnects``."""

    def __init__(self, mqtt_config: Any, will_topic: str, session: Session, count: Callable[[str], None]) -> None:
        self._cfg = mqtt_config
        self._will_topic = will_topic
        self._session = session
        self._count = count
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.connected = False
        self._client: Any = None
        self._connack: Any = None
        self._paho_error = ""
        self._last_failure: Optional[Tuple[str, str]] = None
        self._last_unexpected = ""
        self._failures_in_row = 0

    @property
    def thread(self) -> Optional[threading.Thread]:
        return self._thread

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fallwatch-mqtt", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Make the network thread look at the session now rather than at its next timeout."""
        try:
            self._wake_w.send(b"x")
        except OSError:  # full (already awake) or closed
            pass

    def stop(self, timeout_s: float) -> bool:
        """Ask for a clean shutdown (the session's close_step) and wait; False if the thread still runs."""
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    # ---------------------------------------------------------------- the network thread

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            was_connected = False
            try:
                self._client = new_client(self._cfg, self._cfg.client_id, will_topic=self._will_topic)
                self._client.on_connect = self._on_connect
                self._client.on_publish = self._session.on_publish
                self._client.on_message = self._session.on_message
                self._client.on_log = self._on_log
                self._client.max_inflight_messages_set(0)  # the session bounds what is in flight itself
                self._paho_error = ""
                open_connection(self._client, self._cfg)
                was_connected = self._serve(self._client)
            except ConnectFailure as failure:
                self._report_failure(failure, attempt)
            except Exception as exc:  # a bug must not end delivery: log it (once) and reconnect
                self._count("connect_failures")
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
            delay = backoff_s(self._cfg, attempt)
            attempt += 1
            log.debug("MQTT: next connection attempt in %.2f s", delay)
            self._stop.wait(delay)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        self.connected = False
        if client is not None:
            sock = client.socket()
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def _report_failure(self, failure: ConnectFailure, attempt: int) -> None:
        self._count("connect_failures")
        self._failures_in_row += 1
        key = (failure.kind, failure.key)
        if key != self._last_failure:
            self._last_failure = key
            log.error("MQTT: %s; retrying in %.1f s, then doubling up to %g s; %d event(s) wait in the outbox",
                      failure, backoff_s(self._cfg, attempt), self._cfg.reconnect_max_s, self._session.waiting())
        else:
            log.debug("MQTT: still failing (%s), %d attempts in a row", failure.kind, self._failures_in_row)

    def _serve(self, client: Any) -> bool:
        """Run one connection until it ends; True if the broker accepted it."""
        self._connack, self.connected = None, False
        deadline = time.monotonic() + self._cfg.connect_timeout_s
        closing_since: Optional[float] = None
        sock = client.socket()
        if sock is None:  # closed while sending CONNECT (a TLS alert, a reset)
            return self._ended(7)
        while True:
            now = time.monotonic()
            if self._stop.is_set():  # stop(): finish this connection's work within close_timeout_s
                if closing_since is None:
                    closing_since = now
                if not self.connected:
                    if now - closing_since >= self._cfg.close_timeout_s:
                        return False
                elif self._session.close_step(client, now - closing_since):
                    return True
            pending = getattr(sock, "pending", None)
            timeout = 0.0 if pending is not None and pending() else max(self._session.timeout_s(now), 0.0)
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
            if self.connected:
                self._session.work(client, now)
            elif now > deadline:
                raise ConnectFailure("timeout", "no CONNACK from %s:%d within %g s"
                                     % (self._cfg.host, self._cfg.port, self._cfg.connect_timeout_s),
                                     "is mqtt.port an MQTT listener, and does mqtt.tls.enabled match it?")

    def _ended(self, rc: int) -> bool:
        """The connection is gone: report why (refusal and early close raise ConnectFailure)."""
        if self._connack is not None and self._connack.is_failure:
            raise refusal(self._connack, self._cfg)
        if not self.connected:
            detail = self._paho_error or "rc %d" % rc
            tls = self._cfg.tls
            if tls.enabled and not tls.cert_file:
                raise ConnectFailure("tls", "%s:%d closed the TLS connection before answering CONNECT (%s)"
                                     % (self._cfg.host, self._cfg.port, detail),
                                     "if the broker requires client certificates, set mqtt.tls.cert_file and "
                                     "mqtt.tls.key_file", key="closed before CONNACK")
            raise ConnectFailure("mqtt", "%s:%d closed the connection before answering CONNECT (%s)"
                                 % (self._cfg.host, self._cfg.port, detail),
                                 "is mqtt.port an MQTT listener, and does mqtt.tls.enabled match it?",
                                 key="closed before CONNACK")
        self._count("disconnects")
        if not self._stop.is_set():
            log.warning("MQTT: lost the connection to %s:%d (%s); reconnecting; %d event(s) wait in the outbox",
                        self._cfg.host, self._cfg.port, self._paho_error or "closed", self._session.waiting())
        return True

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
        self.connected = True
        after = " after %d failed attempt(s)" % self._failures_in_row if self._failures_in_row else ""
        log.info("MQTT: connected to %s:%d as %r (MQTT %s%s)%s; %d event(s) to send from the outbox",
                 self._cfg.host, self._cfg.port, self._cfg.client_id, self._cfg.protocol,
                 ", TLS" if self._cfg.tls.enabled else "", after, self._session.waiting())
        self._last_failure, self._failures_in_row = None, 0
        self._session.connected(client, properties)
