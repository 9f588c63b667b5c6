"""``fallwatch evaluate --plots DIR``: one PNG per clip, a timeline per track of what the fall detector
saw and thought (edge.diagnose's trace), with its thresholds, the labelled fall start and the alerts.

matplotlib is imported here only, inside :func:`plot_clip` (the ``plots`` extra).
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Dict, List

from edge.diagnose import AFTER_FALL_S, MIN_PARTS
from edge.errors import FallwatchError
from edge.fall import DESCENDING, FALLEN, NORMAL

STATES = (NORMAL, DESCENDING, FALLEN)
GAP_S = 0.3  # a track unseen this long is drawn with a gap


def plot_path(folder: Path, result: Any) -> Path:
    """Where the PNG of an evaluated clip goes: ``folder/<dataset>/<clip path with _ for />.png``."""
    name = result.file.replace("/", "_").rsplit(".", 1)[0] + ".png"
    return Path(folder) / (result.dataset.replace("/", "_").strip("_") or "dataset") / name


def require_matplotlib() -> Any:
    """matplotlib's Figure class; a FallwatchError with the fix when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise FallwatchError("--plots needs matplotlib, which is not installed",
                             fix="pip install 'fallwatch[plots]' (or pip install matplotlib)", joint="; ") from None
    return Figure


def plot_clip(result: Any, config: Any, path: Path) -> Path:
    """Draw ``result`` (an edge.evaluate.ClipResult with its trace) into the PNG ``path``."""
    figure_class = require_matplotlib()
    p, tr = config.fall, result.trace
    fig = figure_class(figsize=(12, 11), dpi=90)
    axes = fig.subplots(5, 1, sharex=True)
    tracks: Dict[int, List[Any]] = {}
    for row in tr.rows:
        tracks.setdefault(row.track, []).append(row)
    axes[0].plot([t for t, _ in tr.frames], [n for _, n in tr.frames], color="0.75", lw=3, label="most parts, anyone")
    for i, (track, rows) in enumerate(sorted(tracks.items())):
        colour = "C%d" % (i % 10)
        t = _broken(rows, lambda r: r.t)
        axes[0].plot(t, _broken(rows, lambda r: r.parts), ".-", color=colour, ms=3, label="track %d" % track)
        axes[1].plot(t, _broken(rows, lambda r: r.head_bh), "-", color=colour)
        axes[1].plot(t, _broken(rows, lambda r: r.hip_bh), "--", color=colour)
        axes[2].plot(t, _broken(rows, lambda r: r.torso_deg), ".-", color=colour, ms=3)
        axes[3].plot(t, _broken(rows, lambda r: r.speed_bh_per_s), "-", color=colour)
        axes[3].plot(t, _broken(rows, lambda r: r.drop_bh), ":", color=colour)
        axes[3].plot(t, _broken(rows, lambda r: r.rule_speed_bh_per_s), "x", color=colour, ms=4)
        level = _broken(rows, lambda r: STATES.index(r.state) if r.state in STATES else len(STATES))
        axes[4].plot(t, level, "-", color=colour, drawstyle="steps-post")
        down = [r for r in rows if r.down and r.state != FALLEN]
        axes[4].plot([r.t for r in down], [STATES.index(r.state) + 0.15 if r.state in STATES else len(STATES)
                                           for r in down], "v", color=colour, ms=4)
    _lines(axes[0], [(MIN_PARTS, "%d parts" % MIN_PARTS)])
    _lines(axes[1], [(p.max_head_height_bh, "max_head_height_bh / max_hip_height_bh" if
                      p.max_hip_height_bh == p.max_head_height_bh else "max_head_height_bh"),
                     (p.max_head_height_lying_bh, "max_head_height_lying_bh"),
                     (p.max_floor_head_bh, "max_floor_head_bh"), (p.up_head_height_bh, "up_head_height_bh")]
           + ([] if p.max_hip_height_bh == p.max_head_height_bh else [(p.max_hip_height_bh, "max_hip_height_bh")]))
    _lines(axes[2], [(p.upright_torso_angle_deg, "upright_torso_angle_deg"),
                     (p.lying_torso_angle_deg, "lying_torso_angle_deg")])
    _lines(axes[3], [(p.min_descent_speed_bh_per_s, "min_descent_speed_bh_per_s"),
                     (p.min_descent_bh, "min_descent_bh")])
    axes[0].set_ylabel("parts seen")
    axes[1].set_ylabel("height above floor, bh\n(head solid, hips dashed)")
    axes[2].set_ylabel("torso from vertical, deg")
    axes[3].set_ylabel("head descent, bh/s\n(x: the detector's)\nbh (dotted)")
    axes[4].set_ylabel("detector state\n(v: down clock running)")
    axes[4].set_yticks(range(len(STATES) + 1))
    axes[4].set_yticklabels(list(STATES) + ["other"])
    axes[4].set_xlabel("seconds from the clip's start")
    axes[2].set_ylim(0, 180)
    for ax in axes:
        _events(ax, result)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=7, ncol=4)
    axes[1].set_ylim(-0.3, 1.3)
    fig.suptitle(_title(result), fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    return path


def _broken(rows: List[Any], value: Any) -> List[float]:
    """``value(row)`` of each row, with NaN where the track went unseen for over ``GAP_S`` (a line
    through a gap would draw what nobody saw)."""
    out: List[float] = []
    for before, row in zip([None] + rows[:-1], rows):
        if before is not None and row.t - before.t > GAP_S:
            out.append(math.nan)
        out.append(value(row))
    return out


def _lines(ax: Any, lines: List[Any]) -> None:
    for y, name in lines:
        ax.axhline(y, color="0.4", lw=0.8, ls="--")
        ax.annotate("%s %g" % (name, y), (1.0, y), xycoords=("axes fraction", "data"), fontsize=6, color="0.3",
                    ha="right", va="bottom")


def _events(ax: Any, result: Any) -> None:
    if result.fall_start_s is not None:
        ax.axvline(result.fall_start_s, color="green", lw=1.5)
        ax.axvline(result.fall_start_s + AFTER_FALL_S, color="green", lw=0.8, ls=":")
    for e in result.events:
        ax.axvline(e["t"], color="red" if e["type"] == "fall_detected" else "orange", lw=1.5)


def _title(result: Any) -> str:
    alert = "no fall_detected" if result.alert_t is None else "fall_detected at %.2f s (red)" % result.alert_t
    start = "" if result.fall_start_s is None else ", labelled fall start %.2f s (green; dotted: +%g s)" % (
        result.fall_start_s, AFTER_FALL_S)
    why = "" if result.diagnosis is None else "\n" + "\n".join(textwrap.wrap(
        "%s: %s" % (result.diagnosis.reason, result.diagnosis.detail), 150))
    seen = "" if not result.seen or not result.seen[1] else ", seen with %d+ parts in %.0f%% of the frames after " \
        "the fall" % (MIN_PARTS, 100.0 * result.seen[0] / result.seen[1])
    head = "%s/%s: %s%s; %s%s" % (result.dataset, result.file, result.label, start, alert, seen)
    return "\n".join(textwrap.wrap(head, 150)) + why

