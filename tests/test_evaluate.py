"""`fallwatch evaluate`: labelled clips in, a per-clip table and totals out, skeletons cached."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import MODELS_DIR, run_cli, shared_data
from edge.evaluate import ClipResult, EvaluateError, format_table, read_labels, totals


def _dataset(tmp_path):
    root = shared_data("gmdcsa24")
    data = tmp_path / "data"
    for clip in ("subject1/Fall/14.mp4", "subject1/ADL/16.mp4"):
        (data / clip).parent.mkdir(parents=True, exist_ok=True)
        (data / clip).symlink_to(root / clip)
    (data / "labels.csv").write_text("file,label,fall_start_s,clip_s,description\n"
                                     "subject1/Fall/14.mp4,fall,0.3,5,backward fall\n"
                                     "subject1/ADL/16.mp4,adl,,3,picking up a phone\n")
    return data


def test_evaluate_replays_once_then_reuses_the_cached_skeletons(tmp_path, model_onnx):
    data, cache = _dataset(tmp_path), tmp_path / "cache"
    config = tmp_path / "config.yaml"
    config.write_text("paths:\n  models_dir: %s\n" % MODELS_DIR)
    args = ("--config", str(config), "--log-level", "info", "evaluate", str(data), "--cache", str(cache),
            "--max-fps", "3", "--json", str(tmp_path / "out.json"))
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "replaying the video" in first.stderr and len(list(cache.glob("*.jsonl"))) == 2
    assert "| subject1/Fall/14.mp4 | fall | 0.3 |" in first.stdout and "recall" in first.stdout
    # a second run with other fall thresholds only re-runs detection on the cached skeletons
    config.write_text("paths:\n  models_dir: %s\nfall:\n  long_lie_s: 5\n" % (tmp_path / "no-models-here"))
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert "replaying the video" not in second.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert [c["file"] for c in report["clips"]] == ["subject1/Fall/14.mp4", "subject1/ADL/16.mp4"]
    assert set(report["totals"]) >= {"recall", "false_alerts_per_adl_clip", "median_latency_s", "worst_latency_s"}
    # what the rotated views cost is kept with the skeletons: engine views per processed frame
    # (1 upright + 2 rotated while the policy suspects a fall), the same from the cache
    fall_views, adl_views = (c["views"] for c in report["clips"])
    frames = [sum(1 for line in path.read_text().splitlines() if line.strip()) for path in sorted(cache.glob("*.jsonl"))]
    assert sorted([fall_views["frames"], adl_views["frames"]]) == sorted(frames)
    assert 1.0 <= adl_views["views_per_frame"] <= fall_views["views_per_frame"] <= 3.0
    assert fall_views["views_per_frame"] > 1.0 and fall_views["reasons"]
    assert report["totals"]["views_per_frame_falls"] == fall_views["views_per_frame"]
    assert "engine views per frame: fall clips %.2f" % fall_views["views_per_frame"] in second.stdout


def test_the_cache_key_follows_the_skeleton_code_and_settings(tmp_path):
    """A cached clip is stale when the code that made its skeletons (or a setting before fall
    detection) changed; fall thresholds do not matter."""
    from edge import evaluate as ev
    from edge.config import load_config

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really a video")
    base = load_config(None, env={})
    key = ev.skeleton_key(video, base, None)
    for name, text in (("fall", "fall:\n  long_lie_s: 5\n"), ("tracker", "tracker:\n  min_hits: 2\n")):
        path = tmp_path / (name + ".yaml")
        path.write_text(text)
        other = ev.skeleton_key(video, load_config(path, env={}), None)
        assert (other == key) == (name == "fall"), name
    assert ev.skeleton_key(video, base, 5.0) != key
    # a model file rebuilt at the path the config names, and a spec file edited in place
    model, spec = tmp_path / "my.onnx", tmp_path / "my-spec.yaml"
    model.write_bytes(b"model one")
    spec.write_text((Path(ev.__file__).parent / "inference" / "specs" / "openpose-mobilenet-thin.yaml").read_text())
    named = tmp_path / "named.yaml"
    named.write_text("model:\n  onnx: %s\n  spec: %s\n" % (model, spec))
    first = ev.skeleton_key(video, load_config(named, env={}), None)
    assert ev.skeleton_key(video, load_config(named, env={}), None) == first
    model.write_bytes(b"model two, longer")
    rebuilt = ev.skeleton_key(video, load_config(named, env={}), None)
    spec.write_text(spec.read_text() + "\n# edited\n")
    assert len({key, first, rebuilt, ev.skeleton_key(video, load_config(named, env={}), None)}) == 4
    code = _package_copy(tmp_path)
    before = ev.code_digest(code)
    (code / "inference" / "specs" / "a.yaml").write_text("x: 1\n")
    after_spec = ev.code_digest(code)
    _append(code / "track.py", "# changed")
    assert len({before, after_spec, ev.code_digest(code)}) == 3


def _package_copy(tmp_path: Path) -> Path:
    from edge import evaluate as ev

    code = tmp_path / "edge"
    shutil.copytree(str(Path(ev.__file__).parent), str(code), ignore=shutil.ignore_patterns("__pycache__"))
    return code


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


def test_the_skeleton_code_is_found_from_the_imports(tmp_path):
    """Every module the skeleton-making code imports counts, found anew each time: a new module,
    one imported inside a function, one moved into a folder; fall detection does not."""
    from edge import evaluate as ev

    code = _package_copy(tmp_path)
    files = {p.relative_to(code).as_posix() for p in ev.skeleton_code(code)}
    assert {"replay.py", "pipeline.py", "capture/video.py", "inference/preprocess.py", "inference/model.py",
            "inference/engines/onnxruntime.py", "parse.py", "inference/views.py", "track.py", "alerts/sinks.py",
            "inference/specs/__init__.py", "inference/specs/openpose-mobilenet-thin.yaml"} <= files
    assert "fall.py" not in files and "alerts/publisher.py" not in files and "cli.py" not in files
    key = ev.code_digest(code)
    _append(code / "fall.py", "# fall thresholds tuned: the cached skeletons still hold")
    assert ev.code_digest(code) == key
    for stage in ("inference/preprocess.py", "inference/engines/onnxruntime.py", "capture/video.py"):
        _append(code / stage, "# changed")
        assert ev.code_digest(code) != key, stage
        key = ev.code_digest(code)
    (code / "helper.py").write_text("SCALE = 1.0\n")
    assert ev.code_digest(code) == key  # imported by nobody yet
    _append(code / "parse.py", "def _scale():\n    from .helper import SCALE\n    return SCALE")
    key = ev.code_digest(code)
    _append(code / "helper.py", "SCALE = 2.0")
    assert ev.code_digest(code) != key
    (code / "tracking").mkdir()
    (code / "tracking" / "__init__.py").write_text("")
    (code / "track.py").rename(code / "tracking" / "track.py")
    for module in code.rglob("*.py"):
        module.write_text(module.read_text().replace("from edge.track import", "from edge.tracking.track import"))
    assert "tracking/track.py" in {p.relative_to(code).as_posix() for p in ev.skeleton_code(code)}
    key = ev.code_digest(code)
    _append(code / "tracking" / "track.py", "# changed")
    assert ev.code_digest(code) != key


def test_bad_labels_are_a_usage_error(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label,fall_start_s\nnope.mp4,fall,1.0\n")
    with pytest.raises(EvaluateError, match="nope.mp4 does not exist"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label,fall_start_s\nlabels.csv,maybe,\n")
    with pytest.raises(EvaluateError, match="neither fall nor adl"):
        read_labels(tmp_path)
    result = run_cli("evaluate", str(tmp_path / "missing"))
    assert result.returncode == 2 and "labels.csv" in result.stderr


def test_totals_count_recall_false_alerts_and_latency():
    results = [ClipResult("a", "fall", 1.0, 2.5, 1, []), ClipResult("b", "fall", 2.0, None, 0, []),
               ClipResult("c", "fall", 3.0, 2.8, 1, []),  # within the labelling tolerance
               ClipResult("d", "adl", None, 4.0, 2, []), ClipResult("e", "adl", None, None, 0, [])]
    t = totals(results)
    assert t["recall"] == round(2 / 3, 3) and t["false_alerts_per_adl_clip"] == 1.0
    assert t["median_latency_s"] == 0.65 and t["worst_latency_s"] == 1.5
    assert "| b | fall | 2.0 | - | - | 0 | - |" in format_table(results)
