"""Views of a frame: upright, and rotated by +-90 degrees so that people lying on the floor stand up.

Pose networks trained on everyday photos see upright people; a person lying on the floor is
mostly missed in the upright view and found when the frame is turned by 90 degrees. Three pieces:

* :func:`make_views` -- the frame's views as one engine batch (rotation is done by
  :func:`edge.inference.preprocess.preprocess`, so it works for every model spec), with the exact
  transform of each view back to frame coordinates;
* :func:`merge_people` -- the people of every view, mapped to the frame, with one person seen in
  several views merged into one (the most complete, then most confident, skeleton is kept);
* :class:`ViewPolicy` -- when to pay for the extra views: ``always``, ``never``, or ``auto``
  (only while some track looks suspicious -- torso far from vertical for a while, hips descending
  fast, or a track lost inside the picture rather than through its edges -- and ``hold_s``
  seconds after, unless that track is seen standing again first), driven by frame timestamps.
  While every track that needs them was last found in one rotated view, ``auto`` runs only that
  one beside the upright view (all of them again every ``recheck_s``): two engine passes a frame
  instead of three for a person lying still.

Rotations are degrees clockwise (90 = ``cw``, -90 = ``ccw``). Keypoints are ``(N, 18, 3)``
``(x, y, confidence)``; "frame coordinates" are x, y normalised to [0, 1] of the frame width
and height, confidence 0 meaning the part is missing.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from edge.inference.preprocess import LowLight, Transform, preprocess
from edge.settings import Section, setting
from edge.inference.specs import ModelSpec
from edge.skeleton import HIPS, MIRROR, NECK, NUM_KEYPOINTS, SHOULDERS

log = logging.getLogger("fallwatch.views")

POLICIES = ("auto", "always", "never")
ROTATED_VIEWS = {"both": (90, -90), "cw": (90,), "ccw": (-90,)}  # config value -> rotations, degrees cw

FRAGMENT_OVERLAP = 0.7  # a skeleton this much inside a kept one's box (box_overlap) is a fragment of it
BOX_PAD = 0.1  # a skeleton's box is widened by this times its longer side before overlaps are measured
TORSO_TO_BODY_HEIGHT = 3.0  # neck-to-hip length x this ~ standing body height (adult proportions)


def max_views(policy: str, rotated_views: str = "both") -> int:
    """The largest batch the policy can ask of the engine: 1 + rotations, or 1 for ``never``.

    TensorRT engines must be built with at least this batch size (``fallwatch-calibrate --batch-size``).
    """
    if policy not in POLICIES:
        raise ValueError("views.policy %r: use one of %s" % (policy, ", ".join(POLICIES)))
    return 1 if policy == "never" else 1 + len(rotations_of(rotated_views))


def rotations_of(rotated_views: str) -> Tuple[int, ...]:
    """``both`` | ``cw`` | ``ccw`` -> the extra rotations, degrees clockwise."""
    if rotated_views not in ROTATED_VIEWS:
        raise ValueError("views.rotated_views %r: use one of %s" % (rotated_views, ", ".join(ROTATED_VIEWS)))
    return ROTATED_VIEWS[rotated_views]


def make_views(frame: np.ndarray, spec: ModelSpec, input_hw: Tuple[int, int], mode: str,
               rotations: Sequence[int] = (0,), light: Optional[LowLight] = None,
               out: Optional[Callable[[Tuple[int, ...]], np.ndarray]] = None
               ) -> Tuple[np.ndarray, Tuple[Transform, ...]]:
    """The frame seen at each rotation, as one batch ``(V, ...)`` float32 in the spec's layout,
    and each view's transform from normalised input to normalised frame coordinates; ``light``
    as in :func:`preprocess`. ``out(shape)``, when given, lends the float32 array to fill (the
    daemon's reused engine inputs, edge.inference.batches); otherwise the batch is a new array."""
    if not len(rotations):
        raise ValueError("make_views needs at least one rotation (0 = upright)")
    ih, iw = input_hw
    shape = (len(rotations), ih, iw, 3) if spec.input_layout == "NHWC" else (len(rotations), 3, ih, iw)
    batch = out(shape) if out is not None else np.empty(shape, np.float32)
    transforms = []
    for i, rotation in enumerate(rotations):
        _, transform = preprocess(frame, spec, input_hw, mode, out=batch[i:i + 1], rotation=rotation, light=light)
        transforms.append(transform)
    return batch, tuple(transforms)


# ------------------------------------------------------------------------------------- merging


def _pixels(keypoints: np.ndarray, frame_size: Tuple[float, float]) -> np.ndarray:
    return keypoints[..., :2] * np.asarray(frame_size, np.float64)


def _box_side(xy: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Longer side of each person's box of present parts, ``(N,)`` in the units of ``xy``."""
    lo = np.where(present[..., None], xy, np.inf).min(axis=1)
    hi = np.where(present[..., None], xy, -np.inf).max(axis=1)
    side = (hi - lo).max(axis=1)
    return np.where(present.any(axis=1), side, 0.0)


def person_distance(a: np.ndarray, b: np.ndarray, frame_size: Tuple[float, float] = (1.0, 1.0),
                    min_common_parts: int = 2, min_size: float = 0.05) -> float:
    """How far apart two skeletons (frame coordinates, ``(18, 3)``) are, in person sizes.

    The median pixel distance of the parts both have (or of their left/right mirror, whichever is
    smaller: views may disagree on sides), divided by the longer side of the larger of the two
    boxes (at least ``min_size`` of the frame height). ``inf`` when fewer than
    ``min_common_parts`` parts are shared.
    """
    pa, pb = _pixels(a[None], frame_size)[0], _pixels(b[None], frame_size)[0]
    has_a, has_b = a[:, 2] > 0, b[:, 2] > 0
    size = max(float(_box_side(pa[None], has_a[None])[0]), float(_box_side(pb[None], has_b[None])[0]),
               min_size * frame_size[1])
    best = math.inf
    for order in (np.arange(len(b)), MIRROR):  # the network may swap left and right between views
        common = has_a & has_b[order]
        if common.sum() >= min_common_parts:
            d = np.sqrt(((pa[common] - pb[order][common]) ** 2).sum(axis=1))
            best = min(best, float(np.median(d)) / size)
    return best


def box_overlap(a: np.ndarray, b: np.ndarray, frame_size: Tuple[float, float] = (1.0, 1.0),
                pad: float = BOX_PAD) -> float:
    """How much of the smaller of two skeletons' boxes the other covers, 0..1 (frame coordinates,
    ``(18, 3)`` each). Each box (of the parts present) is first widened on every side by ``pad``
    times its longer side, so that the thin box of a lying person still has an area."""
    boxes = []
    for kp in (a, b):
        xy, present = _pixels(kp[None], frame_size)[0], kp[:, 2] > 0
        if not present.any():
            return 0.0
        lo, hi = xy[present].min(axis=0), xy[present].max(axis=0)
        margin = pad * float((hi - lo).max())
        boxes.append((lo - margin, hi + margin))
    (lo_a, hi_a), (lo_b, hi_b) = boxes
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None).prod()
    smaller = min(float((hi_a - lo_a).prod()), float((hi_b - lo_b).prod()))
    return float(inter) / smaller if smaller > 0 else 0.0


def merge_people(per_view_keypoints: Sequence[np.ndarray], per_view_scores: Sequence[np.ndarray],
                 transforms: Optional[Sequence[Transform]] = None, frame_size: Tuple[float, float] = (1.0, 1.0),
                 max_distance: float = 0.45, min_box_overlap: float = 0.5, min_common_parts: int = 2,
                 fragment_overlap: float = FRAGMENT_OVERLAP) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """People of every view -> one list of people in frame coordinates.

    ``per_view_keypoints[v]`` is ``(N_v, 18, 3)``: in view v's network-input coordinates when
    ``transforms`` is given (the parser's output), else already in frame coordinates;
    ``per_view_scores[v]`` the parser's ``(N_v,)`` person scores. ``frame_size`` is
    ``(width, height)`` in pixels (distances are measured in pixels). A person of one view is the
    same as a person kept from another view when their :func:`person_distance` is at most
    ``max_distance``, or when their boxes overlap by at least ``min_box_overlap``
    (:func:`box_overlap`: views often disagree on which part is which, and a rotated view of an
    upright person, or the upright view of a lying one, gives a fragment inside the person's box);
    of each such group the skeleton with the most parts (then the highest score, then the lower
    view index) is kept. A group holds at most one person of each view (the parser keeps the
    people of one view apart), except fragments: a skeleton of another view whose box lies at
    least ``fragment_overlap`` inside the kept one's (a face or a pair of legs found on their own).
    People of the kept skeleton's own view are never merged into it.

    Returns ``(keypoints (M, 18, 3) float32, scores (M,) float32, view (M,) int64)``, ordered by
    view and then by the order within the view.
    """
    if len(per_view_keypoints) != len(per_view_scores):
        raise ValueError("merge_people: %d keypoint arrays but %d score arrays"
                         % (len(per_view_keypoints), len(per_view_scores)))
    kps: List[np.ndarray] = []
    for v, keypoints in enumerate(per_view_keypoints):
        keypoints = np.asarray(keypoints, np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        kps.append(transforms[v].keypoints_to_frame(keypoints) if transforms is not None else keypoints)
    if not kps or not sum(len(k) for k in kps):
        return np.zeros((0, NUM_KEYPOINTS, 3), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    keypoints = np.concatenate(kps)
    scores = np.concatenate([np.asarray(s, np.float32).reshape(-1) for s in per_view_scores])
    view = np.concatenate([np.full(len(k), v, np.int64) for v, k in enumerate(kps)])
    parts = (keypoints[..., 2] > 0).sum(axis=1)
    order = sorted(range(len(keypoints)), key=lambda i: (-int(parts[i]), -float(scores[i]), int(view[i]), i))
    kept: List[int] = []
    views_in: Dict[int, set] = {}  # kept person -> the views its group has a person from
    for i in order:
        for k in kept:
            if view[i] == view[k]:
                continue
            overlap = box_overlap(keypoints[k], keypoints[i], frame_size)
            if overlap >= fragment_overlap or (view[i] not in views_in[k] and (
                    overlap >= min_box_overlap
                    or person_distance(keypoints[k], keypoints[i], frame_size, min_common_parts) <= max_distance)):
                views_in[k].add(int(view[i]))
                break
        else:
            kept.append(i)
            views_in[i] = {int(view[i])}
    kept.sort()
    return keypoints[kept], scores[kept], view[kept]


# ------------------------------------------------------------------------------ track features


@dataclass(frozen=True)
class TrackFeatures:
    """What the policy reads of one track, at time ``t`` (seconds).

    ``torso_angle_deg``: angle of the hips-to-neck line from vertical at the last observation
    that shows it within the descent window (0 upright, 90 lying), None when there is none;
    ``tilted_s``: for how long, up to that observation, the torso has been at least the
    ``tilt_deg`` given to :func:`track_features` from vertical (0 when it is not, or only just
    is); ``descent_bh_per_s``: downward speed of the hips
    (else the neck) over the last observations, in body heights per second (negative: rising),
    None with fewer than two usable observations; ``missed_s``: seconds since last seen;
    ``drop_bh``: how far below the highest point of its recent history the track was last seen,
    body heights; ``edge_gap``: how far the box of its last observation is from the nearest frame
    border, fraction of the frame (0: touching it).
    """

    torso_angle_deg: Optional[float]
    descent_bh_per_s: Optional[float]
    missed_s: float
    drop_bh: Optional[float]
    tilted_s: float = 0.0
    edge_gap: float = 0.0


def _mid(xy: np.ndarray, present: np.ndarray, pair: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Midpoint of a left/right pair per row (one side when the other is missing), and where it exists."""
    a, b = pair
    pa, pb = present[:, a], present[:, b]
    both = pa & pb
    mid = np.where(both[:, None], (xy[:, a] + xy[:, b]) / 2, np.where(pa[:, None], xy[:, a], xy[:, b]))
    return mid, pa | pb


def track_features(t: np.ndarray, keypoints: np.ndarray, now: float, frame_size: Tuple[float, float],
                   window_s: float = 0.5, history_s: float = 5.0, tilt_deg: float = 60.0) -> TrackFeatures:
    """Features of one track from its observations ``t`` (M,) seconds and ``keypoints`` (M, 18, 3)
    in frame coordinates, oldest first, seen from time ``now``. ``frame_size`` is (width, height)
    in pixels; the descent is measured over the last ``window_s`` seconds of observations, the
    body height and the drop over the last ``history_s``; ``tilt_deg`` is the torso angle
    ``tilted_s`` counts from."""
    t = np.asarray(t, np.float64).reshape(-1)
    if not len(t):
        return TrackFeatures(None, None, math.inf, None)
    kp = np.asarray(keypoints, np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    recent = t >= t[-1] - history_s
    t, kp = t[recent], kp[recent]
    xy, present = _pixels(kp, frame_size), kp[..., 2] > 0
    hip, has_hip = _mid(xy, present, HIPS)
    shoulder, has_shoulder = _mid(xy, present, SHOULDERS)
    neck = np.where(present[:, NECK, None], xy[:, NECK], shoulder)
    has_neck = present[:, NECK] | has_shoulder
    torso = np.where(has_hip & has_neck, np.hypot(*(neck - hip).T), np.nan)
    extent = _box_side(xy, present)
    body = max(float(np.nanmax(torso)) * TORSO_TO_BODY_HEIGHT if np.isfinite(torso).any() else 0.0,
               float(extent.max()), 1e-6 * frame_size[1])
    angle, tilted = None, 0.0
    known = np.flatnonzero(has_hip & has_neck)
    if len(known) and t[known[-1]] >= t[-1] - window_s:
        dx, dy = (neck[known] - hip[known]).T
        angles = np.degrees(np.arctan2(np.abs(dx), -dy))
        angle = float(angles[-1])
        upright = np.flatnonzero(angles < tilt_deg)
        if angle >= tilt_deg:
            start = known[upright[-1] + 1] if len(upright) else known[0]
            tilted = float(t[known[-1]] - t[start])
    descent = drop = None
    for point, has in ((hip, has_hip), (neck, has_neck)):
        if has[-1] and has.sum() >= 2:
            window = has & (t >= t[-1] - window_s)
            first = int(np.argmax(window)) if window.sum() >= 2 else int(np.flatnonzero(has)[-2])
            if t[-1] > t[first]:
                descent = float(point[-1, 1] - point[first, 1]) / body / float(t[-1] - t[first])
            drop = float(point[-1, 1] - point[has, 1].min()) / body
            break
    last = kp[-1][present[-1]]
    edge_gap = float(min(last[:, 0].min(), last[:, 1].min(), 1 - last[:, 0].max(), 1 - last[:, 1].max())) \
        if len(last) else 0.0
    return TrackFeatures(angle, descent, float(now - t[-1]), drop, tilted, max(0.0, edge_gap))


# -------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class ViewsConfig(Section):
    """The ``views`` settings: when the extra views run, and how people of several views are merged."""

    policy: str = setting("auto", "when the frame is also run rotated by 90 degrees (people lying on the floor): "
                          "always, never, or auto (while a track looks like a fall, and hold_s after)",
                          choices=POLICIES)
    rotated_views: str = setting("both", "the extra views: both (90 degrees clockwise and counter-clockwise), cw "
                                 "or ccw", choices=tuple(ROTATED_VIEWS))
    hold_s: float = setting(3, "auto: extra views keep running this long after the last suspicious moment, seconds",
                            between=(0, 3600))
    suspicious_torso_angle_deg: float = setting(
        60, "auto: a track whose torso (hips to neck) is this far from vertical is suspicious, degrees",
        between=(0, 180))
    suspicious_torso_s: float = setting(
        1, "auto: ... once its torso has been so for this long, seconds (bending down for a moment is not; at "
        "most tracker.history_s)",
        between=(0, 60))
    suspicious_descent_bh_per_s: float = setting(
        0.5, "auto: a track whose hips go down this fast is suspicious, body heights per second", between=(0, 100))
    descent_window_s: float = setting(0.5, "auto: the descent speed is measured over this much of a track's past, "
                                      "seconds (at most tracker.history_s)", between=(0.01, 60))
    lost_near_floor_s: float = setting(2, "auto: a track lost inside the picture (not walking out through an edge) or "
                                       "after going down stays suspicious this long after it was last seen, seconds "
                                       "(at most tracker.max_missed_s)", between=(0, 3600))
    lost_edge_margin: float = setting(0.03, "auto: 'inside the picture' means last seen at least this far from every "
                                      "border, fraction of the frame", between=(0, 0.5))
    lost_drop_bh: float = setting(0.15, "auto: 'going down' means last seen at least this far below its highest "
                                  "point of the last seconds, body heights", between=(0, 10))
    release_upright_deg: float = setting(
        30, "auto: a track seen with its torso this close to vertical and its hips back up (less than lost_drop_bh "
        "below their highest point of the last seconds) has got up: its hold ends at once, degrees; 0 = never early",
        between=(0, 90))
    recheck_s: float = setting(1, "auto: while every track that needs the extra views was last found in one rotated "
                               "view, only that one runs beside the upright view, and all of them again this often, "
                               "seconds; 0 = always all of them", between=(0, 3600))
    probe_every_s: float = setting(0, "auto: run the extra views once this often even when nothing is suspicious, "
                                   "seconds; 0 = never", between=(0, 86400))
    merge_distance: float = setting(0.45, "one person seen in two views: skeletons whose parts are at most this far "
                                    "apart (median, in person sizes) are merged", between=(0, 10))
    merge_box_overlap: float = setting(0.5, "... and so are skeletons whose boxes (widened by 10%) cover at least this "
                                       "fraction of the smaller box", between=(0, 1))

    @property
    def rotations(self) -> Tuple[int, ...]:
        """Every view the policy may run, upright first."""
        return (0,) + rotations_of(self.rotated_views)


@dataclass
class ViewStats:
    """How often the extra views ran and what they cost (per-frame inference time by view count)."""

    frames: int = 0
    views: int = 0
    extra_frames: int = 0
    followed_frames: int = 0  # frames with extra views that ran only the rotation the tracks were found in
    late_observations: int = 0  # frames whose views were chosen without waiting any longer for their observation
    reasons: Dict[str, int] = field(default_factory=dict)  # frames with extra views, by first reason
    _time_s: Dict[int, float] = field(default_factory=dict)
    _timed: Dict[int, int] = field(default_factory=dict)

    def note_inference(self, views: int, seconds: float) -> None:
        """Record that a batch of ``views`` views took ``seconds`` (engine + parse, as the caller measures)."""
        self._time_s[views] = self._time_s.get(views, 0.0) + seconds
        self._timed[views] = self._timed.get(views, 0) + 1

    def as_dict(self) -> Dict[str, Any]:
        """Plain values for the stats topic / logs."""
        return {
            "frames": self.frames, "views_per_frame": round(self.views / self.frames, 3) if self.frames else 0.0,
            "extra_view_fraction": round(self.extra_frames / self.frames, 3) if self.frames else 0.0,
            "followed_fraction": round(self.followed_frames / self.frames, 3) if self.frames else 0.0,
            "late_observations": self.late_observations,
            "reasons": dict(self.reasons),
            "ms_per_frame_by_views": {str(v): round(1000 * self._time_s[v] / self._timed[v], 1)
                                      for v in sorted(self._timed)},
        }


class ViewPolicy:
    """Decides, frame by frame, which views run; one per camera. Timestamps drive it, not clocks.

    Two calls, which may come from different threads (the daemon's post and preprocess stages):
    :meth:`observe` after the tracker has taken a frame, with the camera's tracks (anything with
    ``history()`` returning ``t`` and ``keypoints``, like :class:`edge.track.Track`, or ready-made
    :class:`TrackFeatures`), and which view each was found in; :meth:`views_for` before a frame is
    preprocessed, with its time.

    ``auto`` keeps, per track (its ``id``, else its place in the list): when it was last
    suspicious (its hold), and which rotated view it was last found in. A track that is seen
    standing again (:attr:`ViewsConfig.release_upright_deg`) loses its hold at once; a rotated
    view that was run and did not give a track's skeleton is forgotten for it, so a later frame
    runs every view again.

    The views of a frame follow from the observations up to the frame *two* before it: the daemon
    prepares frame k+1 while frame k is still in the engine, and a sequential replay must decide
    the same, so :meth:`views_for` uses that observation (waiting up to ``wait_s`` for it when it
    is still being made) whether or not a newer one exists. ``run`` and ``replay`` of one file
    therefore run the same views and give the same skeletons.
    """

    def __init__(self, config: ViewsConfig = ViewsConfig()) -> None:
        self.config = config
        self.stats = ViewStats()
        self._lock = threading.Lock()
        self._held: Dict[Any, float] = {}  # track -> frame time it was last suspicious
        self._found_in: Dict[Any, int] = {}  # track -> the rotated view it was last found in
        self._last_probe_t = -math.inf
        self._last_all_t = -math.inf  # frame time of the last frame given every rotation
        self._asked: Deque[float] = deque(maxlen=3)  # times of the last frames given views, this one last
        # (frame time, reason, held, found_in) after each observation, newest last
        self._states: Deque[Tuple[float, Optional[str], Dict[Any, float], Dict[Any, int]]] = deque(maxlen=4)
        self._observed = threading.Condition(self._lock)
        self.wait_s = 1.0  # longest wait for the observation a frame's views follow from
        self._cancelled = False  # the daemon stops: nobody waits any more

    def suspicious(self, features: TrackFeatures) -> Optional[str]:
        """Why a track is suspicious (``torso``, ``descent``, ``lost``), or None."""
        p = self.config
        if features.missed_s <= 1e-6:
            if (features.torso_angle_deg is not None and features.torso_angle_deg >= p.suspicious_torso_angle_deg
                    and features.tilted_s >= p.suspicious_torso_s):
                return "torso"
            if features.descent_bh_per_s is not None and features.descent_bh_per_s >= p.suspicious_descent_bh_per_s:
                return "descent"
            return None
        if features.missed_s <= p.lost_near_floor_s and (
                features.edge_gap >= p.lost_edge_margin
                or (features.drop_bh is not None and features.drop_bh >= p.lost_drop_bh)
                or (features.torso_angle_deg is not None and features.torso_angle_deg >= p.suspicious_torso_angle_deg)
                or (features.descent_bh_per_s is not None
                    and features.descent_bh_per_s >= p.suspicious_descent_bh_per_s)):
            return "lost"
        return None

    def features(self, tracks: Iterable[Any], t: float, frame_size: Tuple[float, float]) -> List[TrackFeatures]:
        """:class:`TrackFeatures` of each track as of frame time ``t`` (a track seen in that frame
        has ``missed_s`` 0; features given pass through). ``frame_size``: (width, height), pixels."""
        out = []
        for track in tracks:
            if isinstance(track, TrackFeatures):
                out.append(track)
                continue
            history = track.history()
            out.append(track_features(history.t, history.keypoints, t, frame_size,
                                      window_s=self.config.descent_window_s,
                                      tilt_deg=self.config.suspicious_torso_angle_deg))
        return out

    def skip(self, t: float) -> None:
        """The frame at ``t`` will never be observed (its post-processing failed): later frames do not
        wait for it, and follow from the observation before it."""
        with self._lock:
            if self._states:
                _, reason, held, found_in = self._states[-1]
                self._states.append((t, reason, held, found_in))
            else:
                self._states.append((t, None, {}, {}))
            self._observed.notify_all()

    def cancel(self) -> None:
        """Stop waiting (the daemon is stopping)."""
        with self._lock:
            self._cancelled = True
            self._observed.notify_all()

    def restart(self) -> None:
        """Forget the holds and the views tracks were found in (the frame clock went back): a hold of the
        previous times would otherwise last until the clock passes them again."""
        with self._lock:
            self._held.clear()
            self._found_in.clear()
            self._last_probe_t = self._last_all_t = -math.inf

    def stood_up(self, features: TrackFeatures) -> bool:
        """Whether a track is seen standing again: now, torso within ``release_upright_deg`` of
        vertical, hips less than ``lost_drop_bh`` below their highest point of its recent past."""
        p = self.config
        return (p.release_upright_deg > 0 and features.missed_s <= 1e-6 and features.torso_angle_deg is not None
                and features.torso_angle_deg <= p.release_upright_deg and features.drop_bh is not None
                and features.drop_bh < p.lost_drop_bh)

    def observe(self, tracks: Iterable[Any], t: float, frame_size: Tuple[float, float],
                found_in: Optional[Dict[Any, int]] = None, ran: Sequence[int] = (0,)) -> Optional[str]:
        """Note the tracks after the tracker took the frame at time ``t`` (seconds); returns why one
        of them is suspicious, or None. Only the ``auto`` policy looks at them. ``found_in``: the
        rotation of the view each track seen in this frame was kept from, by track id; ``ran``:
        the rotations that frame ran."""
        if self.config.policy != "auto":
            return None
        tracks = list(tracks)
        keys = [getattr(track, "id", i) for i, track in enumerate(tracks)]
        found_in = found_in or {}
        first = None
        with self._lock:
            for key, features in zip(keys, self.features(tracks, t, frame_size)):
                reason = self.suspicious(features)
                if reason:
                    first = first or reason
                    self._held[key] = t
                elif key in self._held and self.stood_up(features):
                    del self._held[key]
                rotation = found_in.get(key, 0)
                if rotation:
                    self._found_in[key] = rotation
                elif self._found_in.get(key) in ran:
                    del self._found_in[key]  # looked for in that view and not kept from it
            hold_s = self.config.hold_s
            for key in [k for k, held_t in self._held.items() if t - held_t > hold_s]:
                del self._held[key]
            for key in [k for k in self._found_in if k not in self._held]:
                del self._found_in[key]
            self._states.append((t, first, dict(self._held), dict(self._found_in)))
            self._observed.notify_all()
        return first

    def _state_for(self, t: float, latest: bool = False) -> Tuple[Optional[str], Dict[Any, float], Dict[Any, int]]:
        """The observation the frame at ``t`` follows from (see the class): that of the frame two
        before it, waited for when needed; with ``latest``, the newest one before ``t``, not waited
        for. Holds the lock."""
        if latest:
            for obs_t, reason, held, found_in in reversed(self._states):
                if obs_t < t - 1e-6:
                    return reason, held, found_in
            return None, {}, {}
        self._asked.append(t)
        if len(self._asked) < 3:
            return None, {}, {}
        before = self._asked[0]  # the frame two before this one
        # observations carry the frame time rounded to 1 us (CameraPipeline.track): compare within 1 us
        if not self._observed.wait_for(lambda: self._cancelled or (
                bool(self._states) and self._states[-1][0] >= before - 1e-6), self.wait_s):
            self.stats.late_observations += 1
            if self.stats.late_observations == 1:
                log.warning("views: the frame at t = %.3f s was not tracked within %.1f s; the views of the "
                            "frame at t = %.3f s follow from an older one (run and replay may now differ)",
                            before, self.wait_s, t)
        for obs_t, reason, held, found_in in reversed(self._states):
            if obs_t <= before + 1e-6:
                return reason, held, found_in
        return None, {}, {}

    def views_for(self, t: float, latest: bool = False) -> Tuple[int, ...]:
        """The rotations to run for the frame at time ``t`` (seconds), upright (0) first: the extra
        ones while the observation it follows from (of the frame two before) is suspicious, and
        ``hold_s`` after a track's last suspicious one (unless it stood up since); only the rotated
        view every such track was last found in, when they all were and the last frame given every
        view is less than ``recheck_s`` ago. Frames are asked for in time order. ``latest``: from the
        newest observation before ``t`` instead (for callers that ask now and then, once the
        previous frame was observed: the top-down seed)."""
        p = self.config
        reason = None
        rotations: Tuple[int, ...] = (0,)
        with self._lock:
            if p.policy == "always":
                reason = "always"
            elif p.policy == "auto":
                reason, held_since, found_in = self._state_for(t, latest)
                held = [k for k, held_t in held_since.items() if t - held_t <= p.hold_s]
                if reason is None and held:
                    reason = "hold"
                if reason is not None:
                    followed = {found_in.get(k) for k in held}
                    if held and None not in followed and t - self._last_all_t < p.recheck_s:
                        rotations = (0,) + tuple(r for r in p.rotations[1:] if r in followed)
                        self.stats.followed_frames += len(rotations) < len(p.rotations)
                if reason is None and p.probe_every_s > 0 and t - self._last_probe_t >= p.probe_every_s:
                    reason = "probe"
            if reason and len(rotations) == 1:
                rotations = p.rotations
            if len(rotations) == len(p.rotations):
                self._last_all_t = t
            if reason:
                self._last_probe_t = t
                self.stats.extra_frames += 1
                self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
            self.stats.frames += 1
            self.stats.views += len(rotations)
        return rotations
