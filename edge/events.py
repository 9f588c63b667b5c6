"""How events and messages are written: compact JSON, and UTC times as ISO 8601 strings.

One encoder for every JSON line and MQTT payload (fall events, skeleton and stats lines, the
``stats`` message, ``mqtt-test``'s test event), one formatter for every timestamp. Leaf module.
"""
from __future__ import annotations

import datetime
import json
import time
from pathlib import PurePath
from typing import Any, Optional


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
