"""``fallwatch review plot``: the timeline of ``fallwatch evaluate --plots`` (edge.plots) for one event's clip.

The clip is traced with the given configuration's tracker and fall thresholds (edge.diagnose), so the
plot shows what the detector would do with today's settings; the event's label, when it has one, is
drawn as in evaluate (a real fall's estimated start in green, with the reason for a miss or a false alert).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from edge.review.store import CLIP, event_folder, read_event, read_label


def timeline_png(state_dir: Path, event_id: str, out: Path, config: Optional[Any] = None) -> Path:
    """Draw the event's timeline into the PNG ``out``; returns it. ``config``: a loaded configuration
    (None: the built-in defaults). FallwatchError when matplotlib is missing (with the fix),
    ReviewError for an unknown event."""
    from edge.plots import plot_clip, require_matplotlib

    require_matplotlib()
    folder = event_folder(state_dir, event_id)
    info = read_event(folder)
    if config is None:
        from edge.config import load_config

        config = load_config(None, env={})
    from edge.diagnose import diagnose, seen_after_fall, trace
    from edge.evaluate import LABEL_TOLERANCE_S, ClipResult

    traced = trace(folder / CLIP, config)
    label = read_label(folder)
    start = info.get("fall_start_s") if label == "fall" else None
    falls = [e for e in traced.events if e["type"] == "fall_detected"]
    result = ClipResult(
        file="%s %s track %s (%s)" % (info.get("camera"), info.get("time"), info.get("track_id"), event_id[:8]),
        label=label or "not labelled", fall_start_s=start, alert_t=falls[0]["t"] if falls else None,
        alerts=len(falls), events=traced.events, dataset="review",
        seen=seen_after_fall(traced, start) if start is not None else None,
        diagnosis=diagnose(traced, label, start, config, LABEL_TOLERANCE_S) if label else None, trace=traced)
    return plot_clip(result, config, Path(out))
