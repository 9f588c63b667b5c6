"""``fallwatch replay INPUT``: the daemon's pipeline on a video file or a skeleton JSONL.

Every frame of the input is taken in order (none dropped for being late; ``max_fps`` picks frames
by their timestamps exactly as the daemon does), as fast as the machine allows, in one thread,
through the same :class:`~edge.pipeline.CameraPipeline` as ``fallwatch run``: replay only adds
a reader (edge.capture.video) and the input's clock. Time is the input's: a video frame's ``t`` is its index / the file's frame
rate, a JSONL line's ``t`` is its ``t`` field; events carry that ``t`` and a ``timestamp`` of
``start_wall + t`` (by default the epoch, 1970-01-01T00:00:00Z, so output is deterministic).
The same input gives the same output, byte for byte.

A skeleton JSONL is read through one checked reader (:func:`read_skeletons`): a bad line (not
JSON, a field missing or out of range, ``t`` going back) stops a strict replay with ReplayError
naming the file and line; otherwise it is skipped with a warning and counted, so that one damaged
line (or a last line cut short by a recorder killed mid-write) does not lose a recording.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, Union

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
    lines_skipped: Optional[int] = None  # bad lines of a skeleton JSONL skipped (None for a video)

    def to_dict(self) -> Dict[str, Any]:
        out = {"input": self.input, "kind": self.kind, "frames_read": self.frames_read,
               "frames_processed": self.frames_processed, "people": self.people, "events": self.events,
               "tracks": len(self.track_ids), "seconds": round(self.seconds, 2),
               "fps": round(self.frames_processed / self.seconds, 2) if self.seconds > 0 else None,
               "stages": self.stages, "views": self.views}
        if self.lines_skipped is not None:
            out["lines_skipped"] = self.lines_skipped
        return out


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


PROGRESS_EVERY_S = 5.0  # a video replay logs its progress this often (INFO)

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
    total = reader.frame_count
    log.info("replay %s: %s at %.4g fps; %s", path, "%d frames (%.1f s)" % (total, total / reader.fps)
             if total and reader.fps > 0 else "a video", reader.fps, "every frame is processed" if not max_fps
             or max_fps >= reader.fps else "at most %.4g frames per second are processed, the rest skipped "
             "(--max-fps / max_fps)" % max_fps)
    started = time.monotonic()
    next_log = started + PROGRESS_EVERY_S
    try:
        with reader:
            for index, t, image in reader.frames():
                summary.frames_read += 1
                if not limiter.take(t):
                    continue
                record, events = pipeline.process(Frame(camera, index, t, start_wall + t, image), timer)
                _deliver(sinks, record, events, summary, timer)
                if time.monotonic() >= next_log:
                    next_log = time.monotonic() + PROGRESS_EVERY_S
                    log.info("replay %s: t = %.1f s%s, %d frames processed, %d skipped, %d event(s) so far", path,
                             t, " of %.1f s" % (total / reader.fps) if total and reader.fps > 0 else "",
                             summary.frames_processed, summary.frames_read - summary.frames_processed, summary.events)
    except VideoError as exc:
        raise ReplayError(str(exc)) from None
    summary.seconds = time.monotonic() - started
    log.info("replay %s: done in %.1f s: %d of %d frames processed (%.2f per second), %d skipped, %d event(s)",
             path, summary.seconds, summary.frames_processed, summary.frames_read,
             summary.frames_processed / summary.seconds if summary.seconds > 0 else 0.0,
             summary.frames_read - summary.frames_processed, summary.events)
    summary.stages = timer.summary()
    summary.views = pipeline.views.stats.as_dict()
    return summary


# Limits of a skeleton JSONL line: t is seconds since the recording started (start_wall + t must
# stay a date), a frame is at most this many pixels a side, and a keypoint more than a frame away
# from the frame is no keypoint.
MAX_T_S = 1e10
MAX_FRAME_PX = 100000
KEYPOINT_XY_RANGE = (-1.0, 2.0)
MAX_VIEW_DEG = 360
MAX_3D_M = 1e4  # a 3D keypoint further than this from the camera (metres, any axis) is not a measurement
LOGGED_BAD_LINES = 20  # skipped lines logged one by one; the rest are only counted


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:30] + "... (%d characters)" % len(text)


def _integer(value: Any, low: float, high: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return low <= value <= high and float(value).is_integer()


def check_skeleton_line(line: Union[str, bytes]) -> Dict[str, Any]:
    """One line of a skeleton JSONL (DESIGN.md contract 2) as its record, checked; ValueError
    saying what is wrong (not where) otherwise: not UTF-8 or not JSON, a missing field, ``t`` not
    a number of seconds from 0 to :data:`MAX_T_S` (NaN and infinities included), ``width`` or
    ``height`` not a whole number of pixels from 1 to :data:`MAX_FRAME_PX`, a person without 18
    ``[x, y, confidence]`` rows, with a ``view`` that is not a rotation in whole degrees, or with an
    optional ``keypoints3d`` that is not 18 entries each ``[x, y, z]`` (finite metres, at most
    :data:`MAX_3D_M` from the camera on any axis) or null (a part without 3D; the whole field may be
    null: no 3D for that person). A row
    that is not finite, lies outside :data:`KEYPOINT_XY_RANGE` or has a negative confidence is a
    part not found: it becomes ``[0, 0, 0]`` in the record returned (the person is kept)."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise ValueError("not JSON (%s)" % exc) from None
    except RecursionError:
        raise ValueError("not JSON (nested too deep)") from None
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object per line")
    missing = [k for k in ("t", "camera", "width", "height", "people") if k not in record]
    if missing:
        raise ValueError("missing %s (a skeleton JSONL line has t, camera, width, height, people)" % ", ".join(missing))
    t = record["t"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= MAX_T_S:
        raise ValueError("t must be a number of seconds from 0 to %g, got %s" % (MAX_T_S, _shown(t)))
    if not isinstance(record["camera"], str) or not record["camera"]:
        raise ValueError("camera must be a name, got %s" % _shown(record["camera"]))
    for key in ("width", "height"):
        if not _integer(record[key], 1, MAX_FRAME_PX):
            raise ValueError("%s must be a whole number of pixels from 1 to %d, got %s"
                             % (key, MAX_FRAME_PX, _shown(record[key])))
    if not isinstance(record["people"], list):
        raise ValueError("people must be a list, got %s" % _shown(record["people"]))
    low, high = KEYPOINT_XY_RANGE
    for i, person in enumerate(record["people"]):
        kp = person.get("keypoints") if isinstance(person, dict) else None
        try:
            rows = np.asarray(kp, dtype=np.float64) if isinstance(kp, list) else None
        except (TypeError, ValueError, OverflowError):
            rows = None
        if rows is None or rows.shape != (18, 3):
            raise ValueError("people[%d].keypoints must be 18 rows of [x, y, confidence]" % i)
        with np.errstate(invalid="ignore"):
            usable = np.isfinite(rows).all(axis=1) & ((rows[:, :2] >= low) & (rows[:, :2] <= high)).all(axis=1)
            usable &= rows[:, 2] >= 0
        if not usable.all():  # other pose estimators write NaN (or junk) for a part they did not find
            rows[~usable] = 0.0
            person["keypoints"] = rows.tolist()
        if "view" in person and not _integer(person["view"], -MAX_VIEW_DEG, MAX_VIEW_DEG):
            raise ValueError("people[%d].view must be a rotation in whole degrees, got %s"
                             % (i, _shown(person["view"])))
        if person.get("keypoints3d") is not None and not _keypoints3d_ok(person["keypoints3d"]):
            raise ValueError("people[%d].keypoints3d must be 18 entries, each [x, y, z] (metres, finite, at most %g "
                             "on any axis) or null" % (i, MAX_3D_M))
    return record


def _keypoints3d_ok(rows: Any) -> bool:
    if not isinstance(rows, list) or len(rows) != 18:
        return False
    for row in rows:
        if row is None:
            continue
        if not isinstance(row, list) or len(row) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= MAX_3D_M
                for v in row):
            return False
    return True


def _keypoints3d(people: List[Dict[str, Any]]) -> Optional[np.ndarray]:
    """The recorded people's ``keypoints3d`` as ``(N, 18, 3)`` (NaN: missing), None when nobody has any."""
    if not any("keypoints3d" in p for p in people):
        return None
    out = np.full((len(people), 18, 3), np.nan)
    for i, person in enumerate(people):
        for j, row in enumerate(person.get("keypoints3d") or ()):
            if row is not None:
                out[i, j] = row
    return out


SkipLine = Callable[[ReplayError], None]


def read_skeletons(path: Union[str, Path], skip: Optional[SkipLine] = None) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``(line number, record)`` for each non-empty line of a skeleton JSONL, checked
    (:func:`check_skeleton_line`, and ``t`` never going back for one camera). A bad line raises
    ReplayError naming the file and line; with ``skip``, ``skip(that error)`` is called instead
    and reading goes on (the line's camera keeps its previous ``t``). A file that cannot be
    opened or read raises ReplayError either way."""
    last_t: Dict[str, float] = {}
    try:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = check_skeleton_line(line)
                    camera, t = record["camera"], float(record["t"])
                    if camera in last_t and t < last_t[camera]:
                        raise ValueError("t goes back in time for camera %s (%.6f after %.6f)"
                                         % (camera, t, last_t[camera]))
                except ValueError as exc:
                    error = ReplayError("%s: line %d: %s" % (path, number, exc))
                    if skip is None:
                        raise error from None
                    skip(error)
                    continue
                last_t[camera] = t
                yield number, record
    except OSError as exc:
        raise ReplayError("%s: cannot read it (%s)" % (path, exc.strerror or exc)) from None


def replay_skeletons(path: Union[str, Path], config: Any, sinks: Any, max_fps: Optional[float] = None,
                     start_wall: float = 0.0, make_detector: Optional[DetectorFactory] = None,
                     strict: bool = True) -> ReplaySummary:
    """Run tracking, fall detection and the outputs on a skeleton JSONL, line by line. Track ids in
    the file are ignored: people are tracked again, exactly as the daemon tracks them. A camera
    named in the configuration uses its ``max_fps`` unless ``max_fps`` is given.

    ``strict``: the first bad line (:func:`read_skeletons`) stops the replay with ReplayError.
    Otherwise a bad line (garbage, a recorder killed mid-write) is logged as a warning naming the
    file and line, skipped and counted (``summary.lines_skipped``); a file with bad lines and not
    one good one still raises ReplayError."""
    if not Path(path).is_file():
        raise ReplayError("%s: no such file" % path)
    summary = ReplaySummary(str(path), "skeletons", lines_skipped=0)
    first_bad: List[ReplayError] = []

    def skip(error: ReplayError) -> None:
        summary.lines_skipped += 1
        if not first_bad:
            first_bad.append(error)
        if summary.lines_skipped <= LOGGED_BAD_LINES:
            log.warning("%s; line skipped (replay --strict stops at it)", error)
        if summary.lines_skipped == LOGGED_BAD_LINES:
            log.warning("%s: further bad lines are skipped without a warning each; the summary counts them", path)

    timer = StageTimer(4096)
    pipelines: Dict[str, CameraPipeline] = {}
    limiters: Dict[str, RateLimiter] = {}
    started = time.monotonic()
    for number, record in read_skeletons(path, None if strict else skip):
        camera = record["camera"]
        t = float(record["t"])
        summary.frames_read += 1
        if camera not in pipelines:
            cam = camera_config(config, camera)
            pipelines[camera] = CameraPipeline(camera, config, None, make_detector(camera) if make_detector else None)
            limiters[camera] = RateLimiter(max_fps if max_fps is not None else (cam.max_fps if cam else 0.0))
        if not limiters[camera].take(t):
            continue
        keypoints = np.asarray([p["keypoints"] for p in record["people"]], dtype=np.float64).reshape(-1, 18, 3)
        view = np.asarray([int(p.get("view", 0)) for p in record["people"]], dtype=np.int64)  # kept as recorded
        people = People(keypoints, view, keypoints3d=_keypoints3d(record["people"]))  # 3D passes through as recorded
        rec, events = pipelines[camera].track(people, t, start_wall + t,
                                              (int(record["width"]), int(record["height"])), timer=timer)
        _deliver(sinks, rec, events, summary, timer)
    if first_bad and not summary.frames_read:
        raise ReplayError("%s: not one readable skeleton line (%d bad lines, the first: %s)"
                          % (path, summary.lines_skipped, first_bad[0]))
    summary.seconds = time.monotonic() - started
    summary.stages = timer.summary()
    return summary
