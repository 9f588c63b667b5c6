"""The JSON file beside every built engine, and the check that an engine fits this device and model.

``<engine>.json`` records what the engine depends on (TensorRT version, GPU and compute capability,
L4T release, precision, input size, batch range, the model file's sha256, the calibration cache's
sha256) and the engine file's own size and sha256, so that a truncated or corrupted engine is
refused before TensorRT sees it. The engine is written first and the metadata last, both
atomically: a crash leaves no metadata, and an engine without metadata is refused.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from edge.inference.engines.base import EngineError
from edge.inference.engines.device import DeviceFacts, jetpack_of

FORMAT = 1
PRECISIONS = ("int8", "fp16", "fp32")


@dataclass(frozen=True)
class EngineMetadata:
    tensorrt_version: str
    device_name: str
    compute_capability: str
    l4t_release: Optional[str]
    precision: str  # int8 | fp16 | fp32
    input_name: str
    input_size: Tuple[int, int]  # network input (height, width), pixels
    batch: Tuple[int, int, int]  # optimisation profile (min, opt, max) batch size
    model_file: str  # the ONNX file's name when it was built
    model_sha256: str
    engine_bytes: int
    engine_sha256: str
    calibration_cache_sha256: Optional[str] = None
    calibrator: Optional[str] = None  # entropy | minmax | None
    dla_core: Optional[int] = None
    jetpack: Optional[str] = None  # from l4t_release, for people
    build_time: str = ""  # ISO 8601 UTC (edge.alerts.events.iso_utc)
    build_seconds: float = 0.0
    fallwatch_version: str = ""
    format: int = FORMAT

    def to_json(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), indent=2) + "\n").encode("utf-8")


def metadata_path(engine_path: Union[str, Path]) -> Path:
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def cache_path(engine_path: Union[str, Path]) -> Path:
    """Where the INT8 calibration cache of an engine lives by default: ``<engine>.cache``."""
    path = Path(engine_path)
    return path.with_name(path.name + ".cache")


def default_engine_path(state_dir: Union[str, Path], model_path: Union[str, Path],
                        input_hw: Sequence[int], precision: str) -> Path:
    """``<state_dir>/engines/<model stem>_<H>x<W>_<precision>.engine`` (the size once in the name)."""
    size = "%dx%d" % (int(input_hw[0]), int(input_hw[1]))
    stem = Path(model_path).stem
    stem = stem[:-len(size) - 1] if stem.endswith("_" + size) else stem
    return Path(state_dir) / "engines" / ("%s_%s_%s.engine" % (stem, size, precision))


def make_metadata(device: DeviceFacts, **fields: Any) -> EngineMetadata:
    from edge import __version__

    return EngineMetadata(tensorrt_version=device.tensorrt_version, device_name=device.device_name,
                          compute_capability=device.compute_capability, l4t_release=device.l4t_release,
                          jetpack=device.jetpack, fallwatch_version=__version__, **fields)


def read_metadata(engine_path: Union[str, Path], rebuild: str = "") -> EngineMetadata:
    """The metadata beside ``engine_path``; EngineError naming the file when missing or malformed,
    with ``rebuild`` (the command) as its fix when given."""
    path = metadata_path(engine_path)

    def refuse(what: str) -> EngineError:
        return EngineError(what, "Rebuild the engine: %s" % rebuild if rebuild else "", joint=" ")

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise refuse("%s has no metadata file %s: it was not built by fallwatch-calibrate, or its build was "
                     "interrupted." % (engine_path, path.name)) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise refuse("the engine metadata %s is unreadable or corrupted (%s)." % (path, exc)) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise refuse("the engine metadata %s is not format %d of fallwatch-calibrate." % (path, FORMAT))
    names = {f.name for f in dataclasses.fields(EngineMetadata)}
    missing = sorted(f.name for f in dataclasses.fields(EngineMetadata)
                     if f.name not in raw and f.default is dataclasses.MISSING)
    if missing:
        raise refuse("the engine metadata %s lacks %s." % (path, ", ".join(missing)))
    try:
        values = {k: v for k, v in raw.items() if k in names}
        values["input_size"] = tuple(int(v) for v in values["input_size"])
        values["batch"] = tuple(int(v) for v in values["batch"])
        if len(values["input_size"]) != 2 or len(values["batch"]) != 3:
            raise ValueError("input_size needs 2 numbers and batch 3")
        return EngineMetadata(**values)
    except (TypeError, ValueError) as exc:
        raise refuse("the engine metadata %s has a malformed field (%s)." % (path, exc)) from None


def rebuild_command(engine_path: Union[str, Path], model_path: Optional[Union[str, Path]], precision: str,
                    input_hw: Optional[Sequence[int]] = None) -> str:
    """The command that rebuilds ``engine_path`` on this device (the calibration cache beside it,
    when present, spares the calibration images)."""
    parts = ["fallwatch-calibrate", "--config", "CONFIG"]
    if model_path is not None:
        parts += ["--model", str(model_path)]
    parts += ["--precision", precision]
    if precision == "int8":
        parts += ["--images", "CALIBRATION_IMAGES_DIR"]
    parts += ["--out", str(engine_path)]
    text = " ".join(parts)
    if precision == "int8" and cache_path(engine_path).is_file():
        text += " (the calibration cache %s is reused, so --images may be left out)" % cache_path(engine_path)
    return text


def _differences(meta: EngineMetadata, device: DeviceFacts) -> List[str]:
    out = []
    if meta.tensorrt_version != device.tensorrt_version:
        out.append("TensorRT %s (this device has %s)" % (meta.tensorrt_version, device.tensorrt_version))
    if meta.device_name != device.device_name or meta.compute_capability != device.compute_capability:
        out.append("GPU %s, compute capability %s (this device: %s, %s)" % (
            meta.device_name, meta.compute_capability, device.device_name, device.compute_capability))
    if meta.l4t_release != device.l4t_release:
        def show(release: Optional[str]) -> str:
            if release is None:
                return "no L4T"
            jetpack = jetpack_of(release)
            return "L4T %s%s" % (release, " = JetPack %s" % jetpack if jetpack else "")
        out.append("%s (this device: %s)" % (show(meta.l4t_release), show(device.l4t_release)))
    return out


def check_engine(engine_path: Union[str, Path], device: DeviceFacts, model_path: Optional[Union[str, Path]] = None,
                 input_hw: Optional[Sequence[int]] = None, precision: Optional[str] = None) -> EngineMetadata:
    """Refuse an engine that is missing, truncated, corrupted, or built for another device, model,
    input size or precision: EngineError with the exact rebuild command. Returns its metadata."""
    from edge.inference.models import sha256_file

    engine_path = Path(engine_path)
    prec = precision or "int8"
    rebuild = rebuild_command(engine_path, model_path, prec, input_hw)
    if not engine_path.is_file():
        raise EngineError("the TensorRT engine %s does not exist." % engine_path,
                          "Build it on this device: %s" % rebuild, joint=" ")
    meta = read_metadata(engine_path, rebuild)
    rebuild = rebuild_command(engine_path, model_path, precision or meta.precision, input_hw)

    def refuse(what: str, how: str = "Rebuild it") -> EngineError:
        return EngineError(what, "%s: %s" % (how, rebuild), joint=" ")

    size = engine_path.stat().st_size
    if size != meta.engine_bytes or sha256_file(engine_path) != meta.engine_sha256:
        raise refuse("the TensorRT engine %s is truncated or corrupted (%d bytes, sha256 differs from its "
                     "metadata, which says %d bytes)." % (engine_path, size, meta.engine_bytes))
    wrong = _differences(meta, device)
    if wrong:
        raise refuse("the TensorRT engine %s was built for %s; engines run only where they were built."
                     % (engine_path, "; ".join(wrong)), "Rebuild it on this device")
    if model_path is not None and Path(model_path).is_file() and sha256_file(model_path) != meta.model_sha256:
        raise refuse("the TensorRT engine %s was built from another model than %s (sha256 differs; it was "
                     "built from a file named %s)." % (engine_path, model_path, meta.model_file))
    if input_hw is not None and tuple(int(v) for v in input_hw) != tuple(meta.input_size):
        raise refuse("the TensorRT engine %s takes %dx%d (height x width) but model.input_height x "
                     "model.input_width is %dx%d." % ((engine_path,) + tuple(meta.input_size)
                                                      + tuple(int(v) for v in input_hw)))
    if precision is not None and precision != meta.precision:
        raise refuse("the TensorRT engine %s is %s but engine.precision is %s."
                     % (engine_path, meta.precision, precision))
    return meta
