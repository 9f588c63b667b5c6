"""The single-person 3D path (spec ``family: single_person_3d``, e.g. NVIDIA's BodyPose3DNet).

Such a model sees one person per crop, like a top-down one, so this path is
:class:`~edge.inference.topdown.TopDownPath` with the same crop sources (the previous frame's people and
tracks, the bottom-up seed model now and then), the same upright rotation of a lying person's crop and the
same ``topdown`` settings (box_scale, keypoint_threshold, min_keypoints, max_crops, duplicate_oks). What
differs is the engine call and the decoding:

* the engine gets, besides the crops, per crop: ``k_inv``, the inverse of the camera intrinsics in frame
  pixels (:func:`intrinsics`: the camera's ``intrinsics`` [fx, fy, cx, cy], else an assumed horizontal field
  of view ``hfov_deg`` with the principal point at the frame's centre); ``t_form_inv``, crop input pixels
  -> frame pixels (:func:`crop_to_frame_pixels`, the inverse of the crop's affine transform, rotation
  included); and the spec's constant limb-length inputs;
* the outputs: ``pose2d`` (crop input pixels) mapped to the project's 18 keypoints through the spec's
  ``to_project`` and back to the frame through the crop's transform (the same arithmetic as the top-down
  path, so 2D does not depend on how the model uses ``t_form_inv``); ``pose3d`` to metres
  (``pose3d_unit_m``), the 18 parts the 2D keeps, NaN where the part is missing.

Pixel coordinates are continuous: (0, 0) is the top-left corner of the top-left pixel, a pixel centre is at
``col + 0.5``; normalised coordinates are those divided by the width and height (edge.inference.preprocess).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from edge.inference.crops import suppress_duplicates
from edge.inference.preprocess import Transform
from edge.inference.topdown import TopDownJob, TopDownPath
from edge.skeleton import NUM_KEYPOINTS

DEFAULT_HFOV_DEG = 77.3  # NVIDIA's sample: focal 800.79 px on a 1280 px wide frame
COORD3D_DECIMALS = 4  # metres: 0.1 mm, so that a recorded skeleton JSONL replays bit-identically


def intrinsics(frame_size: Tuple[int, int], given: Sequence[float] = (), hfov_deg: float = DEFAULT_HFOV_DEG
               ) -> np.ndarray:
    """The 3x3 camera matrix in pixels of a frame of ``frame_size`` (width, height): from ``given``
    ``[fx, fy, cx, cy]``, or else fx = fy = width / 2 / tan(hfov / 2) and the principal point at the centre."""
    w, h = frame_size
    if given:
        fx, fy, cx, cy = (float(v) for v in given)
    else:
        fx = fy = (w / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        cx, cy = w / 2.0, h / 2.0
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def crop_to_frame_pixels(transform: Transform, input_hw: Tuple[int, int], frame_size: Tuple[int, int]) -> np.ndarray:
    """The 3x3 affine matrix taking a crop's input pixels ``[x, y, 1]`` to frame pixels: ``transform``
    (normalised crop input -> normalised frame) rescaled at both ends."""
    ih, iw = input_hw
    fw, fh = frame_size
    m = np.vstack([np.asarray(transform.matrix, np.float64), [0.0, 0.0, 1.0]])
    return np.diag([float(fw), float(fh), 1.0]) @ m @ np.diag([1.0 / iw, 1.0 / ih, 1.0])


class Body3DPath(TopDownPath):
    """The single_person_3d stages for one camera: :class:`TopDownPath` with the model's extra inputs fed and
    its outputs decoded. ``intrinsics`` / ``hfov_deg``: the camera's (:func:`intrinsics`)."""

    def __init__(self, model: Any, config: Any, camera: str = "", parse_params: Any = None, views: Any = None,
                 views_for: Any = None, intrinsics: Sequence[float] = (), hfov_deg: float = DEFAULT_HFOV_DEG) -> None:
        kwargs = {} if views is None else {"views": views}
        super().__init__(model, config, camera, parse_params, views_for=views_for, **kwargs)
        self.intrinsics = tuple(intrinsics)
        self.hfov_deg = float(hfov_deg)

    def extra_inputs(self, job: TopDownJob) -> Dict[str, np.ndarray]:
        """The model's inputs besides the crops, one row per crop of ``job`` (float32)."""
        body, spec = self.model.spec.body3d, self.model.spec
        image = job.frame.image
        size = (image.shape[1], image.shape[0])
        n = len(job.transforms)
        k_inv = np.linalg.inv(intrinsics(size, self.intrinsics, self.hfov_deg))
        feeds = {body.k_inv: np.repeat(k_inv[None], n, axis=0).astype(np.float32),
                 body.t_form_inv: np.stack([crop_to_frame_pixels(t, spec.input_size, size)
                                            for t in job.transforms]).astype(np.float32)}
        for name, values in body.limb_lengths:
            feeds[name] = np.repeat(np.asarray(values, np.float32)[None], n, axis=0)
        return feeds

    def _run(self, job: TopDownJob, batch: np.ndarray) -> Dict[str, np.ndarray]:
        return self.model.engine.run(batch, self.extra_inputs(job))

    def find_people(self, job: TopDownJob, outputs: Dict[str, np.ndarray]  # type: ignore[override]
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs of the crops -> ``(keypoints (N, 18, 3) normalised to the frame, scores (N,), rotation
        (N,) of each person's crop, keypoints3d (N, 18, 3) metres in camera coordinates, NaN where missing)``."""
        spec = self.model.spec
        body = spec.body3d
        empty = (np.zeros((0, NUM_KEYPOINTS, 3)), np.zeros(0), np.zeros(0, np.int64),
                 np.zeros((0, NUM_KEYPOINTS, 3)))
        if not job.transforms:
            return empty
        for name in (body.pose2d, body.pose3d):
            if name not in outputs:
                raise ValueError("%s: the engine gave no output named %s (it gave %s)"
                                 % (spec.name, name, ", ".join(outputs)))
        ih, iw = spec.input_size
        pose2d = np.asarray(outputs[body.pose2d], np.float64)
        pose3d = np.asarray(outputs[body.pose3d], np.float64) * body.pose3d_unit_m
        project = [p for p, _ in body.to_project]
        channel = [c for _, c in body.to_project]
        crop_kp = np.zeros((len(pose2d), NUM_KEYPOINTS, 3))
        crop_kp[:, project] = pose2d[:, channel] / np.array([iw, ih, 1.0])
        crop_kp[~(crop_kp[..., 2] >= self.config.keypoint_threshold)] = 0.0
        crop_3d = np.full((len(pose3d), NUM_KEYPOINTS, 3), np.nan)
        crop_3d[:, project] = pose3d[:, channel]
        crop_3d[crop_kp[..., 2] <= 0] = np.nan
        crop_3d[~np.isfinite(crop_3d).all(axis=2)] = np.nan
        people, scores, rotation, points = [], [], [], []
        for kp, kp3, transform, rot in zip(crop_kp, crop_3d, job.transforms, job.rotations):
            present = kp[:, 2] > 0
            if int(present.sum()) < self.config.min_keypoints:
                continue
            people.append(transform.keypoints_to_frame(kp[None])[0].astype(np.float64))
            scores.append(float(kp[present, 2].mean()))
            rotation.append(int(rot))
            points.append(np.round(kp3, COORD3D_DECIMALS))
        self.note_answers(job, len(people))
        if not people:
            return empty
        keypoints, score_arr = np.stack(people), np.asarray(scores)
        image = job.frame.image
        kept = suppress_duplicates(keypoints, score_arr, (image.shape[1], image.shape[0]), self.config.duplicate_oks)
        return keypoints[kept], score_arr[kept], np.asarray(rotation, np.int64)[kept], np.stack(points)[kept]
