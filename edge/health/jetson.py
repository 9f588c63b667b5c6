"""Jetson health figures from jtop (jetson-stats): the only module that imports ``jtop``.

:func:`read_stats` returns a flat dict for the MQTT ``stats`` message, or ``{}`` when jtop is not
installed (any machine that is not a Jetson) or its service is not running: the caller never
needs to know which. The jtop client is started on the first call and kept (it is a thread that
the jtop service feeds); :func:`close` stops it.

Units: temperatures in °C, power in watts, GPU load and RAM use in percent, RAM in MiB.
The mapping reads jtop 4.x ``jetson.stats`` (keys ``Temp <sensor>``, ``Power <rail>`` and
``Power TOT`` in mW, ``GPU`` in %, ``RAM`` as a 0..1 fraction) and ``jetson.memory['RAM']`` (KiB).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Optional

log = logging.getLogger("fallwatch.jetson")

_OFFLINE_TEMP_C = -40.0  # jtop reports an offline sensor as -256 °C; nothing real is this cold on a Jetson

_lock = threading.Lock()
_client: Any = None
_unavailable = False


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


def _open() -> Any:
    """The started jtop client, or None when there is none to be had (logged once)."""
    global _client, _unavailable
    if _client is not None or _unavailable:
        return _client
    try:
        from jtop import jtop  # noqa: PLC0415 - the one place jtop is imported
    except ImportError:
        _unavailable = True
        log.debug("jtop (jetson-stats) is not installed: no Jetson figures in stats")
        return None
    try:
        client = jtop()
        client.start()
    except Exception as exc:  # jtop raises its own JtopException and OSErrors when the service is down
        _unavailable = True
        log.warning("jtop is installed but cannot be used (%s): no Jetson figures in stats; "
                    "run `sudo systemctl restart jtop.service` and check that this user may read /run/jtop.sock",
                    str(exc).replace("\n", " "))
        return None
    _client = client
    return client


def read_stats(jetson: Any = None) -> Dict[str, Any]:
    """Jetson figures now; ``{}`` without jtop. ``jetson``: a started jtop object to read instead."""
    with _lock:
        source = jetson if jetson is not None else _open()
        if source is None:
            return {}
        try:
            return stats_from_jtop(source)
        except Exception as exc:  # a jtop that lost its service: report nothing rather than fail the stats
            log.debug("jtop read failed: %s", exc)
            return {}


def close() -> None:
    """Stop the jtop client if one was started."""
    global _client
    with _lock:
        if _client is not None:
            try:
                _client.close()
            finally:
                _client = None
