"""The live view: each camera's newest frame record and its people's fall states, drawn on request.

:class:`LiveFrames` is the daemon's hook (edge.daemon.Daemon ``live``): the post thread calls
:meth:`LiveFrames.update` with references only (the frame record, which holds the frame, and a
``{track id: state}`` dict), so the engine and post threads never draw or encode anything for the
page. :meth:`LiveFrames.jpeg` renders in the caller's thread (the web server's) with the MQTT
snapshot's drawing (edge.alerts.snapshot.render_snapshot): over a blurred or blank frame unless
``web.show_video`` is true, each person labelled ``#<track id> <state>`` and coloured by state.
One picture per camera and frame is encoded at most once, whoever asks.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

from edge.alerts.snapshot import render_snapshot
from edge.skeleton import track_colour

STATE_COLOURS = {"descending": (0, 165, 255), "fallen": (0, 0, 255)}  # BGR: orange, red


class LiveFrames:
    """The newest ``(record, states)`` per camera, safe between one writer and many readers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Dict[str, Tuple[Any, Dict[int, str]]] = {}
        self._rendered: Dict[Tuple[str, Any], Tuple[int, bytes]] = {}
        self._seq: Dict[str, int] = {}

    def update(self, record: Any, states: Dict[int, str]) -> None:
        """The post thread's call for each tracked frame: keeps references, nothing more."""
        with self._lock:
            self._latest[record.camera] = (record, states)
            self._seq[record.camera] = self._seq.get(record.camera, 0) + 1

    def cameras(self) -> List[str]:
        with self._lock:
            return sorted(self._latest)

    def latest(self, camera: str) -> Optional[Tuple[Any, Dict[int, str], int]]:
        """``(record, states, sequence number)`` of the camera's newest frame, or None."""
        with self._lock:
            if camera not in self._latest:
                return None
            record, states = self._latest[camera]
            return record, states, self._seq[camera]

    def people(self, camera: str) -> Optional[Dict[str, Any]]:
        """The newest frame as JSON-able data: ``t``, ``width``, ``height`` and ``people`` (each with
        ``track`` (0: not yet confirmed), ``state`` and the 18 ``keypoints`` as contract 2 gives them)."""
        found = self.latest(camera)
        if found is None:
            return None
        record, states, seq = found
        people = []
        for person, track in zip(record.people, [int(i) for i in record.track_ids]):
            people.append({"track": track, "state": states.get(track, "normal") if track else "tentative",
                           "keypoints": person["keypoints"]})
        return {"camera": camera, "t": record.t, "frame": seq, "width": record.width, "height": record.height,
                "people": people}

    def jpeg(self, camera: str, mode: str, width_px: int, blur_sigma_px: float) -> Optional[Tuple[bytes, int]]:
        """The camera's newest frame drawn as a JPEG (``mode``: blank, blur or video) and that frame's
        sequence number (as :meth:`people` gives it), or None before its first frame."""
        found = self.latest(camera)
        if found is None:
            return None
        record, states, seq = found
        key = (camera, (mode, width_px, blur_sigma_px))
        with self._lock:
            cached = self._rendered.get(key)
        if cached is not None and cached[0] == seq:
            return cached[1], seq
        ids = [int(i) for i in record.track_ids]
        labels = ["#%d %s" % (i, states.get(i, "normal")) if i else "?" for i in ids]
        colours = [STATE_COLOURS.get(states.get(i, "normal"), track_colour(i)) if i else track_colour(0) for i in ids]
        data = render_snapshot(record, mode, width_px, blur_sigma_px, 80, labels=labels, colours=colours)
        with self._lock:
            self._rendered[key] = (seq, data)
        return data, seq
