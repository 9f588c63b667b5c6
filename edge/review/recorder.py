"""The daemon's review recorder: a sink (edge.alerts.sinks interface) that keeps each camera's last
seconds of skeletons in memory and writes an event folder (edge.review.store) for every ``fall_detected``.

Memory: per camera, the frame records (keypoints and track ids, never the image) of the last
``review.before_s + review.after_s`` seconds of frame time, plus the newest frame itself (its image
is needed only for a blurred snapshot). A fall's folder is written once ``after_s`` of frame time
has passed after it, or at close with what there is (``complete`` false in event.json). Writing
happens on the caller's thread (the daemon's post-processing thread): one JSON file, one JPEG and
a clip of a few hundred lines, once per fall. Old folders are pruned when the recorder starts and
after each write (review.keep_days, review.max_events). A write that fails is logged with the event
id and never stops the daemon.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional

from edge.alerts.events import encode_event
from edge.review.store import CLIP, EVENT, SNAPSHOT, events_dir, fall_start_estimate, prune

log = logging.getLogger("fallwatch.review")

EPS_S = 1e-6
MAX_FPS = 240  # the history is also capped at this many frames per second of window


@dataclass
class _Pending:
    event: Dict[str, Any]
    camera: str
    t: float  # the event's frame time (stream clock)
    wall: float
    snapshot: Optional[bytes]
    later: List[Dict[str, Any]] = dataclasses.field(default_factory=list)  # the camera's events after it


class ReviewRecorder:
    """``config``: the loaded configuration (``review``, ``paths.state_dir``, ``mqtt.snapshot``)."""

    def __init__(self, config: Any) -> None:
        self._cfg = config.review
        self._snap = config.mqtt.snapshot
        self.state_dir = Path(config.paths.state_dir)
        self.root = events_dir(self.state_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self._window_s = self._cfg.before_s + self._cfg.after_s
        self._cap = int((self._window_s + 1.0) * MAX_FPS)
        self._history: Dict[str, Deque[Any]] = {}
        self._latest: Dict[str, Any] = {}
        self._pending: List[_Pending] = []
        self.written: List[Path] = []
        prune(self.state_dir, self._cfg.keep_days, self._cfg.max_events)
        log.info("review: keeping the last %g s of skeletons per camera; each fall's clip (%g s before to %g s "
                 "after) goes to %s (kept %g days, at most %d)", self._window_s, self._cfg.before_s,
                 self._cfg.after_s, self.root, self._cfg.keep_days, self._cfg.max_events)

    # ------------------------------------------------------------ the sink interface

    def frame(self, record: Any) -> None:
        camera, t = record.camera, float(record.t)
        history = self._history.setdefault(camera, deque(maxlen=self._cap))
        if history and t < history[-1].t - EPS_S:  # the stream started again (a looped file, a restart)
            self._write_due(camera, float("inf"), complete=False)
            history.clear()
        history.append(dataclasses.replace(record, image=None) if getattr(record, "image", None) is not None
                       else record)
        self._latest[camera] = record
        while history and history[0].t < t - self._window_s - EPS_S:
            history.popleft()
        self._write_due(camera, t)

    def emit(self, event: Dict[str, Any]) -> None:
        camera = str(event.get("camera"))
        if event.get("type") != "fall_detected":
            for pending in self._pending:
                if pending.camera == camera:
                    pending.later.append({k: event.get(k) for k in ("event_id", "type", "track_id", "timestamp", "t")})
            return
        latest = self._latest.get(camera)
        t = float(event.get("t", latest.t if latest is not None else 0.0))
        wall = float(latest.wall) if latest is not None and abs(float(latest.t) - t) < EPS_S else time.time()
        self._pending.append(_Pending(dict(event), camera, t, wall, self._snapshot(latest)))
        self._write_due(camera, latest.t if latest is not None else t)

    def stats(self, stats: Dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        """Write every fall still waiting for its ``after_s``, with the frames there are."""
        for camera in sorted({p.camera for p in self._pending}):
            self._write_due(camera, float("inf"), complete=False)
        self._history.clear()
        self._latest.clear()

    # ------------------------------------------------------------ writing

    def _snapshot(self, record: Any) -> Optional[bytes]:
        if record is None:
            return None
        from edge.alerts.snapshot import render_snapshot

        s = self._snap
        try:
            return render_snapshot(record, s.mode, s.width_px, s.blur_sigma_px, s.jpeg_quality)
        except Exception as exc:  # a snapshot is a courtesy: the clip matters
            log.warning("review: cannot render the snapshot of camera %s (%s); the event keeps no snapshot",
                        record.camera, exc)
            return None

    def _write_due(self, camera: str, now_t: float, complete: bool = True) -> None:
        due = [p for p in self._pending if p.camera == camera and now_t >= p.t + self._cfg.after_s - EPS_S]
        if not due:
            return
        self._pending = [p for p in self._pending if p not in due]
        for pending in due:
            try:
                self.written.append(self._write(pending, complete))
            except Exception as exc:
                log.error("review: cannot write the clip of event %s under %s: %s", pending.event.get("event_id"),
                          self.root, exc)
        prune(self.state_dir, self._cfg.keep_days, self._cfg.max_events)

    def _write(self, p: _Pending, complete: bool) -> Path:
        low, high = p.t - self._cfg.before_s - EPS_S, p.t + self._cfg.after_s + EPS_S
        records = [r for r in self._history.get(p.camera, ()) if low <= r.t <= high]
        t0 = float(records[0].t) if records else p.t
        lines = []
        for r in records:
            line = r.to_json()
            line["t"] = round(float(r.t) - t0, 6)
            lines.append(encode_event(line) + "\n")
        event_id = str(p.event.get("event_id"))
        event_clip_t = round(p.t - t0, 6)
        info = {"event_id": event_id, "camera": p.camera, "track_id": p.event.get("track_id"),
                "time": p.event.get("timestamp"), "wall": p.wall, "event_t": p.t, "clip_t0": t0,
                "event_clip_t": event_clip_t, "fall_start_s": fall_start_estimate(p.event, event_clip_t),
                "before_s": self._cfg.before_s, "after_s": self._cfg.after_s, "frames": len(records),
                "clip_end_t": round(float(records[-1].t) - t0, 6) if records else None,
                "complete": complete, "event": p.event,
                "later_events": [dict(e, clip_t=round(float(e["t"]) - t0, 6)) if e.get("t") is not None else e
                                 for e in p.later]}
        partial = self.root / (".%s.partial" % event_id)
        if partial.exists():
            shutil.rmtree(str(partial))
        partial.mkdir(parents=True)
        (partial / CLIP).write_text("".join(lines), encoding="utf-8")
        (partial / EVENT).write_text(json.dumps(info, indent=1, default=_plain), encoding="utf-8")
        if p.snapshot:
            (partial / SNAPSHOT).write_bytes(p.snapshot)
        final = self.root / event_id
        if final.exists():
            shutil.rmtree(str(final))
        os.replace(str(partial), str(final))
        log.info("review: event %s (camera %s, track %s): %d frames, %.1f s before to %.1f s after%s -> %s",
                 event_id, p.camera, p.event.get("track_id"), len(records), event_clip_t,
                 (info["clip_end_t"] or 0.0) - event_clip_t, "" if complete else " (stopped early)", final)
        return final


def _plain(value: Any) -> Any:
    return json.loads(encode_event(value))
