"""Why a labelled clip went wrong: one reason per missed fall and per daily-activity clip that alerted.

:func:`trace` replays a clip's skeleton JSONL through a :class:`~edge.pipeline.CameraPipeline`
frame by frame and records, for every track seen in a frame, its parts, its geometry
(:func:`edge.fall.observe`) and the detector's view of it (:meth:`FallDetector.inspect`); then it
goes on for ``EXTEND_S`` seconds feeding the clip's last frame again, to learn whether an alert
would have come had the clip been longer. :func:`diagnose` reads that trace and gives one
:class:`Diagnosis`; the first reason of :data:`MISSED` that holds, in that order, or one of
:data:`FALSE_ALERT`. "After the fall" means from 1 s after the labelled fall start to the clip's
end; "the person" is a track seen there with at least ``MIN_PARTS`` parts: one already seen
before the fall start if there is one (a second skeleton may appear beside a fallen person), and
of those the one seen so in the most frames.

Missed falls:

* ``alert_before_fall``: ``fall_detected`` came, but only more than the labelling tolerance
  before the labelled fall start.
* ``after_clip_end``: the rules would alert within ``EXTEND_S`` after the clip's last frame, had
  the person stayed as last seen (the clip ends too soon after the fall for the rules' delays).
* ``no_skeleton``: no track with at least ``MIN_PARTS`` parts after the fall (perception).
* ``too_small``: the person's body height after the fall is below ``fall.min_size_px``.
* ``zone``: the person after the fall is in an ``ignore`` zone, or outside every ``floor`` zone.
* ``track_lost``: the person's track began after the fall start while a track seen before the
  fall ended by then (identity lost across the fall: the new track never saw the descent).
* ``no_floor``: the person's track had no floor from the fall start on (never seen upright with
  the legs below the hips), so no height above the floor is known.
* ``no_fast_descent``: the track never left ``normal``: the head went down too little or too
  slowly, and the person did not lie at floor level long enough either.
* ``never_low``: a fast descent was seen, but head or hips never came low enough to count as down.
* ``not_down_long_enough``: down, but not for ``fall.min_down_s`` (up again, or the detector
  gave up after ``confirm_within_s``).
* ``unexplained``: none of these (the states seen are in the detail).

Daily-activity clips that alerted (the first ``fall_detected``), by the rule that fired:

* ``false_descent``: a fast descent, then down for ``min_down_s``;
* ``false_floor``: lying at floor level for ``floor_lying_s`` without a fast descent;
* ``false_other``: another rule (its name, from the event's ``features.rule``, in the detail).

The detail adds what the person did: head and hip height, torso angle and the descent at the alert.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

from edge.fall import NORMAL, observe
from edge.pipeline import CameraPipeline, create_detector
from edge.replay import read_skeletons

MIN_PARTS = 6  # a skeleton with this many parts counts as the person seen
AFTER_FALL_S = 1.0  # "after the fall" starts this long after the labelled fall start
EXTEND_S = 5.0  # the clip's last frame is fed again for this long, to find alerts that came too late

MISSED = ("alert_before_fall", "after_clip_end", "no_skeleton", "too_small", "zone", "track_lost", "no_floor",
          "no_fast_descent", "never_low", "not_down_long_enough", "unexplained")
FALSE_ALERT = ("false_descent", "false_floor", "false_other")


@dataclass
class Row:
    """One track in one frame: what the detector saw and thought. Heights in body heights (bh)
    above the floor the rules use, NaN when unknown; ``drop_bh`` and ``speed_bh_per_s``: the head's
    fall from its highest point within ``fall.descent_window_s``, and how fast."""

    t: float
    track: int
    parts: int
    state: str
    size_px: float
    floor_px: float
    head_bh: float
    hip_bh: float
    torso_deg: float
    drop_bh: float
    speed_bh_per_s: float
    down: bool  # the detector's down clock is running
    down_s: float
    centre: Tuple[float, float]
    rule_speed_bh_per_s: float  # the descent speed the detector holds (NaN while normal)


@dataclass
class Trace:
    rows: List[Row] = field(default_factory=list)
    frames: List[Tuple[float, int]] = field(default_factory=list)  # (t, most parts of any person in the frame)
    events: List[Dict[str, Any]] = field(default_factory=list)
    late_alert_t: Optional[float] = None  # first fall_detected while the last frame was fed again
    camera: str = "evaluate"

    @property
    def end_t(self) -> float:
        return self.frames[-1][0] if self.frames else 0.0


@dataclass
class Diagnosis:
    reason: str  # one of MISSED or FALSE_ALERT
    detail: str
    track: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"reason": self.reason, "detail": self.detail, "track": self.track}


def _parts(keypoints: Any, min_confidence: float) -> int:
    kp = np.asarray(keypoints, dtype=np.float64).reshape(18, 3)
    return int((np.isfinite(kp).all(axis=1) & (kp[:, 2] >= min_confidence)).sum())


def trace(path: Path, config: Any) -> Trace:
    """The trace of a skeleton JSONL (DESIGN.md contract 2, one camera) replayed with ``config``;
    ReplayError at its first bad line (edge.replay.read_skeletons)."""
    records = [record for _, record in read_skeletons(path)]
    out = Trace(camera=str(records[0]["camera"]) if records else "evaluate")
    pipeline = CameraPipeline(out.camera, config, view_policy=False)
    p = config.fall
    heads: Dict[int, Deque[Tuple[float, float]]] = {}

    def feed(record: Dict[str, Any], t: float, keep: bool) -> List[Dict[str, Any]]:
        kp = np.asarray([person["keypoints"] for person in record["people"]], dtype=np.float64).reshape(-1, 18, 3)
        size = (int(record["width"]), int(record["height"]))
        _, events = pipeline.track(kp, t, t, size)
        if not keep:
            return events
        out.frames.append((t, max([_parts(k, p.min_keypoint_confidence) for k in kp], default=0)))
        for track in pipeline.tracker.tracks:
            info = pipeline.detector.inspect(track.id)
            obs = observe(track.keypoints, t, size, p.min_keypoint_confidence)
            if track.last_t != t or info is None or obs is None:
                continue
            out.rows.append(_row(track, info, obs, heads.setdefault(track.id, deque()), p))
        return events

    for record in records:
        out.events += feed(record, round(float(record["t"]), 6), True)
    if len(records) >= 2:
        period = max((out.end_t - out.frames[0][0]) / (len(records) - 1), 0.01)
        for k in range(1, int(EXTEND_S / period) + 1):
            late = [e for e in feed(records[-1], round(out.end_t + k * period, 6), False)
                    if e["type"] == "fall_detected"]
            if late:
                out.late_alert_t = late[0]["t"]
                break
    return out


def _row(track: Any, info: Dict[str, Any], obs: Any, heads: Deque[Tuple[float, float]], p: Any) -> Row:
    size, floor = info["size_px"], info["floor_px"]
    size = size if size > 0 else math.nan
    heads.append((obs.t, obs.head_y))
    while heads[0][0] < obs.t - p.descent_window_s:
        heads.popleft()
    earlier = [(t, y) for t, y in heads if obs.t - t >= 0.1]
    drop, speed = 0.0, 0.0
    if earlier and size > 0:
        top_t, top_y = min(earlier, key=lambda ty: ty[1])
        drop = max(0.0, (obs.head_y - top_y) / size)
        speed = drop / (obs.t - top_t)
    down_since = info["down_since"]
    return Row(obs.t, int(track.id), _parts(track.keypoints, p.min_keypoint_confidence), info["state"], size,
               floor, (floor - obs.head_y) / size, (floor - obs.hip_y) / size, obs.torso_angle_deg, drop, speed,
               down_since is not None, obs.t - down_since if down_since is not None else 0.0, obs.centre,
               float(info["descent"].get("descent_bh_per_s", math.nan)) if info["state"] != NORMAL else math.nan)


def seen_after_fall(tr: Trace, fall_start_s: float) -> Tuple[int, int]:
    """(frames in which someone has at least MIN_PARTS parts, frames) from 1 s after the fall start."""
    frames = [parts for t, parts in tr.frames if t >= fall_start_s + AFTER_FALL_S]
    return sum(1 for parts in frames if parts >= MIN_PARTS), len(frames)


def _fmt(value: float, unit: str = "") -> str:
    return "unknown" if value is None or math.isnan(value) else "%.2f%s" % (value, unit)


def diagnose(tr: Trace, label: str, fall_start_s: Optional[float], config: Any, tolerance_s: float
             ) -> Optional[Diagnosis]:
    """The reason a fall clip was missed or an ADL clip alerted; None when it went right."""
    falls = [e for e in tr.events if e["type"] == "fall_detected"]
    if label != "fall":
        return _false_alert(falls[0], config) if falls else None
    if any(e["t"] >= fall_start_s - tolerance_s for e in falls):
        return None
    return _missed(tr, fall_start_s, falls, config, tolerance_s)


def _false_alert(event: Dict[str, Any], config: Any) -> Diagnosis:
    p, f = config.fall, event.get("features") or {}
    rule = f.get("rule") or ("descent" if (f.get("descent_bh_per_s") or 0) > 0 else "floor")
    reason = "false_" + rule if "false_" + rule in FALSE_ALERT else "false_other"
    torso = f.get("torso_angle_deg")
    posture = ("unknown" if torso is None else "upright" if torso < p.upright_torso_angle_deg
               else "lying" if torso >= p.lying_torso_angle_deg else "leaning")
    detail = ("rule %s at %.2f s: head %s bh, hips %s bh, torso %s deg (%s), after a drop of %s bh at %s bh/s, "
              "down %s s" % (rule, event["t"], f.get("head_height_bh"), f.get("hip_height_bh"), torso, posture,
                             f.get("drop_bh"), f.get("descent_bh_per_s"), f.get("down_s")))
    return Diagnosis(reason, detail, event.get("track_id"))


def _missed(tr: Trace, t0: float, falls: List[Dict[str, Any]], config: Any, tolerance_s: float) -> Diagnosis:
    p = config.fall
    if falls:
        return Diagnosis("alert_before_fall", "fall_detected at %.2f s, %.2f s before the labelled fall start"
                         % (falls[0]["t"], t0 - falls[0]["t"]), falls[0].get("track_id"))
    if tr.late_alert_t is not None:
        return Diagnosis("after_clip_end", "the clip ends %.2f s after the fall start; fall_detected would come "
                         "%.2f s after its end" % (tr.end_t - t0, tr.late_alert_t - tr.end_t))
    after = [r for r in tr.rows if r.t >= t0 + AFTER_FALL_S and r.parts >= MIN_PARTS]
    if not after:
        seen, frames = seen_after_fall(tr, t0)
        return Diagnosis("no_skeleton", "no track with %d+ parts after the fall; someone had %d+ parts in %d of %d "
                         "frames (the clip ends %.2f s after the fall start)"
                         % (MIN_PARTS, MIN_PARTS, seen, frames, tr.end_t - t0))
    seen = Counter(r.track for r in after)
    first = {r.track: r.t for r in reversed(tr.rows)}
    track = max(seen, key=lambda i: (first[i] < t0, seen[i]))
    rows = [r for r in tr.rows if r.track == track]
    since = [r for r in rows if r.t >= t0 - tolerance_s]
    size = float(np.nanmedian([r.size_px for r in after if r.track == track]))
    if not size >= p.min_size_px:
        return Diagnosis("too_small", "body height %s px after the fall (fall.min_size_px %g)"
                         % (_fmt(size), p.min_size_px), track)
    mine = [r for r in after if r.track == track]
    zones = create_detector(config, tr.camera)
    zoned = [r for r in mine if _suppressed(r, zones)]
    if 2 * len(zoned) > len(mine):
        return Diagnosis("zone", "in an ignore zone or outside every floor zone in %d of the %d frames after the "
                         "fall" % (len(zoned), len(mine)), track)
    ended = [r.track for r in tr.rows if r.track != track and r.t < t0]
    ended = sorted({i for i in ended if max(r.t for r in tr.rows if r.track == i) < rows[0].t + 1.0})
    if rows[0].t >= t0 and ended:
        return Diagnosis("track_lost", "track %d (seen before the fall) ended; track %d began %.2f s after the "
                         "fall start" % (ended[-1], track, rows[0].t - t0), track)
    if all(math.isnan(r.floor_px) for r in since):
        upright = sum(1 for r in rows if r.torso_deg < p.upright_torso_angle_deg)
        return Diagnosis("no_floor", "track %d has no floor from the fall start on (%d of its %d frames had a torso "
                         "within %g deg of vertical)" % (track, upright, len(rows), p.upright_torso_angle_deg), track)
    if all(r.state == NORMAL for r in since):
        top = max(since, key=lambda r: r.drop_bh)
        low = min(since, key=lambda r: r.head_bh if not math.isnan(r.head_bh) else math.inf)
        return Diagnosis("no_fast_descent", "largest head drop %s bh at %s bh/s (needs %g bh at %g bh/s); lowest "
                         "head %s bh" % (_fmt(top.drop_bh), _fmt(top.speed_bh_per_s), p.min_descent_bh,
                                         p.min_descent_speed_bh_per_s, _fmt(low.head_bh)), track)
    if not any(r.down for r in since):
        falling = [r for r in since if r.state != NORMAL]
        low = min(falling, key=lambda r: r.head_bh if not math.isnan(r.head_bh) else math.inf)
        return Diagnosis("never_low", "lowest while %s: head %s bh, hips %s bh, torso %s deg (down: head <= %g bh, "
                         "or %g lying; hips <= %g bh)" % (low.state, _fmt(low.head_bh), _fmt(low.hip_bh),
                                                          _fmt(low.torso_deg), p.max_head_height_bh,
                                                          p.max_head_height_lying_bh, p.max_hip_height_bh), track)
    longest = max(r.down_s for r in since)
    if longest < p.min_down_s:
        return Diagnosis("not_down_long_enough", "down for at most %.2f s (fall.min_down_s %g)"
                         % (longest, p.min_down_s), track)
    return Diagnosis("unexplained", "states seen: %s" % ", ".join(sorted({r.state for r in since})), track)


def _suppressed(row: Row, detector: Any) -> bool:
    x, y = row.centre
    if any(z.contains(x, y) for z in detector.ignore):
        return True
    return bool(detector.floor_zones) and not any(z.contains(x, y) for z in detector.floor_zones)
