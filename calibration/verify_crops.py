"""Does the built crop model (top_down or single_person_3d) still place keypoints as the FP32 model does?

Both models run on the same held-out person crops (:mod:`calibration.crops`: cut as the daemon cuts them,
with every input a 3D model takes). Each crop's keypoints are decoded as the daemon decodes them, in the
project's 18 parts, in crop input pixels: a top-down model's heatmaps by
:func:`edge.inference.crops.decode_heatmaps` and :func:`~edge.inference.crops.to_project`, a 3D model's
``pose2d`` through its spec's ``to_project``; a part under ``threshold`` (``topdown.keypoint_threshold``)
is missing. With the FP32 keypoints as the reference:

* **keypoint agreement** = the share of the FP32 model's present keypoints that the built model also
  finds within ``max_px`` crop input pixels (default 8: two heatmap cells of PoseResNet's 256x192 crop);
* **mean OKS** = COCO's object keypoint similarity of the built model's skeleton to the FP32 one, averaged
  over crops where FP32 finds a keypoint (:func:`calibration.verify.oks`, in crop pixels).

Raw outputs are compared too: the largest and mean absolute difference per output tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from calibration.verify import OutputError, add_output_errors, oks
from edge.inference.crops import decode_heatmaps, to_project
from edge.inference.specs import ModelSpec
from edge.skeleton import NUM_KEYPOINTS

DEFAULT_MAX_PX = 8.0


def crop_keypoints(spec: ModelSpec, outputs: Mapping[str, np.ndarray], threshold: float) -> np.ndarray:
    """``(N, 18, 3)`` keypoints ``(x, y, confidence)`` in crop input pixels, missing parts (0, 0, 0)."""
    ih, iw = spec.input_size
    if spec.family == "single_person_3d":
        body = spec.body3d
        pose2d = np.asarray(outputs[body.pose2d], np.float64)
        kp = np.zeros((len(pose2d), NUM_KEYPOINTS, 3))
        kp[:, [p for p, _ in body.to_project]] = pose2d[:, [c for _, c in body.to_project]]
        kp[~(kp[..., 2] >= threshold)] = 0.0
        return kp
    heat = np.asarray(outputs[spec.heatmaps.tensor])
    if spec.output_layout == "NHWC":
        heat = heat.transpose(0, 3, 1, 2)
    lo, hi = spec.heatmaps.channels
    kp = to_project(spec, decode_heatmaps(spec, heat[:, lo:hi]), threshold)
    kp[..., 0] *= iw
    kp[..., 1] *= ih
    return kp


@dataclass
class CropReport:
    crops: int = 0
    keypoints_reference: int = 0
    keypoints_other: int = 0
    keypoints_agree: int = 0
    oks_values: List[float] = field(default_factory=list)
    outputs: Dict[str, OutputError] = field(default_factory=dict)
    groups: Dict[str, "CropReport"] = field(default_factory=dict)
    max_px: float = DEFAULT_MAX_PX

    @property
    def keypoint_agreement(self) -> float:
        return self.keypoints_agree / self.keypoints_reference if self.keypoints_reference else 1.0

    @property
    def mean_oks(self) -> float:
        return float(np.mean(self.oks_values)) if self.oks_values else 1.0

    def passed(self, min_keypoint_agreement: float, min_oks: float) -> bool:
        return self.crops > 0 and self.keypoint_agreement >= min_keypoint_agreement and self.mean_oks >= min_oks

    def add_crop(self, reference: np.ndarray, other: np.ndarray, size_wh) -> None:
        present = reference[:, 2] > 0
        close = present & (other[:, 2] > 0) & (np.hypot(*(reference[:, :2] - other[:, :2]).T) <= self.max_px)
        self.crops += 1
        self.keypoints_reference += int(present.sum())
        self.keypoints_other += int((other[:, 2] > 0).sum())
        self.keypoints_agree += int(close.sum())
        if present.any():
            w, h = size_wh
            scale = np.array([1.0 / w, 1.0 / h, 1.0])  # oks() takes normalised coordinates
            self.oks_values.append(oks(reference * scale, other * scale, size_wh))

    def to_dict(self) -> Dict[str, object]:
        return {
            "crops": self.crops, "keypoints_fp32": self.keypoints_reference, "keypoints_other": self.keypoints_other,
            "keypoints_within_px": self.keypoints_agree, "max_px": self.max_px,
            "keypoint_agreement": round(self.keypoint_agreement, 4), "mean_oks": round(self.mean_oks, 4),
            "lowest_oks": round(min(self.oks_values), 4) if self.oks_values else None,
            "outputs": {name: {"max_abs_error": round(e.max_abs, 5), "mean_abs_error": round(e.mean_abs, 6),
                               "fp32_max_abs": round(e.reference_max_abs, 5)} for name, e in self.outputs.items()},
            "groups": {name: {k: v for k, v in g.to_dict().items() if k not in ("outputs", "groups")}
                       for name, g in self.groups.items()},
        }

    def summary(self) -> str:
        lines = ["verification on %d held-out person crops: keypoints FP32 %d, other %d, within %g px %d -> "
                 "keypoint agreement %.1f%%, mean OKS %.3f" % (self.crops, self.keypoints_reference,
                                                              self.keypoints_other, self.max_px, self.keypoints_agree,
                                                              100 * self.keypoint_agreement, self.mean_oks)]
        for name, g in self.groups.items():
            lines.append("  %s: %d crops, keypoints FP32 %d, within %g px %d -> %.1f%%, mean OKS %.3f"
                         % (name, g.crops, g.keypoints_reference, g.max_px, g.keypoints_agree,
                            100 * g.keypoint_agreement, g.mean_oks))
        for name, e in self.outputs.items():
            lines.append("  output %s: max |error| %.4f, mean |error| %.5f (FP32 values up to %.3f)"
                         % (name, e.max_abs, e.mean_abs, e.reference_max_abs))
        return "\n".join(lines)


FeedRunner = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def compare_crops(reference: FeedRunner, other: FeedRunner, feeds: Iterable[Mapping[str, np.ndarray]],
                  spec: ModelSpec, threshold: float, max_px: float = DEFAULT_MAX_PX,
                  on_crop: Optional[Callable[[], None]] = None, groups: Optional[Sequence[str]] = None) -> CropReport:
    """Run both models on every batch of ``feeds`` (every input by name) and compare their keypoints.
    ``groups`` (one name per crop) adds the same counts per group to the report."""
    report = CropReport(max_px=max_px)
    ih, iw = spec.input_size
    index = 0
    for feed in feeds:
        out_ref, out_other = reference(feed), other(feed)
        add_output_errors(report.outputs, out_ref, out_other, ignore_nan=True)
        for kp_a, kp_b in zip(crop_keypoints(spec, out_ref, threshold), crop_keypoints(spec, out_other, threshold)):
            report.add_crop(kp_a, kp_b, (iw, ih))
            if groups is not None:
                report.groups.setdefault(groups[index], CropReport(max_px=max_px)).add_crop(kp_a, kp_b, (iw, ih))
            index += 1
            if on_crop is not None:
                on_crop()
    return report
