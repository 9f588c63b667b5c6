#!/usr/bin/env python3
"""Fall rules against sparse eyes: the recorded skeletons of labelled clips, thinned out, replayed.

In a dark room, a far corner or a low-resolution camera the network sees the person in only some
frames, and then often with 4 or 5 parts instead of 15. This replays the skeleton JSONL that
``fallwatch evaluate`` cached for each clip through the real tracker and fall detector (edge.replay,
as ``fallwatch replay`` does), after thinning it the way poor perception does, deterministically
from a seed:

* ``--keep-frames P``: each frame's people are kept with probability P (else the frame is empty);
* ``--keep-parts Q``: each part of a kept person is kept with probability Q;
* ``--after-fall-only``: thin only the frames from the labelled fall start on (the eyes fail on the
  person lying on the floor, not on the person walking in).

It prints, for each setting and over ``--seeds`` seeds, the share of fall clips alerted before
their end and the share of daily-activity clips with any alert, per dataset and overall. Nothing
here tunes anything: it measures how much of the evidence the rules need.

    python scripts/eval_sparse.py ../shared/data/gmdcsa24 ../shared/data/upfall --cache CACHE \\
        [--keep-frames 1 0.5 0.3] [--keep-parts 1 0.7] [--seeds 5] [--after-fall-only]

CACHE is the ``--cache`` folder of ``fallwatch evaluate`` (run it first to fill it).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import load_config  # noqa: E402
from edge.evaluate import EventList, skeleton_key  # noqa: E402
from edge.replay import read_skeletons, replay_skeletons  # noqa: E402


def thin(records: Sequence[Dict[str, Any]], keep_frames: float, keep_parts: float, rng: np.random.Generator,
         from_t: float = -np.inf) -> List[Dict[str, Any]]:
    """The records with people dropped (whole frames) and parts dropped (set to 0, 0, 0) at random
    from time ``from_t`` on."""
    out = []
    for record in records:
        record = dict(record)
        if record["t"] >= from_t:
            if rng.random() >= keep_frames:
                record["people"] = []
            else:
                people = []
                for person in record["people"]:
                    kp = np.asarray(person["keypoints"], np.float64)
                    drop = rng.random(len(kp)) >= keep_parts
                    kp[drop] = 0.0
                    people.append(dict(person, keypoints=kp.tolist()))
                record["people"] = people
        out.append(record)
    return out


def first_fall(records: Sequence[Dict[str, Any]], config: Any) -> Optional[float]:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
        path = fh.name
    sink = EventList()
    try:
        replay_skeletons(path, config, sink)
    finally:
        Path(path).unlink()
    falls = [e["t"] for e in sink.events if e["type"] == "fall_detected"]
    return falls[0] if falls else None


Clip = Tuple[str, str, str, Optional[float], List[Dict[str, Any]]]


def load_clips(datasets: Sequence[Path], cache: Path, config: Any, max_fps: Optional[float] = None,
               any_key: bool = False, skip_missing: bool = False) -> List[Clip]:
    """Each labelled clip's cached skeletons: (dataset, file, label, fall start or None, records)."""
    clips = []
    for folder in datasets:
        with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                video = folder / row["file"]
                stem = row["file"].replace("/", "_").rsplit(".", 1)[0]
                jsonl = cache / ("%s-%s.jsonl" % (stem, skeleton_key(video, config, max_fps)))
                if not jsonl.is_file() and any_key:
                    found = sorted(cache.glob("%s-*.jsonl" % stem), key=lambda p: p.stat().st_mtime)
                    jsonl = found[-1] if found else jsonl
                if not jsonl.is_file() and skip_missing:
                    print("skipped %s: no cached skeletons" % row["file"], file=sys.stderr)
                    continue
                if not jsonl.is_file():
                    raise SystemExit("%s: no cached skeletons (%s); run fallwatch evaluate %s --cache %s first"
                                     % (row["file"], jsonl.name, folder, cache))
                start = float(row["fall_start_s"]) if row["label"] == "fall" else None
                clips.append((folder.name, row["file"], row["label"], start,
                              [record for _, record in read_skeletons(jsonl)]))
    return clips


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="+", type=Path, help="folders with labels.csv (as for fallwatch evaluate)")
    ap.add_argument("--cache", type=Path, required=True, help="fallwatch evaluate's skeleton cache folder")
    ap.add_argument("--config", type=Path, help="configuration (default: built-in defaults)")
    ap.add_argument("--keep-frames", type=float, nargs="+", default=[1.0, 0.5, 0.3])
    ap.add_argument("--keep-parts", type=float, nargs="+", default=[1.0, 0.7])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--after-fall-only", action="store_true", help="thin only from the labelled fall start on")
    ap.add_argument("--max-fps", type=float, default=None, help="as given to fallwatch evaluate (cache key)")
    ap.add_argument("--skip-missing", action="store_true", help="leave out clips without cached skeletons")
    ap.add_argument("--any-key", action="store_true",
                    help="use a clip's newest cached skeletons even when another version of the code made them")
    args = ap.parse_args(argv)
    config = load_config(args.config, env={})
    clips = load_clips(args.datasets, args.cache, config, args.max_fps, args.any_key, args.skip_missing)
    print("| keep frames | keep parts | dataset | falls alerted | ADL clips alerting |")
    print("|---|---|---|---|---|")
    for kf in args.keep_frames:
        for kp in args.keep_parts:
            seeds = range(args.seeds) if (kf < 1 or kp < 1) else range(1)
            tally: Dict[str, List[int]] = {}
            for seed in seeds:
                rng = np.random.default_rng(seed)
                for dataset, _, label, start, records in clips:
                    frm = start if (args.after_fall_only and start is not None) else -np.inf
                    alert = first_fall(thin(records, kf, kp, rng, frm), config)
                    t = tally.setdefault(dataset, [0, 0, 0, 0])
                    if label == "fall":
                        t[0] += alert is not None
                        t[1] += 1
                    else:
                        t[2] += alert is not None
                        t[3] += 1
            total = [sum(v[i] for v in tally.values()) for i in range(4)]
            for name, t in list(tally.items()) + [("all", total)]:
                print("| %.2f | %.2f | %s | %d/%d (%.0f%%) | %d/%d |" % (
                    kf, kp, name, t[0], t[1], 100.0 * t[0] / max(1, t[1]), t[2], t[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
