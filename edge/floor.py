"""The floor plane of a fixed camera, estimated from the feet of people standing and walking (NumPy only).

Input: skeletons with 3D keypoints (contract 2's optional ``keypoints3d``: the project's 18 parts, metres,
camera coordinates x right, y down, z forward). Of the 18 parts only the ankles are on the feet (a 3D
model's heels and toes are not among them), so the points fitted are ankle joints, and the plane through
them is moved down by ``ankle_height_m`` (the ankle joint's usual height above the floor, about 8 cm) to
give the floor.

Which feet count (:func:`foot_points`): a person whose torso is upright in the picture (neck to hips within
``max_torso_angle_deg`` of vertical), with both ankles seen (confidence ``min_confidence`` or more) and in
3D; of those, each ankle whose leg is straight (the knee's angle, hip-knee-ankle in 3D, at least
``min_knee_angle_deg``): a standing leg or a walker's stance leg, not a leg swinging through, sitting or
kneeling; nor anyone lying or bending down (the torso).

The fit (:func:`fit_plane`): RANSAC (planes through three random points, a fixed seed, so one input always
gives one answer), the largest set of points within ``inlier_m`` of a plane kept, then a least-squares refit
(the smallest principal axis of the inliers) repeated until the inliers stop changing. The normal is turned
to point up into the room, towards the camera (the camera, at the origin, is above the floor: ``d`` > 0),
which is how edge.fall reads a camera's ``floor_plane``: ``[a, b, c, d]`` with ``(a, b, c)`` a unit vector,
``d`` the camera's height above the floor in metres.

Refused (:class:`FloorError`, with what to do): too few feet, too few inliers, or feet that cover too little
of the floor (all in one spot, or along one line: a plane through a line can turn about it), judged by the
5th-95th percentile extent of the inliers along their two main directions on the plane.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edge.skeleton import L_ANKLE, L_HIP, L_KNEE, NECK, R_ANKLE, R_HIP, R_KNEE

ANKLE_HEIGHT_M = 0.08  # ankle joint above the floor, standing (Drillis & Contini: 0.039 of height, 1.7-2 m)


class FloorError(ValueError):
    """The feet given cannot fix a floor plane; the message says why and what to do."""


@dataclass(frozen=True)
class FootRules:
    """Which people's ankles are taken as standing on the floor."""

    min_confidence: float = 0.3
    max_torso_angle_deg: float = 30.0
    min_knee_angle_deg: float = 150.0  # hip-knee-ankle, 3D: 180 a straight leg, about 90 sitting


@dataclass(frozen=True)
class FitRules:
    """RANSAC and the refusals."""

    inlier_m: float = 0.05
    iterations: int = 500
    seed: int = 0
    min_points: int = 30
    min_inlier_share: float = 0.5
    min_extent_m: float = 1.0  # along the feet's main direction on the floor, 5th to 95th percentile
    min_width_m: float = 0.5  # across it
    ankle_height_m: float = ANKLE_HEIGHT_M


@dataclass(frozen=True)
class FloorFit:
    """A fitted floor: ``plane`` ``(a, b, c, d)``, unit normal up, d = the camera's height (metres)."""

    plane: Tuple[float, float, float, float]
    points: int  # foot points given
    inliers: int
    rms_m: float  # of the inliers' distances to the feet plane
    extent_m: Tuple[float, float]  # 5th-95th percentile extent along and across the feet's main direction

    @property
    def camera_height_m(self) -> float:
        return self.plane[3]

    @property
    def tilt_deg(self) -> float:
        """The camera's pitch below the horizon: the angle between its optical axis (z) and the floor."""
        return math.degrees(math.asin(max(-1.0, min(1.0, -self.plane[2]))))


def _upright_in_picture(kp: np.ndarray, rules: FootRules, aspect: float) -> bool:
    ok = kp[:, 2] >= rules.min_confidence
    if not (ok[NECK] and (ok[R_HIP] or ok[L_HIP])):
        return False
    hips = kp[[i for i in (R_HIP, L_HIP) if ok[i]], :2].mean(axis=0)
    dx, dy = (hips[0] - kp[NECK, 0]) * aspect, hips[1] - kp[NECK, 1]
    return dy > 0 and math.degrees(math.atan2(abs(dx), dy)) <= rules.max_torso_angle_deg


def foot_points(keypoints: np.ndarray, keypoints3d: Optional[np.ndarray], rules: FootRules = FootRules(),
                aspect: float = 1.0) -> np.ndarray:
    """The ankles ``(k, 3)``, k = 0, 1 or 2 (metres, camera coordinates) of one person that stand on the floor.
    ``keypoints`` ``(18, 3)`` normalised to the frame, whose width / height is ``aspect`` (the torso's angle
    is judged in pixels); ``keypoints3d`` ``(18, 3)``, NaN where missing."""
    none = np.zeros((0, 3))
    if keypoints3d is None:
        return none
    kp = np.asarray(keypoints, np.float64).reshape(18, 3)
    p3 = np.asarray(keypoints3d, np.float64).reshape(18, 3)
    need = [NECK, R_HIP, L_HIP, R_ANKLE, L_ANKLE]
    if not (np.isfinite(p3[need]).all() and (kp[need, 2] >= rules.min_confidence).all()):
        return none
    if not _upright_in_picture(kp, rules, aspect):
        return none
    feet = []
    for hip, knee, ankle in ((R_HIP, R_KNEE, R_ANKLE), (L_HIP, L_KNEE, L_ANKLE)):
        if not (np.isfinite(p3[knee]).all() and kp[knee, 2] >= rules.min_confidence):
            continue
        thigh, shin = p3[hip] - p3[knee], p3[ankle] - p3[knee]
        lengths = float(np.linalg.norm(thigh) * np.linalg.norm(shin))
        if lengths > 0 and math.degrees(math.acos(max(-1.0, min(1.0, float(thigh @ shin) / lengths)))) \
                >= rules.min_knee_angle_deg:
            feet.append(ankle)
    return p3[feet] if feet else none


def _plane_through(points: np.ndarray) -> Optional[Tuple[np.ndarray, float]]:
    normal = np.cross(points[1] - points[0], points[2] - points[0])
    norm = float(np.linalg.norm(normal))
    if norm < 1e-9:
        return None
    normal = normal / norm
    return normal, -float(normal @ points[0])


def _least_squares(points: np.ndarray) -> Tuple[np.ndarray, float]:
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre, full_matrices=False)[2][2]
    return normal, -float(normal @ centre)


def _extent(points: np.ndarray, normal: np.ndarray) -> Tuple[float, float]:
    """5th-95th percentile extent of ``points`` along their two main directions within the plane."""
    flat = points - np.outer(points @ normal, normal)
    flat = flat - flat.mean(axis=0)
    axes = np.linalg.svd(flat, full_matrices=False)[2][:2]
    spans = [float(np.subtract(*np.percentile(flat @ axis, [95, 5]))) for axis in axes]
    return spans[0], spans[1]


def fit_plane(points: np.ndarray, rules: FitRules = FitRules()) -> FloorFit:
    """The floor under ``points`` ``(n, 3)`` (ankles, metres, camera coordinates); :class:`FloorError` when
    they cannot fix it (see the module's notes)."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    n = len(pts)
    if n < rules.min_points:
        raise FloorError("only %d foot points (at least %d needed): record longer, with someone standing and "
                         "walking in view, whole body seen, feet included" % (n, rules.min_points))
    rng = np.random.default_rng(rules.seed)
    best: Optional[np.ndarray] = None
    for _ in range(rules.iterations):
        plane = _plane_through(pts[rng.choice(n, 3, replace=False)])
        if plane is None:
            continue
        inside = np.abs(pts @ plane[0] + plane[1]) <= rules.inlier_m
        if best is None or inside.sum() > best.sum():
            best = inside
    if best is None or best.sum() < 3:
        raise FloorError("the %d foot points are all in one spot or on one line: have someone walk across the "
                         "room, not only along one path" % n)
    inside = best
    for _ in range(10):
        normal, d = _least_squares(pts[inside])
        now = np.abs(pts @ normal + d) <= rules.inlier_m
        if now.sum() < 3 or (now == inside).all():
            break
        inside = now
    normal, d = _least_squares(pts[inside])
    count = int(inside.sum())
    if count < max(rules.min_points, rules.min_inlier_share * n):
        raise FloorError("only %d of %d foot points lie on one plane (within %.0f mm; at least %d and %.0f%% "
                         "needed): the people seen were not standing on one floor, or the 3D keypoints are too "
                         "noisy" % (count, n, rules.inlier_m * 1000, rules.min_points, rules.min_inlier_share * 100))
    extent = _extent(pts[inside], normal)
    if extent[0] < rules.min_extent_m or extent[1] < rules.min_width_m:
        where = "in one spot or a small area" if extent[0] < rules.min_extent_m else "along one line"
        raise FloorError("the feet cover %.2f m x %.2f m of the floor (at least %.1f m x %.1f m needed): they are "
                         "all %s, which does not fix a plane; have someone walk around the room, across and "
                         "along it" % (extent[0], extent[1], rules.min_extent_m, rules.min_width_m, where))
    if d < 0:  # the camera (origin) on the positive side: the normal points up, into the room
        normal, d = -normal, -d
    rms = float(np.sqrt(np.mean((pts[inside] @ normal + d) ** 2)))
    d += rules.ankle_height_m  # from the ankles down to the floor
    plane = tuple(float(v) for v in normal) + (float(d),)
    return FloorFit(plane, n, count, rms, extent)  # type: ignore[arg-type]


def collect(frames: Iterable[Sequence[Any]], rules: FootRules = FootRules()) -> Tuple[np.ndarray, int, int]:
    """The foot points of ``frames`` (one ``(keypoints (N, 18, 3), keypoints3d (N, 18, 3) or None[, width /
    height])`` per frame; the aspect defaults to 1), how many frames and how many people in them
    (person-frames) gave some."""
    found: List[np.ndarray] = []
    frames_used = 0
    for frame in frames:
        keypoints, keypoints3d = frame[0], frame[1]
        aspect = float(frame[2]) if len(frame) > 2 else 1.0
        if keypoints3d is None:
            continue
        these = [foot_points(kp, kp3, rules, aspect) for kp, kp3 in zip(keypoints, keypoints3d)]
        these = [f for f in these if len(f)]
        if these:
            frames_used += 1
            found.extend(these)
    return (np.concatenate(found) if found else np.zeros((0, 3))), frames_used, len(found)


def plane_line(plane: Sequence[float]) -> str:
    """The config line: ``floor_plane: [a, b, c, d]`` (4 decimals: 0.1 mm, 1e-4 of the normal)."""
    return "floor_plane: [%s]" % ", ".join("%.4f" % v for v in plane)
