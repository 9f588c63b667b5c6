"""The INT8 calibrator TensorRT calls back during a build, and how its failures reach the user.

TensorRT's Python bindings call ``get_batch``, ``read_calibration_cache`` and
``write_calibration_cache`` through a pybind trampoline that catches any exception, prints
``[ERROR] Exception caught in get_batch(): ...`` to stderr and carries on as if there were no more
batches / no cache (NVIDIA/TensorRT python/src/infer/pyInt8.cpp). An exception raised in a callback
therefore never reaches the caller of ``build_serialized_network``. So each callback here catches
its own errors, remembers the first one, and from then on serves nothing; after the build,
:func:`check_calibration` raises it (with its fix), and also refuses a calibration that served
fewer batches than it had.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from calibration.cache import read_cache, write_cache
from calibration.data import TensorSet
from calibration.progress import Progress, counted
from edge.errors import FallwatchError
from edge.inference.engines.base import EngineError

log = logging.getLogger("fallwatch.calibration")


def make_calibrator(trt: Any, cuda: Any, kind: str, data: Optional[TensorSet], batch_size: int, cache_file: Path,
                    recalibrate: bool = False, progress: bool = True, input_name: str = "input") -> Any:
    """An ``IInt8EntropyCalibrator2`` (or ``IInt8MinMaxCalibrator``) feeding ``data`` in batches of
    ``batch_size`` through one device buffer per input, reading and writing ``cache_file``.

    ``get_batch(names)`` returns one device pointer per name, in the order of ``names`` (TensorRT's
    contract): the image batch for ``input_name`` (or for the only name, whatever TensorRT calls it), and
    for each other name its rows of ``data.extra`` (a single_person_3d model's ``k_inv``...); a name the
    data lack is an error.

    Its callbacks never raise: ``error`` is the first exception one of them met (None when none),
    ``failed_in`` the callback's name; ``batches_given`` and ``batches_expected`` count batches,
    ``cache_used`` says the build took the scales from ``cache_file`` instead."""
    base = trt.IInt8EntropyCalibrator2 if kind == "entropy" else trt.IInt8MinMaxCalibrator

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.batches_given = 0
            self.batches_expected = len(data) // batch_size if data is not None else 0
            self.cache_used = False
            self.error: Optional[BaseException] = None
            self.failed_in = ""
            bar = Progress("calibrating (TensorRT %s)" % kind, self.batches_expected * batch_size) \
                if progress and self.batches_expected else None
            self._batches = counted(data.feeds(batch_size, input_name, drop_last=True) if data is not None
                                    else iter(()), bar)
            self._device: Dict[str, Any] = {}

        def _failed(self, where: str, exc: BaseException) -> None:
            if self.error is None:
                log.debug("the calibrator's %s failed", where, exc_info=exc)
                self.error, self.failed_in = _without_frames(exc), where

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: List[str], p_str: Any = None) -> Optional[List[int]]:
            if self.error is not None:
                return None
            try:
                feed = next(self._batches, None)
                if feed is None:
                    return None
                if len(names) == 1 and len(feed) == 1:
                    feed = {names[0]: next(iter(feed.values()))}
                missing = [n for n in names if n not in feed]
                if missing:
                    raise KeyError("TensorRT asks for input %s, which the calibration data do not have (they have "
                                   "%s)" % (", ".join(missing), ", ".join(feed)))
                for name in names:
                    array = np.ascontiguousarray(feed[name], dtype=np.float32)
                    if name not in self._device:
                        self._device[name] = cuda.mem_alloc(array.nbytes)
                    cuda.memcpy_htod(self._device[name], array)
            except Exception as exc:  # TensorRT would swallow it: kept for check_calibration
                self._failed("get_batch", exc)
                return None
            self.batches_given += 1
            return [int(self._device[name]) for name in names]

        def read_calibration_cache(self) -> Optional[bytes]:
            if recalibrate or self.error is not None:
                return None
            try:
                cached = read_cache(cache_file, kind)
            except Exception as exc:
                self._failed("read_calibration_cache", exc)
                return None
            if cached is not None:
                self.cache_used = True
                log.info("using the calibration cache %s (no calibration frames needed)", cache_file)
            return cached

        def write_calibration_cache(self, cache: Any) -> None:
            if self.error is not None:
                return
            try:
                write_cache(cache_file, bytes(cache))
            except Exception as exc:
                self._failed("write_calibration_cache", exc)
                return
            log.info("wrote the calibration cache %s", cache_file)

        def free(self) -> None:
            for buffer in self._device.values():
                buffer.free()
            self._device = {}

    return Calibrator()


_FIXES = {"get_batch": "the calibration frames are read back from a scratch folder beside the engine: check that "
                        "disk (space, errors in dmesg)",
          "write_calibration_cache": "check that the calibration cache's folder exists, is writable and has space"}


def _without_frames(exc: BaseException) -> BaseException:
    """``exc`` and the exceptions chained to it, without tracebacks: a kept traceback keeps its frames
    and their callers' frames, and with them the TensorRT objects of the build, alive."""
    seen: List[BaseException] = []
    link: Optional[BaseException] = exc
    while link is not None and all(link is not s for s in seen):
        link.__traceback__ = None
        seen.append(link)
        link = link.__cause__ or link.__context__
    return exc


def check_calibration(calibrator: Any, model_path: Path) -> None:
    """Raise what went wrong inside the calibrator's callbacks during the build, or EngineError when
    calibration served fewer batches than it had; nothing when calibration was whole."""
    error = calibrator.error
    if isinstance(error, FallwatchError):
        raise error
    served = "after %d of %d calibration batches" % (calibrator.batches_given, calibrator.batches_expected)
    if error is not None:
        raise EngineError("INT8 calibration of %s failed in %s %s: %s: %s" % (
            model_path, calibrator.failed_in, served, type(error).__name__, error),
            "no engine was written; %s, then run fallwatch-calibrate again" % _FIXES.get(
                calibrator.failed_in, "fix the cause"), joint="; ")
    if not calibrator.cache_used and calibrator.batches_given < calibrator.batches_expected:
        raise EngineError("INT8 calibration of %s ended %s: TensorRT stopped asking for frames" % (model_path, served),
                          "no engine was written; run again with --verbose for TensorRT's log", joint="; ")
