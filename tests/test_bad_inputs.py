"""Every bad input a user can type (issue 15): one line on stderr, a non-zero status, no Python
traceback, and nothing done first; a damaged skeleton recording loses only its bad lines.

Each case runs the real command line (``python -m edge``) as a subprocess, as a user would."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest

from conftest import MODELS_DIR, run_cli, shared_data
from edge.config import load_config
from edge.evaluate import skeleton_key
from skeletons import LYING_RIGHT, STANDING, sequence

FRAME = (640, 480)
GOOD = '{"t": %s, "camera": "hall", "width": 640, "height": 480, "people": []}'


def config_file(tmp_path: Path, models_dir: Path = MODELS_DIR) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("paths:\n  models_dir: %s\n  state_dir: %s\n" % (models_dir, tmp_path / "state"))
    return path


def one_line(result, status: int) -> str:
    """The one line a failed command printed, after checking its status and that nothing else came."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def fall_lines(camera: str = "hall") -> List[str]:
    """A skeleton JSONL (DESIGN.md contract 2) of one person who falls at 2 s, lies, and gets up at 7 s."""
    frames = sequence([(0, STANDING), (2.0, STANDING), (2.7, LYING_RIGHT), (7.0, LYING_RIGHT), (8.0, STANDING)],
                      15, 11.0, frame_size=FRAME)
    return [json.dumps({"t": t, "camera": camera, "width": FRAME[0], "height": FRAME[1],
                        "people": [{"keypoints": kp.tolist()}]}) for t, kp in frames]


def replay(tmp_path: Path, lines: List[str], name: str, *args: str):
    """``fallwatch replay`` of ``lines`` written as ``name``: (result, events without their timing)."""
    path = tmp_path / name
    path.write_text("\n".join(lines))  # as a recorder killed mid-write leaves it: no final newline
    events = tmp_path / (name + ".events")
    result = run_cli("--config", str(config_file(tmp_path)), "replay", str(path), "--events-out", str(events),
                     *args)
    return result, [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else None


def summary_of(result) -> dict:
    return json.loads(result.stderr.strip().splitlines()[-1])


# ------------------------------------------------------------------ part 3: doctor sees the same file as run


def test_doctor_fails_the_config_check_when_fallwatch_config_names_a_missing_file(tmp_path):
    """(tests/test_config.py: every other command exits 2 on it.)"""
    missing = tmp_path / "gone.yaml"
    proc = run_cli("doctor", "--no-mqtt", "--no-cameras", env={"FALLWATCH_CONFIG": str(missing),
                                                                "FALLWATCH_ROOT": str(tmp_path)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "fallwatch doctor: %s" % missing
    assert lines[1].startswith("fail  config") and "%s: no such file" % missing in lines[1]
    assert "correct that key" not in proc.stdout


# ------------------------------------------------------------------ part 5: a damaged recording


def test_a_garbage_line_and_a_cut_last_line_are_skipped_and_counted(tmp_path):
    clean = fall_lines()
    done, events = replay(tmp_path, clean, "clean.jsonl")
    assert done.returncode == 0, done.stderr
    assert [e["type"] for e in events][:1] == ["fall_detected"] and len(events) >= 2
    assert summary_of(done)["lines_skipped"] == 0

    damaged = clean[:60] + ['{"t": 4.0, "camera": "hall", "wid\x00\x07 garbage'] + clean[60:] + [clean[-1][:70]]
    done, damaged_events = replay(tmp_path, damaged, "damaged.jsonl")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert damaged_events == events
    summary = summary_of(done)
    assert summary["lines_skipped"] == 2 and summary["frames_read"] == len(clean) and summary["tracks"] == 1
    warnings = [line for line in done.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 2
    assert "%s: line 61: not JSON" % (tmp_path / "damaged.jsonl") in warnings[0]
    assert "%s: line %d: not JSON" % (tmp_path / "damaged.jsonl", len(damaged)) in warnings[1]


def test_strict_stops_at_the_first_bad_line(tmp_path):
    clean = fall_lines()
    _, events = replay(tmp_path, clean, "clean.jsonl")
    damaged = clean[:60] + ["{garbage"] + clean[60:]
    done, strict_events = replay(tmp_path, damaged, "damaged.jsonl", "--strict")
    line = one_line(done, 1)
    assert line.startswith("fallwatch: %s: line 61: not JSON (" % (tmp_path / "damaged.jsonl")), line
    stop_t = json.loads(clean[60])["t"]
    assert strict_events == [e for e in events if e["t"] < stop_t] != events  # nothing after the bad line


def test_a_nan_time_no_longer_splits_one_person_into_two_tracks(tmp_path):
    clean = fall_lines()
    _, events = replay(tmp_path, clean, "clean.jsonl")
    nan = json.loads(clean[20])
    nan["t"] = float("nan")
    done, nan_events = replay(tmp_path, clean[:21] + [json.dumps(nan)] + clean[21:], "nan.jsonl")
    assert done.returncode == 0, done.stderr
    assert summary_of(done)["tracks"] == 1 and summary_of(done)["lines_skipped"] == 1
    assert nan_events == events


def test_a_file_with_no_readable_line_is_an_error(tmp_path):
    done, _ = replay(tmp_path, ["not json", "{\"t\": 1}"], "junk.jsonl")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 3 and all(" WARNING " in line for line in lines[:2])
    assert lines[2] == ("fallwatch: %s: not one readable skeleton line (2 bad lines, the first: %s: line 1: not "
                        "JSON (Expecting value: line 1 column 1 (char 0)))" % ((tmp_path / "junk.jsonl",) * 2))


# ------------------------------------------------------------------ part 4: values a skeleton line must not have

BAD_LINES = [
    ('{"t": NaN, "camera": "hall", "width": 640, "height": 480, "people": []}',
     "t must be a number of seconds from 0 to 1e+10, got nan"),
    ('{"t": Infinity, "camera": "hall", "width": 640, "height": 480, "people": []}',
     "t must be a number of seconds from 0 to 1e+10, got inf"),
    ('{"t": 1e300, "camera": "hall", "width": 640, "height": 480, "people": []}',
     "t must be a number of seconds from 0 to 1e+10, got 1e+300"),
    ('{"t": -3, "camera": "hall", "width": 640, "height": 480, "people": []}',
     "t must be a number of seconds from 0 to 1e+10, got -3"),
    ('{"t": 1, "camera": "hall", "width": %d, "height": 480, "people": []}' % 10 ** 400,
     "width must be a whole number of pixels from 1 to 100000, got 100000000000000000000000000000... "
     "(401 characters)"),
    ('{"t": 1, "camera": "hall", "width": 0, "height": 480, "people": []}',
     "width must be a whole number of pixels from 1 to 100000, got 0"),
    ('{"t": 1, "camera": "hall", "width": 640, "height": -480, "people": []}',
     "height must be a whole number of pixels from 1 to 100000, got -480"),
    ('{"t": 1, "camera": "hall", "width": 640, "height": 480, "people": 3}', "people must be a list, got 3"),
    ('{"t": 1, "camera": "hall", "width": 640, "height": 480, "people": [{"keypoints": %s, "view": "up"}]}'
     % json.dumps([[0.5, 0.5, 0.9]] * 18), "people[0].view must be a rotation in whole degrees, got 'up'"),
    (b'{"t": 1, "camera": "h\xff\xfe", "width": 640, "height": 480, "people": []}', "not UTF-8 text"),
]


@pytest.mark.parametrize("bad, message", BAD_LINES, ids=[m[:40] for _, m in BAD_LINES])
def test_a_bad_value_is_refused_with_its_line_or_skipped(tmp_path, bad, message):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join([(GOOD % 0).encode(), bad if isinstance(bad, bytes) else bad.encode(),
                                 (GOOD % 2).encode()]) + b"\n")
    config = str(config_file(tmp_path))
    strict = run_cli("--config", config, "replay", str(path), "--strict")
    assert one_line(strict, 1) == "fallwatch: %s: line 2: %s" % (path, message)
    lenient = run_cli("--config", config, "replay", str(path))
    assert lenient.returncode == 0 and "Traceback" not in lenient.stderr, lenient.stderr
    warning, summary = lenient.stderr.splitlines()
    assert warning.endswith("WARNING fallwatch.replay: %s: line 2: %s; line skipped (replay --strict stops at it)"
                            % (path, message)), warning
    assert json.loads(summary)["frames_read"] == 2 and json.loads(summary)["lines_skipped"] == 1


def test_parts_that_are_nan_junk_or_far_outside_the_frame_count_as_not_found_and_the_person_is_kept():
    """Other pose estimators write NaN (or -1 confidences, or wild values) for a part they did
    not find; the line and the person stay, only those parts are missing."""
    from edge.replay import check_skeleton_line

    rows = [[0.5, 0.4 + 0.01 * i, 0.9] for i in range(18)]
    rows[3], rows[4], rows[10], rows[13] = [float("nan")] * 3, [1e300, 0.5, 0.9], [0.5, 0.5, -1.0], [0.5, 7.0, 0.9]
    line = json.dumps({"t": 1, "camera": "hall", "width": 640, "height": 480, "people": [{"keypoints": rows}]})
    kept = check_skeleton_line(line)["people"][0]["keypoints"]
    assert [kept[i] for i in (3, 4, 10, 13)] == [[0.0, 0.0, 0.0]] * 4
    assert [row for i, row in enumerate(kept) if i not in (3, 4, 10, 13)] == [
        row for i, row in enumerate(rows) if i not in (3, 4, 10, 13)]


# ------------------------------------------------------------------ part 4: outputs OpenCV cannot write


@pytest.mark.parametrize("command", [["detect"], ["model", "check"]])
def test_an_image_output_opencv_cannot_write_is_refused_before_the_model_runs(tmp_path, command):
    """The config names an empty models folder: had the model been opened first, the line would be
    about `fallwatch model fetch`."""
    image = shared_data("images", "astronaut.png")
    out = tmp_path / "a.txt"
    result = run_cli("--config", str(config_file(tmp_path, tmp_path / "no-models")),
                     *(command + [str(image), "--out", str(out)]))
    assert one_line(result, 2) == ("fallwatch: output image %s: OpenCV cannot write .txt files: name it .png or .jpg"
                                   % out)
    assert not out.exists() and result.stdout == ""
    folder = tmp_path / "no-such-folder" / "a.png"
    result = run_cli("--config", str(config_file(tmp_path, tmp_path / "no-models")),
                     *(command + [str(image), "--out", str(folder)]))
    assert one_line(result, 2) == "fallwatch: output image %s: no folder %s: create it first" % (folder, folder.parent)


@pytest.mark.parametrize("name", ["p.txt", "p.webm", "p"])
def test_a_preview_opencv_cannot_write_is_refused_before_the_video_is_read(tmp_path, name):
    clip = shared_data("gmdcsa24", "subject1", "ADL", "16.mp4")
    preview = tmp_path / name
    config = str(config_file(tmp_path, tmp_path / "no-models"))
    kind = preview.suffix or "extension-less"
    expected = ("fallwatch: preview video %s: cannot write %s files: name it .mp4, .m4v, .mov, .avi or .mkv"
                % (preview, kind))
    for args in (["replay", str(clip)], ["run", "--camera", str(clip)]):
        result = run_cli("--config", config, *(args + ["--preview", str(preview), "--events-out",
                                                       str(tmp_path / "e.jsonl")]))
        assert one_line(result, 2) == expected
        assert not preview.exists() and not any(p.name.startswith(".probe") for p in tmp_path.iterdir())


@pytest.mark.parametrize("name", ["p.mp4", "new/folder/p.avi", "p.MKV", "p.mov"])
def test_the_preview_check_passes_what_opencv_writes_and_leaves_nothing(tmp_path, name):
    """(tests/test_replay.py writes a real .mp4 preview through the CLI.)"""
    from edge.media import check_video_output

    assert check_video_output(tmp_path / name) == tmp_path / name
    assert list((tmp_path / name).parent.iterdir()) == []  # the scratch file is gone


# ------------------------------------------------------------------ part 4: evaluate's labels and its cache


def test_a_binary_labels_file_is_one_line(tmp_path):
    (tmp_path / "labels.csv").write_bytes(bytes(range(256)) * 4)
    result = run_cli("--config", str(config_file(tmp_path)), "evaluate", str(tmp_path))
    assert one_line(result, 2) == ("fallwatch: %s: is not UTF-8 text; expected a CSV file with the columns file, "
                                   "label, fall_start_s" % (tmp_path / "labels.csv"))


@pytest.mark.parametrize("text, message", [
    ("", "needs the columns file, label, fall_start_s on its first line"),
    ("file,label,fall_start_s\n", "lists no clips"),
    ("file,label,fall_start_s\nclip.mp4,fall\n", "line 2: needs a value in each of file, label, fall_start_s "
                                                  "(empty for adl)"),
    ("file,label,fall_start_s\nclip.mp4,fall,nan\n", "line 2: a fall needs fall_start_s in seconds from the "
                                                     "clip's start, got 'nan'"),
])
def test_bad_labels_are_one_line(tmp_path, text, message):
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "labels.csv").write_text(text)
    result = run_cli("--config", str(config_file(tmp_path)), "evaluate", str(tmp_path))
    assert one_line(result, 2) == "fallwatch: %s: %s" % (tmp_path / "labels.csv", message)


def test_a_json_report_that_cannot_be_written_is_refused_before_the_replay(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"not a video: had it been read, the error would be about it")
    (tmp_path / "labels.csv").write_text("file,label,fall_start_s\nclip.mp4,adl,\n")
    report = tmp_path / "missing" / "report.json"
    result = run_cli("--config", str(config_file(tmp_path)), "evaluate", str(tmp_path), "--json", str(report))
    assert one_line(result, 2) == "fallwatch: --json report %s: no folder %s: create it first" % (report,
                                                                                                  report.parent)


def test_a_damaged_evaluate_cache_is_recomputed_not_half_used(tmp_path):
    """A cached clip whose skeletons were damaged on disk is replayed again from the video (here
    the model is absent, so that replay stops at `fallwatch model fetch`: proof that the cache was
    not used); an intact cache needs no model at all."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "clip.mp4").write_bytes(b"the cache is keyed by these bytes")
    (data / "labels.csv").write_text("file,label,fall_start_s\nclip.mp4,fall,2.0\n")
    config = config_file(tmp_path, tmp_path / "no-models")
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = cache / ("clip-%s.jsonl" % skeleton_key(data / "clip.mp4", load_config(config, env={}), None))
    lines = fall_lines("evaluate")
    cached.write_text("\n".join(lines) + "\n")
    args = ("--config", str(config), "evaluate", str(data), "--cache", str(cache))
    intact = run_cli(*args)
    assert intact.returncode == 0, intact.stderr
    row = [line for line in intact.stdout.splitlines() if line.startswith("| clip.mp4 |")][0].split("|")
    assert row[2:4] == [" fall ", " 2.0 "] and 2.0 < float(row[4]) < 4.0  # the cached fall found, no model needed

    cached.write_text("\n".join(lines[:50] + ["{garbage"] + lines[50:]) + "\n")
    damaged = run_cli(*args)
    assert damaged.returncode == 1 and "Traceback" not in damaged.stderr, damaged.stderr
    warning, error = damaged.stderr.splitlines()
    assert warning.endswith("WARNING fallwatch.evaluate: clip.mp4: the cached skeletons are damaged (%s: line 51: "
                            "not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)))"
                            ": removing them and replaying the video" % cached), warning
    assert "fallwatch model fetch" in error and not cached.exists() and damaged.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["mqtt-test", "--timeout", "nan"], "argument --timeout: 'nan' is not a timeout: give seconds, 0.1 to 600"),
    (["mqtt-test", "--timeout", "-1"], "argument --timeout: '-1' is not a timeout: give seconds, 0.1 to 600"),
    (["evaluate", ".", "--max-fps", "nan"],
     "argument --max-fps: 'nan' is not a frame rate: give frames per second, 0 to 1000 (0 = every frame)"),
])
def test_a_number_argument_out_of_range_is_a_usage_error(tmp_path, args, message):
    """(mqtt-test --timeout nan raised ValueError inside socket.settimeout.)"""
    result = run_cli("--config", str(config_file(tmp_path)), *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "fallwatch %s: error: %s" % (args[0], message)
