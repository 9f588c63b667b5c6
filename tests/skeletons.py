"""Constructed skeleton sequences for fall-detector tests: a 2-D stick figure moved through
keyframed postures (standing, sitting, lying, bending, ...), sampled at any frame rate.

A posture is a few joint parameters; segment lengths are fixed fractions of the body height
``H`` (pixels), so a figure keeps its size whatever it does. Angles are in degrees:
``torso`` from vertical (positive leans towards +x), ``thigh`` and ``shin`` from straight down
(positive points towards +x). ``hip_h`` is the hips' height above the floor in body heights.
``depth`` (0..1) squashes the vertical extent of the body, as when a person lies along the
camera's line of sight.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

Posture = Dict[str, float]

STANDING: Posture = dict(hip_h=0.53, torso=0.0, thigh=0.0, shin=0.0, depth=1.0)
SITTING_CHAIR: Posture = dict(hip_h=0.26, torso=-5.0, thigh=90.0, shin=0.0, depth=1.0)
SITTING_FLOOR: Posture = dict(hip_h=0.06, torso=-15.0, thigh=90.0, shin=90.0, depth=1.0)
KNEELING: Posture = dict(hip_h=0.28, torso=0.0, thigh=0.0, shin=-90.0, depth=1.0)
BENDING: Posture = dict(hip_h=0.50, torso=95.0, thigh=-10.0, shin=0.0, depth=1.0)
LYING_RIGHT: Posture = dict(hip_h=0.08, torso=88.0, thigh=-88.0, shin=-88.0, depth=1.0)
LYING_LEFT: Posture = dict(hip_h=0.08, torso=-88.0, thigh=88.0, shin=88.0, depth=1.0)
SITTING_BED: Posture = dict(hip_h=0.30, torso=-5.0, thigh=90.0, shin=0.0, depth=1.0)
LYING_BED: Posture = dict(hip_h=0.32, torso=-88.0, thigh=88.0, shin=88.0, depth=1.0)
# lying along the line of sight: the body is seen end-on, its vertical extent squashed
LYING_DEPTH: Posture = dict(hip_h=0.10, torso=0.0, thigh=0.0, shin=0.0, depth=0.25)


def figure(posture: Posture, x: float, floor_y: float, size: float) -> np.ndarray:
    """The 18 keypoints (pixels) of a figure whose hips are above floor point (x, floor_y)."""
    p = posture
    d = p.get("depth", 1.0)

    def vec(angle_deg: float, length: float, down: bool) -> np.ndarray:
        a = np.radians(angle_deg)
        v = np.array([np.sin(a), np.cos(a) if down else -np.cos(a)]) * length * size
        return v * np.array([1.0, d])

    hip = np.array([x, floor_y - p["hip_h"] * size])
    up = vec(p["torso"], 1.0, down=False) / size  # unit-ish torso direction (squashed)
    side = np.array([-up[1], up[0]])
    side = side / (np.linalg.norm(side) + 1e-9)
    neck = hip + vec(p["torso"], 0.30, down=False)
    nose = neck + vec(p["torso"], 0.10, down=False)
    kp = np.zeros((18, 2))
    kp[0], kp[1] = nose, neck
    for sign, sho, elb, wri, hp, kn, an in ((1, 2, 3, 4, 8, 9, 10), (-1, 5, 6, 7, 11, 12, 13)):
        kp[sho] = neck + sign * 0.10 * size * side
        kp[elb] = kp[sho] + vec(p["torso"] + 180.0, 0.186, down=False)
        kp[wri] = kp[elb] + vec(p["torso"] + 180.0, 0.146, down=False)
        kp[hp] = hip + sign * 0.07 * size * side
        kp[kn] = kp[hp] + vec(p["thigh"], 0.245, down=True)
        kp[an] = kp[kn] + vec(p["shin"], 0.246, down=True)
    for sign, eye, ear in ((1, 14, 16), (-1, 15, 17)):
        kp[eye] = nose + sign * 0.03 * size * side + vec(p["torso"], 0.02, down=False)
        kp[ear] = nose + sign * 0.06 * size * side
    return kp


def _ease(a: float) -> float:
    return a * a * (3 - 2 * a)


def sequence(keyframes: Sequence[Tuple[float, Posture]], fps: float, duration: float, *,
             x: float = 320.0, floor_y: float = 420.0, size: float = 300.0,
             frame_size: Tuple[int, int] = (640, 480), drop_fraction: float = 0.0,
             drop_parts: Sequence[int] = (), noise_px: float = 0.0, x_end: Optional[float] = None,
             seed: int = 0) -> List[Tuple[float, np.ndarray]]:
    """Frames ``(t, keypoints (18, 3) normalised)`` at ``fps`` for ``duration`` seconds.

    Postures are eased between keyframes ``(t, posture)``; before the first and after the last
    keyframe the posture holds. ``drop_fraction`` of the parts go missing at random in each
    frame and ``drop_parts`` in every frame; ``noise_px`` is Gaussian jitter; the figure walks
    from ``x`` to ``x_end`` over the duration.
    """
    rng = np.random.default_rng(seed)
    out = []
    times = np.arange(0.0, duration, 1.0 / fps)
    for t in times:
        if t <= keyframes[0][0]:
            posture = keyframes[0][1]
        elif t >= keyframes[-1][0]:
            posture = keyframes[-1][1]
        else:
            i = max(j for j, (kt, _) in enumerate(keyframes) if kt <= t)
            (t0, a), (t1, b) = keyframes[i], keyframes[i + 1]
            w = _ease((t - t0) / (t1 - t0))
            posture = {k: a[k] + (b[k] - a[k]) * w for k in a}
        cx = x if x_end is None else x + (x_end - x) * t / duration
        pts = figure(posture, cx, floor_y, size) + rng.normal(0, noise_px, (18, 2)) if noise_px else \
            figure(posture, cx, floor_y, size)
        kp = np.zeros((18, 3))
        kp[:, 0] = pts[:, 0] / frame_size[0]
        kp[:, 1] = pts[:, 1] / frame_size[1]
        kp[:, 2] = 0.8
        missing = list(drop_parts)
        if drop_fraction:
            missing += list(np.nonzero(rng.random(18) < drop_fraction)[0])
        kp[missing] = 0.0
        out.append((round(float(t), 6), kp))
    return out
