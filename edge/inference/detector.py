"""A person detector as the top-down path's crop source: its spec, its checks at open, its boxes.

``topdown.detector`` names a detector network (an ONNX file, or a TensorRT engine on a device) and
its spec, a small YAML file (``family: detector``; tests/specs/person-detector-standin.yaml shows
every field):

* ``input``: ``tensor``, ``layout`` (NCHW | NHWC), ``color`` (RGB | BGR), ``mean`` and ``std``
  (``value = (pixel - mean) / std``, pixels 0..255: YOLO exports take ``mean: [0, 0, 0]``,
  ``std: [255, 255, 255]``), ``size: [height, width]`` and ``resize`` (letterbox | stretch: how the
  frame is fitted, edge.inference.preprocess);
* ``outputs``: ``layout: efficient_nms``, the layout of TensorRT's EfficientNMS plugin and of ONNX
  "end-to-end" detector exports (YOLOv5/v7/v8 ``--include onnx --nms``-style): ``num_dets`` (N, 1)
  the detections kept per image, ``boxes`` (N, K, 4) ``x0, y0, x1, y1`` in input pixels, ``scores``
  (N, K) and ``classes`` (N, K), the first ``num_dets`` rows valid, best first; each names its tensor;
* ``person_class``: the class id of a person (0 for COCO-trained YOLO models).

:func:`check_detector_io` refuses, before the first frame, a spec that does not describe the model
(tensor names, input shape, output shapes): the message names the spec file and the field.
:class:`PersonDetector` runs one frame: the people's boxes (normalised frame coordinates, mapped
back through the letterbox or stretch) and their scores, at least ``min_score``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
import yaml

from edge.inference.preprocess import RESIZE_MODES, preprocess
from edge.inference.specs import SpecError
from edge.settings import Section, setting

log = logging.getLogger("fallwatch.detector")

OUTPUT_LAYOUTS = ("efficient_nms",)


@dataclass(frozen=True)
class DetectorConfig(Section):
    """The ``topdown.detector`` settings."""

    spec: Optional[Path] = setting(None, "the person detector's spec YAML file (family: detector); null = no "
                                   "detector")
    onnx: Optional[Path] = setting(None, "the detector's ONNX file (for TensorRT: its engine file)")
    every_s: float = setting(0, "run the detector this often, seconds of frame time; 0 = every frame",
                             between=(0, 3600))
    min_score: float = setting(0.3, "a person box scored below this is ignored", between=(0, 1))


@dataclass(frozen=True)
class DetectorSpec:
    """One detector spec file, checked; ``source`` is the file, for errors. The input fields mean what
    they mean in a pose spec (edge.inference.specs.ModelSpec), so edge.inference.preprocess takes it."""

    name: str
    input_tensor: str
    input_layout: str
    color: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    input_size: Tuple[int, int]  # (height, width)
    resize: str
    output_layout: str
    num_dets: str
    boxes: str
    scores: str
    classes: str
    person_class: int
    source: str = "<spec>"
    family: str = "detector"


def _fail(source: str, field: str, message: str) -> SpecError:
    return SpecError("%s: %s: %s" % (source, field, message))


def _name(raw: Mapping, key: str, source: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(source, where, "expected a tensor name, got %r" % (value,))
    return value


def detector_spec_from_dict(raw: Mapping, source: str = "<spec>") -> DetectorSpec:
    """Build and check a detector spec from its YAML mapping; errors name ``source`` and the field."""
    if raw.get("family") != "detector":
        raise _fail(source, "family", "is %r; a person detector's spec says family: detector (pose specs are "
                    "model.spec's and topdown.seed_spec's)" % (raw.get("family"),))
    inp, out = raw.get("input"), raw.get("outputs")
    if not isinstance(inp, dict) or not isinstance(out, dict):
        raise _fail(source, "input" if not isinstance(inp, dict) else "outputs", "expected a mapping")
    for field, value, allowed in (("input.layout", inp.get("layout"), ("NCHW", "NHWC")),
                                  ("input.color", inp.get("color"), ("RGB", "BGR")),
                                  ("input.resize", inp.get("resize", "letterbox"), RESIZE_MODES),
                                  ("outputs.layout", out.get("layout"), OUTPUT_LAYOUTS)):
        if value not in allowed:
            raise _fail(source, field, "is %r; allowed: %s" % (value, ", ".join(allowed)))
    vectors = {}
    for key in ("mean", "std"):
        value = inp.get(key)
        if not isinstance(value, (list, tuple)) or len(value) != 3 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise _fail(source, "input." + key, "expected three numbers, got %r" % (value,))
        vectors[key] = tuple(float(v) for v in value)
    if any(v == 0 for v in vectors["std"]):
        raise _fail(source, "input.std", "a channel's std is 0")
    size = inp.get("size")
    if not isinstance(size, (list, tuple)) or len(size) != 2 or \
            not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise _fail(source, "input.size", "expected [height, width] in pixels, got %r" % (size,))
    person = raw.get("person_class")
    if not isinstance(person, int) or isinstance(person, bool) or person < 0:
        raise _fail(source, "person_class", "expected the class id of a person (an integer >= 0), got %r"
                    % (person,))
    return DetectorSpec(
        name=str(raw.get("name") or Path(source).stem), input_tensor=_name(inp, "tensor", source, "input.tensor"),
        input_layout=inp["layout"], color=inp["color"], mean=vectors["mean"], std=vectors["std"],
        input_size=(size[0], size[1]), resize=inp.get("resize", "letterbox"), output_layout=out["layout"],
        num_dets=_name(out, "num_dets", source, "outputs.num_dets"),
        boxes=_name(out, "boxes", source, "outputs.boxes"), scores=_name(out, "scores", source, "outputs.scores"),
        classes=_name(out, "classes", source, "outputs.classes"), person_class=person, source=source)


def load_detector_spec(path: Any) -> DetectorSpec:
    """A detector spec YAML file (read on each call)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError("%s: cannot read it as a detector spec (%s)" % (path, str(exc).replace("\n", " "))) from None
    if not isinstance(raw, dict):
        raise SpecError("%s: a detector spec file holds a mapping" % path)
    return detector_spec_from_dict(raw, str(path))


def check_detector_io(spec: DetectorSpec, model: str, input_name: str, input_shape: Sequence[int],
                      output_names: Sequence[str], output_shapes: Mapping[str, Sequence[int]]) -> None:
    """Refuse (SpecError naming the spec file and the field) a spec that does not describe the model: the
    input's name, channel axis and height x width; the four outputs' names and shapes ``num_dets`` (N, 1),
    ``boxes`` (N, K, 4), ``scores`` and ``classes`` (N, K), one K. Shapes are batch first, -1 where open."""
    if input_name != spec.input_tensor:
        raise _fail(spec.source, "input.tensor", "%r is not the input of %s, which takes %r (is it a detector?)"
                    % (spec.input_tensor, model, input_name))
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4:
        raise _fail(spec.source, "input.tensor", "%s's input %r has shape %s; a detector takes a 4-D batch"
                    % (model, input_name, shape))
    channels, height, width = (shape[1], shape[2], shape[3]) if spec.input_layout == "NCHW" \
        else (shape[3], shape[1], shape[2])
    if channels not in (-1, 3):
        raise _fail(spec.source, "input.layout", "%s but %s's input %r has shape %s (3 colour channels expected "
                    "on axis %d)" % (spec.input_layout, model, input_name, shape,
                                     1 if spec.input_layout == "NCHW" else 3))
    if height > 0 and width > 0 and (height, width) != spec.input_size:
        raise _fail(spec.source, "input.size", "%s but %s takes %dx%d (height x width)"
                    % (list(spec.input_size), model, height, width))
    k = None
    for field, name, rank, last in (("outputs.num_dets", spec.num_dets, 2, 1), ("outputs.boxes", spec.boxes, 3, 4),
                                    ("outputs.scores", spec.scores, 2, None),
                                    ("outputs.classes", spec.classes, 2, None)):
        if name not in output_names:
            raise _fail(spec.source, field, "%r is not an output of %s (it has %s)"
                        % (name, model, ", ".join(repr(n) for n in output_names)))
        dims = tuple(int(d) for d in output_shapes.get(name, ()))
        if not dims:
            continue
        wanted = {2: "(N, 1)" if last == 1 else "(N, K)", 3: "(N, K, 4)"}[rank]
        bad = len(dims) != rank or (last is not None and dims[-1] > 0 and dims[-1] != last)
        if not bad and field != "outputs.num_dets" and dims[1] > 0:
            bad = k is not None and dims[1] != k
            k = dims[1] if k is None else k
        if bad:
            raise _fail(spec.source, field, "%s's output %r has shape %s; outputs.layout efficient_nms reads %s%s"
                        % (model, name, dims, wanted, "" if k is None or rank == 2 and last == 1 else
                           " with K = %d" % k))


def decode_detections(spec: DetectorSpec, outputs: Mapping[str, np.ndarray], index: int = 0
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of a batch's raw outputs -> ``(boxes (M, 4) x0, y0, x1, y1 normalised to the
    input, scores (M,))`` of its person detections, in the model's order (best first)."""
    missing = [n for n in (spec.num_dets, spec.boxes, spec.scores, spec.classes) if n not in outputs]
    if missing:
        raise ValueError("%s: the detector gave no output named %s (it gave %s)"
                         % (spec.name, ", ".join(missing), ", ".join(outputs)))
    n = int(np.asarray(outputs[spec.num_dets]).reshape(-1, 1)[index, 0])
    boxes = np.asarray(outputs[spec.boxes], np.float64)[index]
    n = max(0, min(n, boxes.shape[0]))
    scores = np.asarray(outputs[spec.scores], np.float64)[index][:n]
    classes = np.asarray(outputs[spec.classes]).astype(np.int64)[index][:n]
    person = classes == spec.person_class
    ih, iw = spec.input_size
    return boxes[:n][person] / np.array([iw, ih, iw, ih], np.float64), scores[person]


class PersonDetector:
    """An open detector: ``spec``, ``engine`` (edge.inference.engines), ``min_score``."""

    def __init__(self, spec: DetectorSpec, engine: Any, min_score: float = 0.3) -> None:
        self.spec, self.engine, self.min_score = spec, engine, float(min_score)

    def detect(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The people in a BGR frame: ``(boxes (M, 4) x0, y0, x1, y1 normalised to the frame and clipped to
        it, scores (M,))``, scores at least ``min_score``, best first."""
        spec = self.spec
        batch, transform = preprocess(image, spec, spec.input_size, spec.resize)  # type: ignore[arg-type]
        boxes, scores = decode_detections(spec, self.engine.run(batch))
        keep = scores >= self.min_score
        boxes, scores = boxes[keep], scores[keep]
        if not len(boxes):
            return np.zeros((0, 4)), np.zeros(0)
        corners = transform.to_frame(boxes.reshape(-1, 2, 2)).astype(np.float64)  # (M, 2, 2): top-left, bottom-right
        framed = np.clip(corners.reshape(-1, 4), 0.0, 1.0)
        ok = (framed[:, 2] > framed[:, 0]) & (framed[:, 3] > framed[:, 1])
        order = np.argsort(-scores[ok], kind="stable")
        return framed[ok][order], scores[ok][order]

    def close(self) -> None:
        self.engine.close()


def open_detector(config: Any) -> Optional[PersonDetector]:
    """The detector ``topdown.detector`` names (None when its spec is null), on the configured backend,
    its spec checked against the model's tensors (EngineError naming the spec file and field)."""
    from edge.inference.engines import EngineError, create_engine

    dc = config.topdown.detector
    if dc.spec is None:
        return None
    try:
        spec = load_detector_spec(dc.spec)
    except SpecError as exc:
        raise EngineError(str(exc), "fix topdown.detector.spec", joint="; ") from None
    if dc.onnx is None:
        raise EngineError("topdown.detector.onnx must name the model file of topdown.detector.spec %s" % dc.spec)
    if config.engine.backend == "tensorrt":
        engine = create_engine("tensorrt", Path(dc.onnx), input_hw=spec.input_size,
                               precision=config.engine.precision)
    else:
        engine = create_engine(config.engine.backend, Path(dc.onnx), threads=config.engine.threads)
    try:
        check_detector_io(spec, str(dc.onnx), engine.input_name, engine.input_shape, engine.output_names,
                          getattr(engine, "output_shapes", {}) or {})
    except SpecError as exc:
        engine.close()
        raise EngineError(str(exc), "make topdown.detector.spec describe %s, or use the model it describes"
                          % dc.onnx, joint="; ") from None
    log.info("person detector %s (%s): boxes for the top-down crops every %s", spec.name, dc.onnx,
             "frame" if dc.every_s == 0 else "%g s of frame time" % dc.every_s)
    return PersonDetector(spec, engine, dc.min_score)
