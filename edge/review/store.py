"""Alert review on disk: the event folders the daemon writes, listing them, labelling them into a site dataset.

Layout under ``<state_dir>/review/events/<event_id>/`` (written whole, then renamed into place, so a
reader never sees half a folder):

* ``skeletons.jsonl`` — DESIGN.md contract 2, the event's camera only, from ``before_s`` before the
  event to ``after_s`` after it; ``t`` counts from the clip's first frame (0), like a video's.
* ``event.json`` — see :func:`event_info`: the event as published (``event``), camera, times, where
  the event is in the clip (``event_clip_t``), the estimated start of the fall (``fall_start_s``), and
  the camera's other events that came before the clip was written (``later_events``: ``long_lie``,
  ``fall_cleared``, each with ``clip_t``).
* ``snapshot.jpg`` — the skeletons at the event, drawn as the MQTT snapshot is (mqtt.snapshot: blank
  or blurred frame, never the raw picture).
* ``label.json`` — once labelled: ``{"label": "fall"|"adl", "site_dir", "file", "labelled_at"}``.

A site dataset (``review.site_dir``) is what ``fallwatch evaluate SITE`` reads: ``labels.csv``
(columns file, label, fall_start_s, event_id, camera, timestamp; other columns of an existing file
are kept) and the clips under ``clips/``. The row of a labelled real fall gives ``fall_start_s`` =
the event's estimated start of the fall, in seconds of the clip: the event's time minus how long the
person had been down (``features.down_s``) minus how long the descent took at its measured speed
(``features.drop_bh / features.descent_bh_per_s``), never below 0. A false alarm (``adl``) leaves it empty.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from edge.errors import FallwatchError

log = logging.getLogger("fallwatch.review")

LABELS = ("fall", "adl")
CLIP, EVENT, SNAPSHOT, LABEL = "skeletons.jsonl", "event.json", "snapshot.jpg", "label.json"
LABEL_COLUMNS = ("file", "label", "fall_start_s", "event_id", "camera", "timestamp")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class ReviewError(FallwatchError):
    """An event cannot be listed, labelled or plotted; the message names the event, file or label."""


def events_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "review" / "events"


def site_dir_of(config: Any) -> Path:
    """``review.site_dir``, else ``<paths.state_dir>/site``."""
    return Path(config.review.site_dir or Path(config.paths.state_dir) / "site")


def fall_start_estimate(event: Dict[str, Any], event_clip_t: float) -> float:
    """When the fall began, seconds of the clip: see the module docstring."""
    features = event.get("features") or {}
    down = float(features.get("down_s") or 0.0)
    speed = float(features.get("descent_bh_per_s") or 0.0)
    descent = float(features.get("drop_bh") or 0.0) / speed if speed > 0 else 0.0
    return round(max(0.0, event_clip_t - down - descent), 3)


def event_folder(state_dir: Path, event_id: str) -> Path:
    """The folder of an existing event; ReviewError naming the id when there is none."""
    folder = events_dir(state_dir) / str(event_id)
    if not _ID.fullmatch(str(event_id)) or not (folder / EVENT).is_file():
        raise ReviewError("no event %r under %s" % (event_id, events_dir(state_dir)),
                          fix="`fallwatch review list` shows the events kept (older ones are pruned: review.keep_days, "
                              "review.max_events)")
    return folder


def read_event(folder: Path) -> Dict[str, Any]:
    """``event.json`` of an event folder; ReviewError when it cannot be read."""
    try:
        info = json.loads((folder / EVENT).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReviewError("%s: cannot read it (%s)" % (folder / EVENT, exc)) from None
    if not isinstance(info, dict) or not isinstance(info.get("event"), dict):
        raise ReviewError("%s: not an event written by fallwatch (no event object)" % (folder / EVENT))
    return info


def read_label(folder: Path) -> Optional[str]:
    try:
        label = json.loads((folder / LABEL).read_text(encoding="utf-8")).get("label")
    except (OSError, ValueError, AttributeError):
        return None
    return label if label in LABELS else None


def list_events(state_dir: Path) -> List[Dict[str, Any]]:
    """The events kept, newest first: ``{"id", "camera", "time" (ISO 8601 UTC), "track_id", "label"
    (None, "fall" or "adl"), "clip" (path of skeletons.jsonl), "snapshot" (path or None), "confidence",
    "complete" (False when the daemon stopped before after_s had passed)}``. A folder whose
    event.json cannot be read is skipped with a warning."""
    root = events_dir(state_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            info = read_event(folder)
        except ReviewError as exc:
            log.warning("review: skipping %s (%s)", folder, exc)
            continue
        event = info["event"]
        found.append((float(info.get("wall") or 0.0), {
            "id": folder.name, "camera": info.get("camera"), "time": event.get("timestamp"),
            "track_id": event.get("track_id"), "label": read_label(folder), "clip": folder / CLIP,
            "snapshot": folder / SNAPSHOT if (folder / SNAPSHOT).is_file() else None,
            "confidence": event.get("confidence"), "complete": bool(info.get("complete"))}))
    found.sort(key=lambda item: (item[0], item[1]["id"]), reverse=True)
    return [item for _, item in found]


# ---------------------------------------------------------------- writing


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder/.labels.lock`` (the page and the command line may label at once)."""
    import fcntl

    with open(str(folder / ".labels.lock"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _clip_name(info: Dict[str, Any], event_id: str) -> str:
    stamp = re.sub(r"[^0-9T]", "", str(info["event"].get("timestamp") or "")[:19])
    stamp = stamp + "Z" if stamp else "event"
    return "clips/%s_%s_%s.jsonl" % (info.get("camera") or "camera", stamp, event_id[:8])


def _read_rows(labels: Path) -> Tuple[List[str], List[Dict[str, str]]]:
    if not labels.is_file():
        return list(LABEL_COLUMNS), []
    try:
        with open(str(labels), newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or ())
            rows = [dict(row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReviewError("%s: cannot read it (%s)" % (labels, exc),
                          fix="repair or move the file; labelling rewrites it whole") from None
    return columns + [c for c in LABEL_COLUMNS if c not in columns], rows


def _csv_text(columns: Sequence[str], rows: Sequence[Dict[str, str]]) -> bytes:
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) or "" for c in columns})
    return out.getvalue().encode("utf-8")


def label_event(state_dir: Path, site_dir: Path, event_id: str, label: str) -> Path:
    """Label an event ``fall`` (a real fall) or ``adl`` (a false alarm): its clip is copied to
    ``site_dir/clips/`` and its row written to ``site_dir/labels.csv`` (rewritten through a temporary
    file and a rename; a row for the same clip or event is replaced, other rows are kept). Returns the
    copied clip. ReviewError for an unknown event, an unknown label or a site folder that cannot be written."""
    if label not in LABELS:
        raise ReviewError("label %r: expected fall (a real fall) or adl (a false alarm)" % (label,))
    folder = event_folder(state_dir, event_id)
    info = read_event(folder)
    try:
        clip = (folder / CLIP).read_bytes()
    except OSError as exc:
        raise ReviewError("event %s: cannot read its skeleton clip %s (%s)" % (event_id, folder / CLIP,
                                                                              exc.strerror or exc)) from None
    site_dir = Path(site_dir)
    name = _clip_name(info, event_id)
    target = site_dir / name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(site_dir):
            write_atomically(target, clip)
            labels = site_dir / "labels.csv"
            columns, rows = _read_rows(labels)
            rows = [r for r in rows if r.get("file") != name and r.get("event_id") != event_id]
            start = info.get("fall_start_s")
            rows.append({"file": name, "label": label,
                         "fall_start_s": "" if label != "fall" or start is None else "%g" % float(start),
                         "event_id": event_id, "camera": str(info.get("camera") or ""),
                         "timestamp": str(info["event"].get("timestamp") or "")})
            write_atomically(labels, _csv_text(columns, rows))
        write_atomically(folder / LABEL, json.dumps({
            "label": label, "site_dir": str(site_dir), "file": name,
            "labelled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode("utf-8"))
    except OSError as exc:
        raise ReviewError("cannot write the site dataset %s (%s)" % (site_dir, exc),
                          fix="check review.site_dir and that this user may write there") from None
    log.info("review: event %s labelled %s: %s and its row in %s", event_id, label, target, site_dir / "labels.csv")
    return target


# ---------------------------------------------------------------- retention


def prune(state_dir: Path, keep_days: float, max_events: int, now: Optional[float] = None) -> List[str]:
    """Delete event folders older than ``keep_days`` (by the event's wall time; the folder's mtime when
    event.json cannot be read) and beyond the newest ``max_events``, and leftovers of writes that never
    finished (``.<id>.partial``); returns the ids deleted, logged in one line."""
    root = events_dir(state_dir)
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    dated = []
    for folder in root.iterdir():
        if folder.name.startswith("."):
            if folder.name.endswith(".partial") and now - folder.stat().st_mtime > 3600:
                shutil.rmtree(str(folder), ignore_errors=True)
            continue
        try:
            wall = float(read_event(folder).get("wall") or 0.0)
        except ReviewError:
            wall = folder.stat().st_mtime
        dated.append((wall, folder))
    dated.sort(key=lambda item: (item[0], item[1].name), reverse=True)
    old = [f for wall, f in dated if now - wall > keep_days * 86400.0]
    extra = [f for _, f in dated[max_events:] if f not in old]
    for folder in old + extra:
        shutil.rmtree(str(folder), ignore_errors=True)
    if old or extra:
        log.info("review: pruned %d event clip(s) under %s: %d older than review.keep_days (%g), %d beyond "
                 "review.max_events (%d)", len(old) + len(extra), root, len(old), keep_days, len(extra), max_events)
    return [f.name for f in old + extra]
