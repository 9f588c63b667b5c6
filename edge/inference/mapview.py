"""Pictures of what the network sees: heatmaps and PAF magnitudes over the frame.

Used by ``fallwatch model check`` so a person can see at a glance that a model works.
"""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

from edge.inference.preprocess import Transform
from edge.skeleton import KEYPOINTS


def map_to_frame(channel: np.ndarray, transform: Transform, frame_hw: Tuple[int, int]) -> np.ndarray:
    """Resample one map ``(h, w)`` covering the network input onto the frame's pixel grid."""
    fh, fw = frame_hw
    mh, mw = channel.shape
    m = np.vstack([np.asarray(transform.matrix, np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)  # frame-normalised -> input-normalised
    # frame pixel (x, y) -> frame-normalised ((x + .5) / fw, (y + .5) / fh) -> input-normalised
    # -> map pixel (u * mw - .5, v * mh - .5)
    to_norm = np.array([[1.0 / fw, 0, 0.5 / fw], [0, 1.0 / fh, 0.5 / fh], [0, 0, 1]])
    to_map = np.array([[mw, 0, -0.5], [0, mh, -0.5], [0, 0, 1]])
    affine = (to_map @ inv @ to_norm)[:2]
    return cv2.warpAffine(channel.astype(np.float32), affine, (fw, fh),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0.0)


def strongest_peaks(channel: np.ndarray, transform: Transform, frame_hw: Tuple[int, int],
                    count: int = 5, threshold: float = 0.1) -> List[Tuple[float, float, float]]:
    """Local maxima (3x3) of one map above ``threshold``, strongest first, as frame pixels
    ``(x, y, value)`` at the cell centres."""
    clean = np.nan_to_num(channel.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    dilated = cv2.dilate(clean, np.ones((3, 3), np.uint8))
    rows, cols = np.nonzero((clean >= dilated) & (clean > threshold))
    order = np.argsort(-clean[rows, cols], kind="stable")[:count]
    mh, mw = clean.shape
    pts = np.stack([(cols[order] + 0.5) / mw, (rows[order] + 0.5) / mh], axis=-1)
    frame = transform.to_frame(pts) * np.array([frame_hw[1], frame_hw[0]], np.float32)
    return [(float(x), float(y), float(clean[r, c]))
            for (x, y), r, c in zip(frame, rows[order], cols[order])]


def _blend(image: np.ndarray, values: np.ndarray, label: str) -> np.ndarray:
    heat = cv2.applyColorMap(np.clip(values * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(image, 0.45, heat, 0.55, 0)
    cv2.putText(out, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def render_maps(image: np.ndarray, heatmaps: np.ndarray, pafs: np.ndarray, transform: Transform,
                tile_width: int = 240) -> np.ndarray:
    """A sheet for one frame: the max over keypoint heatmaps, the max PAF magnitude, then one
    tile per keypoint, each over the frame. ``heatmaps`` ``(18[+1], h, w)``, ``pafs`` ``(2L, h', w')``
    canonical (see :func:`edge.inference.specs.decode`)."""
    hw = image.shape[:2]
    parts = [map_to_frame(np.clip(c, 0, 1), transform, hw) for c in heatmaps[:len(KEYPOINTS)]]
    magnitude = np.sqrt(pafs[0::2] ** 2 + pafs[1::2] ** 2).max(axis=0)
    big = [_blend(image, np.max(parts, axis=0), "heatmaps (max over keypoints)"),
           _blend(image, map_to_frame(np.clip(magnitude, 0, 1), transform, hw), "PAF magnitude (max over limbs)")]
    top = np.hstack(big)
    scale = tile_width / image.shape[1]
    small = cv2.resize(image, (tile_width, max(1, int(round(image.shape[0] * scale)))), interpolation=cv2.INTER_AREA)
    tiles = [_blend(small, cv2.resize(p, small.shape[1::-1]), name) for p, name in zip(parts, KEYPOINTS)]
    per_row = max(1, top.shape[1] // tile_width)
    rows = []
    for i in range(0, len(tiles), per_row):
        row = tiles[i:i + per_row]
        row += [np.zeros_like(small)] * (per_row - len(row))
        rows.append(np.hstack(row))
    grid = np.vstack(rows)
    pad = top.shape[1] - grid.shape[1]
    if pad > 0:
        grid = np.hstack([grid, np.zeros((grid.shape[0], pad, 3), np.uint8)])
    return np.vstack([top, grid])
