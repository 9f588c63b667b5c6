"""TensorRT's INT8 calibration cache: the standard text file any TensorRT tool reads and writes.

Format: a header line ``TRT-<version>-<algorithm>`` (e.g. ``TRT-8601-EntropyCalibration2``), then one
line per tensor, ``<tensor name>: <scale as the hex of its float32 bits>``. A rebuild that finds a
cache skips calibration, so a cache is checked before TensorRT sees it: a truncated or garbled file,
or one made by another calibration algorithm, is an error that names the file and says what to do.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

from edge.errors import FallwatchError

ALGORITHMS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration"}
_HEADER = re.compile(r"TRT-(\d+)-([A-Za-z0-9]+)")
_LINE = re.compile(r"(.+): ([0-9a-fA-F]{1,8})")


class CacheError(FallwatchError, ValueError):
    """The calibration cache cannot be used; the message names the file, ``fix`` says what to do."""


@dataclass(frozen=True)
class CalibrationCache:
    tensorrt_tag: str  # "8601": the TensorRT version that wrote it
    algorithm: str  # "EntropyCalibration2", "MinMaxCalibration", ...
    scales: Dict[str, float]  # tensor name -> scale


def parse_cache(data: bytes, source: str = "<cache>") -> CalibrationCache:
    """Parse and check a cache; CacheError saying what is wrong with it."""
    fix = "delete %s (or pass --recalibrate) to calibrate again" % source
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise CacheError("%s is not a TensorRT calibration cache (not text)" % source, fix, joint="; ") from None
    lines = text.splitlines()
    header = _HEADER.fullmatch(lines[0].strip()) if lines else None
    if header is None:
        raise CacheError("%s is not a TensorRT calibration cache (its first line should look like "
                         "TRT-8601-EntropyCalibration2)" % source, fix, joint="; ")
    if not text.endswith("\n"):
        raise CacheError("%s is truncated (its last line is incomplete)" % source, fix, joint="; ")
    scales: Dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        found = _LINE.fullmatch(line.strip())
        if found is None:
            raise CacheError("%s line %d is not '<tensor>: <hex scale>' (%r)" % (source, number, line[:60]), fix,
                             joint="; ")
        scales[found.group(1)] = struct.unpack(">f", bytes.fromhex(found.group(2).zfill(8)))[0]
    if not scales:
        raise CacheError("%s holds no tensor scales (truncated?)" % source, fix, joint="; ")
    return CalibrationCache(header.group(1), header.group(2), scales)


def read_cache(path: Union[str, Path], calibrator: str) -> Optional[bytes]:
    """The cache's bytes for TensorRT, None when there is no file. CacheError when it is malformed or was
    made by another algorithm than ``calibrator`` (entropy | minmax)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheError("cannot read the calibration cache %s (%s)" % (path, exc.strerror)) from None
    cache = parse_cache(data, str(path))
    wanted = ALGORITHMS[calibrator]
    if cache.algorithm != wanted:
        raise CacheError("the calibration cache %s was made by %s, not %s (--calibrator %s)"
                         % (path, cache.algorithm, wanted, calibrator),
                         "delete it or pass --recalibrate, or use the calibrator it was made with", joint="; ")
    return data


def write_cache(path: Union[str, Path], data: bytes) -> None:
    """Check and write a cache atomically (a crash leaves the old file or the whole new one)."""
    from edge.inference.models import atomic_write

    parse_cache(bytes(data), "the cache TensorRT produced for %s" % path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, bytes(data))
