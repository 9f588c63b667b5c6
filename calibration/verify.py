"""Does the built model still see people as the FP32 model does?

Both models run on the same held-out preprocessed frames; both outputs go through the camera
pipeline's decode and parse stages (:func:`edge.inference.specs.decode`, :func:`edge.pipeline.parse_views`). People are matched by Object Keypoint
Similarity (OKS, as in COCO) with the FP32 people as the reference:

* ``OKS(a, b) = mean over a's found keypoints k of exp(-d_k^2 / (2 * area * (2 * sigma_k)^2))`` with
  ``d_k`` the distance in network-input pixels (infinite when b lacks keypoint k), ``area`` the area of
  a's keypoint box in pixels (at least :data:`MIN_AREA_PX2`), and ``sigma_k`` COCO's per-keypoint
  sigmas mapped to our 18 keypoints (the neck, which COCO lacks, takes the shoulders' 0.079);
* pairs are matched greedily by descending OKS, and only pairs with OKS >= ``match_oks`` count;
* people agreement = matched pairs / sum over frames of max(people FP32, people other);
  mean OKS = the mean over matched pairs.

Raw outputs are compared too: the largest and mean absolute difference per output tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge.pipeline import parse_views
from edge.inference.specs import ModelSpec, decode

# COCO sigmas (nose .026, eyes .025, ears .035, shoulders .079, elbows .072, wrists .062, hips .107,
# knees .087, ankles .089) in the project keypoint order; the neck takes the shoulders' sigma.
SIGMAS = np.array([.026, .079, .079, .072, .062, .079, .072, .062, .107, .087, .089, .107, .087, .089,
                   .025, .025, .035, .035], np.float64)
MIN_AREA_PX2 = 32.0 * 32.0  # a person's box area is at least this many square pixels (COCO's "small")


def oks(reference: np.ndarray, other: np.ndarray, size_wh: Tuple[int, int]) -> float:
    """OKS of person ``other`` against ``reference``; both (18, 3) normalised x, y, confidence."""
    w, h = size_wh
    found = reference[:, 2] > 0
    if not found.any():
        return 0.0
    ref = reference[found, :2] * (w, h)
    box = ref.max(axis=0) - ref.min(axis=0)
    area = max(float(box[0] * box[1]), MIN_AREA_PX2)
    d2 = np.sum((other[found, :2] * (w, h) - ref) ** 2, axis=1)
    d2 = np.where(other[found, 2] > 0, d2, np.inf)
    return float(np.mean(np.exp(-d2 / (2.0 * area * (2.0 * SIGMAS[found]) ** 2))))


def match_people(reference: np.ndarray, other: np.ndarray, size_wh: Tuple[int, int],
                 match_oks: float = 0.5) -> List[Tuple[int, int, float]]:
    """Greedy OKS matching: ``[(i in reference, j in other, oks)]`` with oks >= match_oks."""
    pairs = sorted(((oks(reference[i], other[j], size_wh), i, j)
                    for i in range(len(reference)) for j in range(len(other))), reverse=True)
    used_i, used_j, out = set(), set(), []
    for score, i, j in pairs:
        if score < match_oks:
            break
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out.append((i, j, score))
    return out


@dataclass
class OutputError:
    max_abs: float = 0.0
    sum_abs: float = 0.0
    count: int = 0
    reference_max_abs: float = 0.0

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.count if self.count else 0.0


@dataclass
class Report:
    frames: int = 0
    people_reference: int = 0
    people_other: int = 0
    matched: int = 0
    possible: int = 0  # sum over frames of max(people reference, people other)
    oks_values: List[float] = field(default_factory=list)
    outputs: Dict[str, OutputError] = field(default_factory=dict)
    groups: Dict[str, "Report"] = field(default_factory=dict)  # the same counts per group of frames

    @property
    def people_agreement(self) -> float:
        return self.matched / self.possible if self.possible else 1.0

    @property
    def mean_oks(self) -> float:
        return float(np.mean(self.oks_values)) if self.oks_values else 1.0

    def passed(self, min_people_agreement: float, min_oks: float) -> bool:
        return self.people_agreement >= min_people_agreement and self.mean_oks >= min_oks

    def add_frame(self, people_reference: int, people_other: int, oks_values: List[float]) -> None:
        self.frames += 1
        self.people_reference += people_reference
        self.people_other += people_other
        self.possible += max(people_reference, people_other)
        self.matched += len(oks_values)
        self.oks_values.extend(oks_values)

    def to_dict(self) -> Dict[str, object]:
        return {
            "frames": self.frames, "people_fp32": self.people_reference, "people_other": self.people_other,
            "matched": self.matched, "people_agreement": round(self.people_agreement, 4),
            "mean_oks": round(self.mean_oks, 4),
            "min_oks": round(min(self.oks_values), 4) if self.oks_values else None,
            "outputs": {name: {"max_abs_error": round(e.max_abs, 5), "mean_abs_error": round(e.mean_abs, 6),
                               "fp32_max_abs": round(e.reference_max_abs, 5)} for name, e in self.outputs.items()},
            "groups": {name: {k: v for k, v in g.to_dict().items() if k not in ("outputs", "groups")}
                       for name, g in self.groups.items()},
        }

    def summary(self) -> str:
        lines = ["verification on %d held-out frames: people FP32 %d, other %d, matched %d -> people agreement "
                 "%.1f%%, mean OKS %.3f" % (self.frames, self.people_reference, self.people_other, self.matched,
                                           100 * self.people_agreement, self.mean_oks)]
        for name, g in self.groups.items():
            lines.append("  %s: %d frames, people FP32 %d, other %d, matched %d -> %.1f%%, mean OKS %.3f"
                         % (name, g.frames, g.people_reference, g.people_other, g.matched, 100 * g.people_agreement,
                            g.mean_oks))
        for name, e in self.outputs.items():
            lines.append("  output %s: max |error| %.4f, mean |error| %.5f (FP32 values up to %.3f)"
                         % (name, e.max_abs, e.mean_abs, e.reference_max_abs))
        return "\n".join(lines)


Runner = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def add_output_errors(errors: Dict[str, OutputError], out_ref: Mapping[str, np.ndarray],
                      out_other: Mapping[str, np.ndarray], ignore_nan: bool = False) -> None:
    """Add one batch's element-wise differences, output by output (those both models gave), to ``errors``.
    ``ignore_nan``: for outputs that are NaN by contract where a part is missing. ValueError when the
    shapes differ."""
    for name in out_ref:
        if name not in out_other:
            continue
        a, b = np.asarray(out_ref[name], np.float32), np.asarray(out_other[name], np.float32)
        if a.shape != b.shape:
            raise ValueError("output %s has shape %s in FP32 but %s in the built model" % (name, a.shape, b.shape))
        err = errors.setdefault(name, OutputError())
        diff = np.abs(a - b)
        if not diff.size:
            continue
        top, total = (np.nanmax, np.nansum) if ignore_nan else (np.max, np.sum)
        err.max_abs = max(err.max_abs, float(top(diff)))
        err.sum_abs += float(total(diff))
        err.count += diff.size
        err.reference_max_abs = max(err.reference_max_abs, float(top(np.abs(a))))


def compare(reference: Runner, other: Runner, batches: Iterable[np.ndarray], spec: ModelSpec,
            input_hw: Tuple[int, int], match_oks: float = 0.5, on_frame: Optional[Callable[[], None]] = None,
            groups: Optional[Sequence[str]] = None) -> Report:
    """Run both models on every frame of ``batches`` ((N, ...) preprocessed inputs) and compare.
    ``groups`` (one name per frame, e.g. its source) adds the same counts per group to the report."""
    report = Report()
    index = 0
    size_wh = (input_hw[1], input_hw[0])
    for batch in batches:
        out_ref, out_other = reference(batch), other(batch)
        add_output_errors(report.outputs, out_ref, out_other)
        parsed_a = parse_views(spec, *decode(spec, out_ref))
        parsed_b = parse_views(spec, *decode(spec, out_other))
        for (people_a, _), (people_b, _) in zip(parsed_a, parsed_b):
            scores = [score for _, _, score in match_people(people_a, people_b, size_wh, match_oks)]
            report.add_frame(len(people_a), len(people_b), scores)
            if groups is not None:
                report.groups.setdefault(groups[index], Report()).add_frame(len(people_a), len(people_b), scores)
            index += 1
            if on_frame is not None:
                on_frame()
    return report
