"""The pose parser written as plain loops: the test oracle for ``edge.parse.parse_poses``.

Same algorithm and parameters as ``edge/parse.py`` (read its module docstring), written the
obvious way, one cell, one pair, one sample, one connection at a time. It is meant to be easy
to check by eye, not fast (OpenCV's GaussianBlur, the same call per channel, is its one library
shortcut).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import cv2
import numpy as np

from edge.parse import MIN_PART_CONFIDENCE, ParseParams, resolve_topology

K = 18
LIMIT = 1e6


def _finite(v: float) -> float:
    """Non-finite -> 0, then clipped to +-1e6 (as the parser treats map values)."""
    v = float(v)
    if not math.isfinite(v):
        return 0.0
    return min(max(v, -LIMIT), LIMIT)


def oracle_parse(heatmaps: np.ndarray, pafs: np.ndarray, topology, params: Optional[ParseParams] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Same contract as ``edge.parse.parse_poses`` (valid shapes only)."""
    p = params or ParseParams()
    la, lb, fg = resolve_topology(topology)
    limbs = [(int(a), int(b), bool(f)) for a, b, f in zip(la, lb, fg)]
    heat = np.asarray(heatmaps, dtype=np.float32)[:K]
    h, w = heat.shape[1:]
    hp, wp = pafs.shape[1:]
    clean = np.zeros((K, h, w), dtype=np.float32)
    for c in range(K):
        for r in range(h):
            for q in range(w):
                clean[c, r, q] = _finite(heat[c, r, q])

    # 1. peaks: (x, y, score) per part, raster order
    peaks: List[List[Tuple[float, float, float]]] = []
    for c in range(K):
        if p.blur_kernel > 1:
            sm = cv2.GaussianBlur(clean[c], (p.blur_kernel, p.blur_kernel), p.blur_sigma,
                                  borderType=cv2.BORDER_REFLECT_101)
        else:
            sm = clean[c]
        found = []  # (smoothed value, raster index, row, col)
        for r in range(h):
            for q in range(w):
                v = sm[r, q]
                if not v > np.float32(p.peak_threshold):
                    continue
                is_peak = True
                for dr in (-1, 0, 1):
                    for dq in (-1, 0, 1):
                        if dr == 0 and dq == 0:
                            continue
                        rr, qq = r + dr, q + dq
                        if not (0 <= rr < h and 0 <= qq < w):
                            continue
                        before = dr < 0 or (dr == 0 and dq < 0)
                        if (before and not v > sm[rr, qq]) or (not before and not v >= sm[rr, qq]):
                            is_peak = False
                if is_peak:
                    found.append((float(v), r * w + q, r, q))
        if len(found) > p.max_peaks_per_part:
            strongest = sorted(found, key=lambda f: (-f[0], f[1]))[:p.max_peaks_per_part]
            found = sorted(strongest, key=lambda f: f[1])
        part_peaks = []
        seen = set()
        for v, _, r, q in found:
            score = float(clean[c, r, q])
            if not p.refine_peaks:
                part_peaks.append((float(q), float(r), max(score, MIN_PART_CONFIDENCE)))
                continue
            for _step in range(max(p.blur_kernel // 2, 1)):  # climb to the raw 3x3 maximum
                best = (r, q)
                for dr, dq in CLIMB:
                    rr, qq = r + dr, q + dq
                    if 0 <= rr < h and 0 <= qq < w and clean[c, rr, qq] > clean[c, best[0], best[1]]:
                        best = (rr, qq)
                if best == (r, q):
                    break
                r, q = best
            if (r, q) in seen:
                continue
            seen.add((r, q))
            centre = float(clean[c, r, q])
            x, y = float(q), float(r)
            if 0 < q < w - 1:
                x += _gauss_vertex(float(clean[c, r, q - 1]), centre, float(clean[c, r, q + 1]))
            if 0 < r < h - 1:
                y += _gauss_vertex(float(clean[c, r - 1, q]), centre, float(clean[c, r + 1, q]))
            part_peaks.append((x, y, max(centre, MIN_PART_CONFIDENCE)))
        peaks.append(part_peaks)

    # 2-3. limb scores and greedy matching
    connections = []  # per limb: list of (i, j, score), best first
    n = p.paf_samples
    for k, (a, b, _) in enumerate(limbs):
        cands = []
        for i, (xa, ya, _) in enumerate(peaks[a]):
            for j, (xb, yb, _) in enumerate(peaks[b]):
                dx, dy = xb - xa, yb - ya
                length = math.hypot(dx, dy)
                if length == 0:
                    continue
                ux, uy = dx / length, dy / length
                dots = []
                for s in range(n):
                    t = s / (n - 1)
                    px = (xa + t * dx + 0.5) * (wp / w) - 0.5
                    py = (ya + t * dy + 0.5) * (hp / h) - 0.5
                    vx = _sample(pafs[2 * k], px, py)
                    vy = _sample(pafs[2 * k + 1], px, py)
                    dots.append(vx * ux + vy * uy)
                score = sum(dots) / n + min(p.long_limb_fraction * h / length - 1.0, 0.0)
                counted = len([d for d in dots if d > p.paf_sample_threshold])
                if counted > p.paf_min_fraction * n and score > 0:
                    cands.append((i, j, score))
        cands.sort(key=lambda c: -c[2])  # stable: ties keep (i, j) order
        used_a, used_b, chosen = set(), set(), []
        for i, j, s in cands:
            if i not in used_a and j not in used_b:
                chosen.append((i, j, s))
                used_a.add(i)
                used_b.add(j)
        connections.append(chosen)

    # 4. assembly: people are [parts (K entries: candidate index or None), total, count, seeded]
    people = []
    for k, (a, b, fills) in enumerate(limbs):
        for i, j, s in connections[k]:
            holders = [m for m, person in enumerate(people) if person[0][a] == i or person[0][b] == j]
            if len(holders) == 2:
                m1, m2 = holders
                ma, mb = (m1, m2) if people[m1][0][a] == i else (m2, m1)
                pa, pb = people[ma][0], people[mb][0]
                if all(pa[x] is None or pb[x] is None for x in range(K)):
                    for x in range(K):
                        if pb[x] is not None:
                            pa[x] = pb[x]
                    people[ma][1] += people[mb][1] + s
                    people[ma][2] += people[mb][2]
                    people[ma][3] = people[ma][3] or people[mb][3] or not fills
                    del people[mb]
            elif len(holders) == 1:
                person = people[holders[0]]
                if person[0][a] == i and person[0][b] == j:
                    continue
                if person[0][a] == i and person[0][b] is None:
                    person[0][b] = j
                    person[1] += peaks[b][j][2] + s
                    person[2] += 1
                    person[3] = person[3] or not fills
                elif person[0][b] == j and person[0][a] is None:
                    person[0][a] = i
                    person[1] += peaks[a][i][2] + s
                    person[2] += 1
                    person[3] = person[3] or not fills
            else:
                parts: List[Optional[int]] = [None] * K
                parts[a], parts[b] = i, j
                people.append([parts, peaks[a][i][2] + peaks[b][j][2] + s, 2, not fills])

    # 5. filter, sort best first, normalise
    kept = []
    for parts, total, count, seeded in people:
        if seeded and count >= p.min_parts and total / count >= p.min_person_score:
            kept.append((total / count, parts))
    kept.sort(key=lambda e: -e[0])
    keypoints = np.zeros((len(kept), K, 3), dtype=np.float32)
    for n_person, (_, parts) in enumerate(kept):
        for x in range(K):
            if parts[x] is not None:
                px, py, conf = peaks[x][parts[x]]
                keypoints[n_person, x] = ((px + 0.5) / w, (py + 0.5) / h, conf)
    return keypoints, np.array([e[0] for e in kept], dtype=np.float32)


CLIMB = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))  # raster order


def _gauss_vertex(left: float, centre: float, right: float) -> float:
    """Log-parabola vertex when all three values are > 0, else the parabola's."""
    if left > 0 and centre > 0 and right > 0:
        return _vertex(math.log(left), math.log(centre), math.log(right))
    return _vertex(left, centre, right)


def _vertex(left: float, centre: float, right: float) -> float:
    curve = left - 2.0 * centre + right
    if curve < 0:
        return min(max(0.5 * (left - right) / curve, -0.5), 0.5)
    return 0.0


def _sample(channel: np.ndarray, x: float, y: float) -> float:
    """Bilinear interpolation at (x, y), clamped to the map; non-finite values count as 0."""
    hp, wp = channel.shape
    x = min(max(x, 0.0), wp - 1.0)
    y = min(max(y, 0.0), hp - 1.0)
    x0, y0 = int(x), int(y)
    x1, y1 = min(x0 + 1, wp - 1), min(y0 + 1, hp - 1)
    fx, fy = x - x0, y - y0
    v00 = _finite(channel[y0, x0])
    v01 = _finite(channel[y0, x1])
    v10 = _finite(channel[y1, x0])
    v11 = _finite(channel[y1, x1])
    return (1 - fy) * ((1 - fx) * v00 + fx * v01) + fy * ((1 - fx) * v10 + fx * v11)
