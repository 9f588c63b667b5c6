"""edge.health.jetson: the jtop figures for the stats message, and nothing (not an error) without jtop.

jtop cannot exist off a Jetson, so it is replaced behind the module's one import: by nothing (the
degrade path), and by tests/fake_jtop.py, a double of jetson-stats 4.2's client and service that
fails as the real one does (a client whose service restarted keeps its last figures; only ok() says).
"""
from __future__ import annotations

import logging
import sys
import types
from typing import Any, Iterator, List

import pytest

import fake_jtop
from edge.health import jetson


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(jetson, "_reader", jetson.JtopReader(clock=clock))
    return clock


@pytest.fixture()
def service(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Iterator[fake_jtop.JtopService]:
    service = fake_jtop.JtopService()
    monkeypatch.setitem(sys.modules, "jtop", fake_jtop.module(service))
    yield service
    jetson.close()
    service.stop()


def clients() -> List[Any]:
    return sys.modules["jtop"].made  # type: ignore[attr-defined]


def test_mapping_of_jtop_figures(service: fake_jtop.JtopService) -> None:
    service.start(fake_jtop.orin_data())
    assert jetson.read_stats() == {
        "temperature_c": {"cpu": 48.2, "gpu": 46.5, "tj": 49.0},  # the offline CV0 sensor (-256) is left out
        "power_w": 6.431,
        "power_rails_w": {"VDD_GPU_SOC": 3.215, "VDD_CPU_CV": 0.812},
        "gpu_load_pct": 63.5,
        "cpu_load_pct": 20.0,  # mean of the online cores 100-88, 100-70, 100-82
        "ram_used_pct": 43.7,  # 3499936 / 7999856 KiB = 0.4374999 (jtop 4.2: used / tot)
        "ram_used_mib": 3417.9,
        "ram_total_mib": 7812.4,
        "nvp_model": "MODE_15W",
        "jetson_clocks": "OFF",
    }


def test_missing_figures_are_left_out() -> None:
    bare = types.SimpleNamespace(stats={"GPU": 5.0, "Temp GPU": 40.0})
    assert jetson.stats_from_jtop(bare) == {"gpu_load_pct": 5.0, "temperature_c": {"gpu": 40.0}}


def test_without_jtop_there_is_nothing(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    monkeypatch.setitem(sys.modules, "jtop", None)  # import jtop -> ImportError, as on any non-Jetson
    assert jetson.read_stats() == {}
    clock.now += 3600
    assert jetson.read_stats() == {}


def test_jtop_without_its_service_is_one_warning_and_unavailable(service: fake_jtop.JtopService,
                                                                 clock: Clock,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="fallwatch.jetson"):
        assert jetson.read_stats() == jetson.UNAVAILABLE
        assert jetson.read_stats() == jetson.UNAVAILABLE  # before the retry time: not even tried
        assert len(clients()) == 1
        clock.now += jetson.RETRY_MIN_S
        assert jetson.read_stats() == jetson.UNAVAILABLE
        assert len(clients()) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "jtop.service is not active" in warnings[0] and "\n" not in warnings[0]


def test_a_restart_of_jtop_service_is_unavailable_then_fresh_figures(service: fake_jtop.JtopService, clock: Clock,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """jetson-stats 4.2: the restarted service kills the client's thread, whose stats stay at the last
    values; the reader must say unavailable, not those, and come back with the new service's figures."""
    service.start(fake_jtop.orin_data(gpu_load=63.5, power_tot_mw=6431))
    first = jetson.read_stats()
    assert isinstance(first, dict) and first["gpu_load_pct"] == 63.5
    old = clients()[0]
    service.stop()  # systemctl restart jtop.service: the old connection breaks at once
    old.join(5)
    assert not old.is_alive() and old.stats["GPU"] == 63.5  # the double, like jtop 4.2: stale and silent
    with caplog.at_level(logging.INFO, logger="fallwatch.jetson"):
        assert jetson.read_stats() == jetson.UNAVAILABLE
        service.start(fake_jtop.orin_data(gpu_load=12.0, power_tot_mw=4100))  # the service is back
        assert jetson.read_stats() == jetson.UNAVAILABLE  # the next attempt waits for its backoff
        clock.now += jetson.RETRY_MAX_S
        again = jetson.read_stats()
    assert isinstance(again, dict) and again["gpu_load_pct"] == 12.0 and again["power_w"] == 4.1
    assert len(clients()) == 3 and clients()[-1].is_alive()  # the first, one refused while down, the new one
    messages = [r.getMessage() for r in caplog.records]
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    assert "Lost connection with jtop server" in messages[0] and any("back in stats" in m for m in messages)
    service.publish(fake_jtop.orin_data(gpu_load=77.0))
    clients()[-1].ok()  # wait for the client's thread to take it, as jtop users do
    assert jetson.read_stats()["gpu_load_pct"] == 77.0  # type: ignore[index]


def attempt_gaps(read: Any, clock: Clock, seconds: int) -> List[float]:
    """Seconds between connection attempts while jtop.service stays down, read once a second."""
    tried_at = []
    for _ in range(seconds):
        made = len(clients())
        assert read() == jetson.UNAVAILABLE
        if len(clients()) > made:
            tried_at.append(clock.now)
        clock.now += 1.0
    return [b - a for a, b in zip(tried_at, tried_at[1:])]


def test_backoff_doubles_up_to_its_limit(service: fake_jtop.JtopService, clock: Clock) -> None:
    assert attempt_gaps(jetson.read_stats, clock, 31) == [2.0, 4.0, 8.0, 16.0]
    capped = jetson.JtopReader(clock=clock, retry_min_s=2.0, retry_max_s=5.0)
    assert attempt_gaps(capped.read, clock, 22) == [2.0, 4.0, 5.0, 5.0, 5.0]


def test_close_stops_the_client_and_a_later_read_starts_a_new_one(service: fake_jtop.JtopService) -> None:
    service.start(fake_jtop.orin_data())
    assert jetson.read_stats()["power_w"] == 6.431  # type: ignore[index]
    assert jetson.read_stats()["gpu_load_pct"] == 63.5  # type: ignore[index]
    assert len(clients()) == 1
    jetson.close()
    clients()[0].join(5)
    assert not clients()[0].is_alive()
    assert jetson.read_stats()["gpu_load_pct"] == 63.5  # type: ignore[index]
    assert len(clients()) == 2


class StatsAtClose:
    """A sink that, like MqttSink, reads the jtop figures for its last stats message when closed."""

    def __init__(self) -> None:
        self.final: Any = None

    def emit(self, event: Any) -> None:
        pass

    def frame(self, record: Any) -> None:
        pass

    def stats(self, stats: Any) -> None:
        pass

    def close(self) -> None:
        self.final = jetson.read_stats()


def test_run_closes_the_jtop_client_when_it_stops(service: fake_jtop.JtopService, tmp_path: Any) -> None:
    """`fallwatch run` stops (here: the model cannot be opened) after its sinks' last stats: the jtop
    client they started is closed and its thread ends."""
    from edge.config import load_config
    from edge.daemon import serve

    service.start(fake_jtop.orin_data())
    path = tmp_path / "config.yaml"
    path.write_text("cameras:\n  - name: hall\n    uri: %s\n" % (tmp_path / "clip.avi"), encoding="utf-8")
    sink = StatsAtClose()

    def no_model(config: Any) -> Any:
        raise RuntimeError("no model in this test")

    with pytest.raises(RuntimeError, match="no model"):
        serve(load_config(path), sink, open_model=no_model, hard_exit=False)
    assert sink.final["gpu_load_pct"] == 63.5 and len(clients()) == 1
    clients()[0].join(5)
    assert not clients()[0].is_alive() and not clients()[0].ok(spin=True)
