#!/usr/bin/env python3
"""Time the pose parser on synthetic scenes and compare it with the loop oracle.

    python scripts/bench_parse.py [--runs 300] [--oracle-runs 7] [--seed 0] [--smoothing]

Scenes of 1, 5, 15 and 30 people (random size and orientation, overlapping allowed, noise 0.02)
at BodyPoseNet's map sizes (heatmaps 36x48, PAFs 144x192) and mobilenet_thin's (46x54 both).
Prints medians (ms) of ``edge.parse.parse_poses`` and of the plain-loop oracle
(``tests/parse_oracle.py``) run in the same process, their ratio, and what upsampling the maps to
the network input (TAO's way) would cost before any parsing. ``--smoothing`` instead measures how
many generated people are found with TAO's smoothing (5x5, sigma 3 cells) and lighter ones (the default: 3x3, sigma 0.6),
on scenes of people apart from each other and of people overlapping.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edge.parse import ParseParams, parse_poses  # noqa: E402
from tests.parse_oracle import oracle_parse  # noqa: E402
from tests.scenes import random_scene, render  # noqa: E402

CASES = (
    ("bodyposenet", (36, 48), (144, 192), 8),
    ("openpose-mobilenet-thin", (46, 54), (46, 54), 8),
)


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


def found_fraction(people, keypoints, heat_shape) -> int:
    """Generated people found with >= 90% of their parts at a mean error under half a cell."""
    h, w = heat_shape
    found = 0
    for gt in people:
        visible = gt[:, 2] > 0
        for det in keypoints:
            both = visible & (det[:, 2] > 0)
            if both.sum() >= 0.9 * visible.sum() and np.hypot(
                    (det[both, 0] - gt[both, 0]) * w, (det[both, 1] - gt[both, 1]) * h).mean() < 0.5:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=300, help="timed runs of the parser per scene")
    ap.add_argument("--oracle-runs", type=int, default=7, help="timed runs of the loop oracle per scene")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoothing", action="store_true", help="measure recall under several heatmap smoothings")
    args = ap.parse_args()
    if args.smoothing:
        smoothing_study(args.seed)
        return 0
    print("Python %s, NumPy %s, OpenCV %s, %s" % (platform.python_version(), np.__version__, cv2.__version__,
                                                 platform.machine()))
    print("| maps (heatmaps / PAFs) | people | found | parser median (ms) | oracle median (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(args.seed)
    upsampling = {}
    for spec, heat_shape, paf_shape, stride in CASES:
        for n in (1, 5, 15, 30):
            people = random_scene(rng, n, heat_shape, min_height_cells=8, max_height_cells=24)
            heat, paf = render(people, spec, heat_shape, paf_shape, noise=0.02, rng=rng)
            found = len(parse_poses(heat, paf, spec)[0])
            fast = median_ms(lambda: parse_poses(heat, paf, spec), args.runs)
            slow = median_ms(lambda: oracle_parse(heat, paf, spec), args.oracle_runs)
            print("| %s %dx%d / %dx%d | %d | %d | %.3f | %.1f | %.0fx |" % (
                spec, heat_shape[0], heat_shape[1], paf_shape[0], paf_shape[1], len(people), found, fast, slow,
                slow / fast))
            if n == 5:
                upsampling[spec] = upsample_ms(heat, paf, stride, max(10, args.runs // 10))
    print()
    for spec, ms in upsampling.items():
        print("upsampling %s maps to the input size (cubic) and blurring there: %.2f ms before any peak search"
              % (spec, ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
