"""``fallwatch replay INPUT``: the daemon's pipeline on a video file or a skeleton JSONL.

Every frame of the input is taken in order (none dropped for being late; ``max_fps`` picks frames
by their timestamps exactly as the daemon does), as fast as the machine allows, in one thread,
through the same stage functions (edge.pipeline) and the same tracker and fall detector as
``fallwatch run``. Time is the input's: a video frame's ``t`` is its index / the file's frame
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
from typing import Any, Dict, Iterator, Optional, Set, Tuple, Union

import cv2
import numpy as np

from edge.pipeline import (CameraTail, People, RateLimiter, create_detector, create_view_policy, find_people, prepare,
                           run_engine)
from edge.sources import Frame, correct_orientation
from edge.timing import StageTimer

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
    views: Dict[str, Any] = field(default_factory=dict)  # edge.views.ViewStats of a video replay

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


def _camera_config(config: Any, name: str) -> Any:
    return next((c for c in config.cameras if c.name == name), None)


def _tail(config: Any, camera: str, views: bool = False) -> CameraTail:
    return CameraTail(camera, config.device_id, config.tracker,
                      create_detector(config, camera), views=create_view_policy(config) if views else None)


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
                 max_fps: Optional[float] = None, start_wall: float = 0.0) -> ReplaySummary:
    """Run the pipeline on every frame of a video file. ``model``: an open edge.pose.PoseModel.
    When ``camera`` names a configured camera, its ``flip`` and ``max_fps`` apply (``max_fps``
    given here overrides)."""
    cam = _camera_config(config, camera)
    flip = cam.flip if cam is not None else "none"
    if max_fps is None:
        max_fps = cam.max_fps if cam is not None else 0.0
    if not Path(path).is_file():
        raise ReplayError("%s: no such video file" % path)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ReplayError("%s: cannot open it as a video (OpenCV's FFmpeg cannot decode it)" % path)
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not fps or not np.isfinite(fps) or fps <= 0:
        cap.release()
        raise ReplayError("%s: the file does not say its frame rate, so frame times are unknown" % path)
    summary = ReplaySummary(str(path), "video")
    timer = StageTimer(4096)
    tail, limiter = _tail(config, camera, views=True), RateLimiter(max_fps)
    view_params = config.views
    started = time.monotonic()
    next_log = started + 10
    try:
        index = 0
        while True:
            ok, image = cap.read()
            if not ok or image is None:
                break
            t = index / fps
            index += 1
            summary.frames_read += 1
            if not limiter.take(t):
                continue
            image = correct_orientation(image, flip)
            frame = Frame(camera, index - 1, t, start_wall + t, image)
            with timer.measure("preprocess"):
                job = prepare(frame, model.spec, model.input_hw, model.resize, tail.rotations(t))
            started_engine = time.perf_counter()
            with timer.measure("engine"):
                outputs = run_engine(job, model.engine)
            tail.views.stats.note_inference(len(job.transforms), time.perf_counter() - started_engine)
            people = find_people(outputs, job, model.spec, timer=timer, views=view_params)
            record, events = tail.process(people, t, frame.wall, (image.shape[1], image.shape[0]),
                                          image=image, timer=timer)
            _deliver(sinks, record, events, summary, timer)
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + 10
                log.info("replay %s: %d frames processed, t = %.1f s", path, summary.frames_processed, t)
    finally:
        cap.release()
    summary.seconds = time.monotonic() - started
    summary.stages = timer.summary()
    summary.views = tail.views.stats.as_dict()
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
                     start_wall: float = 0.0) -> ReplaySummary:
    """Run tracking, fall detection and the outputs on a skeleton JSONL, line by line. Track ids in
    the file are ignored: people are tracked again, exactly as the daemon tracks them. A camera
    named in the configuration uses its ``max_fps`` unless ``max_fps`` is given."""
    if not Path(path).is_file():
        raise ReplayError("%s: no such file" % path)
    summary = ReplaySummary(str(path), "skeletons")
    timer = StageTimer(4096)
    tails: Dict[str, CameraTail] = {}
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
        if camera not in tails:
            cam = _camera_config(config, camera)
            tails[camera] = _tail(config, camera)
            limiters[camera] = RateLimiter(max_fps if max_fps is not None else (cam.max_fps if cam else 0.0))
        if not limiters[camera].take(t):
            continue
        keypoints = np.asarray([p["keypoints"] for p in record["people"]], dtype=np.float64).reshape(-1, 18, 3)
        view = np.asarray([int(p.get("view", 0)) for p in record["people"]], dtype=np.int64)  # kept as recorded
        rec, events = tails[camera].process(People(keypoints, view), t, start_wall + t,
                                            (int(record["width"]), int(record["height"])), timer=timer)
        _deliver(sinks, rec, events, summary, timer)
    summary.seconds = time.monotonic() - started
    summary.stages = timer.summary()
    return summary
