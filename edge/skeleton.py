"""The skeleton every stage shares: its 18 keypoints (names, indices, groups), the limbs drawn
between them, the box of a skeleton's parts, and the one drawer of skeletons over an image.

Keypoints are ``(N, 18, 3)`` rows ``(x, y, confidence)`` in the order of :data:`KEYPOINTS`, x and y
normalised to [0, 1] of the frame with pixel centres at ``(col + 0.5) / W``, confidence 0 where
the part is missing (DESIGN.md). Imports NumPy only; OpenCV is imported when drawing.
"""
from __future__ import annotations

import colorsys
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

KEYPOINTS: Tuple[str, ...] = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
)
KEYPOINT_INDEX: Dict[str, int] = {name: i for i, name in enumerate(KEYPOINTS)}
NUM_KEYPOINTS = len(KEYPOINTS)

(NOSE, NECK, R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST, R_HIP, R_KNEE, R_ANKLE,
 L_HIP, L_KNEE, L_ANKLE, R_EYE, L_EYE, R_EAR, L_EAR) = range(NUM_KEYPOINTS)
HEAD = (NOSE, R_EYE, L_EYE, R_EAR, L_EAR)
SHOULDERS = (R_SHOULDER, L_SHOULDER)
HIPS = (R_HIP, L_HIP)
KNEES = (R_KNEE, L_KNEE)
ANKLES = (R_ANKLE, L_ANKLE)


def _other_side(name: str) -> str:
    return {"r_": "l_", "l_": "r_"}.get(name[:2], name[:2]) + name[2:]


MIRROR = np.array([KEYPOINT_INDEX[_other_side(n)] for n in KEYPOINTS])  # keypoints[MIRROR]: left and right swapped
MIRROR.setflags(write=False)

# The limbs drawn: the CMU body without the shoulder-ear links (a model's limb list may differ: it is
# about PAF channels, this one about pictures).
LIMBS: Tuple[Tuple[int, int], ...] = (
    (NECK, R_SHOULDER), (R_SHOULDER, R_ELBOW), (R_ELBOW, R_WRIST), (NECK, L_SHOULDER), (L_SHOULDER, L_ELBOW),
    (L_ELBOW, L_WRIST), (NECK, R_HIP), (R_HIP, R_KNEE), (R_KNEE, R_ANKLE), (NECK, L_HIP), (L_HIP, L_KNEE),
    (L_KNEE, L_ANKLE), (NECK, NOSE), (NOSE, R_EYE), (R_EYE, R_EAR), (NOSE, L_EYE), (L_EYE, L_EAR),
)

# BGR colours given to people in turn when the caller gives none
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (0, 200, 255), (255, 120, 0), (80, 220, 80), (220, 60, 220), (0, 90, 255), (255, 220, 0),
    (150, 80, 255), (60, 180, 180),
)


# ------------------------------------------------------------------------------------ geometry


def parts_box(xy: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``xy`` (N, K, 2) and ``present`` (N, K) bool -> (N, 4) boxes ``x0, y0, x1, y1`` of the
    present parts, in the units of ``xy``; zeros for a person with no part present."""
    xy = np.asarray(xy, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    x, y = xy[..., 0], xy[..., 1]
    boxes = np.stack([np.where(present, x, np.inf).min(axis=1), np.where(present, y, np.inf).min(axis=1),
                      np.where(present, x, -np.inf).max(axis=1), np.where(present, y, -np.inf).max(axis=1)], axis=1)
    boxes[~present.any(axis=1)] = 0.0
    return boxes


def skeleton_bbox(keypoints: np.ndarray, min_confidence: float) -> np.ndarray:
    """``(N, 18, 3)`` -> ``(N, 4)`` normalised boxes ``x0, y0, x1, y1`` of the parts whose
    confidence is at least ``min_confidence`` (zeros when none)."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    return parts_box(kp[..., :2], kp[..., 2] >= min_confidence)


def box_size(boxes: np.ndarray, frame_size: Tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """``(N, 4)`` boxes -> ``(N,)`` the longer side of each, the x side scaled by ``frame_size[0]``
    and the y side by ``frame_size[1]`` (pass the frame's (width, height) for pixels)."""
    w, h = frame_size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.maximum((boxes[:, 2] - boxes[:, 0]) * w, (boxes[:, 3] - boxes[:, 1]) * h)


# ------------------------------------------------------------------------------------- drawing


def track_colour(track_id: int) -> Tuple[int, int, int]:
    """A BGR colour that stays with a track id; grey for 0 (a tentative track)."""
    if not track_id:
        return (160, 160, 160)
    r, g, b = colorsys.hsv_to_rgb(((int(track_id) * 47) % 180) / 180.0, 220 / 255.0, 1.0)
    return (int(round(b * 255)), int(round(g * 255)), int(round(r * 255)))


def draw_skeletons(image: np.ndarray, keypoints: np.ndarray, labels: Optional[Sequence[str]] = None,
                   colours: Optional[Sequence[Tuple[int, int, int]]] = None, line_px: Optional[int] = None,
                   min_confidence: float = 0.0) -> np.ndarray:
    """A copy of ``image`` ((H, W, 3) uint8 BGR) with people drawn on it.

    ``keypoints``: (N, 18, 3) normalised to the image; a part is drawn when it is finite and its
    confidence is above ``min_confidence``, a limb of :data:`LIMBS` when both its parts are.
    ``labels``: optional N texts written above each person (empty: none); ``colours``: optional N
    BGR colours (default :data:`PALETTE` in turn); ``line_px``: the limb width (default 2 px per
    400 px of the image's longer side). Raises ValueError on arrays of the wrong shape or type.
    """
    import cv2

    out = np.array(image, copy=True)
    if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:
        raise ValueError("image must be an (H, W, 3) uint8 BGR image, got %s %s" % (out.shape, out.dtype))
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.ndim != 3 or kps.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError("keypoints must have shape (N, %d, 3), got %s" % (NUM_KEYPOINTS, kps.shape))
    for name, given in (("labels", labels), ("colours", colours)):
        if given is not None and len(given) != len(kps):
            raise ValueError("%s has %d entries for %d people" % (name, len(given), len(kps)))
    h, w = out.shape[:2]
    line = int(line_px) if line_px else 2 * max(1, int(round(max(h, w) / 400.0)))
    unit = max(1, line // 2)
    present = np.isfinite(kps).all(axis=2) & (np.nan_to_num(kps[..., 2]) > min_confidence)
    px = np.round(np.clip(np.nan_to_num(kps[..., 0]), -4, 5) * w - 0.5).astype(np.int64)
    py = np.round(np.clip(np.nan_to_num(kps[..., 1]), -4, 5) * h - 0.5).astype(np.int64)
    for n in range(len(kps)):
        colour = tuple(int(c) for c in (colours[n] if colours is not None else PALETTE[n % len(PALETTE)]))
        pts = list(zip(px[n].tolist(), py[n].tolist()))
        for a, b in LIMBS:
            if present[n, a] and present[n, b]:
                cv2.line(out, pts[a], pts[b], colour, line, cv2.LINE_AA)
        for i in np.flatnonzero(present[n]):
            cv2.circle(out, pts[i], line + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, pts[i], line + 1, colour, unit, cv2.LINE_AA)
        if labels is not None and labels[n] and present[n].any():
            x0, y0 = int(px[n][present[n]].min()), int(py[n][present[n]].min()) - 2 * line
            cv2.putText(out, str(labels[n]), (max(x0, 0), max(y0, 10 * unit)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * unit, colour, unit, cv2.LINE_AA)
    return out
