"""A double of jetson-stats 4.2.x (``from jtop import jtop``) and of the ``jtop.service`` it reads.

It behaves like rbonghi/jetson_stats ``jtop/jtop.py`` of the 4.2 series (4.2.12) where
edge/health/jetson.py depends on it, errors included:

* ``jtop`` is a :class:`threading.Thread`. ``start()`` connects to the service (``JtopException``
  "The jtop.service is not active..." when it is down), waits for the first data, then starts the
  reader thread (a daemon). A thread starts once: a second ``start()`` raises ``RuntimeError``.
* The reader thread loops while ``_running``: it waits up to ``interval * 3`` for the service's next
  data. A lost connection (the manager proxy's ``EOFError`` when the service goes away) becomes
  ``JtopException("Lost connection with jtop server")``, which ``run()`` stores in ``_error`` and the
  thread ends. Nothing else happens: ``stats`` and ``memory`` keep returning the last data.
* ``ok(spin=False)`` waits up to ``interval * 3`` for fresh data (then sets ``_running`` False); with
  or without ``spin`` it re-raises the stored error, else clears the trigger and returns ``_running``.
* ``close()`` only sets ``_running`` to False: it neither joins the reader thread nor raises.
* ``stats`` is built from the last data as 4.2's property builds it (``CPUn`` = 100 - idle or
  ``OFF``, ``RAM``/``SWAP`` as used/total fractions, ``GPU`` load, ``Temp X``, ``Power X``,
  ``Power TOT`` in mW, ``jetson_clocks``, ``nvp model``); ``memory`` is the last data's ``mem``
  (KiB). Simplified: jetson_clocks and nvpmodel are plain values here, objects in jetson-stats.

:class:`JtopService` stands for the service: ``start(data)``, ``stop()``, ``publish(data)``. A
restart is ``stop()`` then ``start()``: connections made before it stay broken, as the real
multiprocessing manager's do. :func:`module` gives the ``jtop`` module to put in ``sys.modules``.
"""
from __future__ import annotations

import copy
import importlib.machinery
import sys
import threading
import types
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional

TIMEOUT_GAIN = 3


class JtopException(Exception):
    """jtop.core.exceptions.JtopException."""


def orin_data(gpu_load: float = 63.5, power_tot_mw: int = 6431) -> Dict[str, Any]:
    """What jtop.service publishes on an Orin (4.2 layout), abridged to what ``stats`` reads."""
    return {
        "uptime": 3600.0,
        "cpu": {"total": {"user": 10.0, "nice": 0.0, "system": 5.0, "idle": 85.0},
                "cpu": [{"online": True, "idle": 88.0}, {"online": True, "idle": 70.0},
                        {"online": False}, {"online": True, "idle": 82.0}]},
        "mem": {"RAM": {"tot": 7999856, "used": 3499936, "free": 1200000}, "SWAP": {"tot": 0, "used": 0},
                "EMC": {"online": True, "val": 7}},
        "gpu": {"ga10b": {"status": {"load": gpu_load}}},
        "engines": {},
        "fan": {"pwmfan": {"speed": [31.4]}},
        "temperature": {"CPU": {"online": True, "temp": 48.25}, "GPU": {"online": True, "temp": 46.5},
                        "CV0": {"online": False, "temp": -256.0}, "tj": {"online": True, "temp": 49.0}},
        "power": {"rail": {"VDD_GPU_SOC": {"online": True, "power": 3215},
                           "VDD_CPU_CV": {"online": True, "power": 812}},
                  "tot": {"power": power_tot_mw}},
        "jc": {"active": False},
        "nvp": {"name": "MODE_15W"},
    }


class JtopService:
    """The jtop.service: data published under a condition; each start is a new generation."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._alive = False
        self._data: Dict[str, Any] = {}
        self._seq = 0
        self.connections = 0

    def start(self, data: Dict[str, Any]) -> None:
        with self._cond:
            self._generation += 1
            self._alive = True
            self._data, self._seq = copy.deepcopy(data), self._seq + 1
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._alive = False
            self._cond.notify_all()

    def publish(self, data: Dict[str, Any]) -> None:
        with self._cond:
            self._data, self._seq = copy.deepcopy(data), self._seq + 1
            self._cond.notify_all()

    def connect(self) -> "_Connection":
        with self._cond:
            if not self._alive:  # /run/jtop.sock is gone: the manager's connect() raises this
                raise FileNotFoundError(2, "No such file or directory")
            self.connections += 1
            return _Connection(self, self._generation)


class _Connection:
    """The client's proxies (``sync_event`` + ``sync_data``) on one generation of the service."""

    def __init__(self, service: JtopService, generation: int) -> None:
        self._service, self._generation, self._seen = service, generation, -1

    def _broken(self) -> bool:
        return not self._service._alive or self._service._generation != self._generation

    def get_data(self, timeout: float) -> Dict[str, Any]:
        """jtop._get_data: wait for new data at most ``timeout``, then copy whatever is there."""
        service = self._service
        with service._cond:
            if self._broken():
                raise EOFError
            if service._seq == self._seen:
                service._cond.wait(timeout)
            if self._broken():
                raise EOFError
            self._seen = service._seq
            return copy.deepcopy(service._data)


class _Jtop(threading.Thread):
    service: JtopService  # set by module()

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        self._trigger = threading.Event()
        self._error: Optional[Any] = None
        self._running = False
        self._interval = float(interval)
        self._stats: Dict[str, Any] = {}
        self._connection: Optional[_Connection] = None

    # ---------------------------------------------------------------- lifecycle, as jtop 4.2

    def start(self) -> None:
        try:
            self._connection = self.service.connect()
        except FileNotFoundError as e:
            if e.errno in (2, 111):
                raise JtopException("The jtop.service is not active. Please run:\n"
                                    "sudo systemctl restart jtop.service")
            raise
        self._get_data()
        self._running = True
        self.daemon = True
        super().start()

    def run(self) -> None:
        try:
            while self._running:
                self._get_data()
        except Exception:
            self._error = sys.exc_info()

    def _get_data(self) -> None:
        assert self._connection is not None
        try:
            data = self._connection.get_data(self._interval * TIMEOUT_GAIN)
            if not data:
                raise JtopException("Error connection")
        except EOFError:
            raise JtopException("Lost connection with jtop server")
        self._stats = data
        self._trigger.set()

    def ok(self, spin: bool = False) -> bool:
        if not spin:
            if not self._trigger.is_set():
                if not self._trigger.wait(self._interval * TIMEOUT_GAIN):
                    self._running = False
        if self._error:
            _, ex_value, tb = self._error
            ex_value.__traceback__ = tb
            raise ex_value
        if self._running:
            self._trigger.clear()
        return self._running

    def close(self) -> None:
        self._running = False

    def __enter__(self) -> "_Jtop":
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
        return exc_tb is None

    # ---------------------------------------------------------------- what the client reads

    @property
    def memory(self) -> Dict[str, Any]:
        return self._stats["mem"]

    @property
    def stats(self) -> Dict[str, Any]:
        data = self._stats
        stats: Dict[str, Any] = {"time": datetime.now(), "uptime": timedelta(seconds=data["uptime"])}
        for idx, cpu in enumerate(data["cpu"]["cpu"]):
            stats["CPU%d" % (idx + 1)] = 100 - int(cpu["idle"]) if cpu["online"] else "OFF"
        mem = data["mem"]
        stats["RAM"] = mem["RAM"]["used"] / mem["RAM"]["tot"] if mem["RAM"]["tot"] > 0 else 0
        stats["SWAP"] = mem["SWAP"]["used"] / mem["SWAP"]["tot"] if mem["SWAP"]["tot"] > 0 else 0
        if "EMC" in mem:
            stats["EMC"] = mem["EMC"]["val"]
        for idx, gpu in enumerate(data["gpu"].values()):
            stats["GPU" if idx == 0 else "GPU%d" % idx] = gpu["status"]["load"]
        for name, fan in data["fan"].items():
            for idx, speed in enumerate(fan["speed"]):
                stats["Fan %s%d" % (name, idx)] = speed
        for name, temp in data["temperature"].items():
            stats["Temp %s" % name] = temp["temp"]
        if data["power"]:
            for name, rail in data["power"]["rail"].items():
                stats["Power %s" % name] = rail["power"]
            stats["Power TOT"] = data["power"]["tot"]["power"]
        if "jc" in data:
            stats["jetson_clocks"] = "ON" if data["jc"]["active"] else "OFF"
        if "nvp" in data:
            stats["nvp model"] = data["nvp"]["name"]
        return stats


def module(service: JtopService) -> types.ModuleType:
    """A ``jtop`` module whose clients talk to ``service``; every client made is in ``.made``."""
    mod = types.ModuleType("jtop")
    mod.__spec__ = importlib.machinery.ModuleSpec("jtop", None)  # importlib.util.find_spec("jtop") finds it
    made: List[_Jtop] = []

    class jtop(_Jtop):  # noqa: N801 - jetson-stats' name
        def __init__(self, interval: float = 1.0) -> None:
            super().__init__(interval)
            made.append(self)

    jtop.service = service
    mod.jtop = jtop  # type: ignore[attr-defined]
    mod.JtopException = JtopException  # type: ignore[attr-defined]
    mod.made = made  # type: ignore[attr-defined]
    return mod
