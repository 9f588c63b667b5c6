"""fallwatch doctor: each check on real parts where they exist here (the real model on a real
frame, real video files, a real Mosquitto broker, the real OpenCV and ONNX Runtime, files faking
a Jetson's L4T release), and the CLI's report and exit status."""
from __future__ import annotations

import json
import types
from pathlib import Path

import cv2
import pytest

from conftest import REPO, run_cli, shared_data
from edge.health import doctor
from edge.health.board import Board, detect_board
from edge.health.checks import CheckResult, format_result
from edge.config import load_config

from mosquitto import Broker, broker, certs  # noqa: F401 (fixtures)
from mosquitto import write_config as write_broker_config
from test_install import L4T_35, make_jetson_root

JETSON = Board(model="NVIDIA Jetson Orin Nano Developer Kit", l4t=(35, 4, 1), l4t_source="test")
LAPTOP = Board(model=None, l4t=None, l4t_source=None)
TRT_FP16 = "engine:\n  backend: tensorrt\n  precision: fp16\n"


def write_config(folder: Path, text: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def write_mqtt_config(folder: Path, broker: Broker, user: str = "fallwatch") -> Path:
    return write_broker_config(folder, broker, cameras=("room1",), user=user, connect_timeout_s=3)


def config_for(folder: Path, uri: str = "", extra: str = "") -> object:
    """A config using the repository's models folder (the real fetched model) and ``uri``."""
    text = "paths:\n  models_dir: %s\n  state_dir: %s\n" % (REPO / "models", folder / "state")
    if uri:
        text += "cameras:\n  - name: room1\n    uri: %s\n" % uri
    return load_config(write_config(folder, text + extra), env={})


# ---------------------------------------------------------------- board, python, runtimes


def test_board_from_faked_l4t_files(tmp_path: Path) -> None:
    board = detect_board(root=str(make_jetson_root(tmp_path / "r", release=L4T_35)), env={})
    assert board.release == "R35.4.1" and board.jetpack == "5.1.2" and board.supported
    check = doctor.check_board(board, "tensorrt")
    assert check.status == doctor.OK and "L4T R35.4.1 (JetPack 5.1.2)" in check.message

    old = detect_board(root=str(tmp_path / "r"), env={"FALLWATCH_L4T_RELEASE": "R32.7.4"})
    check = doctor.check_board(old, "tensorrt")
    assert check.status == doctor.FAIL and "JetPack 5.1.x or 6.x" in check.fix

    assert doctor.check_board(LAPTOP, "tensorrt").status == doctor.FAIL
    assert doctor.check_board(LAPTOP, "onnxruntime").status == doctor.WARN


def test_numpy_2_on_a_jetson_fails() -> None:
    assert doctor.check_python(JETSON, "2.1.3").status == doctor.FAIL
    assert "numpy<2" in doctor.check_python(JETSON, "2.1.3").fix
    assert doctor.check_python(JETSON, "1.24.4").status == doctor.OK
    assert doctor.check_python(LAPTOP, "2.1.3").status == doctor.OK


def test_runtime_onnxruntime_is_found() -> None:
    import onnxruntime

    check = doctor.check_runtime("onnxruntime")
    assert check.status == doctor.OK and onnxruntime.__version__ in check.message


def test_runtime_tensorrt_is_not_ok_without_tensorrt() -> None:
    """No TensorRT on this machine: the check must never say ok (warn while the backend is not
    part of this version, fail once it is and cannot import TensorRT)."""
    check = doctor.check_runtime("tensorrt")
    assert check.status == doctor.FAIL and check.fix
    assert "pycuda" in check.message or "TensorRT" in check.message  # the thin modules say what is missing


def test_opencv_gstreamer_detection() -> None:
    real = "GStreamer:                   YES" in cv2.getBuildInformation()
    check = doctor.check_opencv(["csi://0"])
    assert check.status == (doctor.OK if real else doctor.FAIL)
    if not real:  # pip's OpenCV (this machine): fine for files and USB, not for CSI
        assert "csi://0" in check.message and "libopencv-python" in check.fix
        assert doctor.check_opencv(["/dev/video0"]).status == doctor.OK


def test_opencv_with_gstreamer_build_info() -> None:
    jetpack_cv2 = types.SimpleNamespace(__version__="4.5.4", getBuildInformation=lambda: "    GStreamer: YES (1.16.3)")
    check = doctor.check_opencv(["csi://0"], cv2=jetpack_cv2)
    assert check.status == doctor.OK and check.message == "OpenCV 4.5.4, GStreamer yes, FFmpeg no"


# ---------------------------------------------------------------- cameras and inference


def test_camera_from_a_real_video_file(tmp_path: Path) -> None:
    video = shared_data("gmdcsa24", "subject1", "Fall", "13.mp4")
    config = config_for(tmp_path, str(video))
    check, frame = doctor.check_camera(config.cameras[0])
    assert check.status == doctor.OK, check
    assert "%d frames" % doctor.CAMERA_FRAMES in check.message
    assert check.message.endswith("through OpenCV video file reader")  # the backend that opened it
    assert frame is not None and frame.ndim == 3


def test_camera_that_does_not_exist_fails_with_a_fix(tmp_path: Path) -> None:
    config = config_for(tmp_path, str(tmp_path / "missing.mp4"))
    check, frame = doctor.check_camera(config.cameras[0])
    assert check.status == doctor.FAIL and frame is None
    assert "missing.mp4" in check.message and "does not exist" in check.message and check.fix


def test_inference_on_a_real_frame(tmp_path: Path, model_onnx: Path) -> None:
    frame = cv2.imread(str(shared_data("images", "apollo11_crew.jpg")))
    check = doctor.check_inference(config_for(tmp_path), frame)
    assert check.status == doctor.OK, check
    assert check.message.startswith("openpose-mobilenet-thin on onnxruntime: ")
    assert "heatmaps 19x46x54" in check.message  # 368x432 input, stride 8, 18 parts + background


def test_inference_without_a_frame_or_a_model(tmp_path: Path) -> None:
    assert doctor.check_inference(config_for(tmp_path), None).status == doctor.WARN
    config = config_for(tmp_path, extra="model:\n  onnx: %s\n" % (tmp_path / "nope.onnx"))
    check = doctor.check_inference(config, cv2.imread(str(shared_data("images", "astronaut.png"))))
    assert check.status == doctor.FAIL and "cannot load the model" in check.message


def test_engine_not_needed_for_onnxruntime(tmp_path: Path) -> None:
    assert doctor.check_engine(config_for(tmp_path), JETSON).status == doctor.OK


def test_engine_check_for_tensorrt_is_never_a_fake_ok(tmp_path: Path, model_onnx: Path) -> None:
    config = config_for(tmp_path, extra=TRT_FP16)
    check = doctor.check_engine(config, JETSON)
    assert check.status == doctor.FAIL and "does not exist" in check.message, check  # no engine here
    assert "fallwatch-calibrate" in check.fix


ORIN_FACTS = dict(tensorrt_version="8.5.2.2", device_name="Orin", compute_capability="8.7", l4t_release="R35.4.1")


def fake_engine(tmp_path: Path, model: Path, facts: dict, precision: str = "fp16") -> Path:
    """Engine bytes (TensorRT cannot build one here) and the metadata fallwatch-calibrate writes beside it."""
    from edge.inference.engines.device import DeviceFacts
    from edge.inference.engines.metadata import make_metadata, metadata_path
    from edge.inference.models import sha256_bytes, sha256_file

    engine = tmp_path / "engines" / ("mobilenet_thin_368x432_%s.engine" % precision)
    engine.parent.mkdir(parents=True, exist_ok=True)
    data = b"serialized engine " * 100
    engine.write_bytes(data)
    meta = make_metadata(DeviceFacts(**facts), precision=precision, input_name="image", input_size=(368, 432),
                         batch=(1, 1, 3), model_file=model.name, model_sha256=sha256_file(model),
                         engine_bytes=len(data), engine_sha256=sha256_bytes(data))
    metadata_path(engine).write_bytes(meta.to_json())
    return engine


def test_engine_present_but_no_tensorrt_here_is_a_warning(tmp_path: Path, model_onnx: Path) -> None:
    fake_engine(tmp_path / "state", model_onnx, ORIN_FACTS)
    config = config_for(tmp_path, extra=TRT_FP16)
    check = doctor.check_engine(config, JETSON)
    assert check.status == doctor.WARN and "cannot compare it with this device" in check.message, check
    assert "fp16, TensorRT 8.5.2.2, Orin" in check.message


def test_engine_metadata_missing_fails(tmp_path: Path, model_onnx: Path) -> None:
    from edge.inference.engines.metadata import metadata_path

    engine = fake_engine(tmp_path / "state", model_onnx, ORIN_FACTS)
    metadata_path(engine).unlink()
    check = doctor.check_engine(config_for(tmp_path, extra=TRT_FP16), JETSON)
    assert check.status == doctor.FAIL and "no metadata file" in check.message, check


@pytest.mark.parametrize("device, status, words", [
    (ORIN_FACTS, doctor.OK, "fp16, TensorRT 8.5.2.2, built on this Orin"),
    (dict(ORIN_FACTS, device_name="Xavier", compute_capability="7.2"), doctor.FAIL, "compute capability 8.7"),
    (dict(ORIN_FACTS, tensorrt_version="8.6.2"), doctor.FAIL, "TensorRT 8.5.2.2 (this device has 8.6.2)"),
    (dict(ORIN_FACTS, l4t_release="R36.3.0"), doctor.FAIL, "L4T R35.4.1 = JetPack 5.1.2"),
])
def test_engine_against_this_device(tmp_path: Path, model_onnx: Path, monkeypatch, device: dict, status: str,
                                    words: str) -> None:
    """TensorRT cannot run here: the device's facts come from a stand-in for the thin module."""
    from edge.inference.engines import device as device_module
    from edge.inference.engines.device import DeviceFacts

    fake_engine(tmp_path / "state", model_onnx, ORIN_FACTS)
    monkeypatch.setattr(device_module, "current_device", lambda index=0: DeviceFacts(**device))
    check = doctor.check_engine(config_for(tmp_path, extra=TRT_FP16), JETSON)
    assert check.status == status and words in check.message, check
    if status == doctor.FAIL:
        assert check.fix.startswith("Rebuild it on this device: fallwatch-calibrate")
        assert "fallwatch-calibrate" not in check.message


def test_engine_fix_comes_from_the_errors_field(tmp_path: Path, model_onnx: Path, monkeypatch) -> None:
    """The fix is EngineError.fix, whatever the message says: no marker in the text, and a
    marker-like phrase in the message stays in the message."""
    from edge.inference.engines import EngineError
    from edge.inference.engines import device as device_module
    from edge.inference.engines import metadata
    from edge.inference.engines.device import DeviceFacts

    def refuse(*args: object, **kwargs: object) -> None:
        raise EngineError("the engine sulks. Rebuild it: not this", "coax it with fallwatch-calibrate --gently")

    monkeypatch.setattr(device_module, "current_device", lambda index=0: DeviceFacts(**ORIN_FACTS))
    monkeypatch.setattr(metadata, "check_engine", refuse)
    check = doctor.check_engine(config_for(tmp_path, extra=TRT_FP16), JETSON)
    assert (check.status, check.message, check.fix) == (
        doctor.FAIL, "the engine sulks. Rebuild it: not this", "coax it with fallwatch-calibrate --gently")


def test_engine_built_from_another_model_fails(tmp_path: Path, model_onnx: Path, monkeypatch) -> None:
    from edge.inference.engines import device as device_module
    from edge.inference.engines.device import DeviceFacts

    other = tmp_path / "other.onnx"
    other.write_bytes(b"another model")
    fake_engine(tmp_path / "state", other, ORIN_FACTS)
    monkeypatch.setattr(device_module, "current_device", lambda index=0: DeviceFacts(**ORIN_FACTS))
    check = doctor.check_engine(config_for(tmp_path, extra=TRT_FP16), JETSON)
    assert check.status == doctor.FAIL and "built from another model" in check.message, check


# ---------------------------------------------------------------- MQTT


def test_mqtt_disabled_is_a_warning(tmp_path: Path) -> None:
    check = doctor.check_mqtt(config_for(tmp_path))
    assert check.status == doctor.WARN and "mqtt.enabled" in check.fix


def test_mqtt_reachable_and_authorised(tmp_path: Path, broker: Broker) -> None:
    config = load_config(write_mqtt_config(tmp_path, broker), env=broker.env())
    check = doctor.check_mqtt(config)
    assert check.status == doctor.OK, check
    assert check.message.startswith("127.0.0.1:%d: " % broker.port)


def test_mqtt_wrong_password_fails_with_the_fix(tmp_path: Path, broker: Broker) -> None:
    config = load_config(write_mqtt_config(tmp_path, broker), env={"FALLWATCH_MQTT_PASSWORD": "wrong"})
    check = doctor.check_mqtt(config)
    assert check.status == doctor.FAIL and "refused the login" in check.message, check
    assert "wrong" not in check.message + check.fix
    assert "mqtt-test" in check.fix


def test_mqtt_fix_comes_from_the_errors_field(tmp_path: Path, monkeypatch) -> None:
    from edge.alerts import probe as mqttcheck
    from edge.alerts.client import ConnectFailure

    def fail(config: object, timeout_s: float) -> str:
        raise ConnectFailure("login", "login failed: odd; fix: not this", "do this")

    monkeypatch.setattr(mqttcheck, "check_connection", fail)
    config = load_config(write_config(tmp_path, "mqtt:\n  enabled: true\n  host: 127.0.0.1\n"))
    check = doctor.check_mqtt(config)
    assert check.status == doctor.FAIL and check.message.endswith(": login failed: odd; fix: not this"), check
    assert check.fix == "do this; `fallwatch mqtt-test` shows every step"


def test_mqtt_acl_denial_fails(tmp_path: Path, broker: Broker) -> None:
    """User readonly may log in but not publish: under MQTT 3.1.1 only the round trip shows it."""
    config = load_config(write_mqtt_config(tmp_path, broker, user="readonly"), env=broker.env("readonly"))
    check = doctor.check_mqtt(config)
    assert check.status == doctor.FAIL and "delivery failed" in check.message, check


def test_mqtt_broker_down_fails(tmp_path: Path, broker: Broker) -> None:
    path = write_mqtt_config(tmp_path, broker)
    broker.stop()
    check = doctor.check_mqtt(load_config(path, env=broker.env()))
    assert check.status == doctor.FAIL and "127.0.0.1:%d" % broker.port in check.message, check


# ---------------------------------------------------------------- disk, jtop, service


class Statvfs:
    def __init__(self, free_bytes: int) -> None:
        self.f_frsize, self.f_bavail = 4096, free_bytes // 4096


def test_disk_space_against_a_full_outbox(tmp_path: Path) -> None:
    config = config_for(tmp_path, extra="mqtt:\n  outbox:\n    max_events: 100000\n")
    need = 100000 * doctor.OUTBOX_BYTES_PER_EVENT + doctor.DISK_HEADROOM_BYTES
    assert doctor.check_disk(config, lambda p: Statvfs(need - 4096)).status == doctor.FAIL
    assert doctor.check_disk(config, lambda p: Statvfs(need + 4096)).status == doctor.WARN
    assert doctor.check_disk(config, lambda p: Statvfs(3 * need)).status == doctor.OK
    seen = []
    doctor.check_disk(config, lambda p: seen.append(p) or Statvfs(3 * need))
    assert seen == [str(tmp_path)]  # state/ does not exist yet: its nearest existing parent
    real = doctor.check_disk(config)
    assert str(tmp_path) in real.message and "MiB free" in real.message


def test_outbox_folder_and_integrity(tmp_path: Path) -> None:
    from damage import damage_pages, write_garbage
    from edge.alerts.outbox import Outbox

    config = config_for(tmp_path)
    outbox = tmp_path / "state" / "outbox.sqlite3"
    first = doctor.check_outbox(config)
    assert first.status == doctor.OK and "no outbox yet" in first.message and not (tmp_path / "state").exists()
    with Outbox(outbox) as box:
        for i in range(60):
            box.append("drv-%06d" % i, "room1", b'{"event_id":"drv-%06d","pad":"%s"}' % (i, b"k" * 700))
    good = doctor.check_outbox(config)
    assert good.status == doctor.OK and "passes the integrity check, 60 event(s) waiting" in good.message
    damage_pages(outbox)
    before = outbox.read_bytes()
    bad = doctor.check_outbox(config)
    assert bad.status == doctor.FAIL and "%s is damaged" % outbox in bad.message and "moves it aside" in bad.fix
    assert outbox.read_bytes() == before and not list(outbox.parent.glob("*.damaged-*"))  # doctor changes nothing
    write_garbage(outbox)
    assert doctor.check_outbox(config).status == doctor.FAIL
    outbox.unlink()
    (tmp_path / "state").rmdir()
    (tmp_path / "state").write_text("a file where the state folder should be")
    blocked = doctor.check_outbox(config)
    assert blocked.status == doctor.FAIL and "not a folder" in blocked.message and "paths.state_dir" in blocked.fix


def test_cli_doctor_reports_a_damaged_outbox(tmp_path: Path) -> None:
    from damage import write_garbage

    path = write_config(tmp_path, "paths:\n  state_dir: %s\ncameras: []\n" % (tmp_path / "state"))
    write_garbage(tmp_path / "state" / "outbox.sqlite3")
    proc = run_cli("doctor", "--config", str(path), "--only", "outbox")
    assert proc.returncode == 1 and "is damaged" in proc.stdout and "moves it aside" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_jtop(tmp_path: Path) -> None:
    laptop = doctor.check_jtop(LAPTOP)
    assert laptop.status == doctor.SKIP and laptop.message.startswith("not checked: not a Jetson")
    check = doctor.check_jtop(JETSON, run_dir=tmp_path)
    assert check.status == doctor.WARN and "jetson-stats" in check.fix


def test_jtop_on_a_jetson_through_the_jtop_double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """jetson-stats 4.2 (tests/fake_jtop.py): figures when its service runs; a socket left behind by a
    stopped service is a warning that says the stats will say unavailable."""
    import sys

    import fake_jtop
    from edge.health import jetson

    service = fake_jtop.JtopService()
    monkeypatch.setitem(sys.modules, "jtop", fake_jtop.module(service))
    monkeypatch.setattr(jetson, "_reader", jetson.JtopReader())
    (tmp_path / "jtop.sock").touch()
    service.start(fake_jtop.orin_data())
    check = doctor.check_jtop(JETSON, run_dir=tmp_path)
    assert (check.status, check.message) == (doctor.OK, "jtop running: 49 °C max, 6.4 W, GPU 64 %")
    assert not sys.modules["jtop"].made[0].ok(spin=True)  # doctor closed its client
    service.stop()
    check = doctor.check_jtop(JETSON, run_dir=tmp_path)
    assert check.status == doctor.WARN and "jetson: unavailable" in check.message and "group jtop" in check.fix


@pytest.mark.parametrize("state, status", [
    ({"LoadState": "loaded", "ActiveState": "active", "SubState": "running", "NRestarts": "0"}, doctor.OK),
    ({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed", "Result": "watchdog"}, doctor.FAIL),
    ({"LoadState": "loaded", "ActiveState": "activating", "SubState": "auto-restart", "NRestarts": "4"}, doctor.FAIL),
    ({"LoadState": "loaded", "ActiveState": "inactive", "SubState": "dead"}, doctor.WARN),
    ({"LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead"}, doctor.WARN),
])
def test_service_states(state: dict, status: str) -> None:
    check = doctor.check_service(state, JETSON)
    assert check.status == status
    if status == doctor.FAIL:
        assert "journalctl -u fallwatch" in check.fix


def test_service_env_file(tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.write_text("# comment\nFALLWATCH_MQTT_PASSWORD=\"s3cret\"\n\nOTHER = x\n")
    assert doctor.service_env(env) == {"FALLWATCH_MQTT_PASSWORD": "s3cret", "OTHER": "x"}
    assert doctor.service_env(tmp_path / "absent") == {}


def test_report_format_and_exit_status() -> None:
    checks = [CheckResult("board", doctor.OK, "fine"), CheckResult("mqtt", doctor.FAIL, "refused", "fix the password")]
    lines = format_result(checks[1]).splitlines()
    assert lines[0].split() == ["fail", "mqtt", "refused"] and lines[1].strip() == "fix: fix the password"
    assert lines[1].index("fix:") == lines[0].index("refused")
    assert format_result(checks[0]).splitlines() == ["ok    board          fine"]
    assert doctor.exit_status(checks) == 1 and doctor.exit_status(checks[:1]) == 0
    assert doctor.summary(checks).startswith("1 ok, 0 warn, 1 fail")


# ---------------------------------------------------------------- the command


def test_cli_reports_a_broken_config_and_exits_1(tmp_path: Path) -> None:
    path = write_config(tmp_path, "cameras:\n  - name: room1\n    fps: fast\n")
    proc = run_cli("doctor", "--config", str(path), "--no-mqtt", env={"FALLWATCH_ROOT": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("fail  config") and "cameras[0].fps" in lines[1]
    assert any(line.startswith("ok    python") for line in lines)
    assert "1 fail" in lines[-1]


def test_cli_json_on_a_video_file(tmp_path: Path, model_onnx: Path) -> None:
    video = shared_data("gmdcsa24", "subject1", "ADL", "10.mp4")
    path = write_config(tmp_path, "paths:\n  models_dir: %s\n  state_dir: %s\ncameras:\n  - name: room1\n"
                                  "    uri: %s\n" % (REPO / "models", tmp_path / "state", video))
    proc = run_cli("doctor", "--config", str(path), "--json", env={"FALLWATCH_ROOT": str(tmp_path)})
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["config"]["status"] == "ok"
    assert checks["board"]["status"] == "warn"  # not a Jetson: CPU only
    assert checks["mqtt"]["status"] == "warn"
    assert checks["camera room1"]["status"] == "ok", checks["camera room1"]
    assert checks["inference"]["status"] == "ok", checks["inference"]
    failed = [c for c in checks.values() if c["status"] == "fail"]
    assert proc.returncode == (1 if failed else 0), failed


def test_cli_fails_on_a_missing_camera(tmp_path: Path) -> None:
    path = write_config(tmp_path, "cameras:\n  - name: hall\n    uri: %s\n" % (tmp_path / "gone.mp4"))
    proc = run_cli("doctor", "--config", str(path), "--no-mqtt", env={"FALLWATCH_ROOT": str(tmp_path)})
    line = [l for l in proc.stdout.splitlines() if "camera hall" in l][0]
    assert line.startswith("fail") and "gone.mp4" in line and proc.returncode == 1


def test_camera_password_never_shown(tmp_path: Path) -> None:
    from mosquitto import free_port  # noqa: PLC0415

    config = config_for(tmp_path, "rtsp://admin:hunter2@127.0.0.1:%d/stream" % free_port())
    check, frame = doctor.check_camera(config.cameras[0], timeout_s=10)
    assert check.status == doctor.FAIL and frame is None
    assert "hunter2" not in check.message + check.fix and "127.0.0.1" in check.message


# ---------------------------------------------------------------- what `run` would trip on (issue 15, part 6)


def truncated_model(folder: Path, model_onnx: Path) -> Path:
    """The real model cut short, as an interrupted copy or a failing SD card leaves it."""
    damaged = folder / "damaged.onnx"
    damaged.write_bytes(model_onnx.read_bytes()[:300000])
    return damaged


def test_a_damaged_model_is_a_doctor_failure_and_runs_error_names_model_fetch(tmp_path: Path,
                                                                               model_onnx: Path) -> None:
    """doctor loads the model even with cameras: [] (and says that run cannot start without one);
    run refuses the same file in one line whose fix is `fallwatch model fetch`."""
    damaged = truncated_model(tmp_path, model_onnx)
    text = "paths:\n  models_dir: %s\n  state_dir: %s\nmodel:\n  onnx: %s\n" % (REPO / "models", tmp_path / "state",
                                                                             damaged)
    path = write_config(tmp_path, text + "cameras: []\n")
    proc = run_cli("doctor", "--config", str(path), "--no-mqtt", "--json", env={"FALLWATCH_ROOT": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["model"]["status"] == "fail" and str(damaged) in checks["model"]["message"]
    assert "fallwatch model fetch" in checks["model"]["fix"]
    assert checks["camera"]["status"] == "fail" and "no cameras configured" in checks["camera"]["message"]
    assert {"board", "python", "runtime", "opencv", "engine", "inference", "disk", "jtop", "service"} <= set(checks)

    video = shared_data("gmdcsa24", "subject1", "ADL", "10.mp4")
    path = write_config(tmp_path, text + "cameras:\n  - name: room1\n    uri: %s\n" % video)
    proc = run_cli("run", "--config", str(path), timeout=120)
    assert proc.returncode == 1
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("fallwatch: ")]
    assert str(damaged) in line and "fallwatch model fetch" in line
    assert "Traceback" not in proc.stderr


def test_the_default_model_damaged_in_models_dir_names_model_fetch(tmp_path: Path, model_onnx: Path) -> None:
    """The fetched model file itself damaged (no model.onnx in the config): same fix."""
    from edge.inference.models import default_onnx_path

    models = tmp_path / "models"
    target = default_onnx_path(models, (368, 432))
    target.parent.mkdir(parents=True)
    target.write_bytes(model_onnx.read_bytes()[:-1000])
    config = load_config(write_config(tmp_path, "paths:\n  models_dir: %s\n  state_dir: %s\n"
                                      % (models, tmp_path / "state")), env={})
    check = doctor.check_model(config)
    assert check.status == doctor.FAIL and str(target) in check.message, check
    assert "fallwatch model fetch" in check.fix

    from edge.errors import FallwatchError
    from edge.inference.model import open_pose_model

    with pytest.raises(FallwatchError) as err:  # what `run` gets: the fix as a field, not only in the text
        open_pose_model(config)
    assert "fallwatch model fetch" in err.value.fix and "model fetch" not in err.value.what
    assert check.fix == err.value.fix


def test_model_check_loads_and_runs_the_real_model(tmp_path: Path, model_onnx: Path) -> None:
    check = doctor.check_model(config_for(tmp_path))
    assert check.status == doctor.OK, check
    assert "openpose-mobilenet-thin (onnxruntime) loaded and ran" in check.message
    assert "heatmaps 19x46x54" in check.message


def test_no_cameras_still_checks_each_cameras_backend(tmp_path: Path, model_onnx: Path) -> None:
    """--no-cameras reads no frame, but a missing file or device, a file OpenCV cannot open, and a
    node that is not a device fail as they would at run; what looks right is skip, never ok."""
    video = shared_data("gmdcsa24", "subject1", "ADL", "10.mp4")
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video at all\n")
    cameras = [("clip", str(video)), ("gone", str(tmp_path / "gone.mp4")), ("junk", str(not_video)),
               ("usb", "/dev/video97"), ("nul", "/dev/null"), ("folder", "v4l2://%s" % tmp_path)]
    text = "paths:\n  models_dir: %s\n  state_dir: %s\ncameras:\n" % (REPO / "models", tmp_path / "state")
    text += "".join("  - name: %s\n    uri: %s\n" % c for c in cameras)
    proc = run_cli("doctor", "--config", str(write_config(tmp_path, text)), "--no-mqtt", "--no-cameras", "--json",
                   env={"FALLWATCH_ROOT": str(tmp_path)})
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    status = {name: checks["camera " + name]["status"] for name, _ in cameras}
    assert status == {"clip": "skip", "gone": "fail", "junk": "fail", "usb": "fail", "nul": "skip",
                      "folder": "fail"}, checks
    assert "opens as a video file" in checks["camera clip"]["message"]
    assert "does not exist" in checks["camera gone"]["message"]
    assert "cannot open" in checks["camera junk"]["message"] and "notes.mp4" in checks["camera junk"]["message"]
    assert "/dev/video97 does not exist" in checks["camera usb"]["message"] and checks["camera usb"]["fix"]
    assert "is not a device" in checks["camera folder"]["message"]
    assert checks["model"]["status"] == "ok", checks["model"]
    assert checks["inference"]["status"] == "warn"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def fake_gst_inspect(folder: Path, has_argus: bool) -> Path:
    """A stand-in for JetPack's gst-inspect-1.0 (no GStreamer with nvarguscamerasrc exists here)."""
    tool = folder / ("gst-inspect-%s" % has_argus)
    tool.write_text("#!/bin/sh\n[ \"$1\" = --exists ] && [ \"$2\" = nvarguscamerasrc ] && exit %d\nexit 2\n"
                    % (0 if has_argus else 1))
    tool.chmod(0o755)
    return tool


def test_csi_backend_needs_nvarguscamerasrc(tmp_path: Path) -> None:
    from edge.capture.sources import SourceError, probe_backend

    camera = config_for(tmp_path, "csi://0").cameras[0]
    gst = "    GStreamer: YES (1.16.3)"
    with pytest.raises(SourceError) as err:
        probe_backend(camera, build_info=gst, gst_inspect=str(fake_gst_inspect(tmp_path, False)))
    assert "nvarguscamerasrc" in err.value.what and "nvidia-l4t-gstreamer" in err.value.fix
    found = probe_backend(camera, build_info=gst, gst_inspect=str(fake_gst_inspect(tmp_path, True)))
    assert found == "OpenCV has GStreamer, GStreamer has nvarguscamerasrc"
    with pytest.raises(SourceError) as err:
        probe_backend(camera, build_info="    GStreamer: NO")
    assert "built without GStreamer" in err.value.what
