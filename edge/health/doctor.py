"""``fallwatch doctor``: can this device do the job, and what to fix — one line per check.

Each check is a small function returning a :class:`~edge.health.checks.CheckResult` (status ``ok`` /
``warn`` / ``fail``, a message, and for warn/fail the fix, taken from an error's ``fix`` field when
the error says it). :func:`run_checks` runs them in order, passing along what one
check learnt (a camera frame for the inference check). Hardware goes through the thin modules that
own it (edge.inference.engines.*, edge.capture.sources, edge.health.jetson, edge.alerts.probe); a check that cannot see what it
checks (no TensorRT here, say) says so as ``warn`` or ``fail``, never ``ok``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from edge.health.board import SUPPORTED_TEXT, Board, detect_board
from edge.health.checks import FAIL, OK, SKIP, WARN, CheckResult, any_failed

SERVICE = "fallwatch.service"
SERVICE_ENV_FILE = Path("/etc/fallwatch/env")
OUTBOX_BYTES_PER_EVENT = 4096      # an event's JSON (18 keypoints, bbox, ids) plus SQLite overhead, generous
DISK_HEADROOM_BYTES = 256 << 20    # engines, logs and SQLite's temporary files
CAMERA_TIMEOUT_S = 20.0
CAMERA_FRAMES = 5
MQTT_TIMEOUT_S = 5.0
BUILD_ENGINE_FIX = "build it on this device with fallwatch-calibrate (sudo ./install.sh does when none exists)"
MQTT_TEST_HINT = "`fallwatch mqtt-test` shows every step"


# ---------------------------------------------------------------- device and runtimes


def check_board(board: Board, backend: str) -> CheckResult:
    """Is this a Jetson with a supported JetPack? Off a Jetson only the CPU backend can work."""
    if board.supported:
        return CheckResult("board", OK, board.describe())
    if board.is_jetson:
        return CheckResult("board", FAIL, "%s is not supported" % board.describe(),
                           "flash JetPack 5.1.x or 6.x (%s) with SDK Manager or an SD card image" % SUPPORTED_TEXT)
    if backend == "tensorrt":
        return CheckResult("board", FAIL, "%s, but engine.backend is tensorrt" % board.describe(),
                           "run on a Jetson with JetPack 5.1.x or 6.x, or set engine.backend: onnxruntime")
    return CheckResult("board", WARN, "%s: the CPU backend (onnxruntime) works, TensorRT and CSI cameras do not"
                       % board.describe(), "nothing to fix for CPU use; for a deployment use a Jetson")


def check_python(board: Board, numpy_version: Optional[str] = None) -> CheckResult:
    """Python and NumPy: JetPack's OpenCV and TensorRT bindings are built against NumPy 1.x."""
    if numpy_version is None:
        import numpy

        numpy_version = numpy.__version__
    text = "Python %s, NumPy %s" % (sys.version.split()[0], numpy_version)
    if board.is_jetson and int(numpy_version.split(".")[0]) >= 2:
        return CheckResult("python", FAIL, text + ": JetPack's OpenCV and TensorRT need NumPy 1.x",
                           "/opt/fallwatch/venv/bin/pip install 'numpy<2' (install.sh pins it)")
    return CheckResult("python", OK, text)


def check_runtime(backend: str) -> CheckResult:
    """The inference runtime engine.backend needs: TensorRT + CUDA + pycuda, or ONNX Runtime."""
    if backend == "onnxruntime":
        try:
            import onnxruntime
        except ImportError as exc:
            return CheckResult("runtime", FAIL, "cannot import onnxruntime (%s)" % exc,
                               "pip install onnxruntime (or the [cpu] extra: pip install 'fallwatch[cpu]')")
        return CheckResult("runtime", OK, "ONNX Runtime %s (%s)"
                           % (onnxruntime.__version__, ", ".join(onnxruntime.get_available_providers())))
    from edge.inference.engines import EngineError
    from edge.inference.engines.cuda import import_cuda
    from edge.inference.engines.tensorrt import runtime_versions

    try:
        versions = runtime_versions()
        cuda_version = ".".join(str(v) for v in import_cuda().get_version())
    except EngineError as exc:  # the thin modules say what is missing and how to get it
        return CheckResult("runtime", FAIL, "TensorRT/CUDA/pycuda not usable: %s" % str(exc).replace("\n", " "),
                           "run sudo ./install.sh again: it installs JetPack's python3-libnvinfer, nvidia-cuda-dev and "
                           "cuda-toolkit from repo.download.nvidia.com/jetson (not Ubuntu's CUDA) and builds pycuda "
                           "against them (the venv needs --system-site-packages)")
    versions.update(CUDA=cuda_version, pycuda=getattr(sys.modules.get("pycuda"), "VERSION_TEXT", "?"))
    return CheckResult("runtime", OK, ", ".join("%s %s" % kv for kv in versions.items()))


def _is_csi(uri: str) -> bool:
    return uri.startswith("csi://")


def check_opencv(camera_uris: Sequence[str], cv2: Any = None) -> CheckResult:
    """OpenCV imports; GStreamer support is required for CSI cameras."""
    if cv2 is None:
        try:
            import cv2
        except ImportError as exc:
            return CheckResult("opencv", FAIL, "cannot import cv2 (%s)" % exc,
                               "on a Jetson: sudo apt-get install libopencv-python (JetPack's, with GStreamer; the venv must "
                               "see system packages); "
                               "elsewhere: pip install opencv-python-headless")
    from edge.capture.sources import opencv_has_ffmpeg, opencv_has_gstreamer

    gst = opencv_has_gstreamer(cv2.getBuildInformation())
    text = "OpenCV %s, GStreamer %s, FFmpeg %s" % (cv2.__version__, "yes" if gst else "no",
                                                   "yes" if opencv_has_ffmpeg(cv2.getBuildInformation()) else "no")
    csi = [u for u in camera_uris if _is_csi(u)]
    if gst:
        return CheckResult("opencv", OK, text)
    if csi:
        return CheckResult("opencv", FAIL, text + ": needed for %s" % ", ".join(csi),
                           "use JetPack's OpenCV (sudo apt-get install libopencv-python) and remove pip's opencv-python "
                           "from the venv: /opt/fallwatch/venv/bin/pip uninstall opencv-python opencv-python-headless")
    return CheckResult("opencv", OK, text + " (no CSI camera configured, so not needed)")


# ---------------------------------------------------------------- cameras, engine, inference


def _with_timeout(fn: Callable[[], Any], timeout_s: float) -> Tuple[bool, Any]:
    """(finished, result or exception) of fn() run in a daemon thread for at most timeout_s."""
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except Exception as exc:  # reported to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="doctor-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False, None
    return True, box.get("error", box.get("result"))


def _read_frames(camera: Any, count: int, timeout_s: float) -> Tuple[Any, int, str]:
    """Open ``camera`` as the daemon does (edge.capture.sources) and read ``count`` frames: (last frame,
    count read, the backend that opened it)."""
    from edge.capture import sources

    capture = sources.open_capture(camera, sources.SourceSettings(open_timeout_s=timeout_s,
                                                                  stall_timeout_s=timeout_s / 2))
    backend = getattr(capture, "backend", "") or "OpenCV video file reader"
    frame, n = None, 0
    try:
        for _ in range(count):
            image = capture.read()
            if image is None:
                break
            frame, n = image, n + 1
    finally:
        capture.release()
    return frame, n, backend


def _shown_uri(uri: str) -> str:
    """The URI without a password, for the report."""
    try:
        from edge.capture.sources import redact_uri
    except ImportError:
        return uri.split("@", 1)[-1] if "@" in uri else uri
    return redact_uri(uri)


def check_camera(camera: Any, service_active: bool = False, timeout_s: float = CAMERA_TIMEOUT_S,
                 frames: int = CAMERA_FRAMES, read: bool = True) -> Tuple[CheckResult, Any]:
    """One configured camera: first what its backend needs (edge.capture.sources.probe_backend: the
    file, the device node, GStreamer's CSI camera element, which backend a network camera would use
    and the GStreamer elements of its fallback), then, when ``read``, open it as the daemon does and
    read a few frames, naming the backend that opened it. Returns (check, last frame or None); without ``read`` a camera whose
    backend looks right is ``skip`` (not opened), never ``ok``."""
    from edge.capture.sources import SourceError, probe_backend

    name = "camera %s" % camera.name
    t0, uri = time.monotonic(), _shown_uri(camera.uri)
    busy = ("; the running fallwatch service probably holds it: stop it (sudo systemctl stop fallwatch) "
            "and run doctor again" if service_active and not camera.uri.startswith(("rtsp", "http")) else "")
    finished, result = _with_timeout(lambda: probe_backend(camera), timeout_s)
    if not finished:
        return CheckResult(name, FAIL, "%s: checking its backend took over %g s" % (uri, timeout_s),
                           _camera_fix(camera)), None
    if isinstance(result, SourceError):
        return CheckResult(name, FAIL, result.what.replace("\n", " "), result.fix or _camera_fix(camera)), None
    if isinstance(result, Exception):
        return CheckResult(name, FAIL, "%s: %s" % (uri, str(result).replace("\n", " ")), _camera_fix(camera)), None
    if not read:
        return CheckResult(name, SKIP, "%s: %s; no frame read (--no-cameras)" % (uri, result),
                           "run doctor without --no-cameras to read frames from it"), None
    finished, result = _with_timeout(lambda: _read_frames(camera, frames, timeout_s), timeout_s)
    if not finished:
        return CheckResult(name, FAIL, "%s: no frame within %g s" % (uri, timeout_s),
                           "check that the camera is connected and %s is right%s" % (_uri_key(camera), busy)), None
    if isinstance(result, Exception):
        return CheckResult(name, FAIL, str(result).replace("\n", " "),
                           _camera_fix(camera) + busy), None
    image, n, backend = result
    if n == 0 or image is None:
        return CheckResult(name, FAIL, "%s opened through %s but delivered no frame" % (uri, backend),
                           _camera_fix(camera) + busy), None
    shape = getattr(image, "shape", None)
    size = "%dx%d" % (shape[1], shape[0]) if shape is not None and len(shape) >= 2 else "?"
    return CheckResult(name, OK, "%s: %d frames of %s in %.1f s through %s"
                       % (uri, n, size, time.monotonic() - t0, backend)), image


def check_no_cameras(config: Any) -> CheckResult:
    """``cameras: []``: ``fallwatch run`` refuses to start without a camera."""
    return CheckResult("camera", FAIL, "no cameras configured in %s: `fallwatch run` will not start"
                       % (config.source or "the built-in defaults"),
                       "add at least one under cameras: (csi://N, /dev/videoN, rtsp://..., a video file; "
                       "config.yaml shows how)")


def _uri_key(camera: Any) -> str:
    return "the uri of camera %r in cameras" % camera.name


def _camera_fix(camera: Any) -> str:
    uri = camera.uri
    if _is_csi(uri):
        return ("check the ribbon cable and sensor (ls /dev/video*; sudo systemctl restart nvargus-daemon), "
                "and that OpenCV has GStreamer")
    if uri.startswith(("/dev/video", "v4l2://")):
        return ("check the device exists and is readable by group video (ls -l /dev/video*; v4l2-ctl "
                "--list-devices), and that width/height/fps are a mode it supports (v4l2-ctl --list-formats-ext)")
    if uri.startswith(("rtsp", "http")):
        return "check the URL, user and password in it, and that this device reaches the camera (ping its address)"
    return "check that the file %s exists and is a readable video" % uri


def check_engine(config: Any, board: Board) -> CheckResult:
    """The TensorRT engine file exists, is intact, and was built for this device, TensorRT and model."""
    if config.engine.backend != "tensorrt":
        return CheckResult("engine", OK, "engine.backend is %s: no TensorRT engine needed" % config.engine.backend)
    from edge.inference.engines import EngineError
    from edge.inference.engines.device import current_device
    from edge.inference.engines.metadata import check_engine as check_engine_file, read_metadata
    from edge.inference.engines.tensorrt import engine_path_for
    from edge.inference.model import input_hw, model_path

    try:
        model = model_path(config)
        path = engine_path_for(config, model)
    except EngineError as exc:
        return CheckResult("engine", FAIL, exc.what,
                           exc.fix or "run `fallwatch model fetch` (or set model.onnx), then build the engine")
    try:
        device = current_device()
    except EngineError as exc:  # no TensorRT/CUDA here: check what can be checked without them
        try:
            if not path.is_file():
                raise EngineError("the TensorRT engine %s does not exist." % path)
            meta = read_metadata(path)
        except EngineError as exc2:
            return CheckResult("engine", FAIL, exc2.what, exc2.fix or BUILD_ENGINE_FIX)
        return CheckResult("engine", WARN, "%s (%s, TensorRT %s, %s) present; cannot compare it with this device: %s"
                           % (path, meta.precision, meta.tensorrt_version, meta.device_name, exc.what.rstrip(".")),
                           "fix the runtime line first")
    try:
        meta = check_engine_file(path, device, model, input_hw(config), config.engine.precision)
    except EngineError as exc:
        return CheckResult("engine", FAIL, exc.what, exc.fix or BUILD_ENGINE_FIX)
    return CheckResult("engine", OK, "%s: %s, TensorRT %s, built on this %s for %s" % (
        path, meta.precision, meta.tensorrt_version, meta.device_name, meta.model_file))


MODEL_FIX = ("run `fallwatch model fetch` (it converts the default model again when its file is damaged), and "
             "on a Jetson build the engine (see README, On a Jetson)")


def load_model(config: Any) -> Tuple[CheckResult, Any]:
    """Load the configured model exactly as ``fallwatch run`` does (edge.inference.model.open_pose_model)
    and run it once on a blank frame through the pipeline's prepare, engine and decode stages, so a
    damaged ONNX file, a spec that does not fit the model or a missing runtime shows here rather than
    at ``run``. Returns (check, the open PoseModel or None); the caller closes it."""
    from edge.errors import FallwatchError
    from edge.inference.model import open_pose_model
    from edge.pipeline import CameraPipeline
    import numpy as np

    t0 = time.perf_counter()
    try:
        model = open_pose_model(config)
    except FallwatchError as exc:
        return CheckResult("model", FAIL, exc.what.replace("\n", " "), exc.fix or MODEL_FIX), None
    except Exception as exc:  # an unforeseen failure in a runtime: still one line
        return CheckResult("model", FAIL, "cannot load the model: %s: %s" % (type(exc).__name__, exc),
                           MODEL_FIX), None
    try:
        heatmaps, _, _ = CameraPipeline("doctor", config, model).maps(np.zeros((480, 640, 3), np.uint8))
    except Exception as exc:
        model.close()
        return CheckResult("model", FAIL, "the model loads but fails on a blank frame: %s"
                           % str(exc).replace("\n", " "), "check that model.spec describes this model; "
                           + MODEL_FIX), None
    return CheckResult("model", OK, "%s (%s) loaded and ran on a blank frame in %.1f s, heatmaps %s"
                       % (model.spec.name, config.engine.backend, time.perf_counter() - t0,
                          "x".join(str(d) for d in heatmaps.shape))), model


def check_model(config: Any) -> CheckResult:
    """:func:`load_model`, closing the model."""
    check, model = load_model(config)
    if model is not None:
        model.close()
    return check


def check_inference(config: Any, frame: Any, model: Any = None) -> CheckResult:
    """Run the configured model (``model``, or loaded here) on one real frame; report the time and the map shapes."""
    if frame is None:
        return CheckResult("inference", WARN, "skipped: no camera delivered a frame to run on",
                           "fix the camera first; then doctor runs the model on one of its frames")
    from edge.errors import FallwatchError
    from edge.pipeline import CameraPipeline
    from edge.inference.model import open_pose_model

    own = model is None
    if own:
        try:
            model = open_pose_model(config)
        except FallwatchError as exc:
            return CheckResult("inference", FAIL, "cannot load the model: %s" % exc.what, exc.fix or MODEL_FIX)
    try:
        pipeline = CameraPipeline("doctor", config, model)
        pipeline.maps(frame)  # the first run includes one-off set-up; time the second
        t0 = time.perf_counter()
        heatmaps, pafs, _ = pipeline.maps(frame)
        ms = (time.perf_counter() - t0) * 1000.0
    except Exception as exc:
        return CheckResult("inference", FAIL, "the model failed on a camera frame: %s" % str(exc).replace("\n", " "),
                           "run `fallwatch model check IMAGE` for details; rebuild the engine if it was built "
                           "elsewhere")
    finally:
        if own:
            model.close()
    return CheckResult("inference", OK, "%s on %s: %.0f ms for one frame, heatmaps %s"
                       % (model.spec.name, config.engine.backend, ms, "x".join(str(d) for d in heatmaps.shape)))


# ---------------------------------------------------------------- MQTT, disk, jtop, service


def check_mqtt(config: Any) -> CheckResult:
    """Connect, log in, publish to the broker and get the event back (edge.alerts.probe, as ``mqtt-test``)."""
    if not config.mqtt.enabled:
        return CheckResult("mqtt", WARN, "mqtt.enabled is false: alerts go to the log only",
                           "set mqtt.enabled: true and mqtt.host (and user/password) in the configuration")
    from edge.alerts.probe import check_connection
    from edge.alerts.client import ConnectFailure

    where = "%s:%d" % (config.mqtt.host, config.mqtt.port)
    try:
        detail = check_connection(config, timeout_s=MQTT_TIMEOUT_S)
    except ImportError as exc:
        return CheckResult("mqtt", FAIL, "cannot load the MQTT client (%s)" % exc, "pip install paho-mqtt (>= 2.0)")
    except ConnectFailure as exc:
        return CheckResult("mqtt", FAIL, "%s: %s" % (where, exc.what.replace("\n", " ")),
                           (exc.fix + "; " if exc.fix else "") + MQTT_TEST_HINT)
    except Exception as exc:  # a bug or an unforeseen failure: still one line
        return CheckResult("mqtt", FAIL, "%s: %s" % (where, str(exc).replace("\n", " ")), MQTT_TEST_HINT)
    return CheckResult("mqtt", OK, "%s: %s" % (where, detail or "connected, logged in, publish acknowledged"))


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk(config: Any, statvfs: Callable[[str], Any] = os.statvfs) -> CheckResult:
    """Free space where the outbox lives, against what a full outbox (mqtt.outbox.max_events) needs."""
    outbox = config.mqtt.outbox.file or Path(config.paths.state_dir) / "outbox.sqlite3"
    where = _existing_parent(Path(outbox).parent)
    st = statvfs(str(where))
    free = st.f_bavail * st.f_frsize
    need = config.mqtt.outbox.max_events * OUTBOX_BYTES_PER_EVENT + DISK_HEADROOM_BYTES
    text = "%s: %.0f MiB free, a full outbox (%d events) needs about %.0f MiB" % (
        where, free / 2 ** 20, config.mqtt.outbox.max_events, need / 2 ** 20)
    if free < need:
        return CheckResult("disk", FAIL, text, "free space on that file system, or lower mqtt.outbox.max_events")
    if free < 2 * need:
        return CheckResult("disk", WARN, text, "free some space soon: the outbox grows while the broker is unreachable")
    return CheckResult("disk", OK, text)


def check_outbox(config: Any) -> CheckResult:
    """The state folder is writable and the outbox file opens and passes SQLite's integrity check
    (read-only: a damaged file is left for the daemon to move aside and salvage)."""
    from edge.alerts.salvage import OutboxFileError, check_file

    path = Path(config.mqtt.outbox.file or Path(config.paths.state_dir) / "outbox.sqlite3")
    try:
        return CheckResult("outbox", OK, check_file(path))
    except OutboxFileError as exc:
        return CheckResult("outbox", FAIL, exc.what, exc.fix)


def check_jtop(board: Board, run_dir: Path = Path("/run")) -> CheckResult:
    """jetson-stats: the jtop service feeds the stats topic with temperatures and power. Off a
    Jetson nothing of it can be checked, and the check says so (skip)."""
    if not board.is_jetson:
        return CheckResult("jtop", SKIP, "not checked: not a Jetson, so no jtop.service to read (the stats carry no "
                           "jetson figures here)", "nothing to fix off a Jetson; on the device doctor reads jtop")
    fix = "sudo pip3 install -U jetson-stats, then sudo systemctl restart jtop.service (or reboot)"
    if importlib.util.find_spec("jtop") is None:
        return CheckResult("jtop", WARN, "jetson-stats is not installed: no temperatures or power in the stats", fix)
    if not (run_dir / "jtop.sock").exists():
        return CheckResult("jtop", WARN, "jtop.service is not running (%s missing)" % (run_dir / "jtop.sock"),
                           "sudo systemctl enable --now jtop.service")
    from edge.health import jetson

    try:
        stats = jetson.read_stats()
    finally:
        jetson.close()
    if not isinstance(stats, dict) or not stats:
        return CheckResult("jtop", WARN, "jtop is installed but gave no figures (see the log above): the stats "
                           "will say jetson: %s" % jetson.UNAVAILABLE,
                           "add this user to group jtop (sudo usermod -aG jtop $USER), or " + fix)
    temps = stats.get("temperature_c") or {}
    hottest = max(temps.values()) if temps else None
    return CheckResult("jtop", OK, "jtop running: %s" % ", ".join(
        s for s in ("%.0f °C max" % hottest if hottest is not None else "",
                    "%.1f W" % stats["power_w"] if "power_w" in stats else "",
                    "GPU %.0f %%" % stats["gpu_load_pct"] if "gpu_load_pct" in stats else "") if s) or "stats read")


def service_state(systemctl: Optional[str] = None) -> Optional[Dict[str, str]]:
    """``systemctl show`` of the service (LoadState, ActiveState, SubState, Result, NRestarts), or None
    when systemd is not running here."""
    systemctl = systemctl or shutil.which("systemctl")
    if systemctl is None or not Path("/run/systemd/system").is_dir():
        return None
    try:
        proc = subprocess.run([systemctl, "show", SERVICE, "-p", "LoadState,ActiveState,SubState,Result,NRestarts"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def check_service(state: Optional[Mapping[str, str]], board: Board) -> CheckResult:
    """Is fallwatch.service installed, and running (READY) or failing?"""
    if state is None:
        if board.is_jetson:
            return CheckResult("service", WARN, "systemd is not running here: cannot see %s" % SERVICE,
                               "run doctor on the device itself, not in a container or chroot")
        return CheckResult("service", OK, "no systemd here (not a Jetson): the service is not used")
    if state.get("LoadState") != "loaded":
        return CheckResult("service", WARN, "%s is not installed" % SERVICE,
                           "sudo ./install.sh (see README, On a Jetson)")
    active, sub = state.get("ActiveState", "?"), state.get("SubState", "?")
    restarts = state.get("NRestarts", "0")
    text = "%s %s/%s, restarted %s times" % (SERVICE, active, sub, restarts)
    if active == "active":
        return CheckResult("service", OK, text)
    if active == "failed" or sub == "auto-restart":
        return CheckResult("service", FAIL, text + " (result: %s)" % state.get("Result", "?"),
                           "journalctl -u fallwatch -n 50 shows why; fix it, then sudo systemctl reset-failed "
                           "fallwatch && sudo systemctl restart fallwatch")
    return CheckResult("service", WARN, text, "sudo systemctl enable --now fallwatch")


# ---------------------------------------------------------------- running and reporting


def service_env(path: Path = SERVICE_ENV_FILE) -> Dict[str, str]:
    """KEY=value lines of the service's EnvironmentFile (when readable), for the MQTT password."""
    env: Dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return env
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip('"').strip("'")
    return env


CHECK_NAMES = ("board", "python", "runtime", "opencv", "camera", "engine", "model", "inference", "mqtt", "disk",
               "outbox", "jtop", "service")


def run_checks(config: Any, board: Optional[Board] = None, cameras: bool = True,
               mqtt: bool = True, service: Optional[Mapping[str, str]] = None,
               progress: Optional[Callable[[CheckResult], None]] = None,
               only: Optional[Sequence[str]] = None) -> List[CheckResult]:
    """The checks of :data:`CHECK_NAMES` (or those in ``only``), in order, for ``config``;
    ``progress(check)`` sees each as it finishes."""
    board = board or detect_board()
    wanted = set(only or CHECK_NAMES)
    state = (service if service is not None else service_state()) if wanted & {"camera", "service"} else None
    service_active = bool(state) and state.get("ActiveState") == "active"
    checks: List[CheckResult] = []

    def add(check: CheckResult) -> None:
        checks.append(check)
        if progress:
            progress(check)

    backend = config.engine.backend
    steps: List[Tuple[str, Callable[[], CheckResult]]] = [
        ("board", lambda: check_board(board, backend)),
        ("python", lambda: check_python(board)),
        ("runtime", lambda: check_runtime(backend)),
        ("opencv", lambda: check_opencv([c.uri for c in config.cameras])),
    ]
    for name, step in steps:
        if name in wanted:
            add(step())
    frame = None
    if "camera" in wanted and not config.cameras:
        add(check_no_cameras(config))
    if wanted & {"camera", "inference"}:
        for camera in config.cameras:
            if not cameras and "camera" not in wanted:
                break
            check, image = check_camera(camera, service_active=service_active, read=cameras)
            if "camera" in wanted:
                add(check)
            frame = image if frame is None else frame
    if "engine" in wanted:
        add(check_engine(config, board))
    model = None
    try:
        if wanted & {"model", "inference"}:
            loaded, model = load_model(config)
            if "model" in wanted:
                add(loaded)
        if "inference" in wanted:
            if not cameras:
                add(CheckResult("inference", WARN, "skipped (--no-cameras)", "run doctor without --no-cameras"))
            elif model is None and frame is not None:
                add(CheckResult("inference", FAIL, "not run, the model does not load: %s" % loaded.message,
                                loaded.fix))
            else:
                add(check_inference(config, frame, model))
    finally:
        if model is not None:
            model.close()
    if mqtt and "mqtt" in wanted:
        add(check_mqtt(config))
    for name, step in (("disk", lambda: check_disk(config)), ("outbox", lambda: check_outbox(config)),
                       ("jtop", lambda: check_jtop(board)),
                       ("service", lambda: check_service(state, board))):
        if name in wanted:
            add(step())
    return checks


def summary(checks: Sequence[CheckResult]) -> str:
    counts = {s: sum(1 for c in checks if c.status == s) for s in (OK, WARN, FAIL)}
    if counts[FAIL]:
        verdict = "this device cannot do the job yet: fix the failures above"
    else:
        verdict = "nothing failed" + (" (read the warnings)" if counts[WARN] else "")
    return "%d ok, %d warn, %d fail: %s" % (counts[OK], counts[WARN], counts[FAIL], verdict)


def exit_status(checks: Sequence[CheckResult]) -> int:
    """1 when any check failed, else 0."""
    return 1 if any_failed(checks) else 0
