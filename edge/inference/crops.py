"""Top-down pose geometry: person crops in, keypoints in frame coordinates out.

A top-down network (spec ``family: top_down``, e.g. PoseResNet) sees one person at a time: a crop
of fixed size (the spec's ``input.size``) around a box, and gives one heatmap per keypoint. This
module is the arithmetic of that path, with no state and no engine:

* :func:`crop_geometry` -- the crop around a skeleton's box: widened by ``box_scale`` (Simple
  Baselines' 1.25), brought to the network's aspect ratio, and turned by ``rotation`` (degrees
  clockwise, a multiple of 90) so that a lying person stands upright in it; :func:`torso_rotation`
  picks that rotation from the skeleton's torso (hips to neck, the angle of
  edge.inference.views.track_features, signed);
* :func:`make_crops` -- the crops of one frame as one engine batch (the spec's layout, colour order
  and normalisation), with each crop's :class:`~edge.inference.preprocess.Transform` back to the frame;
* :func:`decode_heatmaps` -- per keypoint the heatmap's argmax, moved a quarter cell towards the
  higher neighbour on each axis (Simple Baselines), confidence = the maximum, in the crop's
  normalised input coordinates; :func:`to_project` maps the model's keypoints (e.g. COCO's 17) to
  the project's 18 (missing: (0, 0, 0); ``derived`` ones such as the neck are the midpoint of two
  parts, present only when both are);
* :func:`box_velocity` -- how fast each side of a track's box moves (a least-squares line through
  its recent boxes against their timestamps: frames need not be evenly spaced), and
  :func:`predict_box` -- a box moved forward by it to a later time, united with where it was, so
  that a person who moves is cropped whole and a still one exactly as before; :func:`boxes_overlap`
  -- how much of the smaller of two boxes the other covers;
* :func:`oks` -- COCO's object keypoint similarity on the 18 parts (:data:`SIGMAS`), and
  :func:`suppress_duplicates`, which keeps one skeleton of a person two crops found.

Coordinates: keypoints ``(N, 18, 3)`` ``(x, y, confidence)`` with x, y normalised to the frame
(pixel centres at ``(col + 0.5) / W``), as everywhere in fallwatch.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.inference.preprocess import LowLight, Transform, brighten, mean_luma
from edge.inference.specs import ModelSpec
from edge.skeleton import (KEYPOINT_INDEX, NECK, NUM_KEYPOINTS, L_HIP, L_SHOULDER, R_HIP, R_SHOULDER,
                           skeleton_bbox)

# COCO keypoint sigmas (cocodataset/cocoapi, PythonAPI/pycocotools/cocoeval.py) by project part; the
# neck, which COCO lacks, takes the shoulders'.
_COCO_SIGMA = {"nose": .026, "l_eye": .025, "r_eye": .025, "l_ear": .035, "r_ear": .035, "l_shoulder": .079,
               "r_shoulder": .079, "l_elbow": .072, "r_elbow": .072, "l_wrist": .062, "r_wrist": .062,
               "l_hip": .107, "r_hip": .107, "l_knee": .087, "r_knee": .087, "l_ankle": .089, "r_ankle": .089,
               "neck": .079}
SIGMAS = np.array([_COCO_SIGMA[name] for name in sorted(KEYPOINT_INDEX, key=KEYPOINT_INDEX.get)])
SIGMAS.setflags(write=False)


def torso_rotation(keypoints: np.ndarray, frame_size: Tuple[float, float]) -> int:
    """The rotation (degrees clockwise: 0, 90, 180 or -90) that turns this skeleton's torso nearest to
    upright: the hips-to-neck direction (neck, else the shoulders' midpoint; hips' midpoint, one side
    when the other is missing) rounded to a multiple of 90 degrees. 0 when the torso is not seen."""
    kp = np.asarray(keypoints, np.float64).reshape(NUM_KEYPOINTS, 3)
    xy, seen = kp[:, :2] * np.asarray(frame_size, np.float64), kp[:, 2] > 0

    def mid(a: int, b: int) -> Optional[np.ndarray]:
        if seen[a] and seen[b]:
            return (xy[a] + xy[b]) / 2
        return xy[a] if seen[a] else xy[b] if seen[b] else None

    neck = xy[NECK] if seen[NECK] else mid(R_SHOULDER, L_SHOULDER)
    hip = mid(R_HIP, L_HIP)
    if neck is None or hip is None or not np.any(neck != hip):
        return 0
    dx, dy = neck - hip
    signed = math.degrees(math.atan2(dx, -dy))  # 0: head up, 90: head to the right, -90: to the left
    turn = -int(round(signed / 90.0)) * 90
    return {-180: 180, 180: 180, -270: 90, 270: -90}.get(turn, turn)


def crop_geometry(box: Sequence[float], rotation: int, input_hw: Tuple[int, int], frame_size: Tuple[int, int],
                  box_scale: float = 1.25) -> Tuple[np.ndarray, Transform]:
    """The crop of a box ``x0, y0, x1, y1`` (normalised to the frame): ``(pixel_map, transform)``.

    The box, widened by ``box_scale`` and then along one side to the input's aspect ratio (height x
    width ``input_hw``) as seen after turning it by ``rotation`` degrees clockwise, fills the input.
    ``pixel_map`` (2x3) takes input pixel indices to frame pixel indices (cv2.warpAffine with
    WARP_INVERSE_MAP); ``transform`` takes normalised input coordinates to normalised frame ones.
    """
    if rotation not in (0, 90, 180, -90, 270):
        raise ValueError("rotation %r: use 0, 90, 180 or -90 (degrees clockwise)" % (rotation,))
    fw, fh = frame_size
    ih, iw = input_hw
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2 * fw, (y0 + y1) / 2 * fh
    bw, bh = max((x1 - x0) * fw, 1.0), max((y1 - y0) * fh, 1.0)
    if rotation in (90, -90, 270):
        bw, bh = bh, bw  # the box as the crop sees it
    bw, bh = bw * box_scale, bh * box_scale
    scale = max(bw / iw, bh / ih)  # frame pixels per input pixel
    r = math.radians(rotation)
    c, s = round(math.cos(r)), round(math.sin(r))
    a = scale * np.array([[c, s], [-s, c]], np.float64)  # input offset -> frame offset (pixels)
    b = np.array([cx, cy]) - a @ np.array([iw / 2.0, ih / 2.0])
    pixel_map = np.hstack([a, (a @ np.array([0.5, 0.5]) + b - 0.5)[:, None]])
    norm = np.diag([1.0 / fw, 1.0 / fh]) @ np.hstack([a @ np.diag([float(iw), float(ih)]), b[:, None]])
    return pixel_map, Transform(tuple(tuple(float(v) for v in row) for row in norm))


def make_crops(frame: np.ndarray, spec: ModelSpec, boxes: np.ndarray, rotations: Sequence[int],
               box_scale: float = 1.25, light: Optional[LowLight] = None
               ) -> Tuple[np.ndarray, Tuple[Transform, ...]]:
    """The crops of ``frame`` (BGR uint8) around ``boxes`` (M, 4), each turned by its rotation, as one
    batch ``(M, ...)`` float32 in the spec's layout, colour order and normalisation (outside the frame:
    pixel value 0), and each crop's transform back to the frame. A crop that shrinks the frame by 2x
    or more is cut from a copy of the frame shrunk by an integer factor first (INTER_AREA), so that it
    is not aliased. ``light``: crops of a dark frame are brightened (as in edge.inference.preprocess)."""
    ih, iw = spec.input_size
    fh, fw = frame.shape[:2]
    shape = (len(boxes), ih, iw, 3) if spec.input_layout == "NHWC" else (len(boxes), 3, ih, iw)
    batch = np.empty(shape, np.float32)
    luma = mean_luma(frame) if light is not None else 255.0
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    shrunk = {1: frame}
    transforms: List[Transform] = []
    for i, (box, rotation) in enumerate(zip(boxes, rotations)):
        pixel_map, transform = crop_geometry(box, int(rotation), (ih, iw), (fw, fh), box_scale)
        factor = max(1, int(math.hypot(*pixel_map[:, 0])))
        if factor not in shrunk:
            shrunk[factor] = cv2.resize(frame, (max(1, fw // factor), max(1, fh // factor)),
                                        interpolation=cv2.INTER_AREA)
        source = shrunk[factor]
        sx, sy = source.shape[1] / fw, source.shape[0] / fh
        # frame pixel index p -> continuous p + 0.5 -> shrunk continuous (p + 0.5) * s -> shrunk index
        m = np.diag([sx, sy]) @ (pixel_map + np.array([[0, 0, 0.5], [0, 0, 0.5]]))
        m[:, 2] -= 0.5
        crop = cv2.warpAffine(source, m, (iw, ih), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        if light is not None and luma < light.threshold:
            crop = brighten(crop, luma, light)
        if spec.color == "RGB":
            crop = crop[:, :, ::-1]
        pixels = (crop.astype(np.float32) - mean) / std
        batch[i] = pixels if spec.input_layout == "NHWC" else pixels.transpose(2, 0, 1)
        transforms.append(transform)
    return batch, tuple(transforms)


def decode_heatmaps(spec: ModelSpec, heatmaps: np.ndarray) -> np.ndarray:
    """``(N, K, h, w)`` heatmaps (the model's K keypoints, channels first) -> ``(N, K, 3)``
    ``(x, y, confidence)``: x, y normalised to the crop input, confidence the heatmap maximum. The
    argmax cell moves a quarter cell towards the higher of its two neighbours on each axis (when it
    has both); cell k sits where ``spec.heatmap_grid`` says."""
    heat = np.asarray(heatmaps, np.float32)
    n, k, h, w = heat.shape
    flat = heat.reshape(n, k, h * w)
    best = np.argmax(flat, axis=2)
    conf = np.take_along_axis(flat, best[..., None], axis=2)[..., 0]
    row, col = (best // w).astype(np.int64), (best % w).astype(np.int64)
    x, y = col.astype(np.float64), row.astype(np.float64)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    inner_x = (col > 0) & (col < w - 1)
    inner_y = (row > 0) & (row < h - 1)
    dx = heat[ni, ki, row, np.clip(col + 1, 0, w - 1)] - heat[ni, ki, row, np.clip(col - 1, 0, w - 1)]
    dy = heat[ni, ki, np.clip(row + 1, 0, h - 1), col] - heat[ni, ki, np.clip(row - 1, 0, h - 1), col]
    x += np.where(inner_x, 0.25 * np.sign(dx), 0.0)
    y += np.where(inner_y, 0.25 * np.sign(dy), 0.0)
    ih, iw = spec.input_size
    stride = spec.heatmaps.stride
    if spec.heatmap_grid == "pixel_indices":  # cell k is input pixel index k * stride (centre at + 0.5)
        u, v = (x * stride + 0.5) / iw, (y * stride + 0.5) / ih
    else:  # cell k covers input pixels [k * stride, (k + 1) * stride)
        u, v = (x + 0.5) * stride / iw, (y + 0.5) * stride / ih
    return np.stack([u, v, conf.astype(np.float64)], axis=2)


def to_project(spec: ModelSpec, keypoints: np.ndarray, threshold: float) -> np.ndarray:
    """The model's ``(N, K, 3)`` keypoints -> the project's ``(N, 18, 3)``: a part whose confidence is
    below ``threshold`` is missing (0, 0, 0); the spec's ``derived`` parts (the neck of COCO models)
    are the midpoint of their two parts, with the lower confidence, when both are present."""
    kp = np.asarray(keypoints, np.float64)
    out = np.zeros((kp.shape[0], NUM_KEYPOINTS, 3), np.float64)
    out[:, list(spec.keypoint_map)] = kp[:, :len(spec.keypoint_map)]
    out[out[..., 2] < threshold] = 0.0
    for target, (a, b) in spec.derived:
        both = (out[:, a, 2] > 0) & (out[:, b, 2] > 0)
        out[both, target, :2] = (out[both, a, :2] + out[both, b, :2]) / 2
        out[both, target, 2] = np.minimum(out[both, a, 2], out[both, b, 2])
    return out


def box_velocity(t: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``t`` (M,) seconds and ``boxes`` (M, 4) ``x0, y0, x1, y1`` (a track's history, oldest first) ->
    ``(4,)`` each side's rate of change per second: the slope of the least-squares line through the
    boxes against their times. Zeros with fewer than two distinct times."""
    t = np.asarray(t, np.float64).reshape(-1)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(t) < 2:
        return np.zeros(4)
    dt = t - t.mean()
    spread = float((dt * dt).sum())
    if spread <= 0:
        return np.zeros(4)
    return (dt[:, None] * (boxes - boxes.mean(axis=0))).sum(axis=0) / spread


def predict_box(box: np.ndarray, velocity: np.ndarray, seconds: float) -> np.ndarray:
    """``box`` (4,) normalised, seen ``seconds`` ago, moving at ``velocity`` (:func:`box_velocity`) ->
    the box that holds it both where it was and where it is predicted now (the moved box, clipped to
    the frame, united with the last one). With zero velocity or no time passed: ``box`` itself."""
    box = np.asarray(box, np.float64).reshape(4)
    moved = np.clip(box + np.asarray(velocity, np.float64).reshape(4) * max(float(seconds), 0.0), 0.0, 1.0)
    return np.array([min(box[0], moved[0]), min(box[1], moved[1]), max(box[2], moved[2]), max(box[3], moved[3])])


def boxes_overlap(a: Sequence[float], b: Sequence[float], frame_size: Tuple[float, float] = (1.0, 1.0),
                  pad: float = 0.1) -> float:
    """How much of the smaller of two boxes (``x0, y0, x1, y1`` normalised) the other covers, 0..1, in
    pixels of ``frame_size``; each box is first widened on every side by ``pad`` times its longer side (as
    edge.inference.views.box_overlap does for skeletons, so that a lying person's thin box has an area)."""
    scale = np.asarray(frame_size, np.float64)
    out = []
    for box in (a, b):
        lo, hi = np.asarray(box[:2], np.float64) * scale, np.asarray(box[2:4], np.float64) * scale
        margin = pad * float((hi - lo).max())
        out.append((lo - margin, hi + margin))
    (lo_a, hi_a), (lo_b, hi_b) = out
    inter = float(np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None).prod())
    smaller = min(float((hi_a - lo_a).prod()), float((hi_b - lo_b).prod()))
    return inter / smaller if smaller > 0 else 0.0


def oks(a: np.ndarray, b: np.ndarray, frame_size: Tuple[float, float], area: Optional[float] = None) -> float:
    """COCO object keypoint similarity of skeleton ``b`` to skeleton ``a`` (frame coordinates, (18, 3)):
    the mean over ``a``'s present parts of ``exp(-d^2 / (2 * area * (2 * sigma)^2))``, d the pixel
    distance (0 for a part ``b`` lacks); ``area`` defaults to the pixel area of ``a``'s box of parts.
    0 when ``a`` has no part."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    present = a[:, 2] > 0
    if not present.any():
        return 0.0
    scale = np.asarray(frame_size, np.float64)
    if area is None:
        x0, y0, x1, y1 = skeleton_bbox(a[None], 1e-9)[0]
        area = (x1 - x0) * scale[0] * (y1 - y0) * scale[1]
    area = max(float(area), 1.0)
    d2 = (((a[:, :2] - b[:, :2]) * scale) ** 2).sum(axis=1)
    sim = np.exp(-d2 / (2.0 * area * (2.0 * SIGMAS) ** 2)) * (b[:, 2] > 0)
    return float(sim[present].mean())


def suppress_duplicates(keypoints: np.ndarray, scores: np.ndarray, frame_size: Tuple[float, float],
                        max_oks: float) -> np.ndarray:
    """Indices of the skeletons kept, best score first: a skeleton whose :func:`oks` to a kept one (on
    the kept one's parts and box) is at least ``max_oks`` is the same person found again."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept: List[int] = []
    for i in order:
        if all(oks(keypoints[k], keypoints[i], frame_size) < max_oks for k in kept):
            kept.append(i)
    return np.array(sorted(kept), np.int64)

