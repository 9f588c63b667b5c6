"""What the command line tells a user about bad input, through the real CLI: one clean line, without
OpenCV's or FFmpeg's own messages before it, and help texts that say what the command does."""
from __future__ import annotations

import shutil
from pathlib import Path

from conftest import MODELS_DIR, run_cli, shared_data

NATIVE = ("moov atom", "[ WARN", "[ERROR", "[OPENCV")


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("paths:\n  models_dir: %s\n  state_dir: %s\n" % (MODELS_DIR, tmp_path / "state"))
    return path


def _truncated_mp4(tmp_path: Path) -> Path:
    """A real clip cut short before its index (the moov atom sits at the end): a copy interrupted mid-way."""
    clip = tmp_path / "cut.mp4"
    clip.write_bytes(shared_data("gmdcsa24", "subject1", "Fall", "13.mp4").read_bytes()[:200000])
    return clip


def _bad_inputs(tmp_path: Path) -> dict:
    missing = tmp_path / "missing.jpg"
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(b"\x89PNG\r\n\x1a\n and then garbage")
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image\n")
    return {"missing": missing, "broken_png": broken_png, "notes": notes}


def test_native_opencv_and_ffmpeg_messages_stay_off_the_terminal(tmp_path: Path, model_onnx: Path) -> None:
    config = str(_config(tmp_path))
    clip = _truncated_mp4(tmp_path)
    proc = run_cli("--config", config, "replay", str(clip))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["fallwatch: video file %s is one OpenCV cannot open (empty, truncated, or a "
                                        "format its FFmpeg does not decode?)" % clip], proc.stderr
    for name, image in dict(_bad_inputs(tmp_path), video=clip).items():
        proc = run_cli("--config", config, "detect", str(image))
        assert proc.returncode == 1 and proc.stdout == "", name
        assert proc.stderr.splitlines() == ["fallwatch: cannot read %s as an image (missing file or unknown format)"
                                            % image], (name, proc.stderr)


def test_native_messages_come_back_at_debug_and_when_the_user_asks(tmp_path: Path, model_onnx: Path) -> None:
    """The messages above exist (so the quiet is fallwatch's doing), and a user's own setting wins."""
    config = str(_config(tmp_path))
    clip = _truncated_mp4(tmp_path)
    debug = run_cli("--config", config, "--log-level", "debug", "replay", str(clip))
    assert debug.returncode == 1 and "moov atom not found" in debug.stderr
    own = run_cli("--config", config, "replay", str(clip),
                  env={"OPENCV_FFMPEG_LOGLEVEL": "16", "OPENCV_LOG_LEVEL": "WARNING"})
    assert own.returncode == 1 and "moov atom not found" in own.stdout + own.stderr  # OpenCV 5 prints it on stdout
    missing = _bad_inputs(tmp_path)["missing"]
    debug = run_cli("--config", config, "--log-level", "debug", "detect", str(missing))
    assert debug.returncode == 1 and "imread_" in debug.stderr


def test_model_fetch_converts_a_damaged_model_again_as_its_help_says(tmp_path: Path, model_onnx: Path) -> None:
    """`model fetch --help` says a damaged converted file is converted again, and it is (from the
    cached graph_opt.pb: nothing is downloaded); a sound file is left as it is."""
    from edge.inference.models import default_onnx_path, model_dir

    help_text = " ".join(run_cli("model", "fetch", "--help").stdout.split())
    assert "Does nothing when the converted file is already there and matches the checksum" in help_text
    assert "a damaged, truncated or partly written one is converted again" in help_text

    models = tmp_path / "models"
    model_dir(models).mkdir(parents=True)
    shutil.copy(str(model_dir(MODELS_DIR) / "graph_opt.pb"), str(model_dir(models) / "graph_opt.pb"))
    config = tmp_path / "config.yaml"
    config.write_text("paths:\n  models_dir: %s\nmodel:\n  input_height: 64\n  input_width: 64\n" % models)
    target = default_onnx_path(models, (64, 64))
    first = run_cli("--config", str(config), "model", "fetch")
    assert first.returncode == 0, first.stderr
    good = target.read_bytes()
    target.write_bytes(good[: len(good) // 2])
    again = run_cli("--config", str(config), "model", "fetch")
    assert again.returncode == 0, again.stderr
    assert "using cached" in again.stderr and "nothing to do" not in again.stderr
    assert target.read_bytes() == good
    third = run_cli("--config", str(config), "model", "fetch")
    assert "nothing to do" in third.stderr and target.read_bytes() == good


def test_run_on_a_file_warns_once_when_it_drops_most_frames(tmp_path: Path, model_onnx: Path) -> None:
    """`run --camera FILE` plays the file at its own rate (60 fps here, beyond any CPU): one WARNING
    that names `fallwatch replay` and realtime: false. The same file with realtime: false loses no
    frame and gets no warning."""
    from test_sources import make_clip

    clip = make_clip(tmp_path / "fast.avi", frames=60, fps=60)
    config = _config(tmp_path)
    proc = run_cli("--config", str(config), "run", "--camera", str(clip), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line and "frames of video file" in line]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert "fallwatch replay %s" % clip in warnings[0] and "realtime: false" in warnings[0]

    config.write_text(config.read_text() + "cameras:\n  - name: cam\n    uri: %s\n    realtime: false\n    max_fps: 5\n" % clip)
    proc = run_cli("--config", str(config), "run", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frames of video file" not in proc.stderr
