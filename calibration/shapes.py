"""Which input shapes a TensorRT build uses: plain decisions from the ONNX input shape, the spec's
layout, the configured input size and the batch sizes asked for (no TensorRT needed)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

Shape = Tuple[int, ...]


class ShapeError(ValueError):
    """The model's input cannot be built at the asked size or batch; the message says why."""


@dataclass(frozen=True)
class InputPlan:
    sample: Shape  # one item, without the batch dimension, e.g. (368, 432, 3)
    batch: Tuple[int, int, int]  # engine batch (min, opt, max)
    calibration_batch: int
    dynamic: bool  # the ONNX input has a dynamic dimension: an optimisation profile is needed

    def profile(self) -> Tuple[Shape, Shape, Shape]:
        return tuple((b,) + self.sample for b in self.batch)  # type: ignore[return-value]

    def calibration_shape(self) -> Shape:
        return (self.calibration_batch,) + self.sample


def plan_input(onnx_shape: Sequence[int], layout: str, input_hw: Tuple[int, int], max_batch: int = 1,
               calibration_batch: int = 8, name: str = "input") -> InputPlan:
    """Pin the input to ``input_hw`` (height, width) and a batch range of 1..max_batch.

    ``onnx_shape`` has -1 (or 0) for dynamic dimensions. A dynamic batch gets the profile
    (1, max_batch, max_batch) and calibrates in batches of ``calibration_batch``; a fixed batch N
    allows only N for both. Fixed spatial dimensions must equal ``input_hw``.
    """
    shape = tuple(int(d) if d is not None and int(d) > 0 else -1 for d in onnx_shape)
    if len(shape) != 4:
        raise ShapeError("input %s has shape %s; a pose network takes 4 dimensions (batch first)" % (name, shape))
    if layout not in ("NHWC", "NCHW"):
        raise ShapeError("layout %r: expected NHWC or NCHW" % layout)
    h_axis, w_axis, c_axis = (1, 2, 3) if layout == "NHWC" else (2, 3, 1)
    if shape[c_axis] not in (-1, 3):
        raise ShapeError("input %s has shape %s: %s layout needs 3 colour channels on axis %d"
                         % (name, shape, layout, c_axis))
    height, width = input_hw
    for axis, want, what in ((h_axis, height, "model.input_height"), (w_axis, width, "model.input_width")):
        if shape[axis] not in (-1, want):
            raise ShapeError("input %s has a fixed size %s but %s is %d: set %s to %d, or export the model "
                             "at %dx%d" % (name, shape, what, want, what, shape[axis], height, width))
    sample = [0, 0, 0, 0]
    sample[h_axis], sample[w_axis], sample[c_axis] = height, width, 3
    if max_batch < 1 or calibration_batch < 1:
        raise ShapeError("batch sizes must be at least 1")
    if shape[0] == -1:
        batch = (1, max_batch, max_batch)
        calib = calibration_batch
    else:
        fixed = shape[0]
        if max_batch not in (1, fixed):
            raise ShapeError("input %s has a fixed batch of %d, so --batch-size %d is impossible: export the "
                             "ONNX model with a dynamic batch dimension" % (name, fixed, max_batch))
        batch, calib = (fixed, fixed, fixed), fixed
    dynamic = -1 in shape
    return InputPlan(tuple(sample[1:]), batch, calib, dynamic)


def max_batch_of(engine_shape: Sequence[int], profile_max: Optional[Sequence[int]]) -> int:
    """The largest batch an engine takes: its fixed batch, or the max of its profile."""
    if int(engine_shape[0]) > 0:
        return int(engine_shape[0])
    if profile_max is None:
        raise ShapeError("the engine has a dynamic batch but no optimisation profile")
    return int(profile_max[0])
