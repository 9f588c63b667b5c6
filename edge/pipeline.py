"""The stages between a frame and its events, shared by the daemon (threads) and replay (one loop).

``prepare`` (preprocess) -> ``run_engine`` -> ``find_people`` (decode, parse, back to frame
coordinates) -> :class:`CameraTail` (track, fall detector, events). Each stage is a plain
function of the one before it, so ``fallwatch run`` and ``fallwatch replay`` compute exactly the
same thing; only who calls the stages, and when, differs.

An :class:`InferenceJob` holds a batch of views of one frame (upright, and rotated by 90 degrees
while someone may be on the floor: edge.views), each with the :class:`~edge.preprocess.Transform`
that maps its people back to the frame; :func:`find_people` parses every view and merges the
people. Each camera's :class:`CameraTail` owns its :class:`~edge.views.ViewPolicy`, which looks at
the tracks after each frame and says which views the next frames need.
"""
from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge.fall import FallDetector, zones_of
from edge.parse import ParseParams, parse_poses
from edge.preprocess import Transform
from edge.sources import Frame
from edge.specs import ModelSpec, decode
from edge.timing import StageTimer
from edge.track import Track, Tracker, TrackerConfig, skeleton_bbox
from edge.views import ViewPolicy, ViewsConfig, make_views, merge_people

log = logging.getLogger("fallwatch.pipeline")

COORD_DECIMALS = 5  # keypoints are rounded to 1e-5 of the frame (0.02 px at 1920): JSON round-trips exactly
TIME_DECIMALS = 6  # frame times are rounded to 1 microsecond, for the same reason
_EVENT_NAMESPACE = uuid.UUID("5d1f3c52-6a4e-4c67-9a0c-2f4a8e7b9c10")


@dataclass
class InferenceJob:
    """One frame's work for the engine: ``batch`` (V, ...) float32, one row per view, the
    rotation of each view (degrees clockwise, 0 = upright) and its transform from normalised
    network input to normalised frame coordinates."""

    frame: Frame
    batch: np.ndarray
    transforms: Tuple[Transform, ...]
    rotations: Tuple[int, ...] = (0,)


def prepare(frame: Frame, spec: ModelSpec, input_hw: Tuple[int, int], resize: str,
            rotations: Sequence[int] = (0,)) -> InferenceJob:
    """Preprocess stage: the frame's views (``rotations``, upright first) as one engine batch."""
    batch, transforms = make_views(frame.image, spec, input_hw, resize, tuple(rotations))
    return InferenceJob(frame, batch, tuple(transforms), tuple(rotations))


def run_engine(job: InferenceJob, engine) -> Dict[str, np.ndarray]:
    """Engine stage: raw outputs by tensor name, batch first."""
    return engine.run(job.batch)


@dataclass(frozen=True)
class People:
    """The people of one frame: ``keypoints`` ``(N, 18, 3)`` float64 normalised to the frame and
    ``view`` ``(N,)``, the rotation (degrees) of the view each person was kept from."""

    keypoints: np.ndarray
    view: np.ndarray

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


def find_people(outputs: Dict[str, np.ndarray], job: InferenceJob, spec: ModelSpec,
                params: Optional[ParseParams] = None, timer: Optional[StageTimer] = None,
                views: ViewsConfig = ViewsConfig()) -> People:
    """Decode and parse stages, then one list of people: every view's people mapped back to the
    frame and merged (one person seen in two views counts once, see edge.views.merge_people).
    Keypoints ``(x, y, confidence)`` are normalised to [0, 1] of the frame (clipped to it),
    (0, 0, 0) for a missing part, rounded to :data:`COORD_DECIMALS` so that a recorded skeleton
    JSONL replays bit-identically."""
    timer = timer or StageTimer(1)
    with timer.measure("decode"):
        heatmaps, pafs = decode(spec, outputs)
    with timer.measure("parse"):
        per_view, scores = [], []
        for i in range(len(job.transforms)):
            keypoints, person_scores = parse_poses(heatmaps[i], pafs[i], spec.topology, params)
            per_view.append(keypoints)
            scores.append(person_scores)
        size = (job.frame.image.shape[1], job.frame.image.shape[0])
        keypoints, _, view = merge_people(per_view, scores, job.transforms, size, views.merge_distance,
                                          views.merge_box_overlap)
    return People(quantise_keypoints(keypoints), np.asarray(job.rotations, np.int64)[view])


def quantise_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """``(N, 18, 3)`` float64 with x, y clipped to the frame ([0, 1]: a part the network places in the
    letterbox padding, past the frame's edge, is put on the edge), rounded to COORD_DECIMALS."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 18, 3).copy()
    kp[..., :2] = np.clip(kp[..., :2], 0.0, 1.0)
    kp = np.round(kp, COORD_DECIMALS)
    kp[kp[..., 2] <= 0] = 0.0
    return kp


def iso_utc(wall: float) -> str:
    """Seconds since the epoch -> ``2024-05-01T12:00:00.123Z``."""
    moment = datetime.datetime.fromtimestamp(wall, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class FrameRecord:
    """What a sink's ``frame(record)`` gets for each processed frame.

    ``keypoints`` (N, 18, 3) normalised to the frame, ``track_ids`` (N,) (0: not yet confirmed),
    ``t`` seconds on the stream clock, ``wall`` seconds since the epoch, ``image`` the BGR frame
    (None when replaying skeletons). ``people`` and :meth:`to_json` give DESIGN.md contract 2.
    """

    camera: str
    t: float
    wall: float
    width: int
    height: int
    keypoints: np.ndarray
    track_ids: np.ndarray
    image: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    view: Optional[np.ndarray] = None  # (N,) rotation of the view each person came from, degrees

    @property
    def people(self) -> List[Dict[str, Any]]:
        out = []
        views = self.view.tolist() if self.view is not None else [0] * len(self.keypoints)
        for kp, track, view in zip(self.keypoints.tolist(), self.track_ids.tolist(), views):
            person: Dict[str, Any] = {"keypoints": kp}
            if track:
                person["track"] = int(track)
            if view:  # debugging only: the person was found in a rotated view
                person["view"] = int(view)
            out.append(person)
        return out

    def to_json(self) -> Dict[str, Any]:
        """The skeleton JSONL line (contract 2) as a dict."""
        return {"t": self.t, "camera": self.camera, "width": self.width, "height": self.height,
                "people": self.people}


def create_detector(config: Any, camera: str) -> FallDetector:
    """The fall detector for ``camera``: thresholds from ``config.fall``, the camera's zones.

    Its ``update(tracks, t, frame_size)`` gets the camera's confirmed tracks still alive
    (:class:`edge.track.Track`), the frame time in seconds and (width, height) in pixels, and
    returns events with at least ``type``, ``track_id`` and ``confidence``; :class:`CameraTail`
    adds ``event_id``, ``device``, ``camera``, ``timestamp`` and ``t``.
    """
    cam = next((c for c in config.cameras if c.name == camera), None)
    zones = zones_of(cam) if cam is not None else ()
    return FallDetector(config.fall, zones)


def create_view_policy(config: Any) -> ViewPolicy:
    """A camera's policy for rotated views (``config.views``)."""
    return ViewPolicy(config.views)


class CameraTail:
    """Track, detect and make events for one camera; feed it frames in time order."""

    def __init__(self, camera: str, device: str, tracker_config: TrackerConfig, detector: Any,
                 ids: Optional[Iterator[int]] = None, views: Optional[ViewPolicy] = None) -> None:
        self.camera = camera
        self.device = device
        self.tracker = Tracker(tracker_config, ids)
        self.detector = detector
        self.views = views  # None when no frames are inferred (skeleton replay)

    def rotations(self, t: float) -> Tuple[int, ...]:
        """The views the frame at time ``t`` needs (upright only without a view policy)."""
        return self.views.views_for(t) if self.views is not None else (0,)

    def process(self, people: Union[People, np.ndarray], t: float, wall: float, size: Tuple[int, int],
                image: Optional[np.ndarray] = None, timer: Optional[StageTimer] = None
                ) -> Tuple[FrameRecord, List[Dict[str, Any]]]:
        """People of one frame (:class:`People` from :func:`find_people`, or keypoints ``(N, 18, 3)``
        normalised) at frame time ``t`` -> the frame record and the events it caused; then the view
        policy looks at the tracks. ``size`` is (width, height)."""
        timer = timer or StageTimer(1)
        t = round(float(t), TIME_DECIMALS)
        view = people.view if isinstance(people, People) else None
        keypoints = quantise_keypoints(people.keypoints if isinstance(people, People) else people)
        size = (int(size[0]), int(size[1]))
        with timer.measure("track"):
            ids = self.tracker.update(keypoints, t, size)
            tracks = self.tracker.tracks
        with timer.measure("detect"):
            raw_events = self.detector.update(tracks, t, size)
        if self.views is not None:
            with timer.measure("views"):
                self.views.observe(tracks, t, size)
        by_id = {tr.id: tr for tr in tracks}
        events = [self._complete(e, by_id, t, wall) for e in raw_events]
        record = FrameRecord(self.camera, t, wall, size[0], size[1], keypoints, ids, image, view)
        return record, events

    def _complete(self, event: Dict[str, Any], tracks: Dict[int, Track], t: float, wall: float) -> Dict[str, Any]:
        track = tracks.get(int(event.get("track_id", 0)))
        timestamp = iso_utc(wall)
        kind, track_id = str(event["type"]), int(event.get("track_id", 0))
        key = "%s/%s/%d/%s/%s" % (self.device, self.camera, track_id, kind, timestamp)
        keypoints = event.get("keypoints", track.keypoints if track is not None else None)
        bbox = event.get("bbox")
        if bbox is None and keypoints is not None:
            bbox = skeleton_bbox(np.asarray(keypoints), 1e-9)[0]
        out = {"event_id": str(uuid.uuid5(_EVENT_NAMESPACE, key)), "type": kind, "device": self.device,
               "camera": self.camera, "track_id": track_id, "timestamp": timestamp,
               "confidence": round(float(event.get("confidence", 0.0)), 4),
               "bbox": None if bbox is None else [round(float(v), COORD_DECIMALS) for v in bbox],
               "keypoints": None if keypoints is None else np.round(np.asarray(keypoints, np.float64),
                                                                    COORD_DECIMALS).tolist(),
               "t": t}
        for k, v in event.items():
            out.setdefault(k, v)
        return out


class RateLimiter:
    """``max_fps`` for one camera: :meth:`take` says whether a frame at time ``t`` (seconds) is
    processed. Frames are taken on a grid of 1/max_fps from the first one, so a 30 fps camera
    limited to 10 fps gives every third frame; 0 takes every frame. Deterministic in ``t``."""

    def __init__(self, max_fps: float) -> None:
        self.period = 1.0 / max_fps if max_fps > 0 else 0.0
        self._next: Optional[float] = None

    def take(self, t: float) -> bool:
        if self.period <= 0:
            return True
        tolerance = self.period * 1e-3
        if self._next is not None and t < self._next - tolerance:
            return False
        if self._next is None or t - self._next >= self.period:
            self._next = t + self.period
        else:
            self._next += self.period
        return True
