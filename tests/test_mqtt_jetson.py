"""edge.health.jetson: the jtop figures for the stats message, and nothing (not an error) without jtop.

jtop cannot exist off a Jetson, so it is replaced behind the module's one import: by nothing (the
degrade path), by a module whose client cannot reach the jtop service, and by a stand-in whose
``stats`` and ``memory`` have the shapes of jtop 4.x (documented in jetson-stats' jtop.py).
"""
from __future__ import annotations

import logging
import sys
import types
from typing import Any, Dict

import pytest

from edge.health import jetson

JTOP_STATS: Dict[str, Any] = {  # jtop 4.x jetson.stats on an Orin, abridged
    "time": object(), "uptime": object(),
    "CPU1": 12, "CPU2": 30, "CPU3": "OFF", "CPU4": 18,
    "RAM": 0.4375, "SWAP": 0.0, "EMC": 7,
    "GPU": 63.5,
    "Fan pwmfan0": 31.4,
    "Temp CPU": 48.25, "Temp GPU": 46.5, "Temp CV0": -256.0, "Temp tj": 49.0,
    "Power VDD_GPU_SOC": 3215, "Power VDD_CPU_CV": 812, "Power TOT": 6431,
    "jetson_clocks": "OFF", "nvp model": "MODE_15W",
}


class FakeJtop:
    """The part of jtop's client that edge.health.jetson reads."""

    def __init__(self) -> None:
        self.stats = dict(JTOP_STATS)
        self.memory = {"RAM": {"tot": 7999856, "used": 3499936}, "SWAP": {"tot": 0, "used": 0}}
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def fresh_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetson, "_client", None)
    monkeypatch.setattr(jetson, "_unavailable", False)


def test_mapping_of_jtop_figures() -> None:
    assert jetson.stats_from_jtop(FakeJtop()) == {
        "temperature_c": {"cpu": 48.2, "gpu": 46.5, "tj": 49.0},  # the offline CV0 sensor (-256) is left out
        "power_w": 6.431,
        "power_rails_w": {"VDD_GPU_SOC": 3.215, "VDD_CPU_CV": 0.812},
        "gpu_load_pct": 63.5,
        "cpu_load_pct": 20.0,  # mean of the online cores 12, 30, 18
        "ram_used_pct": 43.8,
        "ram_used_mib": 3417.9,
        "ram_total_mib": 7812.4,
        "nvp_model": "MODE_15W",
        "jetson_clocks": "OFF",
    }


def test_missing_figures_are_left_out() -> None:
    bare = types.SimpleNamespace(stats={"GPU": 5.0, "Temp GPU": 40.0})
    assert jetson.stats_from_jtop(bare) == {"gpu_load_pct": 5.0, "temperature_c": {"gpu": 40.0}}


def test_without_jtop_there_is_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jtop", None)  # import jtop -> ImportError, as on any non-Jetson
    assert jetson.read_stats() == {}
    assert jetson.read_stats() == {}


def test_jtop_without_its_service_is_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    class NoService(FakeJtop):
        def start(self) -> None:
            raise OSError("The jtop.service is not active. Please run:\nsudo systemctl restart jtop.service")

    monkeypatch.setitem(sys.modules, "jtop", types.SimpleNamespace(jtop=NoService))
    with caplog.at_level(logging.DEBUG, logger="fallwatch.jetson"):
        assert jetson.read_stats() == {} and jetson.read_stats() == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "jtop.service is not active" in warnings[0] and "\n" not in warnings[0]


def test_jtop_client_is_started_once_and_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []

    def factory() -> FakeJtop:
        made.append(FakeJtop())
        return made[-1]

    monkeypatch.setitem(sys.modules, "jtop", types.SimpleNamespace(jtop=factory))
    assert jetson.read_stats()["power_w"] == 6.431
    assert jetson.read_stats()["gpu_load_pct"] == 63.5
    assert len(made) == 1 and made[0].started
    jetson.close()
    assert made[0].closed
