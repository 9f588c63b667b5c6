"""The configured pose network as one object: its spec, its engine, its input size, resize and low-light handling.

:func:`open_pose_model` loads what the configuration names; :class:`edge.pipeline.CameraPipeline`
runs it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from edge.inference.engines import Engine, EngineError, create_engine
from edge.inference.preprocess import LowLight
from edge.inference.specs import ModelSpec, load_spec

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
    spec: ModelSpec
    engine: Engine
    input_hw: Tuple[int, int]
    resize: str
    light: Optional[LowLight] = None

    def close(self) -> None:
        self.engine.close()


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
    if engine.input_name != spec.input_tensor:
        raise EngineError("the model's input is %r but spec %s expects %r: is model.spec right for %s?"
                          % (engine.input_name, spec.name, spec.input_tensor, model_path(config)))
    _warn_if_batch_too_small(engine, config)
    return PoseModel(spec, engine, input_hw(config), config.model.resize, low_light(config))


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
