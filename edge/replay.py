"""``fallwatch replay INPUT``: the daemon's pipeline on a video file or a skeleton JSONL.

Every frame of the input is taken in order (none dropped for being late; ``max_fps`` picks frames
by their timestamps exactly as the daemon does), as fast as the machine allows, in one thread,
through the same :class:`~edge.pipeline.CameraPipeline` as ``fallwatch run``: replay only adds
a reader (edge.capture.video) and the input's clock. Time is the input's: a video frame's ``t`` is its index / the file's frame
rate, a JSONL line's ``t`` is its ``t`` field; events carry that ``t`` and a ``timestamp`` of
``start_wall + t`` (by default the epoch, 1970-01-01T00:00:00Z, so output is deterministic).
The same input gives the same output, byte for byte.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Set, Tuple, Union

import numpy as np

from edge.pipeline import CameraPipeline, People, RateLimiter, camera_config
from edge.capture.sources import Frame
from edge.health.timing import StageTimer
from edge.capture.video import VideoError, VideoReader

log = logging.getLogger("fallwatch.replay")

SKELETON_SUFFIXES = (".jsonl", ".ndjson", ".json")
DEFAULT_CAMERA = "replay"


class ReplayError(ValueError):
    """The input cannot be replayed; the message names the file (and line) and what is wrong."""


@dataclass
class ReplaySummary:
    input: str
    kind: str  # video or skeletons
    frames_read: int = 0
    frames_processed: int = 0
    people: int = 0
    events: int = 0
    track_ids: Set[int] = field(default_factory=set)
    seconds: float = 0.0
    stages: Dict[str, Any] = field(default_factory=dict)
    views: Dict[str, Any] = field(default_factory=dict)  # edge.inference.views.ViewStats of a video replay

    def to_dict(self) -> Dict[str, Any]:
        return {"input": self.input, "kind": self.kind, "frames_read": self.frames_read,
                "frames_processed": self.frames_processed, "people": self.people, "events": self.events,
                "tracks": len(self.track_ids), "seconds": round(self.seconds, 2),
                "fps": round(self.frames_processed / self.seconds, 2) if self.seconds > 0 else None,
                "stages": self.stages, "views": self.views}


def is_skeleton_file(path: Union[str, Path]) -> bool:
    """A skeleton JSONL by its suffix, or by its first character being ``{``."""
    path = Path(path)
    if path.suffix.lower() in SKELETON_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(64).lstrip()[:1] == b"{"
    except OSError:
        return False


DetectorFactory = Callable[[str], Any]  # camera name -> fall detector (default: edge.pipeline.create_detector)


def _deliver(sinks: Any, record: Any, events: Any, summary: ReplaySummary, timer: StageTimer) -> None:
    with timer.measure("sinks"):
        sinks.frame(record)
        for event in events:
            sinks.emit(event)
    summary.frames_processed += 1
    summary.people += len(record.keypoints)
    summary.events += len(events)
    summary.track_ids.update(int(i) for i in record.track_ids if i)


def replay_video(path: Union[str, Path], config: Any, model: Any, sinks: Any, camera: str = DEFAULT_CAMERA,
                 max_fps: Optional[float] = None, start_wall: float = 0.0,
                 make_detector: Optional[DetectorFactory] = None) -> ReplaySummary:
    """Run the pipeline on every frame of a video file. ``model``: an open edge.inference.model.PoseModel.
    When ``camera`` names a configured camera, its ``flip`` and ``max_fps`` apply (``max_fps``
    given here overrides)."""
    cam = camera_config(config, camera)
    if max_fps is None:
        max_fps = cam.max_fps if cam is not None else 0.0
    try:
        reader = VideoReader(path, cam.flip if cam is not None else "none")
    except VideoError as exc:
        raise ReplayError(str(exc)) from None
    summary = ReplaySummary(str(path), "video")
    timer = StageTimer(4096)
    pipeline = CameraPipeline(camera, config, model, make_detector(camera) if make_detector else None)
    limiter = RateLimiter(max_fps)
    started = time.monotonic()
    next_log = started + 10
    try:
        with reader:
            for index, t, image in reader.frames():
                summary.frames_read += 1
                if not limiter.take(t):
                    continue
                record, events = pipeline.process(Frame(camera, index, t, start_wall + t, image), timer)
                _deliver(sinks, record, events, summary, timer)
                if time.monotonic() >= next_log:
                    next_log = time.monotonic() + 10
                    log.info("replay %s: %d frames processed, t = %.1f s", path, summary.frames_processed, t)
    except VideoError as exc:
        raise ReplayError(str(exc)) from None
    summary.seconds = time.monotonic() - started
    summary.stages = timer.summary()
    summary.views = pipeline.views.stats.as_dict()
    return summary


def read_skeletons(path: Union[str, Path]) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``(line number, record)`` for each non-empty line of a skeleton JSONL (DESIGN.md contract 2),
    checked; raises ReplayError naming the line."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = "%s: line %d" % (path, number)
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ReplayError("%s: not JSON (%s)" % (where, exc)) from None
            if not isinstance(record, dict):
                raise ReplayError("%s: expected a JSON object per line" % where)
            missing = [k for k in ("t", "camera", "width", "height", "people") if k not in record]
            if missing:
                raise ReplayError("%s: missing %s (a skeleton JSONL line has t, camera, width, height, people)"
                                  % (where, ", ".join(missing)))
            if not isinstance(record["t"], (int, float)) or isinstance(record["t"], bool):
                raise ReplayError("%s: t must be a number of seconds, got %r" % (where, record["t"]))
            for i, person in enumerate(record["people"]):
                kp = person.get("keypoints") if isinstance(person, dict) else None
                try:
                    ok = kp is not None and np.asarray(kp, dtype=np.float64).shape == (18, 3)
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise ReplayError("%s: people[%d].keypoints must be 18 rows of [x, y, confidence]" % (where, i))
            yield number, record


def replay_skeletons(path: Union[str, Path], config: Any, sinks: Any, max_fps: Optional[float] = None,
                     start_wall: float = 0.0, make_detector: Optional[DetectorFactory] = None) -> ReplaySummary:
    """Run tracking, fall detection and the outputs on a skeleton JSONL, line by line. Track ids in
    the file are ignored: people are tracked again, exactly as the daemon tracks them. A camera
    named in the configuration uses its ``max_fps`` unless ``max_fps`` is given."""
    if not Path(path).is_file():
        raise ReplayError("%s: no such file" % path)
    summary = ReplaySummary(str(path), "skeletons")
    timer = StageTimer(4096)
    pipelines: Dict[str, CameraPipeline] = {}
    limiters: Dict[str, RateLimiter] = {}
    last_t: Dict[str, float] = {}
    started = time.monotonic()
    for number, record in read_skeletons(path):
        camera = str(record["camera"])
        t = float(record["t"])
        if camera in last_t and t < last_t[camera]:
            raise ReplayError("%s: line %d: t goes back in time for camera %s (%.6f after %.6f)"
                              % (path, number, camera, t, last_t[camera]))
        last_t[camera] = t
        summary.frames_read += 1
        if camera not in pipelines:
            cam = camera_config(config, camera)
            pipelines[camera] = CameraPipeline(camera, config, None, make_detector(camera) if make_detector else None)
            limiters[camera] = RateLimiter(max_fps if max_fps is not None else (cam.max_fps if cam else 0.0))
        if not limiters[camera].take(t):
            continue
        keypoints = np.asarray([p["keypoints"] for p in record["people"]], dtype=np.float64).reshape(-1, 18, 3)
        view = np.asarray([int(p.get("view", 0)) for p in record["people"]], dtype=np.int64)  # kept as recorded
        rec, events = pipelines[camera].track(People(keypoints, view), t, start_wall + t,
                                              (int(record["width"]), int(record["height"])), timer=timer)
        _deliver(sinks, rec, events, summary, timer)
    summary.seconds = time.monotonic() - started
    summary.stages = timer.summary()
    return summary
