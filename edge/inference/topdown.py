"""The top-down path of a camera: where the person crops come from, and the people they give.

A top-down model (spec ``family: top_down``) finds nobody on its own: it is shown crops. They come
from two sources:

* **the tracks**: the skeletons of the people found in the previous frame, and of the camera's
  confirmed tracks not seen in it (their last skeleton, until the tracker drops them): each one's
  box, widened by ``topdown.box_scale`` (:func:`edge.inference.crops.crop_geometry`);
* **seeding**: every ``topdown.seed_every_s`` seconds of frame time, a bottom-up model
  (``topdown.seed_spec``, e.g. the default mobilenet_thin) runs on the whole frame, in the views
  the camera's :class:`~edge.inference.views.ViewPolicy` asks for (``views.policy``: rotated ones
  too while a track looks like a fall, so that a person already lying is found): its people are
  cropped in the same frame, in place of the track skeletons their boxes overlap (half of the
  smaller box, edge.inference.views.box_overlap): the seed is this frame's, the track last frame's.

Without a seed model a top-down camera never finds anybody (no track ever starts): the pipeline
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
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from edge.inference.crops import (decode_heatmaps, make_crops, suppress_duplicates, to_project,
                                  torso_rotation)
from edge.inference.preprocess import Transform
from edge.inference.specs import decode
from edge.inference.views import ViewsConfig, box_overlap, make_views, merge_people
from edge.parse import ParseParams, parse_poses
from edge.settings import Section, setting
from edge.skeleton import NUM_KEYPOINTS, skeleton_bbox

log = logging.getLogger("fallwatch.topdown")

FOLLOW_WAIT_S = 2.0  # how long a frame's crops wait for the previous frame to be tracked
SEED_OVERLAP = 0.5  # a seed person whose box covers this much of a track's (or the reverse) is that person


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


@dataclass
class TopDownJob:
    """One frame's top-down work. ``after``: how many frames of the camera the tracker must have taken
    before its crops are chosen (None: do not wait; a still image); ``seed``: force (True) or forbid
    (False) the seed model, None = when due. :meth:`TopDownPath.infer` fills in ``skeletons`` (M, 18, 3)
    whose boxes are cropped, the seed model's input when the frame is seeded, and ``transforms`` and
    ``rotations`` (one per crop, the order of the engine batch)."""

    frame: Any
    after: Optional[int] = None
    seed: Optional[bool] = None
    skeletons: np.ndarray = field(default_factory=lambda: np.zeros((0, NUM_KEYPOINTS, 3)), repr=False)
    seed_batch: Optional[np.ndarray] = None
    seed_transforms: Tuple[Transform, ...] = ()
    transforms: Tuple[Transform, ...] = ()
    rotations: Tuple[int, ...] = ()
    seeded: int = 0  # crops that came from the seed model
    batch: Optional[np.ndarray] = field(default=None, repr=False)


class TopDownPath:
    """The top-down stages for one camera. ``model``: an open edge.inference.model.PoseModel whose spec
    is top_down, with ``model.seed`` (a bottom-up PoseModel) or None; ``config``: the TopDownConfig;
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
        self.parse_params = parse_params
        self._lock = threading.Lock()
        self._observed = threading.Condition(self._lock)
        self._skeletons = np.zeros((0, NUM_KEYPOINTS, 3))
        self._last_seed_t: Optional[float] = None
        self._frames_prepared = 0  # frames handed to prepare (follow=True)
        self._frames_observed = 0  # frames the tracker has taken since
        self._cancelled = False  # the daemon stops: nobody waits any more
        if self.seed is None:
            log.warning("camera %s: model %s is top-down and topdown.seed_spec is null: it only looks inside boxes "
                        "and nothing gives it any, so it will find nobody; set topdown.seed_spec (README, Model "
                        "families)", camera or "?", model.spec.name)

    # ---------------------------------------------------------------- the crop sources

    def observe(self, keypoints: np.ndarray, tracks: Sequence[Any], t: float) -> None:
        """After the tracker took the frame at ``t``: its people (``(N, 18, 3)`` frame coordinates) and
        the confirmed tracks it was not seen in (their last skeleton) are next frame's crops."""
        rows = [np.asarray(k, np.float64) for k in np.asarray(keypoints, np.float64).reshape(-1, NUM_KEYPOINTS, 3)]
        rows += [np.asarray(tr.keypoints, np.float64) for tr in tracks if tr.last_t < t]
        with self._observed:
            self._skeletons = np.stack(rows) if rows else np.zeros((0, NUM_KEYPOINTS, 3))
            self._frames_observed += 1
            self._observed.notify_all()

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
            last = self._last_seed_t
            if last is not None and 0 <= t - last < self.config.seed_every_s:
                return False
            self._last_seed_t = t
        return True

    # ---------------------------------------------------------------- stages

    def prepare(self, frame: Any, seed: Optional[bool] = None, follow: bool = True) -> TopDownJob:
        """The frame's job; nothing is computed yet. The crops depend on the previous frame's people, which
        the daemon's post thread may still be tracking while this frame is prepared, so :meth:`infer`
        chooses them once it has (``follow``: this frame continues the camera's stream; False for a
        still image). ``seed``: force (True) or forbid (False) the seed model; None = when due."""
        if not follow:
            return TopDownJob(frame, None, seed)
        with self._lock:
            job = TopDownJob(frame, self._frames_prepared, seed)
            self._frames_prepared += 1
        return job

    def _crop_sources(self, job: TopDownJob) -> np.ndarray:
        """The skeletons of the frames before ``job`` (waiting up to FOLLOW_WAIT_S for the tracker to take
        the previous one: then run and replay of one clip crop the same boxes)."""
        with self._observed:
            if job.after is not None and not self._observed.wait_for(
                    lambda: self._frames_observed >= job.after or self._cancelled, timeout=FOLLOW_WAIT_S):
                log.warning("top-down: frame at t = %.3f s goes ahead without the previous frame's people (not "
                            "tracked within %.1f s)", job.frame.t, FOLLOW_WAIT_S)
                self._frames_observed = job.after  # a frame lost on the way must not hold up every later one
            return self._skeletons.copy()

    def infer(self, job: TopDownJob) -> Dict[str, np.ndarray]:
        """The engines: the seed model when the frame is seeded (in the views the view policy asks for; its
        people are parsed here, as they decide the crops), then every crop of the frame in one batch of the
        top-down engine. The crops and the seed's input are made here, after the previous frame was tracked."""
        batch = self.crops(job)
        if not len(batch):
            return {}
        return self._run(job, batch)

    def crops(self, job: TopDownJob) -> np.ndarray:
        """The first half of :meth:`infer`: the seed model (when the frame is seeded) and the frame's crops
        ``(M, ...)``, kept in ``job`` with their transforms and rotations; the top-down engine is not run
        (``fallwatch-calibrate`` takes its calibration crops from here, with :meth:`extra_inputs`)."""
        skeletons = self._crop_sources(job)[:self.config.max_crops]
        job.skeletons = skeletons
        run_seed = self.seed_due(job.frame.t) if job.seed is None else bool(job.seed and self.seed is not None)
        if run_seed:
            s = self.seed
            job.seed_batch, job.seed_transforms = make_views(job.frame.image, s.spec, s.input_hw, s.resize,
                                                             self.views_for(job.frame.t), s.light)
        image = job.frame.image
        size = (image.shape[1], image.shape[0])
        if job.seed_batch is not None:
            found = self._seed_people(job)[:self.config.max_crops]
            tracked = [k for k in skeletons if all(box_overlap(k, f, size) < SEED_OVERLAP for f in found)]
            job.seeded = len(found)
            skeletons = np.concatenate([found, np.asarray(tracked).reshape(-1, NUM_KEYPOINTS, 3)])
            skeletons = skeletons[:self.config.max_crops]
        keep = [i for i, box in enumerate(skeleton_bbox(skeletons, 1e-9)) if box[2] > box[0] or box[3] > box[1]]
        skeletons = skeletons[keep]
        rotations = tuple(torso_rotation(k, size) for k in skeletons)
        model = self.model
        batch, transforms = make_crops(image, model.spec, skeleton_bbox(skeletons, 1e-9), rotations,
                                       self.config.box_scale, model.light)
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
        if not people:
            return np.zeros((0, NUM_KEYPOINTS, 3)), np.zeros(0), np.zeros(0, np.int64)
        keypoints, score_arr = np.stack(people), np.asarray(scores)
        image = job.frame.image
        kept = suppress_duplicates(keypoints, score_arr, (image.shape[1], image.shape[0]), self.config.duplicate_oks)
        return keypoints[kept], score_arr[kept], np.asarray(rotation, np.int64)[kept]

