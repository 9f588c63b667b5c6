"""How events and messages are written: compact JSON, and UTC times as ISO 8601 strings.

The event schema (DESIGN.md contract 4) is made in one place, :func:`make_event`. One encoder
for every JSON line and MQTT payload (fall events, skeleton and stats lines, the
``stats`` message, ``mqtt-test``'s test event), one formatter for every timestamp.
"""
from __future__ import annotations

import datetime
import json
import time
import uuid
from pathlib import PurePath
from typing import Any, Dict, Optional

import numpy as np

from edge.skeleton import skeleton_bbox

COORD_DECIMALS = 5  # keypoints are rounded to 1e-5 of the frame (0.02 px at 1920): JSON round-trips exactly
_EVENT_NAMESPACE = uuid.UUID("5d1f3c52-6a4e-4c67-9a0c-2f4a8e7b9c10")


def encode_event(obj: Any) -> str:
    """Compact JSON without a newline; NumPy arrays and scalars become lists and numbers, paths
    strings, dates ISO 8601. TypeError for anything else JSON cannot hold."""
    return json.dumps(obj, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # NumPy arrays and scalars
        return value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise TypeError("cannot write a %s as JSON" % type(value).__name__)


def iso_utc(wall: Optional[float] = None) -> str:
    """Seconds since the epoch (default: now) -> ``2024-05-01T12:00:00.123Z`` (milliseconds, UTC)."""
    moment = datetime.datetime.fromtimestamp(time.time() if wall is None else wall, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(raw: Dict[str, Any], device: str, camera: str, t: float, wall: float,
               track_keypoints: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """A fall detector's event (at least ``type``, ``track_id``, ``confidence``) as it is sent:
    ``event_id`` (a UUID made from device, camera, track, type and time: the same event re-sent
    keeps its id), ``device``, ``camera``, ``timestamp`` (ISO 8601 UTC of ``wall``, the confirming
    frame's capture time), ``bbox`` and ``keypoints`` normalised (the event's own, else the track's
    ``(18, 3)``), ``t`` (the frame time), then every other field of ``raw``."""
    timestamp = iso_utc(wall)
    kind, track_id = str(raw["type"]), int(raw.get("track_id", 0))
    key = "%s/%s/%d/%s/%s" % (device, camera, track_id, kind, timestamp)
    keypoints = raw.get("keypoints", track_keypoints)
    bbox = raw.get("bbox")
    if bbox is None and keypoints is not None:
        bbox = skeleton_bbox(np.asarray(keypoints), 1e-9)[0]
    out = {"event_id": str(uuid.uuid5(_EVENT_NAMESPACE, key)), "type": kind, "device": device,
           "camera": camera, "track_id": track_id, "timestamp": timestamp,
           "confidence": round(float(raw.get("confidence", 0.0)), 4),
           "bbox": None if bbox is None else [round(float(v), COORD_DECIMALS) for v in bbox],
           "keypoints": None if keypoints is None else np.round(np.asarray(keypoints, np.float64),
                                                                COORD_DECIMALS).tolist(),
           "t": t}
    for k, v in raw.items():
        out.setdefault(k, v)
    return out
