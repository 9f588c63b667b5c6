"""On the Jetson: build a TensorRT engine from an ONNX model, INT8-calibrated on our frames.

TensorRT calls go through the module :func:`edge.inference.engines.trt_api.import_tensorrt` returns and CUDA
calls through :mod:`edge.inference.engines.cuda`; only the tensor-name API shared by TensorRT 8.5, 8.6 and 10
is used (``build_serialized_network``, ``set_memory_pool_limit``, optimisation profiles).
"""
from __future__ import annotations

import logging
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from calibration.data import TensorSet
from calibration.shapes import InputPlan, ShapeError, plan_input
from calibration.trt_calibrator import check_calibration, make_calibrator
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


def _parse_onnx(parser: Any, onnx_bytes: bytes, model_path: Path) -> None:
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError("TensorRT cannot parse %s: %s" % (model_path, errors or "no error given"))


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
                 data: Optional[TensorSet], cache_file: Path, progress: bool = True,
                 input_name: Optional[str] = None) -> EngineMetadata:
    """Build, write ``out_path`` then its metadata (both atomically); return the metadata.

    ``input_name``: the image input (the spec's ``input.tensor``) of a model with several inputs (a
    single_person_3d model); default: the only input, or the only 4-D one. Every other input gets the
    same batch range in the optimisation profile, and calibration feeds it from ``data.extra``.

    For INT8, ``data`` are the calibration frames; None is fine when ``cache_file`` holds a cache.
    Every TensorRT object of the build is destroyed inside the CUDA context, before it is closed, on
    success and on failure alike; an error inside the calibrator's callbacks is raised here and
    no engine is written.
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
    try:
        with context.active() as cuda:
            try:
                engine_bytes, input_name, plan = _build(trt, cuda, logger, onnx_bytes, Path(model_path), input_hw,
                                                        layout, options, data, cache_file, progress,
                                                        device.device_name, input_name)
            except BaseException as exc:
                traceback.clear_frames(exc.__traceback__)  # TensorRT objects a traceback holds die in the context
                raise
    finally:
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


def _build(trt: Any, cuda: Any, logger: Any, onnx_bytes: bytes, model_path: Path, input_hw: Tuple[int, int],
           layout: str, options: BuildOptions, data: Optional[TensorSet], cache_file: Path, progress: bool,
           device_name: str, image_input: Optional[str] = None) -> Tuple[bytes, str, InputPlan]:
    """``(engine bytes, input name, input plan)``; runs inside the CUDA context and destroys every TensorRT
    object it made, newest first, before it returns or raises."""
    from edge.inference.models import atomic_write

    builder = network = parser = config = profile = calib_profile = timing = serialized = calibrator = None
    try:
        builder = trt.Builder(logger)
        network = builder.create_network(_explicit_batch_flags(trt))
        parser = trt.OnnxParser(network, logger)
        _parse_onnx(parser, onnx_bytes, model_path)
        tensors = {str(network.get_input(i).name): tuple(int(d) for d in network.get_input(i).shape)
                   for i in range(network.num_inputs)}
        input_name = _image_input(tensors, image_input, model_path)
        others = {n: s for n, s in tensors.items() if n != input_name}
        try:
            plan = plan_input(tensors[input_name], layout, input_hw, options.max_batch,
                              options.calibration_batch, input_name)
            image_batch = tensors[input_name][0]
            for name, shape in others.items():
                if not shape or any(d < 0 for d in shape[1:]) or shape[0] != image_batch:
                    raise ShapeError("input %s has shape %s: besides the image, an input may only have an open "
                                     "batch dimension, open or fixed like the image's" % (name, shape))
        except ShapeError as exc:
            raise EngineError("%s: %s" % (model_path, exc)) from None
        if options.precision == "int8" and data is not None and others:
            missing = [n for n in others if n not in data.extra]
            if missing:
                raise EngineError("%s also takes %s, which the calibration data do not have" % (
                    model_path, ", ".join(missing)))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
        _set_precision(trt, builder, config, options)
        if plan.dynamic:
            profile = builder.create_optimization_profile()
            profile.set_shape(input_name, *plan.profile())
            for name, shape in others.items():  # the same batch range for a 3D model's other inputs
                profile.set_shape(name, *((b,) + shape[1:] for b in plan.batch))
            config.add_optimization_profile(profile)
        if options.precision == "int8":
            if data is None and (options.recalibrate or not cache_file.is_file()):
                raise EngineError("INT8 needs calibration frames (--images, --video or --camera): there is no "
                                  "calibration cache at %s to reuse" % cache_file)
            if plan.dynamic:
                calib_profile = builder.create_optimization_profile()
                shape = plan.calibration_shape()
                calib_profile.set_shape(input_name, shape, shape, shape)
                for name, other in others.items():
                    fixed = (plan.calibration_batch,) + other[1:]
                    calib_profile.set_shape(name, fixed, fixed, fixed)
                config.set_calibration_profile(calib_profile)
            calibrator = make_calibrator(trt, cuda, options.calibrator, data, plan.calibration_batch, cache_file,
                                         options.recalibrate, progress, input_name)
            config.int8_calibrator = calibrator
            pinned = pin_fp16(trt, network, options.keep_float)
            if pinned:
                config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
                log.info("%d layers pinned to FP16 (--keep-float), the rest may run INT8", pinned)
        timing = _timing_cache(trt, config, options.timing_cache)
        log.info("building the %s engine for %s (%s); this takes minutes on a Jetson", options.precision,
                 device_name, model_path)
        serialized = builder.build_serialized_network(network, config)
        if calibrator is not None:
            check_calibration(calibrator, model_path)
        if serialized is None:
            raise EngineError("TensorRT could not build an engine from %s (run again with --verbose for "
                              "TensorRT's log; a larger --workspace-mib may help)" % model_path)
        engine_bytes = bytes(serialized)
        if options.timing_cache is not None:
            options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(options.timing_cache, bytes(timing.serialize()))
        return engine_bytes, input_name, plan
    finally:
        if calibrator is not None:
            calibrator.free()
        del serialized, timing, calib_profile, profile, config, calibrator, parser, network, builder


def _image_input(tensors: Dict[str, Tuple[int, ...]], wanted: Optional[str], model_path: Path) -> str:
    """The name of the image input among the network's ``tensors`` (name -> shape)."""
    if wanted is not None and wanted in tensors:
        return wanted
    if len(tensors) == 1:
        return next(iter(tensors))
    four = [n for n, s in tensors.items() if len(s) == 4]
    if wanted is None and len(four) == 1:
        return four[0]
    raise EngineError("%s has inputs %s: none is the spec's image input %s" % (
        model_path, ", ".join(tensors), wanted or "(a single 4-D input)"))


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
