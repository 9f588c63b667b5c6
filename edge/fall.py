"""Fall detection from skeleton geometry over time, one state machine per track.

Everything is measured in the person's own **body heights** (bh), so the same thresholds work
near and far from the camera, and driven by frame **timestamps**, never frame counts, so it
behaves the same at 5 and 30 fps.

Per observation (one skeleton of one track, pixels of the frame):

* ``size`` — body height in pixels, estimated from segment lengths (torso, thighs, shins, upper
  arms, forearms divided by their usual fraction of standing height), which do not change when a
  person sits or lies; the track keeps a high quantile over the last seconds, so a foreshortened
  or half-detected skeleton does not shrink it.
* ``floor`` — the image row of the floor under the person: the ankles while the person is not
  down (feet are on the floor when standing or sitting), else the knees plus a shin, else the
  hips plus half a body height. Frozen while a fall is in progress.
* ``head_height_bh`` / ``hip_height_bh`` — how far above that floor the head and hips are.
* ``torso_angle_deg`` — the neck-to-hips axis from vertical (0 upright, 90 horizontal).
* ``descent`` — how far the head (or, when it is missing, the neck, shoulders or hips) went
  down within the last ``descent_window_s``, in body heights, and how fast (bh per second).
  The network often loses a person in the middle of a fall (motion blur, legs in the air): when
  a track comes back after at least ``gap_s`` unseen, within ``confirm_within_s``, and its head
  was already going down at ``min_descent_speed_bh_per_s`` or faster (at least half of
  ``min_descent_bh``) when it was lost, the descent is measured from before the gap to now, at
  the speed seen before it.

States: ``normal`` -> (fast descent) ``descending`` -> (down for ``min_down_s`` within
``confirm_within_s``) ``fallen``: ``fall_detected`` -> (still not up after ``long_lie_s``)
``long_lie`` -> (up for ``min_up_s``) ``fall_cleared`` -> ``normal``. A second
``fall_detected`` for the same track needs ``cooldown_s`` after the last one was cleared.

A person who collapses slowly (no fast descent) is caught when they lie flat at floor level
(head and hips at most ``max_floor_head_bh``, torso lying) for ``floor_lying_s``: the top of a
bed is well above that. The floor is only learned while the person is upright or sitting, so
somebody first seen lying (in bed, say) never has one and never raises this.

"Down" means the head is low (``max_head_height_bh``, or ``max_head_height_lying_bh`` when the
torso is at least ``lying_torso_angle_deg`` from vertical) and the hips, when seen, are low
(``max_hip_height_bh``); when the hips are not seen the torso must be lying. A frame that cannot
tell (torso angle unknown, and the head low enough only for a lying person, or the hips unseen)
neither starts nor stops the ``min_down_s`` clock: half-detected lying people do not reset it.
Sitting on a chair or the floor keeps the head high; bending to pick something up keeps the hips
high; lying down on a bed is slow. Zones (normalised polygons) suppress alerts where lying is normal
(``ignore``) or, when any ``floor`` zone exists, allow them only there.

**Metric 3D (opt-in)**: with ``use_3d`` on, a camera whose ``floor_plane`` is known and a model that
gives 3D keypoints (metres, camera coordinates), a track's observations are measured in 3D instead
(:func:`observe3d`): heights are distances above the floor plane, the body height comes from 3D
segment lengths (no foreshortening), the torso angle is the neck-to-hips axis against the floor's
normal, and the floor under the person is the plane itself. The same state machine and thresholds
(in body heights) then run on those numbers. A track keeps the kind of its first observation (2D or
3D): frames of the other kind are skipped for it, so pixels and millimetres never mix.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge.settings import Section, setting, show
from edge.skeleton import (HEAD, L_ANKLE, L_ELBOW, L_HIP, L_KNEE, L_SHOULDER, L_WRIST, NECK, R_ANKLE, R_ELBOW,
                           R_HIP, R_KNEE, R_SHOULDER, R_WRIST)

# Segment length as a fraction of standing height (Drillis & Contini anthropometry; the neck
# keypoint sits between the shoulders).
SEGMENTS: Tuple[Tuple[int, int, float], ...] = (
    (NECK, R_HIP, 0.30), (NECK, L_HIP, 0.30), (R_HIP, R_KNEE, 0.245), (L_HIP, L_KNEE, 0.245),
    (R_KNEE, R_ANKLE, 0.246), (L_KNEE, L_ANKLE, 0.246), (R_SHOULDER, R_ELBOW, 0.186),
    (L_SHOULDER, L_ELBOW, 0.186), (R_ELBOW, R_WRIST, 0.146), (L_ELBOW, L_WRIST, 0.146),
)
_SEG_A = np.array([s[0] for s in SEGMENTS])
_SEG_B = np.array([s[1] for s in SEGMENTS])
_SEG_F = np.array([s[2] for s in SEGMENTS])

NORMAL, DESCENDING, FALLEN = "normal", "descending", "fallen"


@dataclass(frozen=True)
class FallConfig(Section):
    """The ``fall`` settings: thresholds of the detector (bh = the person's own body height)."""

    min_keypoint_confidence: float = setting(0.1, "keypoints below this confidence count as missing",
                                             between=(0.01, 1))
    descent_window_s: float = setting(1.5, "a descent is measured over at most this much past, seconds",
                                      between=(0.2, 10))
    min_descent_bh: float = setting(0.35, "the head must go down at least this far, body heights", between=(0.05, 2))
    min_descent_speed_bh_per_s: float = setting(0.5, "... at least this fast on average, body heights per second",
                                                between=(0.05, 10))
    gap_s: float = setting(0.4, "a person unseen this long, then back low, may carry a fast descent seen before "
                           "the gap across it, seconds (at most confirm_within_s)", between=(0.05, 30))
    confirm_within_s: float = setting(3.0, "after a descent the person must be down within this time, seconds",
                                      between=(0.2, 30))
    min_down_s: float = setting(0.6, "and stay down this long before fall_detected, seconds", between=(0, 30))
    max_head_height_bh: float = setting(0.35, "down: head at most this high above the floor, body heights",
                                        between=(0.05, 1.5))
    max_head_height_lying_bh: float = setting(
        0.5, "down: or this high when the torso is lying (see lying_torso_angle_deg), body heights",
        between=(0.05, 1.5))
    max_hip_height_bh: float = setting(0.35, "down: and the hips (when seen) at most this high, body heights",
                                       between=(0.05, 1.5))
    down_margin_bh: float = setting(0.1, "once down, a frame keeps the person down unless their head or hips come "
                                    "up more than this above the down thresholds (parts jitter from frame to "
                                    "frame), body heights", between=(0, 1))
    lying_torso_angle_deg: float = setting(50.0, "a torso this far from vertical counts as lying, degrees",
                                           between=(10, 90))
    max_floor_head_bh: float = setting(0.2, "lying on the floor: head and hips at most this high, body heights "
                                       "(below up_head_height_bh)", between=(0.01, 1.0))
    floor_lying_s: float = setting(1.5, "lying on the floor this long is a fall even without a fast descent (a slow "
                                   "collapse), seconds", between=(0.2, 600))
    upright_torso_angle_deg: float = setting(30.0, "the floor under a person is learned only while their torso "
                                             "is at most this far from vertical, degrees (at most "
                                             "lying_torso_angle_deg)", between=(5, 80))
    up_head_height_bh: float = setting(0.6, "up again: head at least this high above the floor, body heights (above "
                                       "both down thresholds)", between=(0.1, 2))
    min_up_s: float = setting(2.0, "up for this long -> fall_cleared, seconds", between=(0, 600))
    long_lie_s: float = setting(60.0, "still not up this long after fall_detected -> long_lie, seconds",
                                between=(1, 86400))
    cooldown_s: float = setting(10.0, "no new fall_detected for a person this soon after fall_cleared, seconds",
                                between=(0, 86400))
    size_memory_s: float = setting(10.0, "a person's size is a high quantile over this much past, seconds",
                                   between=(1, 600))
    min_size_px: float = setting(20.0, "people smaller than this (body height, pixels) are too small to judge",
                                 between=(1, 2000))
    use_3d: bool = setting(False, "judge a track in metric 3D (heights above the camera's floor_plane, torso angle "
                           "to its normal) when the model gives 3D keypoints; every camera then needs its "
                           "floor_plane (fallwatch floor estimate)")

    def rules(self) -> Iterator[Tuple[str, str]]:
        down = max(self.max_head_height_bh, self.max_head_height_lying_bh)
        if self.up_head_height_bh <= down:
            yield "up_head_height_bh", (
                "got %s; must be above max_head_height_bh (%r) and max_head_height_lying_bh (%r): a person "
                "cannot be up and down at once" % (show(self.up_head_height_bh), self.max_head_height_bh,
                                                   self.max_head_height_lying_bh))
        if max(self.max_head_height_bh, self.max_head_height_lying_bh) + self.down_margin_bh > self.up_head_height_bh:
            yield "down_margin_bh", (
                "got %s; the down thresholds plus this margin must not pass up_head_height_bh (%r): else a "
                "person getting up would still count as down" % (show(self.down_margin_bh), self.up_head_height_bh))
        if self.max_floor_head_bh >= self.up_head_height_bh:
            yield "max_floor_head_bh", (
                "got %s; must be below up_head_height_bh (%r): else a person lying on the floor counts as up "
                "again and the fall clears" % (show(self.max_floor_head_bh), self.up_head_height_bh))
        if self.upright_torso_angle_deg > self.lying_torso_angle_deg:
            yield "upright_torso_angle_deg", (
                "got %s; must be at most lying_torso_angle_deg (%r): else the floor is learned from people "
                "lying down" % (show(self.upright_torso_angle_deg), self.lying_torso_angle_deg))
        if self.gap_s > self.confirm_within_s:
            yield "gap_s", (
                "got %s; must be at most confirm_within_s (%r): a person back after a longer gap is not "
                "judged as falling" % (show(self.gap_s), self.confirm_within_s))


def zones_of(camera: Any) -> Tuple["Zone", ...]:
    """The :class:`Zone` list of a camera's config section (its ``zones``)."""
    return tuple(Zone(z.kind, tuple((float(x), float(y)) for x, y in z.polygon)) for z in camera.zones)


@dataclass(frozen=True)
class Zone:
    """A polygon in normalised frame coordinates; ``kind`` is ``ignore`` or ``floor``."""

    kind: str
    polygon: Tuple[Tuple[float, float], ...]

    def contains(self, x: float, y: float) -> bool:
        inside = False
        pts = self.polygon
        for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside


@dataclass(frozen=True)
class Observation:
    """Geometry of one skeleton, pixels (NaN where the parts are missing)."""

    t: float
    size: float  # body height estimate from segments, pixels
    head_y: float  # the head (or a stand-in: neck, shoulders, top of the skeleton)
    hip_y: float
    ankle_y: float
    knee_y: float
    centre: Tuple[float, float]  # normalised frame coordinates of the hips (else the skeleton's centre)
    torso_angle_deg: float
    aspect: float  # bounding box width / height
    picture_size: float = math.nan  # body height in frame pixels (= size in 2D): distances on the picture


def observe(keypoints: np.ndarray, t: float, frame_size: Tuple[int, int], min_confidence: float
            ) -> Optional[Observation]:
    """Geometry of one skeleton ``(18, 3)`` (x, y normalised to the frame, confidence).
    None when fewer than two parts are usable. Non-finite values count as missing."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(18, 3)
    width, height = float(frame_size[0]), float(frame_size[1])
    ok = np.isfinite(kp).all(axis=1) & (kp[:, 2] >= min_confidence)
    ok &= (kp[:, 0] > -0.5) & (kp[:, 0] < 1.5) & (kp[:, 1] > -0.5) & (kp[:, 1] < 1.5)
    if ok.sum() < 2:
        return None
    px = np.where(ok, kp[:, 0] * width, np.nan)
    py = np.where(ok, kp[:, 1] * height, np.nan)

    def mean_y(idx: Sequence[int]) -> float:
        vals = [py[i] for i in idx if ok[i]]
        return float(np.mean(vals)) if vals else math.nan

    def mean_xy(idx: Sequence[int]) -> Optional[Tuple[float, float]]:
        sel = [i for i in idx if ok[i]]
        return (float(np.mean(px[sel])), float(np.mean(py[sel]))) if sel else None

    seg_ok = ok[_SEG_A] & ok[_SEG_B]
    lengths = np.hypot(px[_SEG_A] - px[_SEG_B], py[_SEG_A] - py[_SEG_B])
    size = float(np.median(lengths[seg_ok] / _SEG_F[seg_ok])) if seg_ok.any() else math.nan

    head_y = mean_y(HEAD)
    if math.isnan(head_y) and not math.isnan(size):
        top = mean_y((NECK,)) if ok[NECK] else mean_y((R_SHOULDER, L_SHOULDER))
        head_y = top - 0.08 * size if not math.isnan(top) else math.nan
    if math.isnan(head_y):
        head_y = float(np.nanmin(py))
    top = mean_xy((NECK,)) or mean_xy((R_SHOULDER, L_SHOULDER)) or mean_xy(HEAD)
    hips = mean_xy((R_HIP, L_HIP))
    bottom = hips or mean_xy((R_KNEE, L_KNEE))
    angle = math.nan
    if top is not None and bottom is not None and (top[0] - bottom[0]) ** 2 + (top[1] - bottom[1]) ** 2 > 1.0:
        angle = math.degrees(math.atan2(abs(top[0] - bottom[0]), bottom[1] - top[1]))  # 0 upright, 180 upside down
    xs, ys = px[ok], py[ok]
    box_w, box_h = float(xs.max() - xs.min()), float(ys.max() - ys.min())
    centre_px = hips or (float(np.mean(xs)), float(np.mean(ys)))
    return Observation(
        t=float(t), size=size, head_y=head_y, hip_y=mean_y((R_HIP, L_HIP)), ankle_y=float(np.nanmax(
            [py[R_ANKLE], py[L_ANKLE]])) if (ok[R_ANKLE] or ok[L_ANKLE]) else math.nan,
        knee_y=mean_y((R_KNEE, L_KNEE)), centre=(centre_px[0] / width, centre_px[1] / height),
        torso_angle_deg=angle, aspect=box_w / max(box_h, 1.0), picture_size=size)


MM_PER_M = 1000.0  # a 3D observation's lengths are millimetres: well above min_size_px for any person


def floor_height(points: np.ndarray, plane: Sequence[float]) -> np.ndarray:
    """Signed distance, metres, of points ``(..., 3)`` above the plane ``a x + b y + c z + d = 0``
    (camera coordinates, metres), positive on the side its normal ``(a, b, c)`` points to."""
    a, b, c, d = (float(v) for v in plane)
    norm = math.sqrt(a * a + b * b + c * c)
    return (np.asarray(points, np.float64) @ np.array([a, b, c]) + d) / norm


def observe3d(keypoints: np.ndarray, keypoints3d: np.ndarray, t: float, frame_size: Tuple[int, int],
              plane: Sequence[float], min_confidence: float) -> Optional[Observation]:
    """Geometry of one skeleton in metric 3D: as :func:`observe`, but the "rows" are millimetres below the
    floor plane (the floor at 0, a part 1 m above it at -1000), ``size`` the body height in millimetres
    from 3D segment lengths, ``ankle_y`` 0 (the plane is the floor under the person) and the torso angle
    measured against the plane's normal (0 upright, 90 lying). ``centre`` and ``aspect`` stay those of the
    2D skeleton (zones are drawn on the picture). None when fewer than two parts have 3D."""
    flat = observe(keypoints, t, frame_size, min_confidence)
    kp = np.asarray(keypoints, np.float64).reshape(18, 3)
    p3 = np.asarray(keypoints3d, np.float64).reshape(18, 3)
    ok = np.isfinite(p3).all(axis=1) & (kp[:, 2] >= min_confidence)
    if flat is None or ok.sum() < 2:
        return None
    y = np.where(ok, -floor_height(np.where(ok[:, None], p3, 0.0), plane) * MM_PER_M, np.nan)

    def mean_y(idx: Sequence[int]) -> float:
        vals = [y[i] for i in idx if ok[i]]
        return float(np.mean(vals)) if vals else math.nan

    def mean_p(idx: Sequence[int]) -> Optional[np.ndarray]:
        sel = [i for i in idx if ok[i]]
        return p3[sel].mean(axis=0) if sel else None

    seg_ok = ok[_SEG_A] & ok[_SEG_B]
    lengths = np.linalg.norm(p3[_SEG_A] - p3[_SEG_B], axis=1) * MM_PER_M
    size = float(np.median(lengths[seg_ok] / _SEG_F[seg_ok])) if seg_ok.any() else math.nan
    head_y = mean_y(HEAD)
    if math.isnan(head_y) and not math.isnan(size):
        top_y = mean_y((NECK,)) if ok[NECK] else mean_y((R_SHOULDER, L_SHOULDER))
        head_y = top_y - 0.08 * size if not math.isnan(top_y) else math.nan
    if math.isnan(head_y):
        head_y = float(np.nanmin(y))
    top = mean_p((NECK,))
    top = top if top is not None else mean_p((R_SHOULDER, L_SHOULDER))
    bottom = mean_p((R_HIP, L_HIP))
    bottom = bottom if bottom is not None else mean_p((R_KNEE, L_KNEE))
    angle = math.nan
    if top is not None and bottom is not None and np.linalg.norm(top - bottom) > 0.05:
        up = floor_height(top, plane) - floor_height(bottom, plane)  # along the normal, metres
        angle = math.degrees(math.acos(max(-1.0, min(1.0, float(up / np.linalg.norm(top - bottom))))))
    return Observation(t=float(t), size=size, head_y=head_y, hip_y=mean_y((R_HIP, L_HIP)), ankle_y=0.0,
                       knee_y=mean_y((R_KNEE, L_KNEE)), centre=flat.centre, torso_angle_deg=angle,
                       aspect=flat.aspect, picture_size=flat.size)


def _clip01(v: float) -> float:
    return 0.0 if not v > 0 else (1.0 if v > 1 else float(v))


@dataclass
class _TrackState:
    state: str = NORMAL
    recent: Deque[Observation] = field(default_factory=deque)  # last descent_window_s of observations
    sizes: Deque[Tuple[float, float]] = field(default_factory=deque)  # (t, size px)
    floors: Deque[Tuple[float, float]] = field(default_factory=deque)  # (t, floor row px) while not down
    last_t: float = -math.inf
    descent: Dict[str, float] = field(default_factory=dict)  # features of the descent in progress
    frozen_floor: float = math.nan
    frozen_size: float = math.nan
    down_since: Optional[float] = None
    floor_since: Optional[float] = None  # lying on the floor since (no fast descent seen)
    up_since: Optional[float] = None
    fallen_at: float = math.nan
    long_lie_sent: bool = False
    cleared_at: float = -math.inf
    echo_of: Optional["_TrackState"] = None  # the track whose fall this one is a second skeleton of
    metric: Optional[bool] = None  # observed in 3D (True) or 2D (False), fixed by the first observation

    def reset(self) -> None:
        """Forget everything (the track's clock went back)."""
        self.__init__()  # type: ignore[misc]


class FallDetector:
    """Per-camera fall detection: call :meth:`update` once per processed frame, in time order.

    ``update(tracks, t, frame_size)``: ``tracks`` are the camera's live confirmed tracks
    (anything with ``id``, ``keypoints`` (18, 3) normalised and ``last_t``); a track not observed
    at ``t`` is left alone. Returns events: dicts with ``type``, ``track_id``, ``confidence``,
    ``keypoints``, ``bbox`` and ``features`` (the measurements that led to it). ``floor_plane``:
    the camera's ``[a, b, c, d]`` (metres, camera coordinates; empty: unknown); with ``config.use_3d``,
    a track whose ``keypoints3d`` are given is judged in 3D (:func:`observe3d`).
    """

    def __init__(self, config: FallConfig = FallConfig(), zones: Sequence[Zone] = (),
                 floor_plane: Sequence[float] = ()) -> None:
        self.config = config
        self.floor_plane = tuple(float(v) for v in floor_plane) if config.use_3d else ()
        self.ignore = [z for z in zones if z.kind == "ignore"]
        self.floor_zones = [z for z in zones if z.kind == "floor"]
        self._tracks: Dict[int, _TrackState] = {}
        self._gone: List[_TrackState] = []  # tracks ended within confirm_within_s, to hand over

    def update(self, tracks: Sequence[Any], t: float, frame_size: Tuple[int, int]) -> List[Dict[str, Any]]:
        events: List[Dict[str, Any]] = []
        alive = set()
        for track in tracks:
            alive.add(track.id)
            if getattr(track, "last_t", t) != t:
                continue
            found = []
            st = self._tracks.get(track.id)
            if st is None:  # a new track: what it saw before it got its id counts too
                past = track.history() if hasattr(track, "history") else None
                seen = [(float(pt), pkp) for pt, pkp in zip(past.t, past.keypoints) if pt < t] if past else []
                seen3d = list(past.keypoints3d[:len(seen)]) if past is not None and getattr(
                    past, "keypoints3d", None) is not None else [None] * len(seen)
                first = seen[0] if seen else (t, track.keypoints)
                first3d = seen3d[0] if seen else getattr(track, "keypoints3d", None)
                st = self._tracks[track.id] = self._handed_over(first[1], first[0], t, frame_size,
                                                                self._metric(first3d)) or _TrackState()
                for (pt, pkp), pkp3 in zip(seen, seen3d):
                    if pt > st.last_t:  # a track handed over has seen up to its own last_t already
                        found.append(self._look(st, pkp, pt, frame_size, pkp3))
            found.append(self._look(st, track.keypoints, t, frame_size, getattr(track, "keypoints3d", None)))
            for event in found:
                if event is not None:
                    event.update(track_id=int(track.id), keypoints=np.asarray(track.keypoints, dtype=np.float64))
                    events.append(event)
        for gone in set(self._tracks) - alive:
            self._gone.append(self._tracks.pop(gone))
        horizon = t - self.config.confirm_within_s
        self._gone = [g for g in self._gone if g.last_t >= horizon]
        return events

    def _metric(self, keypoints3d: Optional[np.ndarray]) -> bool:
        """Whether an observation with these 3D keypoints is judged in 3D."""
        return bool(self.floor_plane) and keypoints3d is not None and bool(np.isfinite(keypoints3d).any())

    def _handed_over(self, keypoints: np.ndarray, t: float, now: float, frame_size: Tuple[int, int],
                     metric: bool = False) -> Optional["_TrackState"]:
        """A new track, first seen at ``t`` and confirmed at ``now``, that starts where another one
        was lost: the network often loses a person in mid-fall (or splits them into two partial
        skeletons) and the tracker then carries on with a new track for them lying. When a track not
        seen at ``now``, but seen within ``confirm_within_s`` before ``t``, had a floor and was last
        seen within one body height of where the new one starts, the new track takes over its state
        (floor, size, the descent so far); each lost track is handed over once, and only to a track
        judged the same way (2D or 3D, ``metric``)."""
        obs = observe(keypoints, t, frame_size, self.config.min_keypoint_confidence)
        if obs is None:
            return None
        width, height = float(frame_size[0]), float(frame_size[1])
        best, best_d = None, 1.0
        for st in list(self._tracks.values()) + self._gone:
            if not (t - self.config.confirm_within_s <= st.last_t < now) or not st.floors or not st.recent:
                continue
            if bool(st.metric) != metric:
                continue
            last = st.recent[-1]
            size = last.picture_size if metric else \
                float(np.quantile([s for _, s in st.sizes], 0.8)) if st.sizes else math.nan
            d = math.hypot((obs.centre[0] - last.centre[0]) * width, (obs.centre[1] - last.centre[1]) * height) / size
            if d <= best_d:
                best, best_d = st, d
        if best is None:
            return None
        if best in self._gone:
            self._gone.remove(best)
        else:
            self._tracks = {k: v for k, v in self._tracks.items() if v is not best}
        return best

    def restart(self) -> None:
        """Forget every track's state (the frame clock went back): no state, fallen or echo, outlives it."""
        self._tracks.clear()
        self._gone = []

    def states(self) -> Dict[int, str]:
        """Read-only: each known track's state (``normal``, ``descending``, ``fallen``) by track id."""
        return {track_id: st.state for track_id, st in self._tracks.items()}

    def inspect(self, track_id: int) -> Optional[Dict[str, Any]]:
        """Read-only: a track's ``state``, the ``size_px`` and ``floor_px`` its rules measure
        against now (NaN when unknown), ``down_since`` and the ``descent`` in progress; None for an
        unknown track. For diagnosis (edge.diagnose); it changes nothing."""
        st = self._tracks.get(track_id)
        if st is None:
            return None
        size = float(np.quantile([s for _, s in st.sizes], 0.8)) if st.sizes else math.nan
        floor = float(np.median([f for _, f in st.floors])) if st.floors else math.nan
        if st.state != NORMAL:
            size, floor = st.frozen_size, st.frozen_floor
        return {"state": st.state, "size_px": size, "floor_px": floor, "down_since": st.down_since,
                "descent": dict(st.descent)}

    # ------------------------------------------------------------------ per track

    def _look(self, st: "_TrackState", keypoints: np.ndarray, t: float, frame_size: Tuple[int, int],
              keypoints3d: Optional[np.ndarray] = None) -> Optional[Dict[str, Any]]:
        """One observation of a track: its event, if it caused one."""
        metric = self._metric(keypoints3d)
        if st.metric is not None and metric != st.metric:
            return None  # one kind of geometry per track
        if metric:
            obs = observe3d(keypoints, keypoints3d, t, frame_size, self.floor_plane,
                            self.config.min_keypoint_confidence)
        else:
            obs = observe(keypoints, t, frame_size, self.config.min_keypoint_confidence)
        if obs is not None and st.metric is None and t > st.last_t:
            st.metric = metric
        if obs is None or not t > st.last_t:  # no usable parts, or time went backwards / repeated
            if t < st.last_t:
                st.reset()
            return None
        st.last_t = t
        return self._unless_echo(st, obs, self._step(st, obs), frame_size)

    def _unless_echo(self, st: _TrackState, obs: Observation, event: Optional[Dict[str, Any]],
                     frame_size: Tuple[int, int]) -> Optional[Dict[str, Any]]:
        """One fall, one alert. The network sometimes sees a fallen person twice (a second,
        partial skeleton beside the first) and the tracker gives it its own id; that second track
        then "falls" too. A ``fall_detected`` of a track that lies within one body height of a
        track already fallen (and seen within ``confirm_within_s``) is the same incident: it is not
        sent, and that track's later events are held back while the first track is still tracked
        (or lost less than ``confirm_within_s`` ago, so it may be handed over) or has been cleared.
        If the first track is lost for good without getting up, the second one speaks for the
        incident from then on (``long_lie``, ``fall_cleared``)."""
        if event is None:
            return None
        if event["type"] == "fall_detected":
            st.echo_of = self._fallen_near(st, obs, frame_size)
        first = st.echo_of
        if first is None:
            return event
        carried = any(first is other for other in list(self._tracks.values()) + self._gone)  # or to be handed over
        if carried or first.cleared_at > first.fallen_at:
            return None
        st.echo_of = None
        return event

    def _fallen_near(self, st: _TrackState, obs: Observation, frame_size: Tuple[int, int]
                     ) -> Optional[_TrackState]:
        width, height = float(frame_size[0]), float(frame_size[1])
        for other in self._tracks.values():
            if other is st or other.state != FALLEN or not other.recent:
                continue
            if other.last_t < obs.t - self.config.confirm_within_s or not other.frozen_size > 0:
                continue
            last = other.recent[-1]
            d = math.hypot((obs.centre[0] - last.centre[0]) * width, (obs.centre[1] - last.centre[1]) * height)
            if d <= (last.picture_size if other.metric else other.frozen_size):
                return other
        return None

    def _remember(self, st: _TrackState, obs: Observation) -> Tuple[float, float]:
        """Update the track's size and floor memories; return (size px, floor row px)."""
        p = self.config
        if not math.isnan(obs.size):
            st.sizes.append((obs.t, obs.size))
        while st.sizes and st.sizes[0][0] < obs.t - p.size_memory_s:
            st.sizes.popleft()
        size = float(np.quantile([s for _, s in st.sizes], 0.8)) if st.sizes else math.nan
        st.recent.append(obs)
        while st.recent and st.recent[0].t < obs.t - p.descent_window_s - p.confirm_within_s:
            st.recent.popleft()  # a descent across a gap looks back this far
        # The floor is learned only from an upright torso with the legs below the hips (standing or
        # sitting): during a slow collapse the feet may be up on a chair, nowhere near the floor.
        upright = not math.isnan(obs.torso_angle_deg) and obs.torso_angle_deg < p.upright_torso_angle_deg
        legs_down = math.isnan(obs.hip_y) or math.isnan(obs.ankle_y) or obs.ankle_y - obs.hip_y >= 0.25 * size
        if st.state == NORMAL and not math.isnan(size) and upright and legs_down:
            if not math.isnan(obs.ankle_y):
                floor = obs.ankle_y
            elif not math.isnan(obs.knee_y):
                floor = obs.knee_y + 0.25 * size
            elif not math.isnan(obs.hip_y):
                floor = obs.hip_y + 0.5 * size
            else:
                floor = math.nan
            if not math.isnan(floor):
                st.floors.append((obs.t, floor))
        while st.floors and st.floors[0][0] < st.floors[-1][0] - 1.0:  # the last second of upright frames
            st.floors.popleft()
        floor = float(np.median([f for _, f in st.floors])) if st.floors else math.nan
        return size, floor

    def _descent(self, st: _TrackState, obs: Observation, size: float) -> Tuple[float, float]:
        """How far (bh) and how fast (bh/s) the head went down to where it is now, from any
        earlier point in the descent window. A descent counts when some earlier point is at least
        ``min_descent_bh`` higher and was left at ``min_descent_speed_bh_per_s`` or faster; then
        this returns the largest such drop and the highest such speed, else ``(largest drop, 0)``.
        After a gap in the track (see the module's notes) the descent may be carried across it."""
        p = self.config
        drops, speeds = [], []
        for old in st.recent:
            dt = obs.t - old.t
            if 0.1 <= dt <= p.descent_window_s:
                drops.append((obs.head_y - old.head_y) / size)
                speeds.append(drops[-1] / dt)
        d, v = np.array(drops), np.array(speeds)
        fast = (d >= p.min_descent_bh) & (v >= p.min_descent_speed_bh_per_s)
        if fast.any():
            return float(d[fast].max()), float(v[fast].max())
        carried = self._descent_across_gap(st, obs, size)
        if carried is not None:
            return carried
        return (float(np.nanmax(d)), 0.0) if drops else (0.0, 0.0)

    def _descent_across_gap(self, st: _TrackState, obs: Observation, size: float
                            ) -> Optional[Tuple[float, float]]:
        """(drop, speed) when the track was lost while going down fast and is back low enough."""
        p = self.config
        if len(st.recent) < 3:
            return None
        prev = st.recent[-2]
        gap = obs.t - prev.t
        if not p.gap_s <= gap <= p.confirm_within_s:
            return None
        before = [o for o in st.recent if prev.t - p.descent_window_s <= o.t < prev.t]
        onset = [((prev.head_y - o.head_y) / size, (prev.head_y - o.head_y) / size / (prev.t - o.t))
                 for o in before if prev.t - o.t >= 0.1]
        # Seen lying after the gap, the body axis turned while unseen: an onset at half the speed is
        # enough evidence (a person sitting down first is seen upright and slow before any gap).
        lying = not math.isnan(obs.torso_angle_deg) and obs.torso_angle_deg >= p.lying_torso_angle_deg
        min_speed = p.min_descent_speed_bh_per_s * (0.5 if lying else 1.0)
        fast_onset = [v for dv, v in onset if dv >= 0.5 * p.min_descent_bh and v >= min_speed]
        if not fast_onset:
            return None
        drop = (obs.head_y - min(o.head_y for o in before)) / size
        if not drop >= p.min_descent_bh:
            return None
        return float(drop), float(max(fast_onset))

    def _heights(self, obs: Observation, floor: float, size: float) -> Tuple[float, float]:
        return (floor - obs.head_y) / size, (floor - obs.hip_y) / size

    def _is_down(self, obs: Observation, head_h: float, hip_h: float) -> Optional[bool]:
        """Head low (lower still when the torso is upright, so sitting on the floor is not down)
        and hips low; with the hips unseen, the head low and the torso lying. None when the frame
        cannot tell: the torso's angle unknown and the head low enough only for a lying person."""
        p = self.config
        if not math.isnan(hip_h) and hip_h > p.max_hip_height_bh:
            return False
        if math.isnan(head_h) or head_h > p.max_head_height_lying_bh:
            return False
        if math.isnan(obs.torso_angle_deg):
            if head_h > p.max_head_height_bh:
                return None
            return True if not math.isnan(hip_h) else None
        lying = obs.torso_angle_deg >= p.lying_torso_angle_deg
        if not lying:
            return head_h <= p.max_head_height_bh and not math.isnan(hip_h)
        return True

    def _still_down(self, obs: Observation, head_h: float, hip_h: float) -> bool:
        """Not down by :meth:`_is_down`, but not clearly up either: head and hips (when seen) within
        ``down_margin_bh`` of the down thresholds. Keeps the down clock through parts jitter."""
        p = self.config
        lying = not math.isnan(obs.torso_angle_deg) and obs.torso_angle_deg >= p.lying_torso_angle_deg
        head_limit = (p.max_head_height_lying_bh if lying else p.max_head_height_bh) + p.down_margin_bh
        return (not math.isnan(head_h) and head_h <= head_limit
                and (math.isnan(hip_h) or hip_h <= p.max_hip_height_bh + p.down_margin_bh))

    def _off_floor(self, obs: Observation, head_h: float, hip_h: float) -> bool:
        """Clearly not lying at floor level: the torso upright, or head or hips more than
        ``down_margin_bh`` above ``max_floor_head_bh``. A half-seen frame is neither on nor off."""
        p = self.config
        if not math.isnan(obs.torso_angle_deg) and obs.torso_angle_deg < p.lying_torso_angle_deg:
            return True
        limit = p.max_floor_head_bh + p.down_margin_bh
        return (not math.isnan(head_h) and head_h > limit) or (not math.isnan(hip_h) and hip_h > limit)

    def _on_floor(self, obs: Observation, head_h: float, hip_h: float) -> bool:
        """Lying flat at floor level (not on a bed: its top is well above max_floor_head_bh)."""
        p = self.config
        lying = not math.isnan(obs.torso_angle_deg) and obs.torso_angle_deg >= p.lying_torso_angle_deg
        return (lying and not math.isnan(head_h) and head_h <= p.max_floor_head_bh
                and (math.isnan(hip_h) or hip_h <= p.max_floor_head_bh))

    def _in_zone(self, obs: Observation) -> Optional[str]:
        x, y = obs.centre
        if any(z.contains(x, y) for z in self.ignore):
            return "ignore zone"
        if self.floor_zones and not any(z.contains(x, y) for z in self.floor_zones):
            return "outside every floor zone"
        return None

    def _step(self, st: _TrackState, obs: Observation) -> Optional[Dict[str, Any]]:
        p = self.config
        size, floor = self._remember(st, obs)
        if math.isnan(size) or size < p.min_size_px:
            return None
        if st.state == NORMAL:
            if math.isnan(floor) or obs.t - st.cleared_at < p.cooldown_s:
                return None
            drop, speed = self._descent(st, obs, size)
            if speed > 0:
                st.state, st.frozen_floor, st.frozen_size = DESCENDING, floor, size
                st.descent = {"t": obs.t, "drop_bh": drop, "descent_bh_per_s": speed}
                st.down_since = None
            else:
                head_h, hip_h = self._heights(obs, floor, size)
                if not self._on_floor(obs, head_h, hip_h):
                    if self._off_floor(obs, head_h, hip_h):
                        st.floor_since = None
                    return None
                st.floor_since = obs.t if st.floor_since is None else st.floor_since
                if obs.t - st.floor_since < p.floor_lying_s or self._in_zone(obs) is not None:
                    return None
                st.state, st.fallen_at, st.up_since, st.long_lie_sent = FALLEN, obs.t, None, False
                st.frozen_floor, st.frozen_size, st.down_since = floor, size, st.floor_since
                st.descent = {"t": st.floor_since, "drop_bh": drop, "descent_bh_per_s": 0.0}
                return self._event("fall_detected", st, obs, head_h, hip_h)
        head_h, hip_h = self._heights(obs, st.frozen_floor, st.frozen_size)
        down = self._is_down(obs, head_h, hip_h)
        if st.state == DESCENDING:
            drop, speed = self._descent(st, obs, st.frozen_size)
            if speed > st.descent["descent_bh_per_s"]:
                st.descent.update(drop_bh=drop, descent_bh_per_s=speed)
            if down:  # True; None (cannot tell) leaves the clock as it is
                st.down_since = obs.t if st.down_since is None else st.down_since
                if obs.t - st.down_since >= p.min_down_s:
                    reason = self._in_zone(obs)
                    if reason is not None:
                        st.state = NORMAL
                        return None
                    st.state, st.fallen_at, st.up_since, st.long_lie_sent = FALLEN, obs.t, None, False
                    return self._event("fall_detected", st, obs, head_h, hip_h)
            else:
                if down is not None and not (st.down_since is not None and self._still_down(obs, head_h, hip_h)):
                    st.down_since = None
                if st.down_since is None and obs.t - st.descent["t"] > p.confirm_within_s:
                    st.state = NORMAL
            return None
        # FALLEN
        up = not math.isnan(head_h) and head_h >= p.up_head_height_bh
        if up:
            st.up_since = obs.t if st.up_since is None else st.up_since
            if obs.t - st.up_since >= p.min_up_s:
                st.state, st.cleared_at = NORMAL, obs.t
                st.floors.clear()
                return self._event("fall_cleared", st, obs, head_h, hip_h)
            return None
        st.up_since = None
        if not st.long_lie_sent and obs.t - st.fallen_at >= p.long_lie_s:
            st.long_lie_sent = True
            return self._event("long_lie", st, obs, head_h, hip_h)
        return None

    def _event(self, kind: str, st: _TrackState, obs: Observation, head_h: float, hip_h: float
               ) -> Dict[str, Any]:
        p, d = self.config, st.descent
        down_s = obs.t - st.down_since if st.down_since is not None else 0.0
        features = {
            "descent_bh_per_s": round(float(d.get("descent_bh_per_s", 0.0)), 3),
            "drop_bh": round(float(d.get("drop_bh", 0.0)), 3),
            "head_height_bh": None if math.isnan(head_h) else round(head_h, 3),
            "hip_height_bh": None if math.isnan(hip_h) else round(hip_h, 3),
            "torso_angle_deg": None if math.isnan(obs.torso_angle_deg) else round(obs.torso_angle_deg, 1),
            "aspect": round(obs.aspect, 3),
            "down_s": round(down_s, 3),
        }
        if kind == "fall_detected":
            scores = [_clip01(features["descent_bh_per_s"] / (2 * p.min_descent_speed_bh_per_s)),
                      _clip01(1.0 - head_h / (2 * p.max_head_height_bh)),
                      _clip01(down_s / (2 * p.min_down_s))]
            if features["torso_angle_deg"] is not None:
                scores.append(_clip01(features["torso_angle_deg"] / 90.0))
            confidence = float(np.mean(scores))
        else:
            confidence = 1.0
        return {"type": kind, "confidence": round(confidence, 3), "features": features}
