"""Each camera's retained ``state`` (``ON``/``OFF``), its latest skeleton record, and what must be published.

The daemon's threads report events and frames; the MQTT network thread takes what changed since it
last looked (:meth:`CameraStates.take`): new cameras to announce to Home Assistant, states to
publish, snapshots to render. A state is ``ON`` after ``fall_detected``/``long_lie``, ``OFF`` after
``fall_cleared`` and at start. Thread-safe.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Iterable, List, NamedTuple

STATE_ON_TYPES = ("fall_detected", "long_lie")
STATE_OFF_TYPES = ("fall_cleared",)


class Changes(NamedTuple):
    announce: bool  # a camera appeared that Home Assistant has not been told about
    states: Dict[str, str]  # camera -> "ON"/"OFF" to publish
    snapshots: Dict[str, Any]  # camera -> the skeleton record to render


class CameraStates:
    """``cameras``: the configured ones (all ``OFF``, to be published); ``snapshots``: keep frames for them."""

    def __init__(self, cameras: Iterable[str], snapshots: bool) -> None:
        self._lock = threading.Lock()
        self._snapshots = snapshots
        self._state: Dict[str, str] = {camera: "OFF" for camera in cameras}
        self._dirty = set(self._state)
        self._announce_due = False
        self._frames: Dict[str, Any] = {}
        self._snapshots_due: Dict[str, Any] = {}

    def event(self, camera: str, kind: str) -> None:
        """A fall event of ``camera`` of type ``kind``: the state it implies, and a snapshot at a fall."""
        with self._lock:
            if camera not in self._state:
                self._state[camera] = "OFF"
                self._announce_due = True
            if kind in STATE_ON_TYPES or kind in STATE_OFF_TYPES:
                new = "ON" if kind in STATE_ON_TYPES else "OFF"
                if new != self._state[camera]:
                    self._state[camera] = new
                    self._dirty.add(camera)
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
            return camera in self._state

    def cameras(self) -> List[str]:
        """Every camera seen, sorted; they are now announced."""
        with self._lock:
            self._announce_due = False
            return sorted(self._state)

    def all_changed(self) -> None:
        """Publish every state again (a new connection, or Home Assistant restarted)."""
        with self._lock:
            self._dirty = set(self._state)

    def take(self) -> Changes:
        """What changed since the last call."""
        with self._lock:
            states = {camera: self._state[camera] for camera in self._dirty}
            self._dirty = set()
            snapshots, self._snapshots_due = self._snapshots_due, {}
            return Changes(self._announce_due, states, snapshots)
