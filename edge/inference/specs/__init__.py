"""Model specs: how a pose network's tensors are laid out, as data.

A spec's ``family`` says how the network finds people: ``bottom_up`` (the default: heatmaps and
part affinity fields of the whole frame, parsed into people by edge.parse) or ``top_down`` (one
person's crop in, one heatmap per keypoint out, argmax; edge.inference.topdown) or
``single_person_3d`` (one person's crop and the camera geometry in, 2D and 3D keypoints out, such as
NVIDIA's BodyPose3DNet: :class:`Body3DSpec`, edge.inference.body3d).

A spec (one YAML file in this folder, or a file the user names) says what the network takes
(tensor name, layout, colour order, normalisation, size) and what it gives (which output tensor
and channels hold the heatmaps and the part affinity fields, their stride, the keypoint order,
and the limbs with their PAF channels). :func:`decode` turns raw outputs of any spec into the
canonical maps the parser reads:

* heatmaps ``(N, 18[+1], H, W)`` float32, channels in the project keypoint order
  (:data:`KEYPOINTS`), the background channel last when the model has one;
* PAFs ``(N, 2L, H', W')`` float32, limb ``k`` of ``spec.limbs`` in channels ``2k`` (x, the
  column direction) and ``2k + 1`` (y, the row direction).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from edge.skeleton import KEYPOINT_INDEX, KEYPOINTS

FAMILIES = ("bottom_up", "top_down", "single_person_3d")
SUPPORTED_FAMILIES = FAMILIES
HEATMAP_GRIDS = ("cell_centres", "pixel_indices")
# Named keypoint sets, in the network's channel order, spelled in the project's keypoint names.
KEYPOINT_SETS: Dict[str, Tuple[str, ...]] = {
    "cmu18": KEYPOINTS,
    "coco17": ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
               "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle"),
}
# The model's own keypoint names of single_person_3d sets (not project names): NVIDIA BodyPose3DNet's 34, in
# its channel order (deepstream_tao_apps, apps/tao_others/deepstream-pose-classification/postprocesslib_impl/
# post_processor_bodypose.cpp, parse_25dpose_from_tensor_meta).
MODEL_KEYPOINT_SETS: Dict[str, Tuple[str, ...]] = {
    "bodypose3dnet34": (
        "pelvis", "left_hip", "right_hip", "torso", "left_knee", "right_knee", "neck", "left_ankle", "right_ankle",
        "left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe", "left_heel", "right_heel", "nose",
        "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
        "right_elbow", "left_wrist", "right_wrist", "left_pinky_knuckle", "right_pinky_knuckle", "left_middle_tip",
        "right_middle_tip", "left_index_knuckle", "right_index_knuckle", "left_thumb_tip", "right_thumb_tip"),
}

SPEC_DIR = Path(__file__).resolve().parent
BUILTIN_SPECS = tuple(sorted(p.stem for p in SPEC_DIR.glob("*.yaml")))


class SpecError(ValueError):
    """A model spec file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Limb:
    """A connection between two keypoints (project indices) and where its PAF lives."""

    a: int
    b: int
    paf_x: int  # channel of the x component, counted from the start of the model's PAF range
    paf_y: int
    fills_gaps: bool = False  # never starts a person, only adds a part to an existing one


@dataclass(frozen=True)
class OutputSpec:
    tensor: str
    channels: Tuple[int, int]  # [start, stop) in the tensor's channel axis
    stride: int


@dataclass(frozen=True)
class Body3DSpec:
    """What a ``single_person_3d`` model takes besides the crop, and what it gives.

    Inputs (batch first, one row per crop): ``k_inv`` (N, 3, 3), the inverse camera intrinsics in frame
    pixels; ``t_form_inv`` (N, 3, 3), crop input pixels -> frame pixels (the inverse of the crop's affine
    transform); ``limb_lengths``: (tensor name, its constant values), each fed as (N, len(values)).
    Outputs (N, K, ...) with K = ``len(keypoints)``: ``pose2d`` (x, y, confidence in crop input pixels),
    ``pose2d_org_img`` (the same in frame pixels), ``pose25d`` (x, y, relative depth, confidence) and
    ``pose3d`` (x, y, z in camera coordinates, ``pose3d_unit_m`` metres per unit). ``keypoints``: the
    model's names in channel order; ``to_project``: (project keypoint index, model channel) pairs."""

    k_inv: str
    t_form_inv: str
    limb_lengths: Tuple[Tuple[str, Tuple[float, ...]], ...]
    pose2d: str
    pose2d_org_img: str
    pose25d: str
    pose3d: str
    pose3d_unit_m: float
    keypoints: Tuple[str, ...]
    to_project: Tuple[Tuple[int, int], ...]

    @property
    def input_names(self) -> Tuple[str, ...]:
        return (self.k_inv, self.t_form_inv) + tuple(name for name, _ in self.limb_lengths)

    @property
    def output_names(self) -> Tuple[str, ...]:
        return (self.pose2d, self.pose2d_org_img, self.pose25d, self.pose3d)


@dataclass(frozen=True)
class ModelSpec:
    """One spec file, checked. ``pafs`` is None and ``limbs`` empty for a top_down spec; a single_person_3d
    spec has no ``heatmaps`` either (None), ``keypoint_map`` lists the project keypoints it gives and
    ``body3d`` the rest (:class:`Body3DSpec`); ``derived``
    lists project keypoints the model lacks, each the midpoint of two it has (present only when
    both are); ``heatmap_grid`` says where heatmap cell k sits in the input: ``cell_centres``
    (at ``(k + 0.5) * stride`` pixels, edge.parse's convention) or ``pixel_indices`` (on input
    pixel index ``k * stride``, Simple Baselines' targets); ``source`` is the file, for errors."""

    name: str
    input_tensor: str
    input_layout: str  # "NHWC" or "NCHW"
    color: str  # "BGR" or "RGB"
    mean: Tuple[float, float, float]  # per channel, in the spec's colour order
    std: Tuple[float, float, float]
    input_size: Optional[Tuple[int, int]]  # (height, width) when fixed by the network
    multiple_of: int
    output_layout: str
    heatmaps: Optional[OutputSpec]
    pafs: Optional[OutputSpec]
    keypoint_map: Tuple[int, ...]  # model heatmap channel i -> project keypoint index
    background: bool
    limbs: Tuple[Limb, ...]
    family: str = "bottom_up"
    derived: Tuple[Tuple[int, Tuple[int, int]], ...] = ()  # (project keypoint, (part a, part b)): midpoint
    heatmap_grid: str = "cell_centres"
    source: str = "<spec>"
    body3d: Optional[Body3DSpec] = None

    @property
    def topology(self) -> Tuple[Limb, ...]:
        """The limbs in processing order, as :func:`edge.parse.parse_poses` takes them."""
        return self.limbs

    @property
    def output_names(self) -> Tuple[str, ...]:
        if self.body3d is not None:
            return self.body3d.output_names
        if self.pafs is None:
            return (self.heatmaps.tensor,)
        return tuple(dict.fromkeys((self.heatmaps.tensor, self.pafs.tensor)))

    def check_input_size(self, height: int, width: int) -> Optional[str]:
        """Return why (height, width) cannot be used with this model, or None when it can."""
        if self.input_size is not None and (height, width) != self.input_size:
            return "%s takes exactly %dx%d (height x width)" % ((self.name,) + self.input_size)
        if height % self.multiple_of or width % self.multiple_of:
            return "%s needs a height and width that are multiples of %d" % (self.name, self.multiple_of)
        return None


def _keypoint(value: object, where: str) -> int:
    if isinstance(value, str) and value in KEYPOINT_INDEX:
        return KEYPOINT_INDEX[value]
    raise SpecError("%s: %r is not a keypoint; use one of %s" % (where, value, ", ".join(KEYPOINTS)))


def _parse_output(raw: Mapping, where: str) -> OutputSpec:
    try:
        start, stop = (int(c) for c in raw["channels"])
        return OutputSpec(str(raw["tensor"]), (start, stop), int(raw["stride"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError("%s: needs tensor, channels [start, stop] and stride (%s)" % (where, exc)) from None


def _keypoint_names(kp: object, source: str) -> Tuple[int, ...]:
    if isinstance(kp, str):
        if kp not in KEYPOINT_SETS:
            raise SpecError("%s: keypoints: %r is not a known set; use one of %s or a list of keypoint names"
                            % (source, kp, ", ".join(KEYPOINT_SETS)))
        kp = KEYPOINT_SETS[kp]
    if not isinstance(kp, (list, tuple)):
        raise SpecError("%s: keypoints: expected a set name or a list of keypoint names, got %r" % (source, kp))
    return tuple(_keypoint(k, "%s: keypoints" % source) for k in kp)


def _derived(raw: object, keypoint_map: Tuple[int, ...], source: str) -> Tuple[Tuple[int, Tuple[int, int]], ...]:
    """``derived: {neck: [r_shoulder, l_shoulder]}`` -> ((neck, (r_shoulder, l_shoulder)),) by index."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise SpecError("%s: derived: expected a mapping keypoint: [part_a, part_b], got %r" % (source, raw))
    out = []
    for name, pair in raw.items():
        where = "%s: derived.%s" % (source, name)
        target = _keypoint(name, where)
        if target in keypoint_map:
            raise SpecError("%s: the model already has %s (it is in keypoints)" % (where, name))
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise SpecError("%s: expected [part_a, part_b] (the midpoint of two parts), got %r" % (where, pair))
        a, b = (_keypoint(p, where) for p in pair)
        for part, index in zip(pair, (a, b)):
            if index not in keypoint_map:
                raise SpecError("%s: %s is not one of the model's keypoints" % (where, part))
        out.append((target, (a, b)))
    return tuple(out)


def spec_from_dict(raw: Mapping, source: str = "<spec>") -> ModelSpec:
    """Build and check a spec from its YAML mapping; errors name ``source`` and the field."""
    family = raw.get("family", "bottom_up")
    if family not in FAMILIES:
        raise SpecError("%s: family is %r; allowed: %s" % (source, family, ", ".join(FAMILIES)))
    if family not in SUPPORTED_FAMILIES:
        raise SpecError("%s: family is %r, which this version cannot run yet (it runs %s)"
                        % (source, family, ", ".join(SUPPORTED_FAMILIES)))
    if family == "single_person_3d":
        return _body3d_spec(raw, source)
    top_down = family == "top_down"
    try:
        inp, out = raw["input"], raw["outputs"]
        keypoint_map = _keypoint_names(raw["keypoints"], source)
        if top_down:
            for key, present in (("outputs.pafs", "pafs" in out), ("limbs", "limbs" in raw)):
                if present:
                    raise SpecError("%s: family is top_down but the spec has %s, which only a bottom_up model "
                                    "has: is family right?" % (source, key))
        elif "pafs" not in out:
            raise SpecError("%s: family is bottom_up (the default) but outputs.pafs is missing: a top-down "
                            "model needs family: top_down" % source)
        limbs = []
        for i, entry in enumerate(raw["limbs"] if not top_down else ()):
            where = "%s: limbs[%d]" % (source, i)
            if len(entry) not in (4, 5) or (len(entry) == 5 and entry[4] != "fills_gaps"):
                raise SpecError("%s: expected [part_a, part_b, paf_x, paf_y(, fills_gaps)], got %r" % (where, entry))
            limbs.append(Limb(_keypoint(entry[0], where), _keypoint(entry[1], where),
                              int(entry[2]), int(entry[3]), len(entry) == 5))
        size = inp.get("size")
        spec = ModelSpec(
            name=str(raw["name"]), input_tensor=str(inp["tensor"]), input_layout=str(inp["layout"]),
            color=str(inp["color"]), mean=tuple(float(v) for v in inp["mean"]),
            std=tuple(float(v) for v in inp["std"]),
            input_size=None if size is None else (int(size[0]), int(size[1])),
            multiple_of=int(inp.get("multiple_of", 1)), output_layout=str(out["layout"]),
            heatmaps=_parse_output(out["heatmaps"], source + ": outputs.heatmaps"),
            pafs=None if top_down else _parse_output(out["pafs"], source + ": outputs.pafs"),
            keypoint_map=keypoint_map, background=bool(raw.get("background", False)),
            limbs=tuple(limbs), family=family, derived=_derived(raw.get("derived"), keypoint_map, source),
            heatmap_grid=str(out["heatmaps"].get("grid", "cell_centres")), source=source,
        )
    except KeyError as exc:
        raise SpecError("%s: missing field %s" % (source, exc)) from None
    for field, value, allowed in (("input.layout", spec.input_layout, ("NHWC", "NCHW")),
                                  ("outputs.layout", spec.output_layout, ("NHWC", "NCHW")),
                                  ("input.color", spec.color, ("BGR", "RGB")),
                                  ("outputs.heatmaps.grid", spec.heatmap_grid, HEATMAP_GRIDS)):
        if value not in allowed:
            raise SpecError("%s: %s is %r; allowed: %s" % (source, field, value, ", ".join(allowed)))
    if len(set(spec.keypoint_map)) != len(spec.keypoint_map):
        raise SpecError("%s: keypoints: a keypoint is listed twice" % source)
    n_heat = spec.heatmaps.channels[1] - spec.heatmaps.channels[0]
    if n_heat != len(spec.keypoint_map) + int(spec.background):
        raise SpecError("%s: outputs.heatmaps has %d channels but keypoints (+background) make %d"
                        % (source, n_heat, len(spec.keypoint_map) + int(spec.background)))
    if top_down:
        if spec.input_size is None:
            raise SpecError("%s: input.size: a top_down model takes crops of one fixed size; give [height, width]"
                            % source)
        for axis, length in zip(("height", "width"), spec.input_size):
            if length % spec.heatmaps.stride:
                raise SpecError("%s: outputs.heatmaps.stride: %d does not divide the input %s %d"
                                % (source, spec.heatmaps.stride, axis, length))
        return spec
    n_paf = spec.pafs.channels[1] - spec.pafs.channels[0]
    used = [c for limb in spec.limbs for c in (limb.paf_x, limb.paf_y)]
    if any(not 0 <= c < n_paf for c in used):
        raise SpecError("%s: a limb names a PAF channel outside 0..%d" % (source, n_paf - 1))
    return spec


def _tensor_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError("%s: expected a tensor name, got %r" % (where, value))
    return value


def _body3d_spec(raw: Mapping, source: str) -> ModelSpec:
    """A ``family: single_person_3d`` spec (edge/inference/specs/bodypose3dnet.yaml shows every field)."""
    for key in ("outputs.heatmaps", "outputs.pafs", "limbs", "derived"):
        head, _, tail = key.partition(".")
        if head in raw and (not tail or tail in (raw[head] or {})):
            raise SpecError("%s: family is single_person_3d but the spec has %s, which a 2D heatmap model has: is "
                            "family right?" % (source, key))
    try:
        inp, out = raw["input"], raw["outputs"]
        names = raw["keypoints"]
        if isinstance(names, str):
            if names not in MODEL_KEYPOINT_SETS:
                raise SpecError("%s: keypoints: %r is not a known set; use one of %s or a list of the model's "
                                "keypoint names" % (source, names, ", ".join(MODEL_KEYPOINT_SETS)))
            names = MODEL_KEYPOINT_SETS[names]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names) \
                or len(set(names)) != len(names):
            raise SpecError("%s: keypoints: expected a set name or a list of distinct keypoint names, got %r"
                            % (source, names))
        mapping = raw["to_project"]
        if not isinstance(mapping, dict):
            raise SpecError("%s: to_project: expected a mapping project keypoint: model keypoint, got %r"
                            % (source, mapping))
        pairs = []
        for project, model_name in mapping.items():
            where = "%s: to_project.%s" % (source, project)
            index = _keypoint(project, where)
            if model_name not in names:
                raise SpecError("%s: %r is not one of the model's keypoints" % (where, model_name))
            pairs.append((index, list(names).index(model_name)))
        lengths = inp.get("limb_lengths") or {}
        if not isinstance(lengths, dict):
            raise SpecError("%s: input.limb_lengths: expected a mapping tensor: [values], got %r" % (source, lengths))
        limb_lengths = []
        for tensor, values in lengths.items():
            if not isinstance(values, (list, tuple)) or not values or \
                    not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise SpecError("%s: input.limb_lengths.%s: expected a list of numbers, got %r" % (source, tensor, values))
            limb_lengths.append((str(tensor), tuple(float(v) for v in values)))
        unit = out.get("pose3d_unit_m", 1.0)
        if isinstance(unit, bool) or not isinstance(unit, (int, float)) or not unit > 0:
            raise SpecError("%s: outputs.pose3d_unit_m: expected metres per output unit (> 0), got %r" % (source, unit))
        body = Body3DSpec(
            k_inv=_tensor_name(inp["k_inv"], source + ": input.k_inv"),
            t_form_inv=_tensor_name(inp["t_form_inv"], source + ": input.t_form_inv"),
            limb_lengths=tuple(limb_lengths),
            pose2d=_tensor_name(out["pose2d"], source + ": outputs.pose2d"),
            pose2d_org_img=_tensor_name(out["pose2d_org_img"], source + ": outputs.pose2d_org_img"),
            pose25d=_tensor_name(out["pose25d"], source + ": outputs.pose25d"),
            pose3d=_tensor_name(out["pose3d"], source + ": outputs.pose3d"),
            pose3d_unit_m=float(unit), keypoints=tuple(names), to_project=tuple(pairs))
        size = inp["size"]
        spec = ModelSpec(
            name=str(raw["name"]), input_tensor=_tensor_name(inp["tensor"], source + ": input.tensor"),
            input_layout=str(inp["layout"]), color=str(inp["color"]), mean=tuple(float(v) for v in inp["mean"]),
            std=tuple(float(v) for v in inp["std"]), input_size=(int(size[0]), int(size[1])), multiple_of=1,
            output_layout="NCHW", heatmaps=None, pafs=None, keypoint_map=tuple(p for p, _ in pairs),
            background=False, limbs=(), family="single_person_3d", source=source, body3d=body)
    except KeyError as exc:
        raise SpecError("%s: missing field %s" % (source, exc)) from None
    except (TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError("%s: malformed (%s)" % (source, exc)) from None
    for field, value, allowed in (("input.layout", spec.input_layout, ("NHWC", "NCHW")),
                                  ("input.color", spec.color, ("BGR", "RGB"))):
        if value not in allowed:
            raise SpecError("%s: %s is %r; allowed: %s" % (source, field, value, ", ".join(allowed)))
    if len(set(spec.keypoint_map)) != len(spec.keypoint_map):
        raise SpecError("%s: to_project: a project keypoint is listed twice" % source)
    tensors = (spec.input_tensor,) + body.input_names
    if len(set(tensors)) != len(tensors):
        raise SpecError("%s: input: a tensor name is used twice (%s)" % (source, ", ".join(tensors)))
    return spec


_CACHE: Dict[str, ModelSpec] = {}


def load_spec(name_or_path: Union[str, "os.PathLike[str]"]) -> ModelSpec:
    """A built-in spec by name (``openpose-mobilenet-thin``, ``bodyposenet``, ``trt_pose``,
    ``pose_resnet_50_256x192``, ``bodypose3dnet``) or a YAML file."""
    key = str(name_or_path)
    if key not in _CACHE:
        path = SPEC_DIR / (key + ".yaml") if key in BUILTIN_SPECS else Path(key)
        if not path.is_file():
            raise SpecError("unknown model spec %r: use one of %s or the path of a spec YAML file"
                            % (key, ", ".join(BUILTIN_SPECS)))
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
        if not isinstance(raw, dict):
            raise SpecError("%s: a spec file holds a mapping" % path)
        _CACHE[key] = spec_from_dict(raw, str(path))
    return _CACHE[key]


def _io_error(spec: ModelSpec, field: str, message: str, hint: str = "") -> SpecError:
    return SpecError("%s: %s: %s%s" % (spec.source, field, message, hint))


def check_model_io(spec: ModelSpec, model: str, input_name: str, input_shape: Sequence[int],
                   output_names: Sequence[str], output_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                   extra_inputs: Optional[Mapping[str, Sequence[int]]] = None) -> None:
    """Refuse (SpecError naming the spec file and the field) a spec that does not describe the model's
    tensors: the input's name, channel axis (``input.layout``) and fixed height and width
    (``input.size``); each output's name, channel count (``channels``) and, when the input size is
    known, its height and width (``stride``). ``input_shape`` and ``output_shapes`` are batch first,
    -1 (or absent) where the model leaves a dimension open; ``model`` names the model file.
    ``extra_inputs``: the model's other inputs (name: shape); only a single_person_3d spec feeds any,
    and then each of its inputs and outputs is checked by name and shape (:func:`_check_body3d_io`)."""
    hint = " (is family: %s right for %s?)" % (spec.family, model)
    if input_name != spec.input_tensor:
        raise _io_error(spec, "input.tensor", "%r is not the input of %s, which takes %r"
                        % (spec.input_tensor, model, input_name), hint)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4:
        raise _io_error(spec, "input.tensor", "%s's input %r has shape %s; a pose network takes a 4-D batch"
                        % (model, input_name, shape))
    channels, height, width = (shape[1], shape[2], shape[3]) if spec.input_layout == "NCHW" else shape[3:] + shape[1:3]
    if channels not in (-1, 3):
        raise _io_error(spec, "input.layout", "%s but %s's input %r has shape %s (3 colour channels expected on "
                        "axis %d)" % (spec.input_layout, model, input_name, shape, 1 if spec.input_layout == "NCHW"
                                      else 3))
    fixed = (height, width) if height > 0 and width > 0 else None
    if fixed is not None and spec.input_size is not None and fixed != spec.input_size:
        raise _io_error(spec, "input.size", "%s but %s takes %dx%d (height x width)"
                        % (list(spec.input_size), model, fixed[0], fixed[1]), hint)
    size = spec.input_size or fixed
    if spec.body3d is not None:
        _check_body3d_io(spec, model, dict(extra_inputs or {}), output_names, dict(output_shapes or {}))
        return
    if extra_inputs:
        raise _io_error(spec, "input.tensor", "%s has more inputs than %r (%s), which only a single_person_3d model "
                        "feeds" % (model, input_name, ", ".join(repr(n) for n in extra_inputs)), hint)
    outputs = [("outputs.heatmaps", spec.heatmaps)] + ([("outputs.pafs", spec.pafs)] if spec.pafs else [])
    for field, out in outputs:
        if out.tensor not in output_names:
            raise _io_error(spec, field + ".tensor", "%r is not an output of %s (it has %s)"
                            % (out.tensor, model, ", ".join(repr(n) for n in output_names)), hint)
        dims = tuple(int(d) for d in (output_shapes or {}).get(out.tensor, ()))
        if len(dims) == 3:
            dims = (1,) + dims
        if len(dims) != 4:
            continue
        c, h, w = (dims[1], dims[2], dims[3]) if spec.output_layout == "NCHW" else (dims[3], dims[1], dims[2])
        if c > 0 and out.channels[1] > c:
            raise _io_error(spec, field + ".channels", "%s but %s's output %r has %d channels (shape %s, layout %s)"
                            % (list(out.channels), model, out.tensor, c, dims, spec.output_layout), hint)
        if size is not None and h > 0 and w > 0 and (h * out.stride, w * out.stride) != tuple(size):
            raise _io_error(spec, field + ".stride", "%d but %s's output %r is %dx%d for an input of %dx%d (shape %s, "
                            "layout %s)" % (out.stride, model, out.tensor, h, w, size[0], size[1], dims,
                                            spec.output_layout), hint)


def _check_body3d_io(spec: ModelSpec, model: str, inputs: Mapping[str, Sequence[int]], output_names: Sequence[str],
                     output_shapes: Mapping[str, Sequence[int]]) -> None:
    body = spec.body3d
    k = len(body.keypoints)
    wanted_in = [("input.k_inv", body.k_inv, (3, 3)), ("input.t_form_inv", body.t_form_inv, (3, 3))]
    wanted_in += [("input.limb_lengths.%s" % name, name, (len(values),)) for name, values in body.limb_lengths]
    for field, name, dims in wanted_in:
        if name not in inputs:
            raise _io_error(spec, field, "%r is not an input of %s (its other inputs: %s)"
                            % (name, model, ", ".join(repr(n) for n in inputs) or "none"))
        got = tuple(int(d) for d in inputs[name])
        if len(got) != len(dims) + 1 or any(g > 0 and g != d for g, d in zip(got[1:], dims)):
            raise _io_error(spec, field, "%s's input %r has shape %s; the spec feeds it (N, %s)"
                            % (model, name, got, ", ".join(str(d) for d in dims)))
    unfed = [n for n in inputs if n not in body.input_names]
    if unfed:
        raise _io_error(spec, "input", "%s also takes %s, which the spec does not feed"
                        % (model, ", ".join(repr(n) for n in unfed)))
    for field, name, width in (("outputs.pose2d", body.pose2d, 3), ("outputs.pose2d_org_img", body.pose2d_org_img, 3),
                               ("outputs.pose25d", body.pose25d, 4), ("outputs.pose3d", body.pose3d, 3)):
        if name not in output_names:
            raise _io_error(spec, field, "%r is not an output of %s (it has %s)"
                            % (name, model, ", ".join(repr(n) for n in output_names)))
        got = tuple(int(d) for d in output_shapes.get(name, ()))
        if got and (len(got) != 3 or any(g > 0 and g != d for g, d in zip(got[1:], (k, width)))):
            raise _io_error(spec, field, "%s's output %r has shape %s; the spec reads (N, %d, %d) (%d keypoints)"
                            % (model, name, got, k, width, k))


def _channels_first(array: np.ndarray, layout: str, name: str) -> np.ndarray:
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError("output %r has shape %s; expected 4 dimensions (batch first)" % (name, array.shape))
    return array if layout == "NCHW" else array.transpose(0, 3, 1, 2)


def decode(spec: ModelSpec, outputs: Mapping[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Raw outputs (by tensor name, batch first) -> canonical ``(heatmaps, pafs)``.

    heatmaps: float32 ``(N, 18[+1], H, W)`` in project keypoint order (background last);
    pafs: float32 ``(N, 2L, H', W')`` with limb k of ``spec.limbs`` in channels 2k (x), 2k+1 (y).
    A project keypoint the model lacks gets an all-zero map.
    """
    missing = [n for n in spec.output_names if n not in outputs]
    if missing:
        raise ValueError("%s: the engine gave no output named %s (it gave %s)"
                         % (spec.name, ", ".join(missing), ", ".join(outputs)))
    heat = _channels_first(np.asarray(outputs[spec.heatmaps.tensor]), spec.output_layout, spec.heatmaps.tensor)
    paf = _channels_first(np.asarray(outputs[spec.pafs.tensor]), spec.output_layout, spec.pafs.tensor)
    h0, p0 = spec.heatmaps.channels[0], spec.pafs.channels[0]
    order = [h0 + spec.keypoint_map.index(k) if k in spec.keypoint_map else -1 for k in range(len(KEYPOINTS))]
    if spec.background:
        order.append(h0 + len(spec.keypoint_map))
    if -1 in order:
        heatmaps = np.zeros((heat.shape[0], len(order)) + heat.shape[2:], np.float32)
        present = [i for i, c in enumerate(order) if c >= 0]
        heatmaps[:, present] = heat[:, [order[i] for i in present]]
    else:
        heatmaps = np.ascontiguousarray(heat[:, order], dtype=np.float32)
    paf_order = [p0 + c for limb in spec.limbs for c in (limb.paf_x, limb.paf_y)]
    pafs = np.ascontiguousarray(paf[:, paf_order], dtype=np.float32)
    return heatmaps, pafs
