"""Jetson health figures from jtop (jetson-stats): the only module that imports ``jtop``.

:func:`read_stats` gives the ``jetson`` part of the MQTT ``stats`` message and never blocks for
long: the figures (a dict); ``"unavailable"`` (:data:`UNAVAILABLE`) while jetson-stats is installed
but its service cannot be read (not running, restarting, this user not in group jtop); ``{}``
(nothing to report) where jetson-stats is not installed, i.e. any machine that is not a Jetson.

jetson-stats' client is a thread fed by jtop.service. When the service restarts, that thread
stores the error and ends while ``jetson.stats`` keeps returning the last values; only
``jetson.ok()`` raises it. So every read asks ``ok(spin=True)`` (no wait) first; a client that
failed is closed and a new one started, retried with backoff (:data:`RETRY_MIN_S` doubling up to
:data:`RETRY_MAX_S`) while every read says ``"unavailable"``; each outage is logged once and its end
once. :func:`close` stops the client (``fallwatch run`` calls it when it stops).

Units: temperatures in °C, power in watts, GPU load and RAM use in percent, RAM in MiB.
The mapping reads jtop 4.x ``jetson.stats`` (keys ``Temp <sensor>``, ``Power <rail>`` and
``Power TOT`` in mW, ``GPU`` in %, ``RAM`` as a 0..1 fraction) and ``jetson.memory['RAM']`` (KiB).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Union

log = logging.getLogger("fallwatch.jetson")

UNAVAILABLE = "unavailable"
RETRY_MIN_S = 2.0
RETRY_MAX_S = 60.0
_OFFLINE_TEMP_C = -40.0  # jtop reports an offline sensor as -256 °C; nothing real is this cold on a Jetson
_FIX = ("check `systemctl status jtop.service` (sudo systemctl restart jtop.service) and that this user is in "
        "group jtop")


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def stats_from_jtop(jetson: Any) -> Dict[str, Any]:
    """Map a started jtop object (its ``stats`` dict and ``memory``) to our stats fields."""
    stats = dict(jetson.stats)
    out: Dict[str, Any] = {}
    temps = {}
    for key, value in stats.items():
        if isinstance(key, str) and key.startswith("Temp "):
            v = _number(value)
            if v is not None and v > _OFFLINE_TEMP_C:
                temps[key[5:].lower()] = round(v, 1)
    if temps:
        out["temperature_c"] = temps
    rails = {}
    for key, value in stats.items():
        if isinstance(key, str) and key.startswith("Power ") and key != "Power TOT":
            v = _number(value)
            if v is not None:
                rails[key[6:]] = round(v / 1000.0, 3)
    total = _number(stats.get("Power TOT"))
    if total is not None:
        out["power_w"] = round(total / 1000.0, 3)
    if rails:
        out["power_rails_w"] = rails
    gpu = _number(stats.get("GPU"))
    if gpu is not None:
        out["gpu_load_pct"] = round(gpu, 1)
    cpus = [_number(v) for k, v in stats.items() if isinstance(k, str) and k[:3] == "CPU" and k[3:].isdigit()]
    cpus_on = [c for c in cpus if c is not None]
    if cpus_on:
        out["cpu_load_pct"] = round(sum(cpus_on) / len(cpus_on), 1)
    ram = _number(stats.get("RAM"))
    if ram is not None:
        out["ram_used_pct"] = round(100.0 * ram, 1)
    memory = getattr(jetson, "memory", None)
    try:
        ram_kib = memory["RAM"] if memory is not None else None
        used, total_kib = _number(ram_kib["used"]), _number(ram_kib["tot"])
    except (KeyError, TypeError, IndexError):
        used = total_kib = None
    if used is not None and total_kib:
        out["ram_used_mib"] = round(used / 1024.0, 1)
        out["ram_total_mib"] = round(total_kib / 1024.0, 1)
    for key, name in (("nvp model", "nvp_model"), ("jetson_clocks", "jetson_clocks")):
        if isinstance(stats.get(key), str):
            out[name] = stats[key]
    return out


def _one_line(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).replace("\n", " ")


def _close_quietly(client: Any) -> None:
    if client is None:
        return
    try:
        client.close()
    except Exception as exc:  # a client that already failed may fail again on close: nothing to do
        log.debug("closing the jtop client: %s", _one_line(exc))


class JtopReader:
    """One jtop client at a time, checked with ``ok(spin=True)`` on each read and replaced when it
    fails. ``clock``: monotonic seconds, for the backoff."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, retry_min_s: float = RETRY_MIN_S,
                 retry_max_s: float = RETRY_MAX_S) -> None:
        self._clock, self._retry_min_s, self._retry_max_s = clock, retry_min_s, retry_max_s
        self._lock = threading.Lock()
        self._client: Any = None
        self._installed: Optional[bool] = None  # None: not looked for yet
        self._retry_at = float("-inf")
        self._delay = retry_min_s
        self._outage = False  # a failure was logged: say so when figures are back

    def read(self) -> Union[Dict[str, Any], str]:
        """The figures; :data:`UNAVAILABLE` while jtop is installed but gives none; ``{}`` without jtop."""
        with self._lock:
            if self._client is not None:
                figures = self._figures()
                if figures is not None:
                    return figures
            if self._connect():
                figures = self._figures()
                if figures is not None:
                    return figures
            return {} if self._installed is False else UNAVAILABLE

    def close(self) -> None:
        """Stop the client, if one runs; a later read starts a new one."""
        with self._lock:
            client, self._client = self._client, None
            self._retry_at, self._delay = float("-inf"), self._retry_min_s
        _close_quietly(client)

    def _figures(self) -> Optional[Dict[str, Any]]:
        """The running client's figures, or None after dropping a client that failed."""
        try:
            if not self._client.ok(spin=True):
                raise RuntimeError("the jtop client stopped")
            return stats_from_jtop(self._client)
        except Exception as exc:  # JtopException("Lost connection with jtop server") and whatever the thread stored
            client, self._client = self._client, None
            _close_quietly(client)
            self._retry_at, self._delay = self._clock(), self._retry_min_s
            self._outage = True
            log.warning("jtop stopped giving figures (%s): stats say jetson: %s until it is back; reconnecting "
                        "with backoff; %s", _one_line(exc), UNAVAILABLE, _FIX)
            return None

    def _connect(self) -> bool:
        now = self._clock()
        if self._installed is False or now < self._retry_at:
            return False
        try:
            from jtop import jtop  # noqa: PLC0415 - the one place jtop is imported
        except ImportError:
            self._installed = False
            log.debug("jtop (jetson-stats) is not installed: no Jetson figures in stats")
            return False
        self._installed = True
        client = None
        try:
            client = jtop()
            client.start()
        except Exception as exc:  # JtopException when the service is down, OSErrors, a version mismatch
            _close_quietly(client)
            self._retry_at = now + self._delay
            self._delay = min(self._delay * 2, self._retry_max_s)
            (log.debug if self._outage else log.warning)(
                "jtop is installed but cannot be used (%s): stats say jetson: %s; retrying in %.0f s; %s",
                _one_line(exc), UNAVAILABLE, self._retry_at - now, _FIX)
            self._outage = True
            return False
        self._client = client
        self._delay = self._retry_min_s
        if self._outage:
            log.info("jtop: connected to jtop.service again; Jetson figures are back in stats")
            self._outage = False
        return True


_reader = JtopReader()


def read_stats() -> Union[Dict[str, Any], str]:
    """The ``jetson`` part of the stats message now (see the module docstring)."""
    return _reader.read()


def close() -> None:
    """Stop the jtop client if one was started."""
    _reader.close()
