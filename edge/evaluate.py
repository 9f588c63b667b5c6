"""``fallwatch evaluate DATASET_DIR``: the fall detector against labelled clips.

The folder holds videos and a ``labels.csv`` with the columns ``file`` (relative path),
``label`` (``fall`` or ``adl``) and ``fall_start_s`` (empty for ``adl``), as in GMDCSA24. A ``file``
may also be a skeleton JSONL (DESIGN.md contract 2; ``.jsonl``, or text starting with ``{``), such as
the clips ``fallwatch review label`` adds to a site dataset (edge.review): it is used as it is, with
no model, no cache and no ``max_fps`` (it holds the frames the daemon processed). Each video
clip is replayed once through the whole pipeline (``fallwatch replay``) and its skeletons are
cached as a skeleton JSONL, keyed by the clip's bytes, every setting that changes the
skeletons (model, views, tracker, ``max_fps``), the model and spec files the config names
(:func:`model_files`) and the source of the code that makes them
(:func:`skeleton_code`: every module the replay, the model and the recorder import, fall
detection excepted; the views policy reads the tracks, so even a tracker change can change
which skeletons are found). Detection then runs on the cached skeletons, so
trying other ``fall`` thresholds takes seconds, not minutes.

Each clip's skeletons are also traced (edge.diagnose): every missed fall and every daily-activity
clip that alerted gets one reason, and each fall clip the share of its frames after the fall in
which someone was seen with at least ``MIN_PARTS`` parts. Several dataset folders are evaluated
in one go (:func:`evaluate_datasets`), with totals per dataset and over all of them.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import logging
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edge.diagnose import MIN_PARTS, Diagnosis, diagnose, seen_after_fall, trace
from edge.inference.model import open_pose_model
from edge.replay import ReplayError, is_skeleton_file, replay_skeletons, replay_video
from edge.alerts.sinks import SinkSet, SkeletonRecorder

log = logging.getLogger("fallwatch.evaluate")


class EvaluateError(ValueError):
    """The dataset cannot be evaluated; the message says what is wrong with it."""


MAX_CLIP_S = 1e6  # a labelled fall start beyond this is no time in a clip


@dataclass
class ClipResult:
    file: str
    label: str
    fall_start_s: Optional[float]
    alert_t: Optional[float]  # first fall_detected, seconds from the clip's start
    alerts: int  # fall_detected events in the clip
    events: List[Dict[str, Any]]
    dataset: str = ""
    seen: Optional[Tuple[int, int]] = None  # (frames with someone of MIN_PARTS+ parts, frames) after the fall
    diagnosis: Optional[Diagnosis] = None  # why a fall was missed or an ADL clip alerted
    trace: Any = field(default=None, repr=False, compare=False)  # edge.diagnose.Trace, for plots
    views: Optional[Dict[str, Any]] = None  # ViewStats.as_dict() of the replay that made the skeletons

    @property
    def latency_s(self) -> Optional[float]:
        if self.label != "fall" or self.alert_t is None or self.fall_start_s is None:
            return None
        return self.alert_t - self.fall_start_s


def read_labels(folder: Path) -> List[Dict[str, str]]:
    """The rows of ``folder/labels.csv``, checked (UTF-8 CSV text, the three columns, a label of
    fall or adl, a fall's start in seconds, an existing file); EvaluateError naming the line."""
    path = folder / "labels.csv"
    if not path.is_file():
        raise EvaluateError("%s: no labels.csv (columns: file, label, fall_start_s)" % folder)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = set(reader.fieldnames or ())
            rows = list(reader)
    except UnicodeDecodeError:
        raise EvaluateError("%s: is not UTF-8 text; expected a CSV file with the columns file, label, fall_start_s"
                            % path) from None
    except csv.Error as exc:
        raise EvaluateError("%s: line %d: not CSV (%s)" % (path, reader.line_num, exc)) from None
    except OSError as exc:
        raise EvaluateError("%s: cannot read it (%s)" % (path, exc.strerror or exc)) from None
    if not {"file", "label", "fall_start_s"} <= columns:
        raise EvaluateError("%s: needs the columns file, label, fall_start_s on its first line" % path)
    if not rows:
        raise EvaluateError("%s: lists no clips" % path)
    for i, row in enumerate(rows, 2):
        if any(row[k] is None for k in ("file", "label", "fall_start_s")):
            raise EvaluateError("%s: line %d: needs a value in each of file, label, fall_start_s (empty for adl)"
                                % (path, i))
        if row["label"] not in ("fall", "adl"):
            raise EvaluateError("%s: line %d: label %r is neither fall nor adl" % (path, i, row["label"]))
        if row["label"] == "fall":
            try:
                start = float(row["fall_start_s"])
            except ValueError:
                start = math.nan
            if not 0 <= start < MAX_CLIP_S:
                raise EvaluateError("%s: line %d: a fall needs fall_start_s in seconds from the clip's start, got %r"
                                    % (path, i, row["fall_start_s"]))
        if not row["file"] or not (folder / row["file"]).is_file():
            raise EvaluateError("%s: line %d: %s does not exist" % (path, i, folder / row["file"]))
    return rows


# Modules that only see skeletons once they are made (fall detection): editing them keeps the
# cache. Matched by the module's own name wherever it lives; everything else counts.
AFTER_SKELETONS = ("fall",)
DATA_SUFFIXES = (".yaml", ".yml", ".json")  # data files beside a counted module count too (model specs)


def _module_file(root: Path, package: str, name: str) -> Optional[Path]:
    parts = name.split(".")
    if parts[0] != package:
        return None
    base = root.joinpath(*parts[1:])
    for path in (base / "__init__.py", base.with_suffix(".py") if len(parts) > 1 else None):
        if path is not None and path.is_file():
            return path
    return None


def _imported(path: Path, name: str) -> List[str]:
    """Every module name an import statement of ``path`` (module ``name``) may load, anywhere in
    the file (imports inside functions too); names that are not modules are dropped later."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found += [base] + [base + "." + alias.name for alias in node.names]
    return [n for n in found if n]


def skeleton_code(root: Path = Path(__file__).resolve().parent) -> List[Path]:
    """The files whose code makes the skeletons a replay records, under the package folder
    ``root``: the modules of :func:`replay_video`, of the model (:func:`open_pose_model`) and of the
    recorder, every module of the package they import, directly or not (with their parent
    packages), except :data:`AFTER_SKELETONS`; and the data files in those modules' folders.
    Found from the import statements, so a new or moved module counts without a list to update."""
    root = Path(root)
    package = __name__.split(".")[0]
    todo = [f.__module__ for f in (replay_video, open_pose_model, SkeletonRecorder)]
    seen: Dict[str, Path] = {}
    while todo:
        name = todo.pop()
        path = _module_file(root, package, name)
        if name in seen or path is None or name.split(".")[-1] in AFTER_SKELETONS:
            continue
        seen[name] = path
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo += _imported(path, name)
    folders = {p.parent for p in seen.values()}
    data = [f for d in folders for f in d.iterdir() if f.suffix in DATA_SUFFIXES and f.is_file()]
    return sorted(set(seen.values()) | set(data))


def code_digest(root: Path = Path(__file__).resolve().parent) -> bytes:
    """SHA-256 over the paths (relative to ``root``) and bytes of :func:`skeleton_code`."""
    digest = hashlib.sha256()
    for f in skeleton_code(root):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.digest()


def model_files(config: Any) -> Dict[str, Any]:
    """What the settings' paths do not say: the files they name. A model file the config names (its
    size and modification time: a model rebuilt at the same path) and a spec given as a YAML file (its
    text); the default model, fetched and checked by sha256, is named by its settings alone, so cached
    skeletons are still found where the model is absent."""
    topdown = getattr(config, "topdown", None)
    detector = getattr(topdown, "detector", None)
    named = {"model.onnx": config.model.onnx, "model.spec": config.model.spec,
             "topdown.seed_onnx": getattr(topdown, "seed_onnx", None),
             "topdown.seed_spec": getattr(topdown, "seed_spec", None),
             "topdown.detector.onnx": getattr(detector, "onnx", None),
             "topdown.detector.spec": getattr(detector, "spec", None)}
    files: Dict[str, Any] = {}
    for key, value in named.items():
        path = Path(value) if value is not None else None
        if path is None or not path.is_file():
            continue
        if key.endswith("spec"):
            files[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            st = path.stat()
            files[key] = [st.st_size, st.st_mtime_ns]
    return files


def skeleton_key(video: Path, config: Any, max_fps: Optional[float]) -> str:
    """What the cached skeletons of ``video`` depend on: its bytes, the settings before fall
    detection and the code that produces skeletons."""
    digest = hashlib.sha256(code_digest())
    with open(video, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    settings = {"model": config.model.to_dict(), "views": config.views.to_dict(), "topdown": config.topdown.to_dict(),
                "tracker": config.tracker.to_dict(), "max_fps": max_fps, "files": model_files(config)}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


class EventList:
    """A sink that keeps the events it is given (``events``) and ignores frames and stats."""

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []

    def frame(self, record: Any) -> None:
        pass

    def emit(self, event: Dict[str, Any]) -> None:
        self.events.append(event)

    def stats(self, stats: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _cached_events(jsonl: Path, config: Any, clip: str) -> Optional[EventList]:
    """The events of the cached skeletons ``jsonl``, read strictly: None when there is no cache,
    or when it is damaged (a bad line: it is removed, with a warning, so the clip is replayed
    again rather than half used)."""
    if not jsonl.is_file():
        return None
    collect = EventList()
    try:
        replay_skeletons(jsonl, config, collect, strict=True)
    except ReplayError as exc:
        log.warning("%s: the cached skeletons are damaged (%s): removing them and replaying the video", clip, exc)
        jsonl.unlink()
        return None
    return collect


def _views_file(jsonl: Path) -> Path:
    """Where the view statistics of the replay that made ``jsonl`` are kept."""
    return jsonl.with_name(jsonl.stem + ".views.json")


def _cached_views(jsonl: Path) -> Optional[Dict[str, Any]]:
    """The view statistics kept beside ``jsonl``, or None (older caches, or unreadable)."""
    try:
        views = json.loads(_views_file(jsonl).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return views if isinstance(views, dict) and isinstance(views.get("frames"), int) else None


def evaluate(folder: Path, config: Any, cache_dir: Path, open_model: Callable[[], Any],
             max_fps: Optional[float] = None) -> List[ClipResult]:
    """Every labelled clip of ``folder``: skeletons (cached under ``cache_dir``), then events."""
    folder = Path(folder)
    rows = read_labels(folder)
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = None
    results = []
    try:
        for row in rows:
            video = folder / row["file"]
            if is_skeleton_file(video):  # a clip kept by the daemon (edge.review): already skeletons
                jsonl = video
                collect = EventList()
                try:
                    replay_skeletons(jsonl, config, collect, strict=True)
                except ReplayError as exc:
                    raise EvaluateError("%s (listed in %s)" % (exc, folder / "labels.csv")) from None
            else:
                key = skeleton_key(video, config, max_fps)
                jsonl = cache_dir / ("%s-%s.jsonl" % (row["file"].replace("/", "_").rsplit(".", 1)[0], key))
                collect = _cached_events(jsonl, config, row["file"])
            if collect is None:
                if model is None:
                    model = open_model()
                log.info("%s: replaying the video (skeletons cached as %s)", row["file"], jsonl.name)
                partial = jsonl.with_suffix(".partial")
                sinks = SinkSet([SkeletonRecorder(partial)])
                try:
                    summary = replay_video(video, config, model, sinks, camera="evaluate", max_fps=max_fps)
                except ReplayError as exc:
                    raise EvaluateError("%s (listed in %s)" % (exc, folder / "labels.csv")) from None
                finally:
                    sinks.close()
                views_partial = _views_file(partial)
                views_partial.write_text(json.dumps(summary.views, sort_keys=True), encoding="utf-8")
                os.replace(str(views_partial), str(_views_file(jsonl)))
                os.replace(str(partial), str(jsonl))
                collect = EventList()
                replay_skeletons(jsonl, config, collect)
            falls = [e for e in collect.events if e["type"] == "fall_detected"]
            start = float(row["fall_start_s"]) if row["label"] == "fall" else None
            traced = trace(jsonl, config)
            if [e["t"] for e in traced.events] != [e["t"] for e in collect.events]:
                log.warning("%s: the diagnosis replay gave other events than the evaluation; its reason may be "
                            "wrong", row["file"])
            results.append(ClipResult(row["file"], row["label"], start, falls[0]["t"] if falls else None,
                                      len(falls), collect.events, folder.name,
                                      seen_after_fall(traced, start) if start is not None else None,
                                      diagnose(traced, row["label"], start, config, LABEL_TOLERANCE_S), traced,
                                      _cached_views(jsonl)))
    finally:
        if model is not None:
            model.close()
    return results


def dataset_names(folders: Sequence[Path]) -> List[str]:
    """A name per dataset folder: its own name, or its path where two folders share a name."""
    names = [Path(f).name for f in folders]
    return [n if names.count(n) == 1 else str(f) for n, f in zip(names, folders)]


def evaluate_datasets(folders: Sequence[Path], config: Any, cache_dir: Path, open_model: Callable[[], Any],
                      max_fps: Optional[float] = None) -> Dict[str, List[ClipResult]]:
    """:func:`evaluate` on each folder (all labels are checked first), by dataset name."""
    for folder in folders:
        read_labels(Path(folder))
    out: Dict[str, List[ClipResult]] = {}
    for name, folder in zip(dataset_names(folders), folders):
        out[name] = evaluate(Path(folder), config, cache_dir, open_model, max_fps)
        for r in out[name]:
            r.dataset = name
    return out


# Labelled fall starts are read off the video by eye: an alert this much before one still counts.
LABEL_TOLERANCE_S = 0.5


def totals(results: List[ClipResult]) -> Dict[str, Any]:
    falls = [r for r in results if r.label == "fall"]
    adls = [r for r in results if r.label == "adl"]
    caught = [r for r in falls if r.latency_s is not None and r.latency_s >= -LABEL_TOLERANCE_S]
    early = sum(1 for r in falls if r.latency_s is not None and r.latency_s < -LABEL_TOLERANCE_S)
    latencies = [r.latency_s for r in caught]
    seen = [r.seen for r in falls if r.seen is not None]
    frames = sum(n for _, n in seen)

    def views_per_frame(clips: List[ClipResult]) -> Optional[float]:
        known = [r.views for r in clips if r.views and r.views["frames"]]
        n = sum(v["frames"] for v in known)
        return round(sum(v["views_per_frame"] * v["frames"] for v in known) / n, 3) if n else None

    return {
        "fall_clips": len(falls), "adl_clips": len(adls),
        "caught_falls": len(caught), "missed_falls": len(falls) - len(caught),
        "recall": round(len(caught) / len(falls), 3) if falls else None,
        "false_alert_clips": sum(1 for r in adls if r.alerts),
        "false_alerts_per_adl_clip": round(sum(r.alerts for r in adls) / len(adls), 3) if adls else None,
        "alerts_before_the_fall": early,
        "median_latency_s": round(statistics.median(latencies), 2) if latencies else None,
        "worst_latency_s": round(max(latencies), 2) if latencies else None,
        "seen_after_fall": round(sum(k for k, _ in seen) / frames, 3) if frames else None,
        "views_per_frame_falls": views_per_frame(falls), "views_per_frame_adl": views_per_frame(adls),
        "reasons": dict(Counter(r.diagnosis.reason for r in results if r.diagnosis is not None).most_common()),
    }


def _totals_line(t: Dict[str, Any]) -> str:
    seen = "-" if t["seen_after_fall"] is None else "%.1f%%" % (100 * t["seen_after_fall"])
    reasons = ", ".join("%s %d" % kv for kv in t["reasons"].items()) or "-"
    return ("recall %s (%d of %d fall clips), false-alert clips %d of %d ADL clips (false alerts per ADL clip %s), "
            "alerts more than %.1f s before the labelled fall start %d, latency from fall start: median %s s, "
            "worst %s s; frames after the falls with someone of %d+ parts: %s; engine views per frame: fall clips %s, "
            "ADL clips %s; reasons: %s"
            % (t["recall"], t["caught_falls"], t["fall_clips"], t["false_alert_clips"], t["adl_clips"],
               t["false_alerts_per_adl_clip"], LABEL_TOLERANCE_S, t["alerts_before_the_fall"],
               t["median_latency_s"], t["worst_latency_s"], MIN_PARTS, seen,
               "-" if t["views_per_frame_falls"] is None else "%.2f" % t["views_per_frame_falls"],
               "-" if t["views_per_frame_adl"] is None else "%.2f" % t["views_per_frame_adl"], reasons))


def _seconds(value: float) -> str:
    """``value`` to 0.01 s, without a second trailing zero (0.3 -> 0.3, 2 -> 2.0, 0.85 -> 0.85)."""
    text = "%.2f" % value
    return text[:-1] if text.endswith("0") else text


def format_table(results: List[ClipResult]) -> str:
    lines = ["| clip | label | fall starts (s) | alert (s) | fall start to alert (s) | fall_detected | other events "
             "| seen after fall | views/frame | diagnosis |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        others = sorted({e["type"] for e in r.events if e["type"] != "fall_detected"})
        seen = "-" if not r.seen or not r.seen[1] else "%.0f%% of %d" % (100.0 * r.seen[0] / r.seen[1], r.seen[1])
        why = "-" if r.diagnosis is None else "%s: %s" % (r.diagnosis.reason, r.diagnosis.detail)
        views = "-" if not r.views or not r.views["frames"] else "%.2f" % r.views["views_per_frame"]
        lines.append("| %s | %s | %s | %s | %s | %d | %s | %s | %s | %s |" % (
            r.file, r.label, "" if r.fall_start_s is None else _seconds(r.fall_start_s),
            "-" if r.alert_t is None else "%.2f" % r.alert_t,
            "-" if r.latency_s is None else "%.2f" % r.latency_s, r.alerts, ", ".join(others) or "-", seen, views,
            why))
    lines.append("")
    lines.append(_totals_line(totals(results)))
    return "\n".join(lines)


def format_report(by_dataset: Dict[str, List[ClipResult]]) -> str:
    """A table per dataset with its totals, then the totals over all of them."""
    parts = ["## %s\n\n%s" % (name, format_table(results)) for name, results in by_dataset.items()]
    if len(by_dataset) > 1:
        everything = [r for results in by_dataset.values() for r in results]
        parts.append("## all %d datasets\n\n%s" % (len(by_dataset), _totals_line(totals(everything))))
    return "\n\n".join(parts)


def report_json(by_dataset: Dict[str, List[ClipResult]]) -> Dict[str, Any]:
    """``clips`` (every clip, with its dataset, events, perception and diagnosis), ``datasets`` (the
    totals of each) and ``totals`` (over all)."""
    everything = [r for results in by_dataset.values() for r in results]
    clips = [dict(dataset=r.dataset, file=r.file, label=r.label, fall_start_s=r.fall_start_s, alert_t=r.alert_t,
                  latency_s=r.latency_s, alerts=r.alerts,
                  seen_after_fall=None if r.seen is None else {"frames_seen": r.seen[0], "frames": r.seen[1]},
                  diagnosis=None if r.diagnosis is None else r.diagnosis.to_dict(),
                  views=None if r.views is None else {k: r.views.get(k) for k in (
                      "frames", "views_per_frame", "extra_view_fraction", "reasons")},
                  events=[{k: e[k] for k in ("type", "t", "track_id", "confidence", "features") if k in e}
                          for e in r.events]) for r in everything]
    return {"clips": clips, "datasets": {name: {"totals": totals(results)} for name, results in by_dataset.items()},
            "totals": totals(everything)}
