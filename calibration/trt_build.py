"""On the Jetson: build a TensorRT engine from an ONNX model, INT8-calibrated on our frames.

TensorRT calls go through the module :func:`edge.inference.engines.trt_api.import_tensorrt` returns and CUDA
calls through :mod:`edge.inference.engines.cuda`; only the tensor-name API shared by TensorRT 8.5, 8.6 and 10
is used (``build_serialized_network``, ``set_memory_pool_limit``, optimisation profiles).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

from calibration.cache import read_cache, write_cache
from calibration.data import TensorSet
from calibration.progress import Progress, counted
from calibration.shapes import ShapeError, plan_input
from edge.inference.engines import EngineError
from edge.inference.engines.metadata import EngineMetadata, make_metadata, metadata_path
from edge.alerts.events import iso_utc

log = logging.getLogger("fallwatch.calibration")

PRECISIONS = ("int8", "fp16", "fp32")


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "int8"
    calibrator: str = "entropy"  # entropy (IInt8EntropyCalibrator2) | minmax (IInt8MinMaxCalibrator)
    max_batch: int = 1
    calibration_batch: int = 8
    workspace_mib: int = 1024
    dla_core: Optional[int] = None
    timing_cache: Optional[Path] = None
    recalibrate: bool = False
    verbose: bool = False
    keep_float: Tuple[str, ...] = ()  # INT8: layers matching these (name or output) are pinned to FP16


def make_calibrator(trt: Any, cuda: Any, kind: str, data: Optional[TensorSet], batch_size: int, cache_file: Path,
                    recalibrate: bool = False, progress: bool = True) -> Any:
    """An ``IInt8EntropyCalibrator2`` (or ``IInt8MinMaxCalibrator``) feeding ``data`` in batches of
    ``batch_size`` through one device buffer, reading and writing ``cache_file``."""
    base = trt.IInt8EntropyCalibrator2 if kind == "entropy" else trt.IInt8MinMaxCalibrator

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.batches_given = 0
            total = (len(data) // batch_size) * batch_size if data is not None else 0
            bar = Progress("calibrating (TensorRT %s)" % kind, total) if progress and total else None
            self._batches = counted(data.batches(batch_size, drop_last=True) if data is not None else iter(()), bar)
            self._device: Any = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: List[str], p_str: Any = None) -> Optional[List[int]]:
            batch = next(self._batches, None)
            if batch is None:
                return None
            if self._device is None:
                self._device = cuda.mem_alloc(batch.nbytes)
            cuda.memcpy_htod(self._device, np.ascontiguousarray(batch, dtype=np.float32))
            self.batches_given += 1
            return [int(self._device)] * len(names)

        def read_calibration_cache(self) -> Optional[bytes]:
            if recalibrate:
                return None
            cached = read_cache(cache_file, kind)
            if cached is not None:
                log.info("using the calibration cache %s (no calibration frames needed)", cache_file)
            return cached

        def write_calibration_cache(self, cache: Any) -> None:
            write_cache(cache_file, bytes(cache))
            log.info("wrote the calibration cache %s", cache_file)

        def free(self) -> None:
            if self._device is not None:
                self._device.free()
                self._device = None

    return Calibrator()


def pin_fp16(trt: Any, network: Any, patterns: Tuple[str, ...]) -> int:
    """Pin every layer whose name or an output's name matches one of ``patterns`` to FP16 (precision and
    output types); returns how many. Needs BuilderFlag.OBEY_PRECISION_CONSTRAINTS to be binding."""
    compiled = [re.compile(p) for p in patterns if p]
    if not compiled:
        return 0
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        names = [layer.name] + [layer.get_output(j).name for j in range(layer.num_outputs)]
        if any(c.search(n) for c in compiled for n in names):
            layer.precision = trt.DataType.HALF
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.DataType.HALF)
            count += 1
    return count


def _explicit_batch_flags(trt: Any) -> int:
    """EXPLICIT_BATCH for TensorRT 8.x; 0 for 10.x, where every network is explicit-batch and the
    flag is deprecated."""
    from edge.inference.engines.trt_api import parse_version

    if parse_version(trt.__version__) >= (10,):
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _parse_onnx(trt: Any, network: Any, logger: Any, onnx_bytes: bytes, model_path: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError("TensorRT cannot parse %s: %s" % (model_path, errors or "no error given"))
    return parser


def _timing_cache(trt: Any, config: Any, path: Optional[Path]) -> Any:
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        log.warning("the timing cache %s does not fit this TensorRT or is damaged; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def build_engine(model_path: Path, out_path: Path, input_hw: Tuple[int, int], layout: str, options: BuildOptions,
                 data: Optional[TensorSet], cache_file: Path, progress: bool = True) -> EngineMetadata:
    """Build, write ``out_path`` then its metadata (both atomically); return the metadata.

    For INT8, ``data`` are the calibration frames; None is fine when ``cache_file`` holds a cache.
    """
    from edge.inference.engines.cuda import CudaContext
    from edge.inference.engines.device import current_device
    from edge.inference.engines.trt_api import import_tensorrt, make_logger
    from edge.inference.models import atomic_write, sha256_bytes, sha256_file

    if options.precision not in PRECISIONS:
        raise EngineError("precision %r: use one of %s" % (options.precision, ", ".join(PRECISIONS)))
    trt = import_tensorrt()
    logger = make_logger(options.verbose)
    device = current_device()
    onnx_bytes = Path(model_path).read_bytes()
    started = time.monotonic()
    context = CudaContext(0)
    calibrator = None
    try:
        with context.active() as cuda:
            builder = trt.Builder(logger)
            network = builder.create_network(_explicit_batch_flags(trt))
            parser = _parse_onnx(trt, network, logger, onnx_bytes, model_path)
            if network.num_inputs != 1:
                raise EngineError("%s has %d inputs; a pose network has one" % (model_path, network.num_inputs))
            tensor = network.get_input(0)
            input_name = str(tensor.name)
            try:
                plan = plan_input(tuple(tensor.shape), layout, input_hw, options.max_batch,
                                  options.calibration_batch, input_name)
            except ShapeError as exc:
                raise EngineError("%s: %s" % (model_path, exc)) from None
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
            _set_precision(trt, builder, config, options)
            if plan.dynamic:
                profile = builder.create_optimization_profile()
                profile.set_shape(input_name, *plan.profile())
                config.add_optimization_profile(profile)
            if options.precision == "int8":
                if data is None and (options.recalibrate or not cache_file.is_file()):
                    raise EngineError("INT8 needs calibration frames (--images, --video or --camera): there is no "
                                      "calibration cache at %s to reuse" % cache_file)
                if plan.dynamic:
                    calib_profile = builder.create_optimization_profile()
                    shape = plan.calibration_shape()
                    calib_profile.set_shape(input_name, shape, shape, shape)
                    config.set_calibration_profile(calib_profile)
                calibrator = make_calibrator(trt, cuda, options.calibrator, data, plan.calibration_batch,
                                             cache_file, options.recalibrate, progress)
                config.int8_calibrator = calibrator
                pinned = pin_fp16(trt, network, options.keep_float)
                if pinned:
                    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
                    log.info("%d layers pinned to FP16 (--keep-float), the rest may run INT8", pinned)
            timing = _timing_cache(trt, config, options.timing_cache)
            log.info("building the %s engine for %s (%s); this takes minutes on a Jetson", options.precision,
                     device.device_name, model_path)
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise EngineError("TensorRT could not build an engine from %s (run again with --verbose for "
                                  "TensorRT's log; a larger --workspace-mib may help)" % model_path)
            engine_bytes = bytes(serialized)
            if options.timing_cache is not None:
                options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(options.timing_cache, bytes(timing.serialize()))
            del parser, network, builder, tensor
    finally:
        if calibrator is not None:
            with context.active():
                calibrator.free()
        context.close()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if metadata_path(out_path).exists():  # an engine without metadata is refused if we crash now
        metadata_path(out_path).unlink()
    atomic_write(out_path, engine_bytes)
    cache_sha = sha256_file(cache_file) if options.precision == "int8" and cache_file.is_file() else None
    meta = make_metadata(device, precision=options.precision, input_name=input_name, input_size=tuple(input_hw),
                         batch=plan.batch, model_file=Path(model_path).name, model_sha256=sha256_bytes(onnx_bytes),
                         engine_bytes=len(engine_bytes), engine_sha256=sha256_bytes(engine_bytes),
                         calibration_cache_sha256=cache_sha,
                         calibrator=options.calibrator if options.precision == "int8" else None,
                         dla_core=options.dla_core, build_time=iso_utc(), build_seconds=round(time.monotonic() - started, 1))
    atomic_write(metadata_path(out_path), meta.to_json())
    return meta


def _set_precision(trt: Any, builder: Any, config: Any, options: BuildOptions) -> None:
    if options.precision in ("fp16", "int8"):
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)  # layers INT8 cannot run fall back to FP16, not FP32
        else:
            log.warning("this GPU has no fast FP16; layers that cannot run in INT8 stay FP32")
    if options.precision == "int8":
        if not builder.platform_has_fast_int8:
            log.warning("this GPU has no fast INT8: the engine will be no faster than FP16")
        config.set_flag(trt.BuilderFlag.INT8)
    if options.dla_core is not None:
        cores = builder.num_DLA_cores
        if not 0 <= options.dla_core < cores:
            raise EngineError("--dla-core %d: this device has %d DLA cores%s" % (
                options.dla_core, cores, " (Orin NX/AGX and Xavier NX/AGX have them; Nano does not)" if cores == 0 else ""))
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
