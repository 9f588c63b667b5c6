"""Each camera's retained ``state`` (``ON``/``OFF``) kept in step with its events, and what else a camera needs published.

:class:`RetainedStates` (the network thread's) decides what ``<camera>/state`` shows. The state
follows the events *as they are published*, not as they are produced: ``ON`` is published just
before a ``fall_detected``/``long_lie`` leaves, ``OFF`` just after a ``fall_cleared`` has, on the
same connection, so a subscriber always sees ``ON`` before the fall it is about and ``OFF`` only
after the event that cleared it. At each new connection (and so after a restart) the state is
derived from the outbox: ``ON`` while an unacknowledged ON/OFF event of the camera waits (its
re-delivery follows), else the camera's last state kept in the outbox file
(:meth:`edge.alerts.outbox.Outbox.states`: a fall delivered before a crash and never cleared
stays ``ON``), else ``OFF``. A fall that was ``ON`` when fallwatch stopped stays ``ON`` until the
camera's next ``fall_cleared``: a restarted detector cannot know whether that person got up.

:class:`CameraStates` (thread-safe) records what the daemon's threads report: new cameras to
announce to Home Assistant, and the latest skeleton record of each camera for a snapshot at a fall.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Dict, Iterable, List, NamedTuple, Optional

STATE_ON_TYPES = ("fall_detected", "long_lie")
STATE_OFF_TYPES = ("fall_cleared",)


def state_of(kind: Optional[str]) -> Optional[str]:
    """``ON``/``OFF`` for an event type that sets the camera's state, None for any other."""
    if kind in STATE_ON_TYPES:
        return "ON"
    if kind in STATE_OFF_TYPES:
        return "OFF"
    return None


def kind_of(payload: bytes) -> Optional[str]:
    """The ``type`` of an event as stored in the outbox (None when the payload says none)."""
    try:
        kind = json.loads(payload.decode("utf-8")).get("type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return kind if isinstance(kind, str) else None


class RetainedStates:
    """What each camera's retained state shows on the current connection. Network thread only."""

    def __init__(self) -> None:
        self.shown: Dict[str, str] = {}

    def start(self, cameras: Iterable[str], kept: Dict[str, str], waiting: Iterable[str]) -> Dict[str, str]:
        """A new connection: the state of each camera to publish before any event.

        ``cameras``: the configured and seen ones; ``kept``: the outbox's last state per camera;
        ``waiting``: cameras with an unacknowledged ON/OFF event in the outbox."""
        waiting = set(waiting)
        names = set(cameras) | waiting
        self.shown = {c: "ON" if c in waiting else ("ON" if kept.get(c) == "ON" else "OFF") for c in sorted(names)}
        return dict(self.shown)

    def before(self, camera: str, kind: Optional[str]) -> Optional[str]:
        """The state to publish just before an event of ``kind`` (``ON`` for a fall not yet shown)."""
        return "ON" if state_of(kind) == "ON" and self.shown.get(camera) != "ON" else None

    def after(self, camera: str, kind: Optional[str]) -> Optional[str]:
        """The state to publish just after an event of ``kind`` (``OFF`` after a ``fall_cleared``)."""
        return "OFF" if state_of(kind) == "OFF" and self.shown.get(camera) != "OFF" else None


class Changes(NamedTuple):
    announce: bool  # a camera appeared that Home Assistant has not been told about
    snapshots: Dict[str, Any]  # camera -> the skeleton record to render


class CameraStates:
    """``cameras``: the configured ones; ``snapshots``: keep frames for them."""

    def __init__(self, cameras: Iterable[str], snapshots: bool) -> None:
        self._lock = threading.Lock()
        self._snapshots = snapshots
        self._known = set(cameras)
        self._announce_due = False
        self._frames: Dict[str, Any] = {}
        self._snapshots_due: Dict[str, Any] = {}

    def event(self, camera: str, kind: str) -> None:
        """A fall event of ``camera`` of type ``kind``: a camera to announce, and a snapshot at a fall."""
        with self._lock:
            if camera not in self._known:
                self._known.add(camera)
                self._announce_due = True
            if self._snapshots and kind in STATE_ON_TYPES and camera in self._frames:
                self._snapshots_due[camera] = self._frames[camera]

    def frame(self, record: Any) -> None:
        """The latest skeleton record of a camera (kept only when snapshots are on)."""
        if not self._snapshots:
            return
        camera = record.get("camera") if isinstance(record, dict) else getattr(record, "camera", None)
        if camera:
            with self._lock:
                self._frames[str(camera)] = record

    def __contains__(self, camera: object) -> bool:
        """Whether ``camera`` is configured or has sent an event (and so is announced)."""
        with self._lock:
            return camera in self._known

    def known(self) -> List[str]:
        """Every camera configured or seen, sorted."""
        with self._lock:
            return sorted(self._known)

    def cameras(self) -> List[str]:
        """Every camera seen, sorted; they are now announced."""
        with self._lock:
            self._announce_due = False
            return sorted(self._known)

    def take(self) -> Changes:
        """What changed since the last call."""
        with self._lock:
            snapshots, self._snapshots_due = self._snapshots_due, {}
            return Changes(self._announce_due, snapshots)
