"""The top-down path of a camera: where the person crops come from, and the people they give.

A top-down model (spec ``family: top_down``) finds nobody on its own: it is shown crops. They come
from three sources:

* **the tracks**: the skeletons of the people found in the previous frame, and of the camera's
  confirmed tracks not seen in it (their last skeleton, until the tracker drops them): each one's
  box, **predicted forward** to this frame's time when it is a confirmed track's
  (:func:`edge.inference.crops.box_velocity` over the track's boxes of the last
  ``topdown.predict_window_s``, by their timestamps; :func:`edge.inference.crops.predict_box`: the
  box moved by that velocity times the seconds since it was seen, united with where it was), then
  widened by ``topdown.box_scale`` (:func:`edge.inference.crops.crop_geometry`);
* **a person detector** (``topdown.detector``, edge.inference.detector), every
  ``topdown.detector.every_s`` seconds of frame time: its boxes (those the seed did not find) are this
  frame's finds, like the seed's people; a box of nobody tracked is cropped upright;
* **seeding**: every ``topdown.seed_every_s`` seconds of frame time, a bottom-up model
  (``topdown.seed_spec``, e.g. the default mobilenet_thin) runs on the whole frame, in the views
  the camera's :class:`~edge.inference.views.ViewPolicy` asks for (``views.policy``: rotated ones
  too while a track looks like a fall, so that a person already lying is found): its people are
  cropped in the same frame. A track box that overlaps one of this frame's finds (a seed person or a
  detector box: half of the smaller box, edge.inference.crops.boxes_overlap) is that person: it is not
  cropped on its own; when the find has fewer parts than the track's skeleton (a seed may find only
  part of a person, a detector's box has no parts and a detector trained on upright people may box
  only part of a lying one), the find's crop is widened to hold the track's box too and turned like
  the track's skeleton.
  The frame after one in which a crop found nobody is seeded too (``topdown.seed_when_lost``): a
  falling person leaves the box of their last skeleton within a frame or two, and without it the
  path kept cropping that empty box until the next periodic seed.

Without a seed model or a detector a top-down camera never finds anybody (no track ever starts): the pipeline
logs so when it is created. A crop whose skeleton's torso is far from vertical is turned upright
(:func:`edge.inference.crops.torso_rotation`) before the network sees it, and its keypoints turned
back. All crops of a frame go to the engine as one batch; each gives a person when at least
``topdown.min_keypoints`` of its parts reach ``topdown.keypoint_threshold``, and of two skeletons
of one person (OKS at least ``topdown.duplicate_oks``) the better scored is kept.

:class:`TopDownPath` has the pipeline's stage methods (prepare, infer, find_people) and
:meth:`TopDownPath.observe`, which the track stage calls; they may run on different threads.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.inference.crops import (box_velocity, boxes_overlap, decode_heatmaps, make_crops, predict_box,
                                  suppress_duplicates, to_project, torso_rotation)
from edge.inference.detector import DetectorConfig
from edge.inference.preprocess import Transform
from edge.inference.specs import decode
from edge.inference.views import ViewsConfig, make_views, merge_people
from edge.parse import ParseParams, parse_poses
from edge.settings import Section, section, setting
from edge.skeleton import NUM_KEYPOINTS, skeleton_bbox

log = logging.getLogger("fallwatch.topdown")

FOLLOW_WAIT_S = 2.0  # how long a frame's crops wait for the previous frame to be tracked
SEED_OVERLAP = 0.5  # a seed person's (or detector's) box covering this much of a track's (or the reverse) is that person


@dataclass(frozen=True)
class TopDownConfig(Section):
    """The ``topdown`` settings: only read when ``model.spec`` is a top-down (or single-person 3D) model."""

    seed_spec: Optional[str] = setting(
        None, "a bottom-up model spec (built-in name or YAML path) run on whole frames every seed_every_s to find "
        "people for the top-down model's crops; null = none, and then nobody is ever found")
    seed_onnx: Optional[Path] = setting(None, "the seed model's ONNX file; null = the default model under models_dir "
                                        "(seed_spec openpose-mobilenet-thin only)")
    seed_input_height: int = setting(368, "the seed model's input height, pixels", between=(32, 2048))
    seed_input_width: int = setting(432, "the seed model's input width, pixels", between=(32, 2048))
    seed_every_s: float = setting(1, "run the seed model this often, seconds of frame time; 0 = every frame",
                                  between=(0, 3600))
    seed_when_lost: bool = setting(True, "also run the seed model on the frame after one in which a crop found "
                                   "nobody: the person moved out of their box (a fall is fast) or the crop was bad; "
                                   "costs one bottom-up pass per frame while someone is lost")
    box_scale: float = setting(1.25, "a person's box is widened by this factor before it is cropped",
                               between=(1, 4))
    keypoint_threshold: float = setting(0.1, "a keypoint whose heatmap maximum is below this is missing (ailia's "
                                        "PoseResNet sample draws from 0.1)",
                                        between=(0, 1))
    min_keypoints: int = setting(4, "a crop gives a person only with at least this many keypoints",
                                 between=(1, 17))
    max_crops: int = setting(16, "crops per frame at most (the cost grows with them); seed people first",
                             between=(1, 256))
    duplicate_oks: float = setting(0.7, "two skeletons this similar (COCO OKS) are one person found twice",
                                   between=(0, 1))
    predict_window_s: float = setting(
        0.5, "a confirmed track's crop box is moved forward by the velocity of its boxes over this much past, "
        "seconds; 0 = crop the last box where it was", between=(0, 10))
    detector: DetectorConfig = section(DetectorConfig, "a person detector (ONNX/TensorRT, its own spec) whose boxes "
                                       "are crops")


@dataclass
class TopDownJob:
    """One frame's top-down work. ``after``: how many frames of the camera the tracker must have taken
    before its crops are chosen (None: do not wait; a still image); ``seed``: force (True) or forbid
    (False) the frame's own finders (the seed model and the person detector), None = each when due.
    :meth:`TopDownPath.infer` fills in ``boxes`` (M, 4) cropped (normalised, before ``box_scale``),
    ``skeletons`` (M, 18, 3) they came from (zeros for a detector's box), the seed model's input when the
    frame is seeded, and ``transforms`` and ``rotations`` (one per crop, the order of the engine batch);
    ``seeded`` and ``detected`` count the crops from the seed and from the detector (they come first)."""

    frame: Any
    after: Optional[int] = None
    seed: Optional[bool] = None
    skeletons: np.ndarray = field(default_factory=lambda: np.zeros((0, NUM_KEYPOINTS, 3)), repr=False)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)), repr=False)
    seed_batch: Optional[np.ndarray] = None
    seed_transforms: Tuple[Transform, ...] = ()
    transforms: Tuple[Transform, ...] = ()
    rotations: Tuple[int, ...] = ()
    seeded: int = 0  # crops that came from the seed model
    detected: int = 0  # crops that came from the person detector
    batch: Optional[np.ndarray] = field(default=None, repr=False)


@dataclass(frozen=True)
class CropSource:
    """A person of the last frame (or a confirmed track unseen in it) as a crop of the next: its skeleton,
    its box (normalised), the velocity of the box's sides (per second; zeros unless a confirmed track's)
    and the frame time it was seen at."""

    skeleton: np.ndarray
    box: np.ndarray
    velocity: np.ndarray
    seen_t: float


def _parts(skeleton: Optional[np.ndarray]) -> int:
    return 0 if skeleton is None else int((np.asarray(skeleton)[:, 2] > 0).sum())


@dataclass
class _Crop:
    skeleton: Optional[np.ndarray]
    box: np.ndarray
    rotation: int
    origin: str = "track"  # track | seed | detector


class TopDownPath:
    """The top-down stages for one camera. ``model``: an open edge.inference.model.PoseModel whose spec
    is top_down, with ``model.seed`` (a bottom-up PoseModel) or None and ``model.detector`` (an
    edge.inference.detector.PersonDetector) or None; ``config``: the TopDownConfig;
    ``views``: the ViewsConfig (how the seed's views are merged) and ``views_for``: the rotations the
    seed runs at a frame time (the camera's view policy; default upright only)."""

    def __init__(self, model: Any, config: TopDownConfig, camera: str = "",
                 parse_params: Optional[ParseParams] = None, views: ViewsConfig = ViewsConfig(),
                 views_for: Optional[Callable[[float], Tuple[int, ...]]] = None) -> None:
        self.model = model
        self.config = config
        self.views = views
        self.views_for = views_for or (lambda t: (0,))
        self.seed = getattr(model, "seed", None)
        self.detector = getattr(model, "detector", None)
        self.parse_params = parse_params
        self._lock = threading.Lock()
        self._observed = threading.Condition(self._lock)
        self._sources: List[CropSource] = []
        self._last_seed_t: Optional[float] = None
        self._lost = False  # a crop of the last frame found nobody: seed the next one (seed_when_lost)
        self._last_detect_t: Optional[float] = None
        self._frames_prepared = 0  # frames handed to prepare (follow=True)
        self._frames_observed = 0  # frames the tracker has taken since
        self._cancelled = False  # the daemon stops: nobody waits any more
        if self.seed is None and self.detector is None:
            log.warning("camera %s: model %s is top-down and topdown.seed_spec is null, and so is topdown.detector.spec: "
                        "it only looks inside boxes and nothing gives it any, so it will find nobody; set one "
                        "(README, Model families)", camera or "?", model.spec.name)

    # ---------------------------------------------------------------- the crop sources

    def observe(self, keypoints: np.ndarray, tracks: Sequence[Any], t: float,
                ids: Optional[Sequence[int]] = None) -> None:
        """After the tracker took the frame at ``t``: its people (``(N, 18, 3)`` frame coordinates; ``ids``
        their track ids, 0 = tentative, as Tracker.update returned them) and the confirmed tracks it was not
        seen in (their last skeleton) are next frame's crops; a confirmed track's box carries the velocity of
        its boxes over ``topdown.predict_window_s`` (edge.track.Track.history). Without ``ids`` a person is
        the confirmed track seen at ``t`` with the same keypoints."""
        kp = np.asarray(keypoints, np.float64).reshape(-1, NUM_KEYPOINTS, 3)
        by_id = {tr.id: tr for tr in tracks}
        rows = []
        for i, k in enumerate(kp):
            if ids is not None:
                track = by_id.get(int(ids[i])) if i < len(ids) else None
            else:
                track = next((tr for tr in tracks if tr.last_t == t and np.array_equal(tr.keypoints, k)), None)
            rows.append(self._source(k, track, t))
        rows += [self._source(np.asarray(tr.keypoints, np.float64), tr, tr.last_t) for tr in tracks if tr.last_t < t]
        with self._observed:
            self._sources = rows
            self._frames_observed += 1
            self._observed.notify_all()

    def _source(self, skeleton: np.ndarray, track: Any, seen_t: float) -> CropSource:
        box = skeleton_bbox(skeleton[None], 1e-9)[0]
        velocity = np.zeros(4)
        window = self.config.predict_window_s
        if track is not None and window > 0:
            history = track.history(since_t=seen_t - window)
            velocity = box_velocity(history.t, history.bbox)
        return CropSource(skeleton, box, velocity, float(seen_t))

    def skip(self) -> None:
        """The frame after the last observed one will never be tracked (its post-processing failed):
        the next frame's crops do not wait for it (they keep the last people)."""
        with self._observed:
            self._frames_observed += 1
            self._observed.notify_all()

    def cancel(self) -> None:
        """Stop waiting (the daemon is stopping): frames still in flight go ahead without waiting."""
        with self._observed:
            self._cancelled = True
            self._observed.notify_all()

    def seed_due(self, t: float) -> bool:
        """Whether the frame at ``t`` runs the seed model (and, when it does, note that it did)."""
        if self.seed is None:
            return False
        with self._lock:
            last, lost = self._last_seed_t, self._lost and self.config.seed_when_lost
            self._lost = False
            if not lost and last is not None and 0 <= t - last < self.config.seed_every_s:
                return False
            self._last_seed_t = t
        return True

    def note_answers(self, job: TopDownJob, answered: int) -> None:
        """``answered`` of ``job``'s crops gave a person: when some gave nobody, the next frame is seeded
        (``seed_when_lost``). Called by find_people, which runs before the frame is tracked, so before
        the next frame's :meth:`infer` asks :meth:`seed_due` (run and replay seed the same frames)."""
        if answered < len(job.transforms):
            with self._lock:
                self._lost = True
    def detector_due(self, t: float) -> bool:
        """Whether the frame at ``t`` runs the person detector (and, when it does, note that it did)."""
        if self.detector is None:
            return False
        with self._lock:
            last = self._last_detect_t
            if last is not None and 0 <= t - last < self.config.detector.every_s:
                return False
            self._last_detect_t = t
        return True

    # ---------------------------------------------------------------- stages

    def prepare(self, frame: Any, seed: Optional[bool] = None, follow: bool = True) -> TopDownJob:
        """The frame's job; nothing is computed yet. The crops depend on the previous frame's people, which
        the daemon's post thread may still be tracking while this frame is prepared, so :meth:`infer`
        chooses them once it has (``follow``: this frame continues the camera's stream; False for a
        still image). ``seed``: force (True) or forbid (False) the seed model and the detector; None = when
        due."""
        if not follow:
            return TopDownJob(frame, None, seed)
        with self._lock:
            job = TopDownJob(frame, self._frames_prepared, seed)
            self._frames_prepared += 1
        return job

    def _crop_sources(self, job: TopDownJob) -> List[CropSource]:
        """The people of the frames before ``job`` (waiting up to FOLLOW_WAIT_S for the tracker to take
        the previous one: then run and replay of one clip crop the same boxes)."""
        with self._observed:
            if job.after is not None and not self._observed.wait_for(
                    lambda: self._frames_observed >= job.after or self._cancelled, timeout=FOLLOW_WAIT_S):
                log.warning("top-down: frame at t = %.3f s goes ahead without the previous frame's people (not "
                            "tracked within %.1f s)", job.frame.t, FOLLOW_WAIT_S)
                self._frames_observed = job.after  # a frame lost on the way must not hold up every later one
            return list(self._sources)

    def infer(self, job: TopDownJob) -> Dict[str, np.ndarray]:
        """The engines: the seed model when the frame is seeded (in the views the view policy asks for; its
        people are parsed here, as they decide the crops) and the person detector when it is due, then every
        crop of the frame in one batch of the top-down engine. The crops and the seed's input are made here,
        after the previous frame was tracked. Order of the crops: the seed's people, the detector's boxes
        that are nobody the seed found, the tracks' boxes (predicted to this frame) that overlap none of
        these finds (one that does widens the crop of a find with fewer parts instead); at most ``topdown.max_crops``."""
        batch = self.crops(job)
        if not len(batch):
            return {}
        return self._run(job, batch)

    def crops(self, job: TopDownJob) -> np.ndarray:
        """The first half of :meth:`infer`: the seed model and the person detector (when due) and the frame's
        crops ``(M, ...)``, kept in ``job`` with their boxes, transforms and rotations; the top-down engine is
        not run (``fallwatch-calibrate`` takes its calibration crops from here, with :meth:`extra_inputs`)."""
        image = job.frame.image
        size = (image.shape[1], image.shape[0])
        t = float(job.frame.t)
        cap = self.config.max_crops
        tracked = [_Crop(s.skeleton, predict_box(s.box, s.velocity, t - s.seen_t), torso_rotation(s.skeleton, size))
                   for s in self._crop_sources(job)[:cap]]
        run_seed = self.seed_due(t) if job.seed is None else bool(job.seed and self.seed is not None)
        run_detector = self.detector_due(t) if job.seed is None else bool(job.seed and self.detector is not None)
        fresh: List[_Crop] = []
        if run_seed:
            s = self.seed
            job.seed_batch, job.seed_transforms = make_views(image, s.spec, s.input_hw, s.resize,
                                                             self.views_for(t), s.light)
            found = self._seed_people(job)[:cap]
            fresh = [_Crop(k, skeleton_bbox(k[None], 1e-9)[0], torso_rotation(k, size), "seed") for k in found]
        if run_detector:
            boxes, _ = self.detector.detect(image)
            fresh += [_Crop(None, np.asarray(box, np.float64), 0, "detector") for box in boxes
                      if all(boxes_overlap(box, f.box, size) < SEED_OVERLAP for f in fresh)]  # else: the seed's
        crops = fresh[:cap]
        for crop in tracked:
            overlaps = [boxes_overlap(crop.box, f.box, size) for f in crops]
            best = int(np.argmax(overlaps)) if overlaps else -1
            if best < 0 or overlaps[best] < SEED_OVERLAP:
                crops.append(crop)
                continue
            found = crops[best]  # this frame's find of the track's person
            if _parts(crop.skeleton) > _parts(found.skeleton):  # a part of them: the crop holds both, turned as the track
                found.box = np.concatenate([np.minimum(found.box[:2], crop.box[:2]),
                                            np.maximum(found.box[2:], crop.box[2:])])
                found.rotation = crop.rotation
        crops = [c for c in crops[:cap] if c.box[2] > c.box[0] or c.box[3] > c.box[1]]
        job.seeded = sum(c.origin == "seed" for c in crops)
        job.detected = sum(c.origin == "detector" for c in crops)
        job.boxes = np.array([c.box for c in crops], np.float64).reshape(-1, 4)
        job.skeletons = np.array([c.skeleton if c.skeleton is not None else np.zeros((NUM_KEYPOINTS, 3))
                                  for c in crops], np.float64).reshape(-1, NUM_KEYPOINTS, 3)
        rotations = tuple(int(c.rotation) for c in crops)
        model = self.model
        batch, transforms = make_crops(image, model.spec, job.boxes, rotations, self.config.box_scale, model.light)
        job.transforms, job.rotations, job.batch = transforms, rotations, batch
        return batch

    def extra_inputs(self, job: TopDownJob) -> Dict[str, np.ndarray]:
        """The model's inputs besides the crops, one row per crop of ``job``: none for a top-down model
        (a single_person_3d path has several)."""
        return {}

    def _run(self, job: TopDownJob, batch: np.ndarray) -> Dict[str, np.ndarray]:
        """The engine call on the frame's crops (a single_person_3d path feeds more inputs)."""
        return self.model.engine.run(batch)

    def _seed_people(self, job: TopDownJob) -> np.ndarray:
        """The seed model's people in this frame, every view merged, ``(N, 18, 3)`` frame coordinates."""
        s = self.seed
        heatmaps, pafs = decode(s.spec, s.engine.run(job.seed_batch))
        parsed = [parse_poses(heatmaps[i], pafs[i], s.spec.topology, self.parse_params) for i in range(len(heatmaps))]
        image = job.frame.image
        keypoints, _, _ = merge_people([k for k, _ in parsed], [sc for _, sc in parsed], job.seed_transforms,
                                       (image.shape[1], image.shape[0]), self.views.merge_distance,
                                       self.views.merge_box_overlap)
        return np.asarray(keypoints, np.float64)

    def find_people(self, job: TopDownJob, outputs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs of the crops -> ``(keypoints (N, 18, 3) frame coordinates, scores (N,), rotation (N,)
        of the crop each person came from)``."""
        spec = self.model.spec
        if not job.transforms:
            return np.zeros((0, NUM_KEYPOINTS, 3)), np.zeros(0), np.zeros(0, np.int64)
        if spec.heatmaps.tensor not in outputs:
            raise ValueError("%s: the engine gave no output named %s (it gave %s)"
                             % (spec.name, spec.heatmaps.tensor, ", ".join(outputs)))
        heat = np.asarray(outputs[spec.heatmaps.tensor])
        if spec.output_layout == "NHWC":
            heat = heat.transpose(0, 3, 1, 2)
        lo, hi = spec.heatmaps.channels
        crop_kp = to_project(spec, decode_heatmaps(spec, heat[:, lo:hi]), self.config.keypoint_threshold)
        people, scores, rotation = [], [], []
        for kp, transform, rot in zip(crop_kp, job.transforms, job.rotations):
            present = kp[:, 2] > 0
            if int(present[list(spec.keypoint_map)].sum()) < self.config.min_keypoints:
                continue
            people.append(transform.keypoints_to_frame(kp[None])[0].astype(np.float64))
            scores.append(float(kp[present, 2].mean()))
            rotation.append(int(rot))
        self.note_answers(job, len(people))
        if not people:
            return np.zeros((0, NUM_KEYPOINTS, 3)), np.zeros(0), np.zeros(0, np.int64)
        keypoints, score_arr = np.stack(people), np.asarray(scores)
        image = job.frame.image
        kept = suppress_duplicates(keypoints, score_arr, (image.shape[1], image.shape[0]), self.config.duplicate_oks)
        return keypoints[kept], score_arr[kept], np.asarray(rotation, np.int64)[kept]

