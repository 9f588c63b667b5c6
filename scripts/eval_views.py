#!/usr/bin/env python3
"""Measure what the rotated views buy on the real GMDCSA24 clips (issue 9).

Runs the real default model (ONNX Runtime, CPU) through the daemon's camera pipeline
(edge.pipeline: its views, preprocess, engine, decode, parse, merge and track stages) over every
clip of ``labels.csv`` at a sampled frame rate, in every view (upright, 90 cw, 90 ccw) and in
each resize mode, and caches the
parsed people per frame and view (``out/views_cache/`` by default), so that re-running with other
policy thresholds costs no inference. Then it replays each clip through the view policy and the
real tracker, frame by frame in time order, exactly as the daemon would (the policy picks the
views of frame k from the tracks after frame k-1; people of the views it picked are merged), for
the policies ``never``, ``auto`` and ``always``, and prints:

* per fall clip: the fraction of frames at or after the fall start (labels.csv ``fall_start_s``)
  with a skeleton of at least 6 parts (each clip shows one person: the one who falls), and the
  engine views per frame, also for ``auto`` as it was before issue 17 (every rotated view, and
  ``hold_s`` even after the person stood up: ``release_upright_deg=0 recheck_s=0``);
* per ADL clip: views per frame, the largest number of people in one frame after merging (one
  person is visible), and the fraction of frames with a skeleton of at least 6 parts;
* letterbox against stretch: people with at least 6 parts per frame, upright view and merged.

    python scripts/eval_views.py [--data ../shared/data/gmdcsa24] [--labels fall adl] [--fps 10]
                                 [--modes letterbox stretch] [--json out/views.json]
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.capture.sources import Frame  # noqa: E402
from edge.capture.video import VideoError, VideoReader  # noqa: E402
from edge.config import load_config  # noqa: E402
from edge.inference.model import PoseModel  # noqa: E402
from edge.inference.specs import load_spec  # noqa: E402
from edge.inference.views import ViewsConfig  # noqa: E402
from edge.pipeline import CameraPipeline, InferenceJob, merge_views, parse_views  # noqa: E402
from edge.track import TrackerConfig  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "gmdcsa24"
MODEL = REPO / "models" / "openpose-mobilenet-thin" / "mobilenet_thin_368x432.onnx"
INPUT_HW = (368, 432)
ALL_ROTATIONS = (0, 90, -90)
MIN_PARTS = 6  # "a skeleton" in the figures: a person with at least this many parts
# the policies measured: name -> ViewsConfig fields (auto_all_views: auto as it was before issue 17)
POLICIES: Dict[str, Dict[str, Any]] = {
    "never": {"policy": "never"}, "auto_all_views": {"policy": "auto", "release_upright_deg": 0, "recheck_s": 0},
    "auto": {"policy": "auto"}, "always": {"policy": "always"}}


@dataclasses.dataclass(frozen=True)
class Clip:
    file: str  # relative to the data folder
    label: str  # fall | adl
    fall_start_s: Optional[float]
    description: str


def read_labels(data: Path = DATA) -> List[Clip]:
    with open(data / "labels.csv", newline="", encoding="utf-8") as fh:
        return [Clip(r["file"], r["label"], float(r["fall_start_s"]) if r["fall_start_s"] else None,
                     r["description"]) for r in csv.DictReader(fh)]


def sampled_frames(path: Path, fps: float) -> Iterator[Tuple[int, float, np.ndarray]]:
    """``(index, t seconds, BGR frame)`` of the frames of a video kept at about ``fps`` (all when 0):
    a frame is kept when its time reaches the next multiple of 1/fps after the last kept one."""
    next_t = 0.0
    try:
        with VideoReader(path) as reader:
            for index, t, frame in reader.frames():
                if fps <= 0 or t >= next_t - 1e-6:
                    yield index, t, frame
                    while fps > 0 and next_t <= t + 1e-6:
                        next_t += 1.0 / fps
    except VideoError as exc:
        raise SystemExit(str(exc)) from None


@dataclasses.dataclass
class FrameViews:
    """One sampled frame: its time, size (width, height), and per rotation the parser's people
    (input coordinates) and the view's transform."""

    index: int
    t: float
    size: Tuple[int, int]
    people: Dict[int, Tuple[np.ndarray, np.ndarray]]
    transforms: Dict[int, Any]
    image: Optional[np.ndarray] = None  # kept when views are run on demand (see replay's runner)


class ViewRunner:
    """Runs the model on the views of frames through a camera pipeline's stages, remembering every
    (clip, frame, rotation) it has parsed."""

    def __init__(self, engine, mode: str, spec_name: str = "openpose-mobilenet-thin") -> None:
        self.engine, self.mode, self.spec = engine, mode, load_spec(spec_name)
        self.pipeline = CameraPipeline("eval", load_config(None, env={}), PoseModel(self.spec, engine, INPUT_HW, mode),
                                       view_policy=False)
        self.memo: Dict[Tuple[str, int, int], Tuple[np.ndarray, np.ndarray]] = {}
        self.inferences = 0

    def people(self, clip: str, index: int, frame: np.ndarray, rotations: Sequence[int]
               ) -> Tuple[Dict[int, Tuple[np.ndarray, np.ndarray]], Dict[int, Any]]:
        job = self.pipeline.prepare(Frame("eval", index, 0.0, 0.0, frame), rotations)
        todo = [r for r in rotations if (clip, index, r) not in self.memo]
        if todo:
            rows = [i for i, r in enumerate(rotations) if r in todo]
            part = InferenceJob(job.frame, job.batch[rows], tuple(job.transforms[i] for i in rows), tuple(todo))
            parsed = parse_views(self.spec, *self.pipeline.decode(self.pipeline.infer(part)))
            self.inferences += len(todo)
            for r, people in zip(todo, parsed):
                self.memo[(clip, index, r)] = people
        return ({r: self.memo[(clip, index, r)] for r in rotations}, dict(zip(rotations, job.transforms)))


def load_views(runner: ViewRunner, clip: Clip, fps: float, rotations: Sequence[int] = ALL_ROTATIONS,
               data: Path = DATA) -> List[FrameViews]:
    """Every sampled frame of ``clip`` with the people of each of ``rotations`` (none: the frames
    only, for :func:`replay` to run the views its policy asks for)."""
    out = []
    for index, t, frame in sampled_frames(data / clip.file, fps):
        people, transforms = runner.people(clip.file, index, frame, rotations) if rotations else ({}, {})
        out.append(FrameViews(index, t, (frame.shape[1], frame.shape[0]), people, transforms,
                              None if rotations else frame))
    return out


def _cache_file(cache: Path, clip: Clip, mode: str, fps: float) -> Path:
    stat = MODEL.stat()
    parser = hashlib.sha1((REPO / "edge" / "parse.py").read_bytes()).hexdigest()  # the parser's code and defaults
    key = "%s|%s|%s|%d|%d|%s" % (clip.file, mode, fps, stat.st_size, int(stat.st_mtime), parser)
    return cache / ("%s_%s_%s.npz" % (clip.file.replace("/", "_").replace(".mp4", ""), mode,
                                      hashlib.sha1(key.encode()).hexdigest()[:10]))


def cached_views(runner: ViewRunner, clip: Clip, fps: float, cache: Path) -> List[FrameViews]:
    """:func:`load_views` for all rotations, read from / written to an npz in ``cache``."""
    path = _cache_file(cache, clip, runner.mode, fps)
    if path.is_file():
        z = np.load(path)
        frames = []
        for k, (index, t, w, h) in enumerate(z["frames"].tolist()):
            people = {r: (z["kp_%d_%d" % (k, r)], z["sc_%d_%d" % (k, r)]) for r in ALL_ROTATIONS}
            frames.append(FrameViews(int(index), float(t), (int(w), int(h)), people, {}))
        blank = np.zeros((frames[0].size[1], frames[0].size[0], 3), np.uint8) if frames else None
        transforms = runner.pipeline.prepare(Frame("eval", 0, 0.0, 0.0, blank), ALL_ROTATIONS).transforms \
            if frames else ()
        for f in frames:
            f.transforms = dict(zip(ALL_ROTATIONS, transforms))
        return frames
    frames = load_views(runner, clip, fps)
    arrays = {"frames": np.array([(f.index, f.t, f.size[0], f.size[1]) for f in frames], np.float64)}
    for k, f in enumerate(frames):
        for r in ALL_ROTATIONS:
            arrays["kp_%d_%d" % (k, r)], arrays["sc_%d_%d" % (k, r)] = f.people[r]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return frames


@dataclasses.dataclass
class ClipResult:
    frames: int
    views: int
    post_frames: int  # frames at or after the fall start (fall clips)
    post_found: int  # ... with a skeleton of >= MIN_PARTS parts
    found: int  # frames with a skeleton of >= MIN_PARTS parts
    max_people: int  # most people in one frame after merging
    multi_frames: int  # frames with more than one skeleton after merging (each clip shows one person)
    people6: int  # people with >= MIN_PARTS parts, summed over frames
    extra_frames: int
    reasons: Dict[str, int]  # frames with extra views by the policy's reason (ViewStats.reasons)

    @property
    def views_per_frame(self) -> float:
        return self.views / max(1, self.frames)


def replay(frames: Sequence[FrameViews], params: ViewsConfig, fall_start_s: Optional[float] = None,
           tracker_params: TrackerConfig = TrackerConfig(), runner: Optional[ViewRunner] = None,
           clip: str = "") -> ClipResult:
    """Drive a camera pipeline's merge and track stages (the real tracker, fall detector and view
    policy) through a clip's frames in time order. Views a frame lacks are run by ``runner`` on the
    frame's image (only those the policy asks for)."""
    config = dataclasses.replace(load_config(None, env={}), views=params, tracker=tracker_params)
    pipeline = CameraPipeline("eval", config, view_policy=True)
    policy = pipeline.views
    post = post_found = found = max_people = people6 = multi = 0
    for f in frames:
        rotations = policy.views_for(f.t)
        missing = [r for r in rotations if r not in f.people]
        if missing and runner is not None and f.image is not None:
            people, transforms = runner.people(clip, f.index, f.image, missing)
            f.people.update(people)
            f.transforms.update(transforms)
        elif missing:
            raise ValueError("frame %d has no people for rotation(s) %s" % (f.index, missing))
        merged = merge_views([f.people[r] for r in rotations], [f.transforms[r] for r in rotations], rotations,
                             f.size, params)
        pipeline.track(merged, f.t, f.t, f.size)
        kps = merged.keypoints
        parts = (kps[..., 2] > 0).sum(axis=1)
        hit = bool((parts >= MIN_PARTS).any())
        found += hit
        people6 += int((parts >= MIN_PARTS).sum())
        max_people = max(max_people, len(kps))
        multi += len(kps) > 1
        if fall_start_s is not None and f.t >= fall_start_s:
            post += 1
            post_found += hit
    return ClipResult(len(frames), policy.stats.views, post, post_found, found, max_people, multi, people6,
                      policy.stats.extra_frames, dict(policy.stats.reasons))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="a dataset folder: labels.csv (file, label, fall_start_s, "
                    "description) and the clips; default: gmdcsa24")
    ap.add_argument("--labels", nargs="+", default=["fall", "adl"], choices=["fall", "adl"],
                    help="which clips of labels.csv to measure")
    ap.add_argument("--fps", type=float, default=10.0, help="frames per second sampled from each clip (0 = all)")
    ap.add_argument("--modes", nargs="+", default=["letterbox", "stretch"], help="resize modes to measure")
    ap.add_argument("--cache", type=Path, default=REPO / "out" / "views_cache", help="cache of parsed people")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = library default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override views settings (ViewsConfig fields) for auto, e.g. hold_s=2 suspicious_torso_angle_deg=45")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    ap.add_argument("--bench", type=int, default=0, metavar="N",
                    help="also time one frame with 1 view and with 3 views (preprocess + engine + parse + merge), "
                         "median of N runs each, and print ms per frame")
    args = ap.parse_args(argv)

    from edge.inference.engines.onnxruntime import OnnxRuntimeEngine

    overrides: Dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        kind = type(getattr(ViewsConfig(), key))
        overrides[key] = kind(value)
    clips = [c for c in read_labels(args.data) if c.label in args.labels]
    engine = OnnxRuntimeEngine(MODEL, threads=args.threads)
    report: Dict[str, Any] = {"fps": args.fps, "min_parts": MIN_PARTS, "auto": dataclasses.asdict(
        ViewsConfig(**overrides)), "modes": {}}
    for mode in args.modes:
        runner = ViewRunner(engine, mode)
        started = time.perf_counter()
        views = {c.file: cached_views(runner, c, args.fps, args.cache) for c in clips}
        if runner.inferences:
            print("[%s] %d inferences in %.0f s" % (mode, runner.inferences, time.perf_counter() - started))
        rows: Dict[str, Dict[str, Any]] = {}
        for policy in POLICIES:
            params = ViewsConfig(**dict(overrides, **POLICIES[policy]))
            for c in clips:
                r = replay(views[c.file], params, c.fall_start_s)
                rows.setdefault(c.file, {"label": c.label, "frames": r.frames})[policy] = dataclasses.asdict(r)
        report["modes"][mode] = rows
        print_mode(mode, clips, rows)
    if args.bench:
        report["bench_ms"] = bench(engine, args.modes[0], args.bench, args.data / clips[0].file)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def bench(engine, mode: str, runs: int, video: Path) -> Dict[str, float]:
    """Median milliseconds per frame with 1 and with 3 views, everything from the BGR frame to the
    merged people (the camera pipeline's prepare, infer, decode, parse and merge stages)."""
    pipeline = CameraPipeline("bench", load_config(None, env={}),
                              PoseModel(load_spec("openpose-mobilenet-thin"), engine, INPUT_HW, mode), view_policy=False)
    _, _, image = next(sampled_frames(video, 1.0))
    frame = Frame("bench", 0, 0.0, 0.0, image)
    out = {}
    for rotations in ((0,), ALL_ROTATIONS):
        times = []
        for _ in range(runs + 1):  # the first run warms up
            start = time.perf_counter()
            job = pipeline.prepare(frame, rotations)
            pipeline.find_people(job, pipeline.infer(job))
            times.append(time.perf_counter() - start)
        out["%d_views" % len(rotations)] = round(1000 * float(np.median(times[1:])), 1)
    print("\n%s, %s: median ms per frame over %d runs: 1 view %.1f, 3 views %.1f" % (
        video.name, mode, runs, out["1_views"], out["3_views"]))
    return out


def _pct(a: int, b: int) -> str:
    return "%5.1f%% (%d/%d)" % (100.0 * a / b, a, b) if b else "n/a"


def print_mode(mode: str, clips: Sequence[Clip], rows: Dict[str, Dict[str, Any]]) -> None:
    policies = ("never", "auto_all_views", "auto", "always")
    print("\n== resize %s" % mode)
    print("| fall clip | post-fall frames | never | auto before issue 17 | auto | always | views/frame: auto before "
          "issue 17, auto | frames with 2+ skeletons (auto, always) |")
    print("|---|---|---|---|---|---|---|---|")
    tot = {p: [0, 0, 0, 0, 0] for p in policies}
    for c in clips:
        if c.label != "fall":
            continue
        row = rows[c.file]
        for p in policies:
            r = row[p]
            for k, key in enumerate(("post_found", "post_frames", "views", "frames", "multi_frames")):
                tot[p][k] += r[key]
        print("| %s | %d | %s | %s | %s | %s | %.2f, %.2f | %d, %d |" % (
            c.file, row["never"]["post_frames"], *[_pct(row[p]["post_found"], row[p]["post_frames"]) for p in policies],
            row["auto_all_views"]["views"] / max(1, row["auto_all_views"]["frames"]),
            row["auto"]["views"] / max(1, row["auto"]["frames"]), row["auto"]["multi_frames"],
            row["always"]["multi_frames"]))
    print("| **all fall clips** | %d | %s | %s | %s | %s | %.2f, %.2f | %d, %d |" % (
        tot["never"][1], *[_pct(tot[p][0], tot[p][1]) for p in policies],
        tot["auto_all_views"][2] / max(1, tot["auto_all_views"][3]), tot["auto"][2] / max(1, tot["auto"][3]),
        tot["auto"][4], tot["always"][4]))
    if not any(c.label == "adl" for c in clips):
        return
    policies = ("never", "auto", "always")
    print("\n| ADL clip | frames | views/frame: auto before issue 17, auto | max skeletons in a frame (never, auto, "
          "always) | frames with a skeleton (never, auto, always) |")
    print("|---|---|---|---|---|")
    adl = [0, 0, 0, 0]
    for c in clips:
        if c.label == "fall":
            continue
        row = rows[c.file]
        adl[0] += row["auto"]["views"]
        adl[1] += row["auto"]["frames"]
        adl[2] = max(adl[2], row["always"]["max_people"])
        adl[3] += row["auto_all_views"]["views"]
        print("| %s | %d | %.2f, %.2f | %d, %d, %d | %s, %s, %s |" % (
            c.file, row["frames"], row["auto_all_views"]["views"] / max(1, row["auto_all_views"]["frames"]),
            row["auto"]["views"] / max(1, row["auto"]["frames"]),
            *[row[p]["max_people"] for p in policies], *[_pct(row[p]["found"], row[p]["frames"]) for p in policies]))
    print("| **all ADL clips** | %d | %.2f, %.2f | always: %d | |" % (adl[1], adl[3] / max(1, adl[1]),
                                                                   adl[0] / max(1, adl[1]), adl[2]))
    for label in ("adl", "fall"):
        sel = [rows[c.file] for c in clips if c.label == label]
        n = sum(r["frames"] for r in sel)
        print("%s clips, all frames: skeletons with >= %d parts per frame: upright view only (never) %.3f, "
              "all views merged (always) %.3f" % (label, MIN_PARTS, sum(r["never"]["people6"] for r in sel) / max(1, n),
                                                  sum(r["always"]["people6"] for r in sel) / max(1, n)))

if __name__ == "__main__":
    sys.exit(main())
