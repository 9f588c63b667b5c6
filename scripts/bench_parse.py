#!/usr/bin/env python3
"""Time the pose parser against the loop oracle and tf-pose's C++ pafprocess on synthetic scenes.

    python scripts/bench_parse.py [--runs 300] [--oracle-runs 7] [--scenes 10] [--seed 0]
                                  [--people 1 5 15 30] [--pafprocess-cache DIR] [--no-pafprocess]
    python scripts/bench_parse.py --smoothing [--seed 7]

Rows: scenes of 1, 5, 15 and 30 people (random size 8-24 cells and orientation, overlapping
allowed, noise 0.02) at BodyPoseNet's map sizes (heatmaps 36x48, PAFs 144x192) and
mobilenet_thin's (46x54 both). Per row, people found (returned / generated people matched) are
summed over ``--scenes`` scenes by ``edge.parse.parse_poses``, the plain-loop oracle
(``tests/parse_oracle.py``) and, at mobilenet_thin sizes, tf-pose's ``pafprocess`` fed the maps
in the network's own layout with tf-pose's peak finding at that resolution (its smoothing scaled
to the grid, or the parser's), and tf-pose as it ships (maps upsampled 4x, its 25x25 kernel).
The first scene of a row is timed: the parser, pafprocess plus its peak finding, the peak finding
alone and tf-pose as shipped in turn within each run (``--runs``; medians), the oracle after them.
pafprocess is downloaded with pip and compiled with g++ into ``--pafprocess-cache`` on the first
run (``scripts/tfpose_pafprocess.py``); when that cannot be done its column says why. It is
hardwired to the CMU layout with heatmaps and PAFs on one grid, so BodyPoseNet rows are oracle only.
Also prints what upsampling the maps to the network input (TAO's way) would cost before any
parsing. ``--smoothing`` instead measures how many generated people are found with TAO's
smoothing (5x5, sigma 3 cells) and lighter ones (the default: 3x3, sigma 0.6), on scenes of
people apart from each other and of people overlapping.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edge.inference.specs import ModelSpec, decode, load_spec  # noqa: E402
from edge.parse import DEFAULT_PARAMS, ParseParams, parse_poses  # noqa: E402
import tfpose_pafprocess  # noqa: E402  (scripts/, beside this file)
from tests.parse_oracle import oracle_parse  # noqa: E402
from tests.scenes import random_scene, render  # noqa: E402

CASES = (
    ("bodyposenet", (36, 48), (144, 192), 8),
    ("openpose-mobilenet-thin", (46, 54), (46, 54), 8),
)
PAFPROCESS_SPEC = "openpose-mobilenet-thin"  # pafprocess's CMU layout, heatmaps and PAFs on one grid
# tf-pose smooths maps upsampled 4x with a 25-pixel kernel (nsig 3, square root of the outer
# product: sigma 5.2 pixels); on the stride-8 grid fed here that is 7x7 cells, sigma 1.3 cells.
TFPOSE_BLUR = (7, 1.3)


def median_ms(fn, runs: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def upsample_ms(heat: np.ndarray, paf: np.ndarray, stride: int, runs: int) -> float:
    """Resize heatmaps and PAFs to the network input (cubic) and blur the heatmaps there."""
    h, w = heat.shape[1] * stride, heat.shape[2] * stride
    hwc = np.ascontiguousarray(heat.transpose(1, 2, 0))
    pwc = np.ascontiguousarray(paf.transpose(1, 2, 0))

    def run():
        big = cv2.resize(hwc, (w, h), interpolation=cv2.INTER_CUBIC)
        cv2.GaussianBlur(big, (5, 5), 3.0)
        for c in range(0, pwc.shape[2], 4):  # OpenCV resizes at most 4 channels at a time
            cv2.resize(pwc[:, :, c:c + 4], (w, h), interpolation=cv2.INTER_CUBIC)

    return median_ms(run, runs)


def found_fraction(people, keypoints, heat_shape, tolerance: float = 0.5) -> int:
    """Generated people found with >= 90% of their parts at a mean error under ``tolerance`` cells."""
    h, w = heat_shape
    found = 0
    for gt in people:
        visible = gt[:, 2] > 0
        for det in keypoints:
            both = visible & (det[:, 2] > 0)
            if both.sum() >= 0.9 * visible.sum() and np.hypot(
                    (det[both, 0] - gt[both, 0]) * w, (det[both, 1] - gt[both, 1]) * h).mean() < tolerance:
                found += 1
                break
    return found


def smoothing_study(seed: int) -> None:
    settings = (("5x5 sigma 3 (TAO)", ParseParams(blur_kernel=5, blur_sigma=3.0)),
                ("3x3 sigma 1", ParseParams(blur_kernel=3, blur_sigma=1.0)),
                ("3x3 sigma 0.6 (default)", ParseParams()),
                ("none", ParseParams(blur_kernel=0)))
    print("| maps | people | noise | " + " | ".join(name for name, _ in settings) + " |")
    print("|---|---|---|" + "---|" * len(settings))
    for spec, heat_shape, paf_shape, _ in CASES:
        for separate in (True, False):
            for noise in (0.0, 0.05):
                rng = np.random.default_rng(seed)
                scenes = []
                for _ in range(40):
                    people = random_scene(rng, int(rng.integers(1, 7)), heat_shape, min_height_cells=8,
                                          separate=separate)
                    scenes.append((people,) + render(people, spec, heat_shape, paf_shape, noise=noise, rng=rng))
                total = sum(len(p) for p, _, _ in scenes)
                cells = []
                for _, params in settings:
                    found = sum(found_fraction(p, parse_poses(h, f, spec, params)[0], heat_shape) for p, h, f in scenes)
                    cells.append("%.0f%%" % (100.0 * found / total))
                print("| %s | %d, %s | %.2f | %s |" % (spec, total, "apart" if separate else "overlapping", noise,
                                                       " | ".join(cells)))


def raw_outputs(spec: ModelSpec, heat: np.ndarray, paf: np.ndarray) -> Dict[str, np.ndarray]:
    """The network's own outputs (NHWC, its channel order) that ``decode`` turns into ``heat, paf``."""
    assert spec.output_layout == "NHWC" and spec.heatmaps.tensor == spec.pafs.tensor
    assert tuple(spec.keypoint_map) == tuple(range(18)) and spec.background
    h0, p0 = spec.heatmaps.channels[0], spec.pafs.channels[0]
    raw = np.zeros(heat.shape[1:] + (spec.pafs.channels[1],), dtype=np.float32)
    raw[:, :, h0:h0 + 19] = heat.transpose(1, 2, 0)
    for k, limb in enumerate(spec.limbs):
        raw[:, :, p0 + limb.paf_x] = paf[2 * k]
        raw[:, :, p0 + limb.paf_y] = paf[2 * k + 1]
    outputs = {spec.heatmaps.tensor: raw[None]}
    back = decode(spec, outputs)
    if not (np.array_equal(back[0][0], heat) and np.array_equal(back[1][0], paf)):
        raise AssertionError("raw_outputs is not the inverse of decode for %s" % spec.name)
    return outputs


def cells_to_keypoints(people: np.ndarray, heat_shape) -> np.ndarray:
    """pafprocess's people (x, y in cells, -1 where missing) in the parser's output convention."""
    h, w = heat_shape
    out = np.zeros(people.shape, dtype=np.float32)
    present = people[:, :, 0] >= 0
    out[..., 0] = np.where(present, (people[..., 0] + 0.5) / w, 0)
    out[..., 1] = np.where(present, (people[..., 1] + 0.5) / h, 0)
    out[..., 2] = np.where(present, np.maximum(people[..., 2], 1e-3), 0)
    return out


def interleaved_ms(fns, runs: int) -> List[List[float]]:
    """``[median, 10th percentile]`` ms of each of ``fns``, timed in turn within each run (so load
    swings hit all alike; on a loaded machine the 10th percentile is the steadier figure, as
    preemption lengthens the longer calls more)."""
    for fn in fns:
        fn()  # warm up
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [[statistics.median(t) * 1e3, float(np.percentile(t, 10)) * 1e3] for t in times]


def found_counts(people, keypoints, heat_shape) -> np.ndarray:
    """``(returned, matched within 0.5 cell, within 1 cell)`` (matched: see found_fraction)."""
    return np.array([len(keypoints), found_fraction(people, keypoints, heat_shape),
                     found_fraction(people, keypoints, heat_shape, tolerance=1.0)])


class TfPose:
    """tf-pose's pafprocess on one scene's maps in the network's layout, three ways."""

    def __init__(self, paf_proc, spec: ModelSpec, heat: np.ndarray, paf: np.ndarray) -> None:
        raw = raw_outputs(spec, heat, paf)[spec.heatmaps.tensor][0]
        h0, p0, p1 = spec.heatmaps.channels[0], spec.pafs.channels[0], spec.pafs.channels[1]
        self.heat = np.ascontiguousarray(raw[:, :, h0:h0 + 19])
        self.paf = np.ascontiguousarray(raw[:, :, p0:p1])
        self.proc = paf_proc
        self.shape = heat.shape[1:]

    def peaks(self) -> np.ndarray:
        return tfpose_pafprocess.tfpose_peaks(self.heat, *TFPOSE_BLUR)

    def run(self, blur=TFPOSE_BLUR):
        """Peaks on the maps as they are (tf-pose's smoothing by default), then pafprocess."""
        return self.proc(tfpose_pafprocess.tfpose_peaks(self.heat, *blur), self.heat, self.paf)

    def shipped(self):
        """What tf-pose itself runs: maps upsampled 4x, its 25x25 kernel, then pafprocess."""
        return self.proc(*tfpose_pafprocess.tfpose_shipped(self.heat, self.paf, 4))

    def keypoints(self, how: str) -> np.ndarray:
        if how == "shipped":
            return cells_to_keypoints(self.shipped()[0], (self.shape[0] * 4, self.shape[1] * 4))
        blur = TFPOSE_BLUR if how == "tf-pose blur" else (DEFAULT_PARAMS.blur_kernel, DEFAULT_PARAMS.blur_sigma)
        return cells_to_keypoints(self.run(blur)[0], self.shape)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="pafprocess is built once into --pafprocess-cache (see "
                                        "scripts/tfpose_pafprocess.py); it is never part of the product.")
    ap.add_argument("--runs", type=int, default=300, help="timed runs of the parser and of pafprocess per row")
    ap.add_argument("--oracle-runs", type=int, default=7, help="timed runs of the loop oracle per row")
    ap.add_argument("--scenes", type=int, default=10,
                    help="scenes per row whose people are counted (the first one is timed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--people", type=int, nargs="+", default=[1, 5, 15, 30], help="people per scene (rows)")
    ap.add_argument("--pafprocess-cache", type=Path, default=REPO / "out" / "pafprocess",
                    help="where tf-pose's pafprocess is downloaded and built (default: out/pafprocess)")
    ap.add_argument("--no-pafprocess", action="store_true", help="leave tf-pose's pafprocess out")
    ap.add_argument("--smoothing", action="store_true", help="measure recall under several heatmap smoothings")
    args = ap.parse_args()
    if args.smoothing:
        smoothing_study(args.seed)
        return 0
    paf_proc = None
    if args.no_pafprocess:
        paf_missing = "not run (--no-pafprocess)"
    else:
        try:
            paf_proc = tfpose_pafprocess.load(args.pafprocess_cache, log=lambda m: print(m, file=sys.stderr))
            paf_missing = ""
        except tfpose_pafprocess.Unavailable as exc:
            paf_missing = "pafprocess: not available (%s)" % exc
            print(paf_missing, file=sys.stderr)
    print("Python %s, NumPy %s, OpenCV %s, %s; load average %s" % (
        platform.python_version(), np.__version__, cv2.__version__, platform.machine(), _loadavg()))
    print("found, summed over %d scenes per row: people returned / generated people matched (>= 90%% of parts, "
          "mean error < 0.5 cell) / matched within 1 cell. pafprocess is fed peaks found with tf-pose's smoothing "
          "(%dx%d, sigma %.1f cells) or with the parser's (%dx%d, sigma %.1f); times: medians on the first scene (ratios also of 10th percentiles)"
          % (args.scenes, TFPOSE_BLUR[0], TFPOSE_BLUR[0], TFPOSE_BLUR[1], DEFAULT_PARAMS.blur_kernel,
             DEFAULT_PARAMS.blur_kernel, DEFAULT_PARAMS.blur_sigma))
    ways = ("parser", "oracle", "tf-pose blur", "parser's blur", "shipped")
    print("| maps (heatmaps / PAFs) | people | found: parser | found: oracle | found: pafprocess, tf-pose blur "
          "| found: pafprocess, parser's blur | parser (ms) | oracle (ms) | pafprocess + peaks (ms) "
          "| of which peaks (ms) | oracle / parser | **parser / (pafprocess + peaks)** "
          "| same, 10th percentiles | found: tf-pose as shipped (4x maps) | tf-pose as shipped (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(args.seed)
    upsampling = {}
    for spec_name, heat_shape, paf_shape, stride in CASES:
        spec = load_spec(spec_name)
        with_paf = paf_proc is not None and spec_name == PAFPROCESS_SPEC
        for n in args.people:
            found = {way: np.zeros(3, dtype=int) for way in ways}
            generated = 0
            for i in range(max(1, args.scenes)):
                people = random_scene(rng, n, heat_shape, min_height_cells=8, max_height_cells=24)
                maps = render(people, spec_name, heat_shape, paf_shape, noise=0.02, rng=rng)
                generated += len(people)
                found["parser"] += found_counts(people, parse_poses(maps[0], maps[1], spec_name)[0], heat_shape)
                found["oracle"] += found_counts(people, oracle_parse(maps[0], maps[1], spec_name)[0], heat_shape)
                if with_paf:
                    tp = TfPose(paf_proc, spec, *maps)
                    for way in ways[2:]:
                        found[way] += found_counts(people, tp.keypoints(way), heat_shape)
                if i == 0:
                    heat, paf = maps
                    timed = tp if with_paf else None
            cells = {way: "%d / %d / %d" % tuple(c) for way, c in found.items()}
            row = ["%s %dx%d / %dx%d" % (spec_name, heat_shape[0], heat_shape[1], paf_shape[0], paf_shape[1]),
                   "%d (%d)" % (n, generated), cells["parser"], cells["oracle"]]
            fns = [lambda: parse_poses(heat, paf, spec_name)]
            if timed is not None:
                fns += [timed.run, timed.peaks, timed.shipped]
                row += [cells["tf-pose blur"], cells["parser's blur"]]
            else:
                row += [paf_missing if spec_name == PAFPROCESS_SPEC else
                        "n/a: pafprocess reads heatmaps and PAFs on one grid, in the CMU layout", "-"]
            times = interleaved_ms(fns, args.runs)
            slow = median_ms(lambda: oracle_parse(heat, paf, spec_name), args.oracle_runs)
            row += ["%.3f" % times[0][0], "%.1f" % slow]
            if timed is not None:
                row += ["%.3f" % times[1][0], "%.3f" % times[2][0], "%.0fx" % (slow / times[0][0]),
                        "**%.2f**" % (times[0][0] / times[1][0]), "%.2f" % (times[0][1] / times[1][1]),
                        cells["shipped"], "%.2f" % times[3][0]]
            else:
                row += ["-", "-", "%.0fx" % (slow / times[0][0]), "-", "-", "-", "-"]
            print("| " + " | ".join(row) + " |", flush=True)
            if n == 5:
                upsampling[spec_name] = upsample_ms(heat, paf, stride, max(10, args.runs // 10))
    print()
    for spec_name, ms in upsampling.items():
        print("upsampling %s maps to the input size (cubic) and blurring there: %.2f ms before any peak search"
              % (spec_name, ms))
    print("load average at the end: %s" % _loadavg())
    return 0


def _loadavg() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except (AttributeError, OSError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
