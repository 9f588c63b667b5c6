"""Why a clip went wrong (edge.diagnose): constructed skeleton sequences, each made to go wrong one
way, get that reason; `fallwatch evaluate --plots` draws one PNG per clip over several datasets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from edge.config import load_config
from edge.diagnose import FALSE_ALERT, MISSED, diagnose, seen_after_fall, trace
from edge.evaluate import LABEL_TOLERANCE_S, skeleton_key
from skeletons import KNEELING, LYING_BED, LYING_LEFT, LYING_RIGHT, SITTING_FLOOR, STANDING, sequence

FPS, FRAME = 15, (640, 480)
CONFIG = load_config(None, env={})


def write_jsonl(path: Path, frames, camera: str = "evaluate") -> Path:
    """A skeleton JSONL (DESIGN.md contract 2) of ``frames``: ``(t, [keypoints (18, 3), ...])``."""
    with open(path, "w", encoding="utf-8") as fh:
        for t, people in frames:
            fh.write(json.dumps({"t": t, "camera": camera, "width": FRAME[0], "height": FRAME[1],
                                 "people": [{"keypoints": np.asarray(kp).tolist()} for kp in people]}) + "\n")
    return path


def one_person(keyframes, duration, **kw):
    return [(t, [kp]) for t, kp in sequence(keyframes, FPS, duration, frame_size=FRAME, **kw)]


def reason(tmp_path, frames, label="fall", fall_start_s=2.0, config=CONFIG):
    tr = trace(write_jsonl(tmp_path / "clip.jsonl", frames), config)
    found = diagnose(tr, label, fall_start_s, config, LABEL_TOLERANCE_S)
    return found, tr


FALL = [(0, STANDING), (2.0, STANDING), (2.7, LYING_RIGHT)]


def test_a_caught_fall_and_a_quiet_day_need_no_reason(tmp_path):
    found, tr = reason(tmp_path, one_person(FALL, 8.0))
    assert found is None and any(e["type"] == "fall_detected" for e in tr.events)
    assert seen_after_fall(tr, 2.0) == (len([t for t, _ in tr.frames if t >= 3.0]),) * 2
    quiet, _ = reason(tmp_path, one_person([(0, STANDING)], 6.0), label="adl", fall_start_s=None)
    assert quiet is None


def test_a_fall_the_network_stops_seeing_is_no_skeleton(tmp_path):
    frames = []
    for i, (t, people) in enumerate(one_person(FALL, 8.0)):
        half = people[0].copy()
        half[5:] = 0  # from 2.5 s on: nothing, or the head, neck and right arm only (5 parts)
        frames.append((t, people if t < 2.5 else [half] if i % 2 else []))
    found, tr = reason(tmp_path, frames)
    assert found.reason == "no_skeleton", found
    assert seen_after_fall(tr, 2.0) == (0, len([t for t, _ in tr.frames if t >= 3.0]))
    assert "in 0 of" in found.detail


def test_a_slow_sink_onto_a_low_bed_height_is_no_fast_descent(tmp_path):
    frames = one_person([(0, STANDING), (2.0, STANDING), (8.0, LYING_BED)], 12.0)
    found, tr = reason(tmp_path, frames)
    assert found.reason == "no_fast_descent", found
    assert {r.state for r in tr.rows} == {"normal"}
    assert "largest head drop" in found.detail


def test_dropping_fast_to_sit_on_the_floor_is_never_low(tmp_path):
    frames = one_person([(0, STANDING), (2.0, STANDING), (2.6, SITTING_FLOOR)], 8.0)
    found, tr = reason(tmp_path, frames)
    assert found.reason == "never_low", found
    assert "descending" in {r.state for r in tr.rows} and not any(r.down for r in tr.rows)


def test_a_person_lost_standing_and_found_lying_elsewhere_is_track_lost(tmp_path):
    before = [(t, people) for t, people in one_person([(0, STANDING)], 2.0, x=120.0)]
    after = [(round(t + 2.0, 6), people) for t, people in one_person([(0, LYING_LEFT)], 6.0, x=480.0)]
    found, tr = reason(tmp_path, before + after, fall_start_s=1.8)
    assert found.reason == "track_lost", found
    assert len({r.track for r in tr.rows}) == 2
    # the same lying person, with nobody seen before the fall: no floor was ever learned
    alone, _ = reason(tmp_path, after, fall_start_s=1.8)
    assert alone.reason == "no_floor", alone


def test_a_clip_that_ends_while_the_person_is_going_down_is_after_clip_end(tmp_path):
    frames = one_person(FALL, 2.8)
    found, tr = reason(tmp_path, frames)
    assert found.reason == "after_clip_end", found
    assert tr.late_alert_t is not None and tr.late_alert_t > tr.end_t


def test_a_quick_fall_and_up_again_is_not_down_long_enough(tmp_path):
    frames = one_person([(0, STANDING), (2.0, STANDING), (2.5, LYING_RIGHT), (2.8, KNEELING), (3.2, STANDING)], 8.0)
    found, tr = reason(tmp_path, frames)
    assert found.reason == "not_down_long_enough", found
    assert any(r.down for r in tr.rows)


def test_a_fast_sit_down_then_lying_back_on_the_floor_is_a_false_descent_alert(tmp_path):
    frames = one_person([(0, STANDING), (2.0, STANDING), (2.6, SITTING_FLOOR), (3.0, SITTING_FLOOR),
                         (3.8, LYING_LEFT)], 8.0)
    found, tr = reason(tmp_path, frames, label="adl", fall_start_s=None)
    assert found.reason == "false_descent", found
    assert "(lying)" in found.detail and found.track == tr.rows[0].track
    slow = one_person([(0, STANDING), (1.0, STANDING), (5.0, SITTING_FLOOR), (6.0, SITTING_FLOOR),
                       (10.0, LYING_LEFT)], 16.0)
    found, _ = reason(tmp_path, slow, label="adl", fall_start_s=None)
    assert found.reason == "false_floor", found


def test_a_fall_in_an_ignore_zone_is_zone(tmp_path):
    path = tmp_path / "zones.yaml"
    path.write_text("cameras:\n  - name: evaluate\n    uri: clip.mp4\n    zones:\n      - kind: ignore\n"
                    "        polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]\n")
    found, _ = reason(tmp_path, one_person(FALL, 8.0), config=load_config(path, env={}))
    assert found.reason == "zone", found


def test_the_reasons_are_a_fixed_documented_list():
    import edge.diagnose as d

    for name in MISSED + FALSE_ALERT:
        assert "``%s``" % name in d.__doc__, name


def _dataset(root: Path, name: str, clips, config) -> Path:
    """A dataset folder (labels.csv, placeholder videos) whose skeletons are already in the cache."""
    folder = root / name
    folder.mkdir(parents=True)
    lines = ["file,label,fall_start_s"]
    for file, label, start, frames in clips:
        video = folder / file
        video.write_bytes(("%s/%s: no video, its skeletons are cached" % (name, file)).encode())
        key = skeleton_key(video, config, None)
        write_jsonl(root / "cache" / ("%s-%s.jsonl" % (file.rsplit(".", 1)[0], key)), frames)
        lines.append("%s,%s,%s" % (file, label, "" if start is None else start))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_evaluate_writes_a_plot_per_clip_and_totals_per_dataset(tmp_path):
    pytest.importorskip("matplotlib", reason="the plots extra (in dev) is not installed")
    config_path = tmp_path / "config.yaml"
    config_path.write_text("paths:\n  models_dir: %s\n" % (tmp_path / "no-models-here"))
    config = load_config(config_path, env={})
    (tmp_path / "cache").mkdir()
    one = _dataset(tmp_path, "one", [("caught.mp4", "fall", 2.0, one_person(FALL, 8.0)),
                                     ("sat.mp4", "fall", 2.0, one_person([(0, STANDING), (2.0, STANDING),
                                                                         (2.6, SITTING_FLOOR)], 8.0))], config)
    two = _dataset(tmp_path, "two", [("standing.mp4", "adl", None, one_person([(0, STANDING)], 5.0))], config)
    out = tmp_path / "plots"
    result = run_cli("--config", str(config_path), "evaluate", str(one), str(two), "--cache", str(tmp_path / "cache"),
                     "--plots", str(out), "--json", str(tmp_path / "report.json"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "one/caught.png", "one/sat.png", "two/standing.png"]
    assert all(p.stat().st_size > 20000 for p in out.rglob("*.png"))
    assert "## one" in result.stdout and "## two" in result.stdout and "## all 2 datasets" in result.stdout
    assert "| sat.mp4 | fall | 2.0 | - | - | 0 | - |" in result.stdout and "never_low:" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["datasets"]["one"]["totals"]["recall"] == 0.5
    assert report["datasets"]["one"]["totals"]["reasons"] == {"never_low": 1}
    assert report["totals"]["fall_clips"] == 2 and report["totals"]["false_alert_clips"] == 0
    assert [c["diagnosis"]["reason"] if c["diagnosis"] else None for c in report["clips"]] == [None, "never_low", None]
