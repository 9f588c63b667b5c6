#!/usr/bin/env python3
"""Measure what brightening dark frames before the network buys (issue 14, perception: low light).

Runs the real default model (ONNX Runtime, CPU) through the daemon's camera pipeline
(edge.pipeline.CameraPipeline(...).process, default config, ``views.policy: auto``, as
``fallwatch evaluate`` does) over each clip, read with edge.capture.video.VideoReader and sampled
at ``--fps`` frames per second (frames on a grid of 1/fps from the first), once per variant of
``model.low_light``:

* ``never``: every frame as it is;
* ``auto``: frames whose mean luma is below ``--luma`` brightened (the setting under test);
* ``always``: every frame brightened (threshold 255: what the brightening itself does to frames
  ``auto`` leaves alone);
* with ``--darken F``, also ``never`` and ``auto`` on the same clips with every pixel multiplied by
  F (rounded to uint8, like an under-exposed camera: the lights-off case the clips lack).

Prints one markdown table. Fall clips: the share of frames from 1 s after the labelled fall start
(the dataset's labels.csv ``fall_start_s``) to the clip's end in which someone (each clip shows one
person, the one who falls) has a skeleton of at least 6 parts. ADL clips: frames with such a
skeleton, and the most people (any parts) in one frame, out of all sampled frames. Also: the
clip's mean luma and the share of its frames that ``auto`` brightened.

    python scripts/eval_light.py --fps 5 --darken 0.25
    python scripts/eval_light.py --timing     # preprocess ms per frame, dark and bright, never/auto
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.capture.sources import Frame  # noqa: E402
from edge.capture.video import VideoReader  # noqa: E402
from edge.config import load_config  # noqa: E402
from edge.inference.engines import create_engine  # noqa: E402
from edge.inference.model import PoseModel, input_hw, low_light, model_path  # noqa: E402
from edge.inference.preprocess import mean_luma  # noqa: E402
from edge.inference.specs import load_spec  # noqa: E402
from edge.pipeline import CameraPipeline  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CLIPS = ("gmdcsa24/subject2/Fall/12.mp4", "gmdcsa24/subject2/Fall/13.mp4", "gmdcsa24/subject2/Fall/14.mp4",
         "gmdcsa24/subject1/Fall/13.mp4", "upfall/UPFall_S01_A01_T1_C1.mp4", "upfall/UPFall_S01_A05_T1_C1.mp4",
         "gmdcsa24/subject2/ADL/23.mp4")
MIN_PARTS = 6
AFTER_FALL_S = 1.0


@dataclasses.dataclass
class Result:
    frames: int = 0  # frames counted (after the fall for fall clips, all for ADL)
    seen: int = 0  # of those, frames with a skeleton of at least MIN_PARTS parts
    most_people: int = 0
    brightened: int = 0  # sampled frames below the threshold (auto's, in a never run)
    sampled: int = 0
    luma: float = 0.0  # mean over sampled frames


def fall_start(clip: str) -> Optional[float]:
    dataset, name = clip.split("/", 1)
    with open(DATA / dataset / "labels.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["file"] == name:
                return float(row["fall_start_s"]) if row["label"] == "fall" else None
    raise SystemExit("%s is not in %s" % (name, DATA / dataset / "labels.csv"))


def run_clip(path: Path, config, model: PoseModel, fps: float, start: Optional[float], darken: float,
             auto_luma: float) -> Result:
    pipeline = CameraPipeline("light", config, model)
    result, lumas, period, next_t = Result(), [], 1.0 / fps, 0.0
    threshold = model.light.threshold if model.light is not None else auto_luma
    with VideoReader(path) as reader:
        for index, t, image in reader.frames():
            if t < next_t - 1e-6:
                continue
            next_t += period
            if darken != 1.0:
                image = np.clip(np.round(image * darken), 0, 255).astype(np.uint8)
            luma = mean_luma(image)
            lumas.append(luma)
            result.sampled += 1
            result.brightened += int(luma < threshold)
            record, _ = pipeline.process(Frame("light", index, t, t, image))
            parts = (np.asarray(record.keypoints)[..., 2] > 0).sum(axis=-1) if len(record.keypoints) else np.zeros(0)
            result.most_people = max(result.most_people, int(len(parts)))
            if start is None or t >= start + AFTER_FALL_S:
                result.frames += 1
                result.seen += int(bool((parts >= MIN_PARTS).any()))
    result.luma = float(np.mean(lumas)) if lumas else 0.0
    return result


def timing(repeats: int = 50) -> None:
    """Median ms of one upright preprocess at 640x480 and 1280x720, never vs auto, dark and bright frames."""
    from edge.inference.preprocess import LowLight, preprocess

    spec, rng = load_spec("openpose-mobilenet-thin"), np.random.default_rng(0)
    print("| frame | luma | never, ms | auto, ms |")
    print("|---|---|---|---|")
    for h, w in ((480, 640), (720, 1280)):
        for name, frame in (("dark", rng.integers(0, 50, (h, w, 3), dtype=np.uint8)),
                            ("bright", rng.integers(60, 256, (h, w, 3), dtype=np.uint8))):
            cells = []
            for light in (None, LowLight()):
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    preprocess(frame, spec, (368, 432), "stretch", light=light)
                    times.append(time.perf_counter() - started)
                cells.append("%.2f" % (1000 * float(np.median(times))))
            print("| %dx%d | %s (%.0f) | %s |" % (w, h, name, mean_luma(frame), " | ".join(cells)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fps", type=float, default=5.0, help="frames per second sampled from each clip (default 5)")
    p.add_argument("--luma", type=float, default=60.0, help="auto's threshold, mean luma 0..255 (default 60)")
    p.add_argument("--darken", type=float, default=None, help="also run never/auto on clips multiplied by this")
    p.add_argument("--variants", nargs="+", default=["never", "auto", "always"], choices=("never", "auto", "always"),
                   help="never must come before auto (auto reuses never's result when it brightens no frame)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    p.add_argument("clips", nargs="*", default=list(CLIPS), help="clips under ../shared/data (default: the set "
                   "named in the module docstring)")
    p.add_argument("--timing", action="store_true", help="only time preprocess (see timing())")
    args = p.parse_args(argv)
    if args.timing:
        timing()
        return 0
    base = load_config(None, env={})
    if base.views.policy != "auto":
        raise SystemExit("the default views.policy is %s, not auto" % base.views.policy)
    engine = create_engine("onnxruntime", model_path(base), threads=args.threads)
    spec = load_spec(base.model.spec)
    runs: List[Tuple[str, str, float]] = [(v, v, 1.0) for v in args.variants]
    if args.darken is not None:
        runs += [("x%g %s" % (args.darken, v), v, args.darken) for v in ("never", "auto")]
    table: Dict[Tuple[str, str], Result] = {}
    started = time.time()
    for clip in args.clips:
        start = fall_start(clip)
        for name, variant, darken in runs:
            mode = "never" if variant == "never" else "auto"
            luma = 255.0 if variant == "always" else args.luma
            config = dataclasses.replace(base, model=dataclasses.replace(base.model, low_light=mode,
                                                                         low_light_luma=luma))
            model = PoseModel(spec, engine, input_hw(config), config.model.resize, low_light(config))
            plain = "x%g never" % darken if darken != 1.0 else "never"
            if variant == "auto" and (clip, plain) in table and table[clip, plain].brightened == 0:
                # auto brightened none of these frames, so its tensors are never's, bit for bit
                table[clip, name] = dataclasses.replace(table[clip, plain])
                continue
            table[clip, name] = run_clip(DATA / clip, config, model, args.fps, start, darken, args.luma)
            print("%s %s: %.0f s" % (clip, name, time.time() - started), file=sys.stderr)
    names = [r[0] for r in runs]
    print("| clip | kind | mean luma | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for clip in args.clips:
        fall = fall_start(clip) is not None
        cells = []
        for name in names:
            r = table[clip, name]
            share = "%.0f%% (%d/%d)" % (100.0 * r.seen / r.frames, r.seen, r.frames) if r.frames else "-"
            cell = share if fall else "%s, max %d people" % (share, r.most_people)
            if name != "never" and not name.endswith("never"):
                cell += ", %d%% lit" % round(100.0 * r.brightened / max(1, r.sampled))
            cells.append(cell)
        lumas = "%.0f" % table[clip, names[0]].luma
        if args.darken is not None:
            lumas += " / %.0f" % table[clip, names[-1]].luma
        print("| %s | %s | %s | %s |" % (clip, "fall" if fall else "adl", lumas, " | ".join(cells)))
    print("\n%d clips, %g frames/s sampled, auto below mean luma %g; %.0f s" % (len(args.clips), args.fps, args.luma,
                                                                             time.time() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
