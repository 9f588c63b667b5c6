"""Model specs: how a pose network's tensors are laid out, as data.

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
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import yaml

from edge.skeleton import KEYPOINT_INDEX, KEYPOINTS

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
class ModelSpec:
    name: str
    input_tensor: str
    input_layout: str  # "NHWC" or "NCHW"
    color: str  # "BGR" or "RGB"
    mean: Tuple[float, float, float]  # per channel, in the spec's colour order
    std: Tuple[float, float, float]
    input_size: Optional[Tuple[int, int]]  # (height, width) when fixed by the network
    multiple_of: int
    output_layout: str
    heatmaps: OutputSpec
    pafs: OutputSpec
    keypoint_map: Tuple[int, ...]  # model heatmap channel i -> project keypoint index
    background: bool
    limbs: Tuple[Limb, ...]

    @property
    def topology(self) -> Tuple[Limb, ...]:
        """The limbs in processing order, as :func:`edge.parse.parse_poses` takes them."""
        return self.limbs

    @property
    def output_names(self) -> Tuple[str, ...]:
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


def spec_from_dict(raw: Mapping, source: str = "<spec>") -> ModelSpec:
    """Build and check a spec from its YAML mapping; errors name ``source`` and the field."""
    try:
        inp, out = raw["input"], raw["outputs"]
        kp = raw["keypoints"]
        keypoint_map = tuple(range(len(KEYPOINTS))) if kp == "cmu18" else tuple(
            _keypoint(k, "%s: keypoints" % source) for k in kp)
        limbs = []
        for i, entry in enumerate(raw["limbs"]):
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
            pafs=_parse_output(out["pafs"], source + ": outputs.pafs"),
            keypoint_map=keypoint_map, background=bool(raw.get("background", False)),
            limbs=tuple(limbs),
        )
    except KeyError as exc:
        raise SpecError("%s: missing field %s" % (source, exc)) from None
    for field, value, allowed in (("input.layout", spec.input_layout, ("NHWC", "NCHW")),
                                  ("outputs.layout", spec.output_layout, ("NHWC", "NCHW")),
                                  ("input.color", spec.color, ("BGR", "RGB"))):
        if value not in allowed:
            raise SpecError("%s: %s is %r; allowed: %s" % (source, field, value, ", ".join(allowed)))
    n_heat = spec.heatmaps.channels[1] - spec.heatmaps.channels[0]
    if n_heat != len(spec.keypoint_map) + int(spec.background):
        raise SpecError("%s: outputs.heatmaps has %d channels but keypoints (+background) make %d"
                        % (source, n_heat, len(spec.keypoint_map) + int(spec.background)))
    n_paf = spec.pafs.channels[1] - spec.pafs.channels[0]
    used = [c for limb in spec.limbs for c in (limb.paf_x, limb.paf_y)]
    if any(not 0 <= c < n_paf for c in used):
        raise SpecError("%s: a limb names a PAF channel outside 0..%d" % (source, n_paf - 1))
    return spec


_CACHE: Dict[str, ModelSpec] = {}


def load_spec(name_or_path: Union[str, "os.PathLike[str]"]) -> ModelSpec:
    """A built-in spec by name (``openpose-mobilenet-thin``, ``bodyposenet``, ``trt_pose``) or a YAML file."""
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
