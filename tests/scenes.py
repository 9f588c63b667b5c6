"""Synthetic scenes for the parser: skeletons -> Gaussian heatmap peaks and PAF fields.

Skeletons are (18, 3) arrays of ``(x, y, visible)`` with x, y normalised to [0, 1] of the image
(the parser's output convention: cell centre ``c`` of a W-wide map at ``(c + 0.5) / W``).
:func:`render` draws them at any heatmap and PAF size for any topology, in the canonical layout
(heatmaps ``(18 + 1, H, W)`` background last; PAFs ``(2L, H', W')``, limb k in channels 2k, 2k+1).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edge.parse import resolve_topology

K = 18

# A person standing, facing the camera, height ~1 (eyes to ankles), neck at the origin, y down.
# The person's right side is on the image's left.
TEMPLATE = np.array([
    (0.00, -0.10),  # nose
    (0.00, 0.00),  # neck
    (-0.11, 0.01), (-0.14, 0.18), (-0.15, 0.33),  # r_shoulder, r_elbow, r_wrist
    (0.11, 0.01), (0.14, 0.18), (0.15, 0.33),  # l_shoulder, l_elbow, l_wrist
    (-0.07, 0.35), (-0.08, 0.59), (-0.08, 0.82),  # r_hip, r_knee, r_ankle
    (0.07, 0.35), (0.08, 0.59), (0.08, 0.82),  # l_hip, l_knee, l_ankle
    (-0.03, -0.13), (0.03, -0.13),  # r_eye, l_eye
    (-0.065, -0.12), (0.065, -0.12),  # r_ear, l_ear
])
# (joint, child, grandchild) chains bent at random: shoulder-elbow-wrist, hip-knee-ankle
_CHAINS = ((2, 3, 4), (5, 6, 7), (8, 9, 10), (11, 12, 13))


def _rotate(points: np.ndarray, centre: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    d = points - centre
    return centre + np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], axis=-1)


def random_person(rng: np.random.Generator, height: float, centre: Tuple[float, float],
                  angle: float, aspect: float = 1.0, occlude: float = 0.0) -> np.ndarray:
    """A skeleton (18, 3): ``height`` in normalised image-height units, rotated by ``angle`` radians
    (0 upright, pi upside down, +-pi/2 lying), limbs bent at random, each part hidden with
    probability ``occlude``. ``aspect`` is the image's width / height (keeps the body undistorted).
    Parts outside the image are marked invisible.
    """
    pts = TEMPLATE.copy()
    for j, c, g in _CHAINS:
        bend = rng.uniform(-1.2, 1.2) if j in (2, 5) else rng.uniform(-0.5, 0.5)
        pts[[c, g]] = _rotate(pts[[c, g]], pts[j], bend)
        pts[g] = _rotate(pts[g], pts[c], rng.uniform(-0.8, 0.8))
    pts += rng.uniform(-0.015, 0.015, pts.shape)
    pts = _rotate(pts, np.zeros(2), angle) * height
    pts[:, 0] /= aspect
    pts += np.asarray(centre)
    visible = (rng.random(K) >= occlude) & (pts >= 0).all(axis=1) & (pts <= 1).all(axis=1)
    return np.concatenate([pts, visible[:, None].astype(np.float64)], axis=1)


def render(people: Sequence[np.ndarray], topology, heat_shape: Tuple[int, int],
           paf_shape: Optional[Tuple[int, int]] = None, sigma: float = 1.0, paf_width: float = 1.0,
           noise: float = 0.0, rng: Optional[np.random.Generator] = None, background: bool = True
           ) -> Tuple[np.ndarray, np.ndarray]:
    """Canonical ``(heatmaps, pafs)`` float32 for skeletons ``people``.

    Heatmaps: a Gaussian of ``sigma`` heatmap cells per visible part, maximum over people.
    PAFs: the unit vector a->b at every PAF pixel within ``paf_width`` heatmap cells of the
    segment of a limb whose two parts are visible, averaged where people overlap.
    ``noise``: standard deviation of Gaussian noise added to both.
    """
    la, lb, _ = resolve_topology(topology)
    h, w = heat_shape
    hp, wp = paf_shape or heat_shape
    heat = np.zeros((K + int(background), h, w), dtype=np.float64)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    for person in people:
        for part in range(K):
            if person[part, 2] > 0:
                cx, cy = person[part, 0] * w - 0.5, person[part, 1] * h - 0.5
                g = np.exp(-((cols - cx) ** 2 + (rows - cy) ** 2) / (2 * sigma * sigma))
                np.maximum(heat[part], g, out=heat[part])
    if background:
        heat[K] = np.clip(1 - heat[:K].max(axis=0), 0, 1)
    paf = np.zeros((2 * la.size, hp, wp), dtype=np.float64)
    # PAF pixel centres in heatmap-cell units (so paf_width is in heatmap cells in both axes)
    prow, pcol = np.mgrid[0:hp, 0:wp].astype(np.float64)
    px = (pcol + 0.5) * (w / wp) - 0.5
    py = (prow + 0.5) * (h / hp) - 0.5
    for k, (a, b) in enumerate(zip(la.tolist(), lb.tolist())):
        total = np.zeros((2, hp, wp))
        count = np.zeros((hp, wp))
        for person in people:
            if person[a, 2] <= 0 or person[b, 2] <= 0:
                continue
            ax, ay = person[a, 0] * w - 0.5, person[a, 1] * h - 0.5
            bx, by = person[b, 0] * w - 0.5, person[b, 1] * h - 0.5
            dx, dy = bx - ax, by - ay
            length = math.hypot(dx, dy)
            if length < 1e-9:
                continue
            ux, uy = dx / length, dy / length
            along = np.clip((px - ax) * ux + (py - ay) * uy, 0, length)
            dist = np.hypot(px - (ax + along * ux), py - (ay + along * uy))
            inside = dist <= paf_width
            total[0][inside] += ux
            total[1][inside] += uy
            count[inside] += 1
        nz = count > 0
        paf[2 * k][nz] = total[0][nz] / count[nz]
        paf[2 * k + 1][nz] = total[1][nz] / count[nz]
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        heat += rng.normal(0, noise, heat.shape)
        paf += rng.normal(0, noise, paf.shape)
    return heat.astype(np.float32), paf.astype(np.float32)


def random_scene(rng: np.random.Generator, n_people: int, heat_shape: Tuple[int, int],
                 min_height_cells: float = 10.0, max_height_cells: Optional[float] = None,
                 occlude: float = 0.0, separate: bool = False, upright: bool = False,
                 gap_cells: float = 1.5) -> List[np.ndarray]:
    """``n_people`` random skeletons for a map of ``heat_shape``: any orientation (upright only if
    ``upright``), heights in heatmap cells within [min, max]; when ``separate``, people's boxes are
    at least ``gap_cells`` apart (up to 200 tries each, then fewer people)."""
    h, w = heat_shape
    max_h = max_height_cells if max_height_cells is not None else 0.9 * min(h, w)
    max_h = max(max_h, min_height_cells)
    people: List[np.ndarray] = []
    boxes: List[Tuple[float, float, float, float]] = []
    for _ in range(n_people):
        for _try in range(200):
            height = rng.uniform(min_height_cells, max_h) / h
            angle = rng.uniform(-0.3, 0.3) if upright else rng.uniform(-math.pi, math.pi)
            centre = (rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95))
            person = random_person(rng, height, (0, 0), angle, aspect=w / h, occlude=0)
            pts = person[:, :2]
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            # keep the whole body inside the image, at least half a cell from the border
            margin = np.array([0.5 / w, 0.5 / h])
            span_lo, span_hi = margin - lo, 1 - margin - hi
            if (span_hi < span_lo).any():
                continue
            shift = span_lo + rng.random(2) * (span_hi - span_lo)
            box = (lo[0] + shift[0], lo[1] + shift[1], hi[0] + shift[0], hi[1] + shift[1])
            gx, gy = gap_cells / w, gap_cells / h
            if separate and any(box[0] < b[2] + gx and b[0] < box[2] + gx and
                                box[1] < b[3] + gy and b[1] < box[3] + gy for b in boxes):
                continue
            person[:, :2] += shift
            person[:, 2] = (rng.random(K) >= occlude).astype(np.float64) if occlude > 0 else 1.0
            people.append(person)
            boxes.append(box)
            break
    return people
