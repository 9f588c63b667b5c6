"""The configured pose network as one object: its spec, its engine, its input size, resize and low-light handling.

:func:`open_pose_model` loads what the configuration names; :class:`edge.pipeline.CameraPipeline`
runs it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

from edge.inference.engines import Engine, EngineError, create_engine
from edge.inference.preprocess import LowLight
from edge.inference.specs import ModelSpec, SpecError, check_model_io, load_spec

DEFAULT_SPEC = "openpose-mobilenet-thin"
log = logging.getLogger("fallwatch.pose")


def model_path(config) -> Path:
    """The ONNX file the config names, or the default model's converted file."""
    if config.model.onnx is not None:
        return Path(config.model.onnx)
    if config.model.spec != DEFAULT_SPEC:
        raise EngineError("model.onnx must name the ONNX file of model.spec %r (only %s is fetched "
                          "automatically)" % (config.model.spec, DEFAULT_SPEC))
    from edge.inference.models import default_onnx_path

    path = default_onnx_path(config.paths.models_dir, input_hw(config))
    if not path.is_file():
        raise EngineError("the default model is not in %s yet" % path.parent, "run `fallwatch model fetch`",
                          joint=": ")
    return path


def input_hw(config) -> Tuple[int, int]:
    return config.model.input_height, config.model.input_width


def low_light(config) -> Optional[LowLight]:
    """The brightening of dark frames that ``model.low_light`` asks for (None = never); the daemon and
    the calibrator both take it from here."""
    if config.model.low_light == "never":
        return None
    return LowLight(threshold=config.model.low_light_luma)


@dataclass
class PoseModel:
    """``seed``: for a top-down spec, the bottom-up model that finds people for its crops (``topdown.seed_spec``);
    ``detector``: the person detector whose boxes are crops too (``topdown.detector``, edge.inference.detector)."""

    spec: ModelSpec
    engine: Engine
    input_hw: Tuple[int, int]
    resize: str
    light: Optional[LowLight] = None
    seed: Optional["PoseModel"] = None
    detector: Any = None

    def close(self) -> None:
        self.engine.close()
        if self.seed is not None:
            self.seed.close()
        if self.detector is not None:
            self.detector.close()


def check_io(spec: ModelSpec, engine: Engine, model_file: Path, setting: str = "model.spec") -> None:
    """Refuse, before the first frame, a spec that does not describe the engine's tensors (names, layout,
    sizes, channels, strides): EngineError naming the spec file and its field; the engine is closed."""
    try:
        check_model_io(spec, str(model_file), engine.input_name, engine.input_shape, engine.output_names,
                       getattr(engine, "output_shapes", {}), getattr(engine, "extra_inputs", {}))
    except SpecError as exc:
        engine.close()
        raise EngineError(str(exc), "make %s describe %s, or use the model the spec describes" % (setting, model_file),
                          joint="; ") from None


def open_pose_model(config) -> PoseModel:
    """Load the spec and engine that ``config`` names; errors say what to fix."""
    spec = load_spec(config.model.spec)
    onnx = model_path(config)
    if config.engine.backend == "tensorrt":
        from edge.inference.engines.tensorrt import engine_path_for  # imports nothing of TensorRT itself

        engine = create_engine("tensorrt", onnx, engine_file=engine_path_for(config, onnx),
                               input_hw=input_hw(config), precision=config.engine.precision)
    else:
        engine = create_engine(config.engine.backend, onnx, threads=config.engine.threads)
    check_io(spec, engine, onnx)
    if spec.family in ("top_down", "single_person_3d"):  # both look at crops; the seed model finds people
        from edge.inference.detector import open_detector

        seed = detector = None
        try:
            seed = open_seed_model(config)
            detector = open_detector(config)
        except BaseException:
            engine.close()
            if seed is not None:
                seed.close()
            raise
        return PoseModel(spec, engine, input_hw(config), config.model.resize, low_light(config), seed, detector)
    _warn_if_batch_too_small(engine, config)
    return PoseModel(spec, engine, input_hw(config), config.model.resize, low_light(config))


def open_seed_model(config) -> Optional[PoseModel]:
    """The bottom-up model ``topdown.seed_spec`` names (None when it names none), on the configured backend:
    its ONNX file is ``topdown.seed_onnx`` (for TensorRT, an engine file), else the default model."""
    td = config.topdown
    if td.seed_spec is None:
        return None
    spec = load_spec(td.seed_spec)
    if spec.family != "bottom_up":
        raise EngineError("topdown.seed_spec %s is a %s model; seeding needs a bottom_up one (it finds people on "
                          "whole frames)" % (spec.source, spec.family))
    hw = (td.seed_input_height, td.seed_input_width)
    reason = spec.check_input_size(*hw)
    if reason:
        raise EngineError("topdown.seed_input_height/width %dx%d: %s" % (hw + (reason,)))
    if td.seed_onnx is not None:
        onnx = Path(td.seed_onnx)
    elif spec.name == DEFAULT_SPEC:
        from edge.inference.models import default_onnx_path

        onnx = default_onnx_path(config.paths.models_dir, hw)
        if not onnx.is_file():
            raise EngineError("the seed model %s is not there yet" % onnx, "run `fallwatch model fetch`", joint=": ")
    else:
        raise EngineError("topdown.seed_onnx must name the ONNX file of topdown.seed_spec %r (only %s is fetched "
                          "automatically)" % (td.seed_spec, DEFAULT_SPEC))
    if config.engine.backend == "tensorrt":
        engine = create_engine("tensorrt", onnx, input_hw=hw, precision=config.engine.precision)
    else:
        engine = create_engine(config.engine.backend, onnx, threads=config.engine.threads)
    check_io(spec, engine, onnx, "topdown.seed_spec")
    return PoseModel(spec, engine, hw, config.model.resize, low_light(config))


def _warn_if_batch_too_small(engine, config) -> None:
    """An engine built for fewer images per batch than views.policy may ask for still works (the
    views run in several passes, each costing a full inference), so this warns instead of refusing."""
    from edge.inference.views import max_views

    most = getattr(engine, "max_batch", None)
    wanted = max_views(config.views.policy, config.views.rotated_views)
    if most is not None and 0 < most < wanted:
        log.warning("the engine takes at most %d image(s) per batch but views.policy %s can ask for %d: those "
                    "frames will run in %d passes; rebuild it with fallwatch-calibrate --batch-size %d",
                    most, config.views.policy, wanted, -(-wanted // most), wanted)
