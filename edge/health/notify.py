"""systemd service notification (sd_notify) in pure Python, and a watchdog fed by frames.

:class:`Notifier` speaks the ``sd_notify`` datagram protocol: it sends ``READY=1``,
``WATCHDOG=1``, ``STATUS=...`` and ``STOPPING=1`` to the AF_UNIX datagram socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). When the variable is
unset (not started by systemd, or by a unit without ``Type=notify``) every call is a no-op.

:class:`Watchdog` turns "a frame was processed" into watchdog pings: the daemon calls
:meth:`Watchdog.frame_advanced` on every processed frame; the first one sends ``READY=1``
(the engine is loaded and a frame made it through the pipeline), and later ones send
``WATCHDOG=1`` at most every half watchdog interval. Nothing else pings, so when frames stop
(camera unplugged, pipeline stuck) the pings stop and systemd restarts the service after
``WatchdogSec``.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable, Dict, Mapping, Optional

log = logging.getLogger("fallwatch.notify")


class Notifier:
    """A connection to systemd's notification socket, from ``env`` (default: the process environment).

    ``watchdog_interval_s`` is ``$WATCHDOG_USEC`` in seconds when the watchdog applies to this
    process (``$WATCHDOG_PID`` unset or equal to our pid), else None. Sending never raises:
    a failure is logged once and the call returns False.
    """

    def __init__(self, env: Optional[Mapping[str, str]] = None, pid: Optional[int] = None) -> None:
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        path = env.get("NOTIFY_SOCKET", "")
        self.address: Optional[str] = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        elif path:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an @abstract name; not notifying systemd", path)
        self.watchdog_interval_s = self._watchdog_interval(env, pid) if self.address else None
        self._sock: Optional[socket.socket] = None
        self._failed = False
        self._lock = threading.Lock()

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str], pid: int) -> Optional[float]:
        usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if not usec:
            return None
        try:
            interval_us = int(usec)
            if for_pid and int(for_pid) != pid:
                return None
        except ValueError:
            log.warning("WATCHDOG_USEC=%r / WATCHDOG_PID=%r are not integers; watchdog pings disabled", usec, for_pid)
            return None
        return interval_us / 1e6 if interval_us > 0 else None

    @property
    def enabled(self) -> bool:
        """True when there is a notification socket to talk to."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram; False when disabled or the send failed."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # non-inheritable (PEP 446)
                self._sock.sendto(message, self.address)
            except OSError as exc:
                if not self._failed:
                    log.warning("cannot notify systemd at %s (%s); the service manager may consider us hung",
                                self.address.replace("\0", "@"), exc)
                self._failed = True
                return False
        self._failed = False
        return True

    def ready(self, status: Optional[str] = None) -> bool:
        """``READY=1``: start-up is finished (for ``Type=notify`` units this ends "activating")."""
        return self.send("READY=1", *(["STATUS=" + status] if status else []))

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status``."""
        return self.send("STATUS=" + text.replace("\n", " "))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: we are alive (only call this when work is actually progressing)."""
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for ``seconds`` more before the start/stop timeout fires."""
        return self.send("EXTEND_TIMEOUT_USEC=%d" % int(seconds * 1e6))

    def stopping(self, status: Optional[str] = None) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.send("STOPPING=1", *(["STATUS=" + status] if status else []))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class Watchdog:
    """Pings systemd's watchdog only while frames advance; sends READY=1 on the first frame.

    ``frame_advanced(t, source)`` is called after each processed frame, with ``t`` the frame's
    timestamp in seconds (any origin, per source) — a frame whose ``t`` is not later than the
    previous one of the same source does not count, so a camera repeating a stale buffer does
    not keep the service alive. A ping goes out when ``ping_interval_s`` (half the watchdog
    interval) has passed since the last one, measured on ``clock`` (monotonic seconds).
    Thread-safe: cameras may run in threads of their own.
    """

    def __init__(self, notifier: Notifier, clock: Callable[[], float] = time.monotonic,
                 ready_status: str = "processing frames") -> None:
        self.notifier = notifier
        self.clock = clock
        self.ready_status = ready_status
        interval = notifier.watchdog_interval_s
        self.ping_interval_s: Optional[float] = interval / 2.0 if interval else None
        self.is_ready = False
        self.pings = 0
        self._last_t: Dict[str, float] = {}
        self._last_ping = float("-inf")
        self._lock = threading.Lock()

    def frame_advanced(self, t: float, source: str = "") -> None:
        """A frame with timestamp ``t`` (seconds) from ``source`` went through the pipeline."""
        with self._lock:
            last = self._last_t.get(source)
            if last is not None and not t > last:
                return
            self._last_t[source] = t
            now = self.clock()
            if not self.is_ready:
                self.is_ready = True
                self._last_ping = now
                self.notifier.ready(self.ready_status)
                return
            if self.ping_interval_s is None or now - self._last_ping < self.ping_interval_s:
                return
            self._last_ping = now
            self.pings += 1
        self.notifier.watchdog()

    def stopping(self, status: Optional[str] = None) -> None:
        """Tell systemd that shutdown has begun (no further pings are expected)."""
        self.notifier.stopping(status)
