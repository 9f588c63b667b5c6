"""Per-stage timings, measured all the time at the cost of two clock reads and an array store.

Each stage keeps its last ``window`` durations in a fixed-size ring (no growth over months of
running); :meth:`StageTimer.summary` gives medians and 90th percentiles in milliseconds for the
stats sink.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator

import numpy as np


class StageTimer:
    """Thread-safe rings of the most recent durations (seconds) per stage name."""

    def __init__(self, window: int = 512) -> None:
        if window < 1:
            raise ValueError("window must be at least 1 sample, got %r" % window)
        self._window = window
        self._rings: Dict[str, np.ndarray] = {}
        self._counts: Dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, stage: str, seconds: float) -> None:
        with self._lock:
            ring = self._rings.get(stage)
            if ring is None:
                ring = self._rings[stage] = np.zeros(self._window, np.float64)
                self._counts[stage] = 0
            ring[self._counts[stage] % self._window] = seconds
            self._counts[stage] += 1

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """``with timer.measure("engine"): ...`` records the block's wall time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(stage, time.perf_counter() - start)

    def samples(self, stage: str) -> np.ndarray:
        """The stage's retained durations in seconds (oldest first not guaranteed); empty if unseen."""
        with self._lock:
            ring = self._rings.get(stage)
            if ring is None:
                return np.zeros(0)
            return ring[:min(self._counts[stage], self._window)].copy()

    def summary(self) -> Dict[str, Dict[str, float]]:
        """``{stage: {"count": total measured, "median_ms": ..., "p90_ms": ...}}`` over the window."""
        with self._lock:
            stages = {name: (ring[:min(self._counts[name], self._window)].copy(), self._counts[name])
                      for name, ring in self._rings.items()}
        out = {}
        for name, (values, count) in stages.items():
            out[name] = {"count": count,
                         "median_ms": round(float(np.median(values)) * 1e3, 3),
                         "p90_ms": round(float(np.percentile(values, 90)) * 1e3, 3)}
        return out
