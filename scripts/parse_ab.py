#!/usr/bin/env python3
"""Compare edge/parse.py with its version at a git revision: same output, and how much faster.

    python scripts/parse_ab.py REV [--scenes 300] [--runs 200] [--seed 1]

Imports ``edge/parse.py`` as it is at ``REV`` (``git show``) beside the working copy's, then
1. parses ``--scenes`` varied synthetic scenes (``tests/scenes.py``: 0-30 people of 3-24 cells,
   occlusion, noise up to 0.2, NaN / inf / huge / float64 / float16 maps, all three specs, several
   ``ParseParams``) with both and exits 1 at the first keypoint or score that differs in any bit;
2. times both in turn within each run (``--runs``) on the scenes of ``scripts/bench_parse.py``
   (1, 5, 15, 30 people at both map sizes) and prints the 10th percentiles and medians.
For speed-ups that must not change a single output (e.g. while an evaluation of the current
parser's skeletons is running).
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import edge.parse as NEW  # noqa: E402
from tests.scenes import random_scene, render  # noqa: E402

CASES = (("openpose-mobilenet-thin", (46, 54), (46, 54)), ("bodyposenet", (36, 48), (144, 192)),
         ("trt_pose", (56, 56), (56, 56)))
PARAMS = ({}, {"blur_kernel": 5, "blur_sigma": 3.0}, {"blur_kernel": 0}, {"refine_peaks": False},
          {"max_peaks_per_part": 3}, {"paf_samples": 3}, {"paf_samples": 2, "paf_min_fraction": 0.0},
          {"paf_min_fraction": 1.0}, {"paf_samples": 25, "paf_min_fraction": 0.5})


def load_old(rev: str, tmp: Path):
    source = subprocess.run(["git", "show", "%s:edge/parse.py" % rev], cwd=str(REPO), check=True,
                            stdout=subprocess.PIPE).stdout
    path = tmp / "parse_at_rev.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("parse_at_rev", str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules["parse_at_rev"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def same_output(old, scenes: int, seed: int) -> int:
    """Parses compared; raises SystemExit naming the first scene whose output differs."""
    rng = np.random.default_rng(seed)
    compared = 0
    for i in range(scenes):
        name, hs, ps = CASES[i % len(CASES)]
        n = int(rng.choice([0, 1, 3, 5, 15, 30]))
        people = random_scene(rng, n, hs, min_height_cells=float(rng.uniform(3, 10)), max_height_cells=24,
                              occlude=float(rng.choice([0.0, 0.2])))
        heat, paf = render(people, name, hs, ps, noise=float(rng.choice([0, 0.02, 0.05, 0.2])), rng=rng)
        damage = rng.random()
        if damage < 0.1:
            heat[rng.integers(0, 18), rng.integers(0, hs[0]), rng.integers(0, hs[1])] = np.nan
            paf[rng.integers(0, paf.shape[0]), rng.integers(0, ps[0]), rng.integers(0, ps[1])] = np.inf
        elif damage < 0.15:
            heat, paf = heat * 1e7, paf * 1e7
        elif damage < 0.2:
            heat, paf = heat.astype(np.float64), paf.astype(np.float16)
        for j, fields in enumerate(PARAMS):
            if j and rng.random() < 0.6:
                continue
            a = old.parse_poses(heat, paf, name, old.ParseParams(**fields))
            b = NEW.parse_poses(heat, paf, name, NEW.ParseParams(**fields))
            if not (a[0].shape == b[0].shape and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])):
                raise SystemExit("DIFFERENT output: scene %d (%s, %d people, params %r)" % (i, name, n, fields))
            compared += 1
    return compared


def timings(old, rev: str, runs: int) -> None:
    rng = np.random.default_rng(0)  # bench_parse's scenes (its --seed 0)
    print("| maps | people | %s p10 (ms) | working copy p10 (ms) | new / old (p10) | new / old (median) |" % rev)
    print("|---|---|---|---|---|---|")
    for name, hs, ps in ((CASES[1][0], CASES[1][1], CASES[1][2]), CASES[0]):
        for n in (1, 5, 15, 30):
            people = random_scene(rng, n, hs, min_height_cells=8, max_height_cells=24)
            heat, paf = render(people, name, hs, ps, noise=0.02, rng=rng)
            fns = (lambda: old.parse_poses(heat, paf, name), lambda: NEW.parse_poses(heat, paf, name))
            times = ([], [])
            for fn in fns:
                fn()
            for _ in range(runs):
                for fn, t in zip(fns, times):
                    start = time.perf_counter()
                    fn()
                    t.append(time.perf_counter() - start)
            p10 = [float(np.percentile(t, 10)) * 1e3 for t in times]
            med = [float(np.median(t)) * 1e3 for t in times]
            print("| %s | %d | %.3f | %.3f | %.2f | %.2f |" % (name, n, p10[0], p10[1], p10[1] / p10[0],
                                                             med[1] / med[0]), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev", help="git revision whose edge/parse.py is the reference")
    ap.add_argument("--scenes", type=int, default=300, help="varied scenes whose outputs must be identical")
    ap.add_argument("--runs", type=int, default=200, help="timed runs of each parser per scene")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.rev, Path(tmp))
        print("identical output on %d parses of %d scenes" % (same_output(old, args.scenes, args.seed),
                                                                args.scenes), flush=True)
        if args.runs > 0:
            timings(old, args.rev, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
