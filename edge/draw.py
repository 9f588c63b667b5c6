"""Drawing people on frames (debugging, the `detect` command, demos)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .parse import Topology, resolve_topology

# BGR colours cycled over people
_COLOURS: Tuple[Tuple[int, int, int], ...] = (
    (0, 200, 255), (255, 120, 0), (80, 220, 80), (220, 60, 220), (0, 90, 255), (255, 220, 0),
    (150, 80, 255), (60, 180, 180),
)


def draw_skeletons(image_bgr: np.ndarray, keypoints: np.ndarray, topology: Topology,
                   scores: Optional[Union[np.ndarray, Sequence[float]]] = None) -> np.ndarray:
    """A copy of ``image_bgr`` (H, W, 3 uint8) with people drawn on it.

    ``keypoints``: (N, 18, 3) rows ``(x, y, confidence)``, x and y normalised to [0, 1] of the
    image, confidence 0 for missing parts (as :func:`edge.parse.parse_poses` returns them);
    ``topology``: the limbs to draw (a spec's limbs or a spec name); ``scores``: optional (N,)
    person scores written beside each person. Raises ValueError on arrays of the wrong shape.
    """
    image = np.asarray(image_bgr)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("image_bgr must be an (H, W, 3) uint8 BGR image, got %s %s" % (image.shape, image.dtype))
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.ndim != 3 or kps.shape[2] != 3:
        raise ValueError("keypoints must have shape (N, K, 3), got %s" % (kps.shape,))
    if scores is not None and len(scores) != kps.shape[0]:
        raise ValueError("scores has %d entries for %d people" % (len(scores), kps.shape[0]))
    limb_a, limb_b, _ = resolve_topology(topology)
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(1, int(round(max(h, w) / 400.0)))
    for n, person in enumerate(kps):
        colour = _COLOURS[n % len(_COLOURS)]
        present = (person[:, 2] > 0) & np.isfinite(person).all(axis=1)
        px = np.round(np.clip(np.nan_to_num(person[:, 0]), -4, 5) * w - 0.5).astype(np.int64)
        py = np.round(np.clip(np.nan_to_num(person[:, 1]), -4, 5) * h - 0.5).astype(np.int64)
        for a, b in zip(limb_a.tolist(), limb_b.tolist()):
            if a < len(person) and b < len(person) and present[a] and present[b]:
                cv2.line(out, (int(px[a]), int(py[a])), (int(px[b]), int(py[b])), colour, 2 * scale, cv2.LINE_AA)
        for i in np.flatnonzero(present):
            cv2.circle(out, (int(px[i]), int(py[i])), 2 * scale + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, (int(px[i]), int(py[i])), 2 * scale + 1, colour, scale, cv2.LINE_AA)
        if scores is not None and present.any():
            x0, y0 = int(px[present].min()), int(py[present].min()) - 4 * scale
            cv2.putText(out, "%.2f" % float(scores[n]), (max(x0, 0), max(y0, 10 * scale)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, colour, scale, cv2.LINE_AA)
    return out
