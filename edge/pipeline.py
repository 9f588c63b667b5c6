"""One camera's frame path, the same for every command.

``fallwatch run`` (edge.daemon: threads and queues around it), ``replay`` and ``evaluate``
(edge.replay: a reader and the file's clock around it), ``detect``, ``model check`` and ``doctor``
(one image) all go through a :class:`CameraPipeline`::

    frame -> views -> preprocess -> engine -> decode -> parse -> merge -> frame coordinates
          -> track -> fall detector -> events

Each arrow is one method, so the daemon can run them on different threads: :meth:`prepare`
(views and preprocess: an :class:`InferenceJob`), :meth:`infer` (the engine), :meth:`decode`,
:meth:`parse` (every view's people, merged, in frame coordinates: :class:`People`) and
:meth:`track` (tracker, fall detector, events: a :class:`FrameRecord` and the events);
:meth:`process` runs them all for one frame. Its stages can be handed in (a model with any engine,
a fall detector), and a pipeline without a model tracks recorded skeletons (skeleton replay).
The camera's :class:`~edge.inference.views.ViewPolicy` looks at the tracks after each frame and
says which views the next frames need.

A top-down model (spec ``family: top_down``) takes a separate path through the same methods,
:class:`~edge.inference.topdown.TopDownPath`: infer gathers the person boxes (the previous
frame's people and tracks, once track has taken that frame, so that ``run`` and ``replay`` crop
alike; a bottom-up seed model now and then), makes the crops and runs them as one batch (prepare
only queues the frame), and find_people decodes them into the same :class:`People` in frame
coordinates; track hands the path each frame's people, last. A single-person 3D model (``family:
single_person_3d``) takes the same path with its camera geometry fed
(:class:`~edge.inference.body3d.Body3DPath`); its people also carry ``keypoints3d``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge.alerts.events import COORD_DECIMALS, make_event
from edge.capture.sources import Frame
from edge.fall import FallDetector, zones_of
from edge.health.timing import StageTimer
from edge.inference.preprocess import Transform
from edge.inference.specs import ModelSpec, decode
from edge.inference.topdown import TopDownConfig, TopDownJob, TopDownPath
from edge.inference.views import ViewPolicy, make_views, merge_people
from edge.parse import ParseParams, parse_poses
from edge.skeleton import KEYPOINTS
from edge.track import Track, Tracker

log = logging.getLogger("fallwatch.pipeline")

TIME_DECIMALS = 6  # frame times are rounded to 1 microsecond, so that JSON round-trips them exactly


@dataclass
class InferenceJob:
    """One frame's work for the engine: ``batch`` (V, ...) float32, one row per view, the
    rotation of each view (degrees clockwise, 0 = upright) and its transform from normalised
    network input to normalised frame coordinates."""

    frame: Frame
    batch: Optional[np.ndarray]  # None once the daemon has given it back to its pool (after the engine)
    transforms: Tuple[Transform, ...]
    rotations: Tuple[int, ...] = (0,)


@dataclass(frozen=True)
class People:
    """The people of one frame: ``keypoints`` ``(N, 18, 3)`` float64 normalised to the frame,
    ``view`` ``(N,)``, the rotation (degrees) of the view each person was kept from, the
    parser's person ``scores`` ``(N,)`` (None for recorded skeletons), the ``rotations`` of
    every view the frame ran, and ``keypoints3d`` ``(N, 18, 3)`` metres in camera coordinates
    (NaN: part missing) when the model gives 3D (None otherwise)."""

    keypoints: np.ndarray
    view: np.ndarray
    scores: Optional[np.ndarray] = None
    rotations: Tuple[int, ...] = (0,)
    keypoints3d: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


def parse_views(spec: ModelSpec, heatmaps: np.ndarray, pafs: np.ndarray, params: Optional[ParseParams] = None
                ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The parse stage for a batch of canonical maps (batch first): ``(keypoints, scores)`` of each
    batch row, in that row's normalised network-input coordinates (DESIGN.md contract 1)."""
    return [parse_poses(heatmaps[i], pafs[i], spec.topology, params) for i in range(heatmaps.shape[0])]


def merge_views(parsed: Sequence[Tuple[np.ndarray, np.ndarray]], transforms: Sequence[Transform],
                rotations: Sequence[int], size: Tuple[int, int], views: Any) -> People:
    """The merge stage: the people of each view (``(keypoints, scores)`` in the view's network-input
    coordinates, with its transform and rotation) mapped back to the frame (``size`` = width, height)
    and merged, so that one person seen in two views counts once (edge.inference.views.merge_people,
    with ``views.merge_distance`` and ``views.merge_box_overlap``). Keypoints ``(x, y, confidence)``
    are normalised to [0, 1] of the frame (clipped to it), (0, 0, 0) for a missing part, rounded to
    :data:`COORD_DECIMALS` so that a recorded skeleton JSONL replays bit-identically."""
    keypoints, scores, view = merge_people([k for k, _ in parsed], [s for _, s in parsed], transforms, size,
                                           views.merge_distance, views.merge_box_overlap)
    return People(quantise_keypoints(keypoints), np.asarray(rotations, np.int64)[view], scores,
                  tuple(int(r) for r in rotations))


def quantise_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """``(N, 18, 3)`` float64 with x, y clipped to the frame ([0, 1]: a part the network places in the
    letterbox padding, past the frame's edge, is put on the edge), rounded to COORD_DECIMALS."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 18, 3).copy()
    kp[..., :2] = np.clip(kp[..., :2], 0.0, 1.0)
    kp = np.round(kp, COORD_DECIMALS)
    kp[kp[..., 2] <= 0] = 0.0
    return kp


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
    keypoints3d: Optional[np.ndarray] = None  # (N, 18, 3) metres, camera coordinates, NaN = missing

    @property
    def people(self) -> List[Dict[str, Any]]:
        out = []
        views = self.view.tolist() if self.view is not None else [0] * len(self.keypoints)
        points = [None] * len(self.keypoints) if self.keypoints3d is None else list(self.keypoints3d)
        for kp, track, view, kp3 in zip(self.keypoints.tolist(), self.track_ids.tolist(), views, points):
            person: Dict[str, Any] = {"keypoints": kp}
            if track:
                person["track"] = int(track)
            if view:  # debugging only: the person was found in a rotated view
                person["view"] = int(view)
            rows = keypoints3d_rows(kp3)
            if rows is not None:
                person["keypoints3d"] = rows
            out.append(person)
        return out

    def to_json(self) -> Dict[str, Any]:
        """The skeleton JSONL line (contract 2) as a dict."""
        return {"t": self.t, "camera": self.camera, "width": self.width, "height": self.height,
                "people": self.people}


def keypoints3d_rows(points: Optional[np.ndarray]) -> Optional[List[Optional[List[float]]]]:
    """One person's ``(18, 3)`` 3D keypoints as contract 2's optional ``keypoints3d``: 18 entries, each
    ``[x, y, z]`` (metres, camera coordinates) or None for a missing part; None when no part has 3D."""
    if points is None:
        return None
    rows = [[float(v) for v in p] if np.isfinite(p).all() else None for p in np.asarray(points, np.float64)]
    return rows if any(r is not None for r in rows) else None


def camera_config(config: Any, camera: str) -> Any:
    """The configured camera named ``camera``, or None."""
    return next((c for c in config.cameras if c.name == camera), None)


_WARNED_NO_FLOOR: set = set()  # cameras already warned about (evaluate makes a pipeline per clip)


def create_detector(config: Any, camera: str) -> FallDetector:
    """The fall detector for ``camera``: thresholds from ``config.fall``, the camera's zones.

    Its ``update(tracks, t, frame_size)`` gets the camera's confirmed tracks still alive
    (:class:`edge.track.Track`), the frame time in seconds and (width, height) in pixels, and
    returns events with at least ``type``, ``track_id`` and ``confidence``; :class:`CameraPipeline`
    adds ``event_id``, ``device``, ``camera``, ``timestamp`` and ``t``.
    """
    cam = camera_config(config, camera)
    plane = tuple(getattr(cam, "floor_plane", ()) or ())
    if getattr(config.fall, "use_3d", False) and not plane and camera not in _WARNED_NO_FLOOR:
        # the loader refuses a configured camera without one; this is a camera named on the command line
        _WARNED_NO_FLOOR.add(camera)
        log.warning("camera %s: fall.use_3d is on, but this camera is not configured with a floor_plane (--camera, "
                    "or replay of a camera not in the config): its people are judged on the picture, in 2D", camera)
    return FallDetector(config.fall, zones_of(cam) if cam is not None else (), plane)


class CameraPipeline:
    """Everything between one camera's frames and its events.

    ``model``: an open :class:`edge.inference.model.PoseModel` (spec, engine, input size, resize),
    shared by the cameras of a process, or None to track recorded skeletons only. ``detector``: a fall
    detector (default: :func:`create_detector`). ``ids``: the track id counter (shared across
    cameras and reloads). ``view_policy``: whether the tracks are watched for rotated views
    (default: when there is a model to run them). One thread per stage, frames in time order.
    """

    def __init__(self, camera: str, config: Any, model: Any = None, detector: Any = None,
                 ids: Optional[Iterator[int]] = None, parse_params: Optional[ParseParams] = None,
                 view_policy: Optional[bool] = None) -> None:
        self.camera = camera
        self.device = config.device_id
        self.model = model
        self.parse_params = parse_params
        self.view_params = config.views
        watch = model is not None if view_policy is None else view_policy
        self.views = ViewPolicy(self.view_params) if watch else None
        self.tracker = Tracker(config.tracker, ids)
        self.detector = detector if detector is not None else create_detector(config, camera)
        self._last_t = -math.inf  # the last frame time tracked: a time before it starts the state over
        family = model.spec.family if model is not None else None
        topdown = getattr(config, "topdown", TopDownConfig())
        self.topdown: Optional[TopDownPath] = None
        if family == "top_down":
            self.topdown = TopDownPath(model, topdown, camera, parse_params, self.view_params, self.seed_rotations)
        elif family == "single_person_3d":
            from edge.inference.body3d import DEFAULT_HFOV_DEG, Body3DPath

            cam = camera_config(config, camera)
            self.topdown = Body3DPath(model, topdown, camera, parse_params, self.view_params, self.seed_rotations,
                                      getattr(cam, "intrinsics", ()), getattr(cam, "hfov_deg", DEFAULT_HFOV_DEG))

    # ---------------------------------------------------------------- frame -> people

    def rotations(self, t: float, latest: bool = False) -> Tuple[int, ...]:
        """The views the frame at time ``t`` needs (upright only without a model). The policy gets
        ``t`` rounded as :meth:`track` rounds it for its observations: with the raw time, a frame
        rounded down looked not yet observed, and the daemon's preprocess waited for the next
        observation, i.e. for the engine to finish the frame in it."""
        return self.views.views_for(round(float(t), TIME_DECIMALS), latest) if self.views is not None else (0,)

    def skip(self, frame: Frame) -> None:
        """``frame`` was prepared but will never be tracked (its post-processing failed): the frames
        after it must not wait for it."""
        if self.views is not None:
            self.views.skip(round(float(frame.t), TIME_DECIMALS))
        if self.topdown is not None:
            self.topdown.skip()

    def cancel(self) -> None:
        """Nobody waits for a frame any more (the daemon is stopping)."""
        if self.views is not None:
            self.views.cancel()
        if self.topdown is not None:
            self.topdown.cancel()

    def seed_rotations(self, t: float) -> Tuple[int, ...]:
        """The views of a top-down path's seed frame at ``t``: asked now and then, once the frame
        before it was tracked, so from the newest observation."""
        return self.rotations(t, latest=True)

    def prepare(self, frame: Frame, rotations: Optional[Sequence[int]] = None, pool: Any = None) -> Any:
        """Views and preprocess: the frame's views (``rotations``, upright first; default: what the
        view policy asks for at ``frame.t``) as one engine batch, written into an array lent by
        ``pool`` (an :class:`edge.inference.batches.InputPool`, whose owner gives it back after the
        engine) or a new one. Top-down: the frame, queued (a
        :class:`~edge.inference.topdown.TopDownJob`; its crops are made by :meth:`infer`, so the
        daemon's "engine" time includes them; ``rotations`` and ``pool`` do not apply)."""
        if self.topdown is not None:
            return self.topdown.prepare(frame)
        model = self.model
        rotations = tuple(rotations) if rotations is not None else self.rotations(frame.t)
        batch, transforms = make_views(frame.image, model.spec, model.input_hw, model.resize, rotations,
                                       model.light, out=pool.take if pool is not None else None)
        return InferenceJob(frame, batch, tuple(transforms), rotations)

    def infer(self, job: Any) -> Dict[str, np.ndarray]:
        """The engine: raw outputs by tensor name, batch first (counted in the view statistics)."""
        if isinstance(job, TopDownJob):
            return self.topdown.infer(job)
        started = time.perf_counter()
        outputs = self.model.engine.run(job.batch)
        if self.views is not None:
            self.views.stats.note_inference(len(job.transforms), time.perf_counter() - started)
        return outputs

    def decode(self, outputs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """Raw outputs -> canonical ``(heatmaps (V, K[+1], h, w), pafs (V, 2L, h', w'))``."""
        return decode(self.model.spec, outputs)

    def parse(self, job: InferenceJob, heatmaps: np.ndarray, pafs: np.ndarray) -> People:
        """Parse every view (:func:`parse_views`), then :meth:`merge` them."""
        return self.merge(job, parse_views(self.model.spec, heatmaps, pafs, self.parse_params))

    def merge(self, job: InferenceJob, parsed: Sequence[Tuple[np.ndarray, np.ndarray]]) -> People:
        """:func:`merge_views` of the people of each view of ``job``."""
        size = (job.frame.image.shape[1], job.frame.image.shape[0])
        return merge_views(parsed, job.transforms, job.rotations, size, self.view_params)

    def find_people(self, job: Any, outputs: Dict[str, np.ndarray],
                    timer: Optional[StageTimer] = None) -> People:
        """:meth:`decode` then :meth:`parse`, each timed (top-down: the crops' heatmaps, as "decode")."""
        timer = timer or StageTimer(1)
        if isinstance(job, TopDownJob):
            with timer.measure("decode"):
                return self._topdown_people(job, outputs)
        with timer.measure("decode"):
            heatmaps, pafs = self.decode(outputs)
        with timer.measure("parse"):
            return self.parse(job, heatmaps, pafs)

    def maps(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Transform]:
        """One image's upright view -> canonical ``(heatmaps (K[+1], h, w), pafs (2L, h', w'),
        transform)`` (``model check``, ``doctor``). Top-down: the heatmaps of one crop of the whole image
        in project order (a part the model lacks, such as a derived neck: zeros) and one all-zero PAF pair."""
        if self.topdown is not None:
            if self.model.spec.heatmaps is None:
                from edge.inference.engines import EngineError

                raise EngineError("%s is a %s model: it gives keypoints, not heatmaps, so there are no maps to show "
                                  "(use `fallwatch detect` to see its people)" % (self.model.spec.name,
                                                                                  self.model.spec.family))
            return self._topdown_maps(image)
        job = self.prepare(still_frame(image, self.camera), (0,))
        heatmaps, pafs = self.decode(self.infer(job))
        return heatmaps[0], pafs[0], job.transforms[0]

    def detect(self, image: np.ndarray) -> People:
        """The people in one image, in the views ``views.policy`` runs on a still image (``always``:
        every view; otherwise upright), untracked (``detect``)."""
        if self.topdown is not None:  # the seed model gives the boxes
            job = self.topdown.prepare(still_frame(image, self.camera), seed=True, follow=False)
            return self._topdown_people(job, self.topdown.infer(job))
        job = self.prepare(still_frame(image, self.camera))
        return self.parse(job, *self.decode(self.infer(job)))

    def _topdown_people(self, job: TopDownJob, outputs: Dict[str, np.ndarray]) -> People:
        found = self.topdown.find_people(job, outputs)
        keypoints, scores, rotation = found[:3]
        points = found[3] if len(found) > 3 else None  # a single_person_3d model's 3D keypoints
        return People(quantise_keypoints(keypoints), rotation, scores.astype(np.float32), keypoints3d=points)

    def _topdown_maps(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Transform]:
        from edge.inference.crops import make_crops

        spec = self.model.spec
        batch, (transform,) = make_crops(image, spec, np.array([[0.0, 0.0, 1.0, 1.0]]), (0,), 1.0, self.model.light)
        heat = np.asarray(self.model.engine.run(batch)[spec.heatmaps.tensor])[0]
        heat = heat if spec.output_layout == "NCHW" else heat.transpose(2, 0, 1)
        canonical = np.zeros((len(KEYPOINTS),) + heat.shape[1:], np.float32)  # project order; derived parts 0
        canonical[list(spec.keypoint_map)] = heat[spec.heatmaps.channels[0]:spec.heatmaps.channels[1]]
        return canonical, np.zeros((2,) + heat.shape[1:], np.float32), transform

    # ---------------------------------------------------------------- people -> events

    def track(self, people: Union[People, np.ndarray], t: float, wall: float, size: Tuple[int, int],
              image: Optional[np.ndarray] = None, timer: Optional[StageTimer] = None
              ) -> Tuple[FrameRecord, List[Dict[str, Any]]]:
        """People of one frame (:class:`People`, or keypoints ``(N, 18, 3)`` normalised) at frame time
        ``t`` -> the frame record and the events it caused; then the view policy looks at the
        tracks. ``size`` is (width, height)."""
        timer = timer or StageTimer(1)
        t = round(float(t), TIME_DECIMALS)
        view = people.view if isinstance(people, People) else None
        points = people.keypoints3d if isinstance(people, People) else None
        keypoints = quantise_keypoints(people.keypoints if isinstance(people, People) else people)
        size = (int(size[0]), int(size[1]))
        if t < self._last_t:
            self._restart(t)
        self._last_t = t
        with timer.measure("track"):
            ids = self.tracker.update(keypoints, t, size, points)
            tracks = self.tracker.tracks
        with timer.measure("detect"):
            raw_events = self.detector.update(tracks, t, size)
        if self.views is not None:
            with timer.measure("views"):
                found_in = {int(i): int(v) for i, v in zip(ids, view)} if view is not None else {}
                self.views.observe(tracks, t, size, found_in,
                                   people.rotations if isinstance(people, People) else (0,))
        if self.topdown is not None:  # last: the next frame's crops wait for it (TopDownPath.infer)
            self.topdown.observe(keypoints, tracks, t, ids)
        by_id = {tr.id: tr for tr in tracks}
        events = [self._complete(e, by_id, t, wall) for e in raw_events]
        record = FrameRecord(self.camera, t, wall, size[0], size[1], keypoints, ids, image, view, points)
        return record, events

    def _restart(self, t: float) -> None:
        """The frame time went back (a recording looped with its own times, frames fed again): tracks, fall
        states and view holds of the later times would stick, so they start over."""
        log.info("%s: frame time went back (%.3f s after %.3f s): tracks, fall states and view holds start over",
                 self.camera, t, self._last_t)
        self.tracker.restart()
        for stage in (self.detector, self.views):
            if stage is not None and hasattr(stage, "restart"):
                stage.restart()

    def process(self, frame: Frame, timer: Optional[StageTimer] = None
                ) -> Tuple[FrameRecord, List[Dict[str, Any]]]:
        """Every stage, in one thread, for one frame."""
        timer = timer or StageTimer(1)
        with timer.measure("preprocess"):
            job = self.prepare(frame)
        with timer.measure("engine"):
            outputs = self.infer(job)
        people = self.find_people(job, outputs, timer)
        image = frame.image
        return self.track(people, frame.t, frame.wall, (image.shape[1], image.shape[0]), image=image, timer=timer)

    def _complete(self, event: Dict[str, Any], tracks: Dict[int, Track], t: float, wall: float) -> Dict[str, Any]:
        track = tracks.get(int(event.get("track_id", 0)))
        return make_event(event, self.device, self.camera, t, wall, track.keypoints if track is not None else None)


def still_frame(image: np.ndarray, camera: str = "image") -> Frame:
    """A single image as a frame at t = 0 (``detect``, ``model check``, ``doctor``)."""
    return Frame(camera, 0, 0.0, 0.0, image)


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
