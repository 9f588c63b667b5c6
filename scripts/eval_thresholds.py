#!/usr/bin/env python3
"""Thresholds chosen on one dataset, reported on another: is the detector tuned to its clips?

A threshold that only works on the clips it was chosen on is a threshold fitted to those clips.
This chooses the main fall thresholds on the ``--choose`` datasets alone, then reports the chosen
values and the defaults side by side on the ``--report`` datasets, which the choice never saw. Run
it both ways round.

How it chooses (one pass of coordinate search, in the order of ``--params``): for each threshold,
each candidate value (the current value times each of ``--factors``) is scored on the choosing
datasets' cached skeletons, replayed through the real tracker and detector as ``fallwatch
evaluate`` does, at full perception and thinned as poor eyes thin them (``--keep-frames``, each
over ``--seeds`` seeds; see scripts/eval_sparse.py). A candidate with any daily-activity clip
alerting at full perception is out. The score is the share of falls alerted (full and thinned
together) minus twice the share of daily-activity clips alerting when thinned; a tie keeps the
current value, so a threshold moves only when the choosing data asks for it.

    python scripts/eval_thresholds.py --choose ../shared/data/upfall --report ../shared/data/gmdcsa24 \\
        --cache CACHE [--params min_descent_bh ...] [--factors 0.7 1.4] [--keep-frames 0.5 0.3] [--seeds 2]

CACHE is the ``--cache`` folder of ``fallwatch evaluate`` (run it on both datasets first).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge.config import load_config  # noqa: E402
from eval_sparse import Clip, first_fall, load_clips, thin  # noqa: E402

PARAMS = ("min_descent_bh", "min_descent_speed_bh_per_s", "max_head_height_bh", "min_down_s", "floor_lying_s",
          "lying_torso_angle_deg")


@dataclasses.dataclass
class Score:
    falls: int = 0  # alerted, full perception and thinned together
    fall_runs: int = 0
    adl_full: int = 0  # daily-activity clips alerting at full perception
    adl_thin: int = 0  # ... when thinned
    adl_thin_runs: int = 0
    adl_clips: int = 0

    def value(self) -> float:
        if self.adl_full:
            return -np.inf
        return self.falls / max(1, self.fall_runs) - 2.0 * self.adl_thin / max(1, self.adl_thin_runs)

    def text(self) -> str:
        return "falls %d/%d (%.0f%%), ADL alerting %d/%d full, %d/%d thinned" % (
            self.falls, self.fall_runs, 100.0 * self.falls / max(1, self.fall_runs), self.adl_full,
            self.adl_clips, self.adl_thin, self.adl_thin_runs)


def with_fall(config: Any, **values: float) -> Any:
    return dataclasses.replace(config, fall=dataclasses.replace(config.fall, **values))


def score(clips: Sequence[Clip], config: Any, keep_frames: Sequence[float], seeds: int) -> Score:
    s = Score()
    runs = [(None, 0)] + [(kf, seed) for kf in keep_frames for seed in range(seeds)]  # None: full perception
    for kf, seed in runs:
        rng = np.random.default_rng(seed)
        for _, _, label, _, records in clips:
            alerted = first_fall(records if kf is None else thin(records, kf, 1.0, rng), config) is not None
            if label == "fall":
                s.falls += alerted
                s.fall_runs += 1
            elif kf is None:
                s.adl_full += alerted
                s.adl_clips += 1
            else:
                s.adl_thin += alerted
                s.adl_thin_runs += 1
    return s


def choose(clips: Sequence[Clip], config: Any, params: Sequence[str], factors: Sequence[float],
           keep_frames: Sequence[float], seeds: int) -> Tuple[Dict[str, float], List[str]]:
    chosen: Dict[str, float] = {}
    log: List[str] = []
    best = score(clips, config, keep_frames, seeds)
    log.append("defaults: %s" % best.text())
    for name in params:
        current = getattr(config.fall, name)
        for factor in factors:
            value = round(current * factor, 3)
            try:
                candidate = with_fall(config, **dict(chosen, **{name: value}))
            except ValueError as exc:  # out of the setting's range, or breaks a rule
                log.append("%s = %g: not allowed (%s)" % (name, value, exc))
                continue
            s = score(clips, candidate, keep_frames, seeds)
            log.append("%s = %g: %s" % (name, value, s.text()))
            print(log[-1], file=sys.stderr, flush=True)
            if s.value() > best.value():
                best, chosen[name] = s, value
        log.append("-> %s = %g" % (name, chosen.get(name, current)))
        print(log[-1], file=sys.stderr, flush=True)
    return chosen, log


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--choose", type=Path, nargs="+", required=True, help="datasets the thresholds are chosen on")
    ap.add_argument("--report", type=Path, nargs="+", required=True, help="datasets they are reported on")
    ap.add_argument("--cache", type=Path, required=True, help="fallwatch evaluate's skeleton cache folder")
    ap.add_argument("--config", type=Path, help="configuration (default: built-in defaults)")
    ap.add_argument("--params", nargs="+", default=list(PARAMS), help="fall.* thresholds to choose, in order")
    ap.add_argument("--factors", type=float, nargs="+", default=[0.7, 1.4],
                    help="candidate values: the current value times each of these (default: 0.7 1.4)")
    ap.add_argument("--keep-frames", type=float, nargs="+", default=[0.5, 0.3],
                    help="thinned conditions scored besides full perception (default: 0.5 0.3)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per thinned condition (default: 2)")
    ap.add_argument("--max-fps", type=float, default=None, help="as given to fallwatch evaluate (cache key)")
    args = ap.parse_args(argv)
    config = load_config(args.config, env={})
    unknown = [p for p in args.params if not hasattr(config.fall, p)]
    if unknown:
        ap.error("not fall settings: %s" % ", ".join(unknown))
    picking = load_clips(args.choose, args.cache, config, args.max_fps)
    reporting = load_clips(args.report, args.cache, config, args.max_fps)
    chosen, log = choose(picking, config, args.params, args.factors, args.keep_frames, args.seeds)
    names = " + ".join(p.name for p in args.choose)
    others = " + ".join(p.name for p in args.report)
    print("### Chosen on %s, reported on %s\n" % (names, others))
    print("| threshold | default | chosen on %s |" % names)
    print("|---|---|---|")
    for name in args.params:
        print("| %s | %g | %g |" % (name, getattr(config.fall, name), chosen.get(name, getattr(config.fall, name))))
    tuned = with_fall(config, **chosen)
    print("\n| data | thresholds | result (full perception + %s thinned to %s of the frames, %d seeds) |" % (
        "each", ", ".join("%g" % k for k in args.keep_frames), args.seeds))
    print("|---|---|---|")
    for label, clips in (("%s (chosen on)" % names, picking), ("%s (not seen)" % others, reporting)):
        print("| %s | defaults | %s |" % (label, score(clips, config, args.keep_frames, args.seeds).text()))
        print("| %s | chosen | %s |" % (label, score(clips, tuned, args.keep_frames, args.seeds).text()))
    print("\nSearch log:\n")
    for line in log:
        print("- " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
