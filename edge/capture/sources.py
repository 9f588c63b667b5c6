"""Cameras: one URI scheme per kind, a capture thread per camera keeping only the newest frame.

URIs (as in jetson-utils):

* ``csi://N`` — a MIPI CSI camera through GStreamer (``nvarguscamerasrc sensor-id=N ! nvvidconv
  ! appsink``), opened by OpenCV; needs an OpenCV built with GStreamer (JetPack's, not pip's).
* ``v4l2:///dev/videoN`` or ``/dev/videoN`` — a USB/V4L2 camera; MJPEG is asked for (most USB
  cameras give full frame rates only in MJPEG), the camera keeps its own format otherwise.
* ``rtsp://``, ``rtsps://``, ``http(s)://`` — network streams through OpenCV's FFmpeg backend,
  with open and read timeouts so a dead stream fails instead of hanging. JetPack's OpenCV may have
  no FFmpeg: an ``rtsp(s)://`` stream FFmpeg cannot open is opened through GStreamer instead when
  OpenCV has it (:func:`rtsp_pipeline`: ``nvv4l2decoder`` on a Jetson, ``avdec_h26x`` elsewhere;
  H.265 when the camera's ``rtsp_codec`` says so, or with ``auto`` when the URI names h265/hevc).
* anything else — a video file, played at its own frame rate (``loop: true`` starts it again).

A :class:`CameraSource` runs capture in its own thread: it reopens a camera that fails or ends
with exponential backoff, notices a stream that stalls (no frame for ``stall_timeout_s``) and
abandons the stuck reader for a fresh one, and reports its state in :meth:`CameraSource.status`.
Every :class:`Frame` carries its capture time.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, List, Optional, Tuple, Union

import cv2
import numpy as np

from edge.errors import FallwatchError
from edge.capture.video import VideoError, VideoReader, correct_orientation, usable_fps

log = logging.getLogger("fallwatch.sources")

# states of a camera, as reported in its status
CONNECTING, STREAMING, RECONNECTING, STALLED, ENDED, STOPPED = (
    "connecting", "streaming", "reconnecting", "stalled", "ended", "stopped")

# nvvidconv flip-method for each `flip` of the camera config (CSI cameras flip on the GPU)
NVVIDCONV_FLIP = {"none": 0, "rotate_90_ccw": 1, "rotate_180": 2, "rotate_90_cw": 3,
                  "horizontal": 4, "vertical": 6}
_NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")


class SourceError(FallwatchError, RuntimeError):
    """A camera cannot be opened or read; the message names the camera, ``fix`` what to check."""


@dataclass(frozen=True)
class Frame:
    """One captured image. ``t``: seconds on the stream clock (the daemon's: monotonic seconds
    since it started; a video file read with ``realtime: false``, and replay: the frame's position
    in the file); ``wall``: capture time in seconds since the epoch (UTC); ``image``: BGR uint8
    (H, W, 3), orientation corrected; ``captured``: when it was captured on the daemon's clock, for
    latency (None: ``t``)."""

    camera: str
    index: int
    t: float
    wall: float
    image: np.ndarray
    captured: Optional[float] = None


@dataclass(frozen=True)
class SourceSettings:
    """How hard a camera is retried (seconds)."""

    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    stall_timeout_s: float = 5.0
    open_timeout_s: float = 20.0


@dataclass(frozen=True)
class CameraStatus:
    name: str
    uri: str  # credentials removed
    state: str
    frames: int  # captured since start
    taken: int  # handed to the pipeline
    dropped: int  # overwritten by a newer frame before the pipeline took them
    reconnects: int
    last_error: Optional[str]
    since_last_frame_s: Optional[float]
    size: Optional[Tuple[int, int]]  # (width, height) of the last frame

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["size"] = list(self.size) if self.size else None
        if self.since_last_frame_s is not None:
            out["since_last_frame_s"] = round(self.since_last_frame_s, 3)
        return out


def redact_uri(uri: str) -> str:
    """The URI without a password (``rtsp://user:***@host/...``), for logs and stats."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", uri)


def uri_kind(uri: str) -> Tuple[str, str]:
    """``(kind, target)``: kind is csi, v4l2, network or file; target the sensor id, device path,
    URL or file path."""
    if uri.startswith("csi://"):
        return "csi", uri[len("csi://"):]
    if uri.startswith("v4l2://"):
        return "v4l2", uri[len("v4l2://"):]
    if uri.startswith("/dev/"):
        return "v4l2", uri
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in _NETWORK_SCHEMES:
        return "network", uri
    if scheme:
        raise SourceError("camera URI %s: unknown scheme %r" % (redact_uri(uri), scheme),
                          "use csi://N, v4l2:///dev/videoN, /dev/videoN, rtsp://..., http(s)://... or a video "
                          "file path", joint="; ")
    return "file", uri


def _fps_fraction(fps: float) -> str:
    frac = Fraction(fps).limit_denominator(1001)
    return "%d/%d" % (frac.numerator, frac.denominator)


def csi_pipeline(sensor_id: int, width: int, height: int, fps: float, flip: str = "none") -> str:
    """The GStreamer pipeline for a CSI camera: capture NV12 in NVMM memory at width x height,
    flip/rotate and convert on the GPU (nvvidconv), hand BGR frames to OpenCV's appsink, which
    keeps only the newest buffer. A 90-degree rotation swaps the output width and height."""
    out_w, out_h = (height, width) if flip in ("rotate_90_cw", "rotate_90_ccw") else (width, height)
    return ("nvarguscamerasrc sensor-id=%d ! video/x-raw(memory:NVMM), width=%d, height=%d, format=NV12, "
            "framerate=%s ! nvvidconv flip-method=%d ! video/x-raw, width=%d, height=%d, format=BGRx ! "
            "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
            % (sensor_id, width, height, _fps_fraction(fps), NVVIDCONV_FLIP[flip], out_w, out_h))


def opencv_has_gstreamer(build_info: Optional[str] = None) -> bool:
    """Whether this OpenCV was built with GStreamer (``cv2.getBuildInformation()``)."""
    info = cv2.getBuildInformation() if build_info is None else build_info
    return re.search(r"GStreamer:\s*YES", info) is not None


def opencv_has_ffmpeg(build_info: Optional[str] = None) -> bool:
    """Whether this OpenCV was built with FFmpeg (``FFMPEG: YES`` in its build information)."""
    info = cv2.getBuildInformation() if build_info is None else build_info
    return re.search(r"FFMPEG:\s*YES", info, flags=re.I) is not None


RTSP_LATENCY_MS = 200  # rtspsrc's jitter buffer; its default (2000 ms) would delay every alert by 2 s
_RTSP_SCHEMES = ("rtsp", "rtsps")


def rtsp_codec(uri: str, setting: str = "auto") -> str:
    """``h264`` or ``h265``: the camera's ``rtsp_codec``, or with ``auto`` h265 when the URI's path
    names h265 or hevc (``/h265Preview_01_main``, ``/live/hevc``), else h264."""
    if setting in ("h264", "h265"):
        return setting
    path = uri.split("://", 1)[-1].partition("/")[2].lower()
    return "h265" if re.search(r"h\.?265|hevc", path) else "h264"


def rtsp_pipeline(uri: str, codec: str, jetson: bool, latency_ms: int = RTSP_LATENCY_MS) -> str:
    """The GStreamer pipeline for an RTSP camera whose stream is ``codec`` (h264 or h265): depayload,
    parse, decode on the Jetson's NVDEC (``nvv4l2decoder``, then ``nvvidconv`` out of NVMM memory) or
    in software elsewhere (``avdec_h264`` / ``avdec_h265``), BGR to OpenCV's appsink, which keeps
    only the newest buffer. The URI (credentials included) is quoted for gst_parse_launch: never log
    it, log ``rtsp_pipeline(redact_uri(uri), ...)``."""
    n = {"h264": "4", "h265": "5"}[codec]
    location = '"%s"' % uri.replace("\\", "\\\\").replace('"', '\\"')
    decode = ("nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert" if jetson
              else "avdec_h26%s ! videoconvert" % n)
    return ("rtspsrc location=%s latency=%d ! rtph26%sdepay ! h26%sparse ! %s ! video/x-raw,format=BGR ! "
            "appsink drop=true max-buffers=1" % (location, latency_ms, n, n, decode))


def rtsp_elements(codec: str, jetson: bool) -> List[str]:
    """The GStreamer elements :func:`rtsp_pipeline` needs (for ``gst-inspect-1.0 --exists``)."""
    n = {"h264": "4", "h265": "5"}[codec]
    decode = ["nvv4l2decoder", "nvvidconv"] if jetson else ["avdec_h26%s" % n]
    return ["rtspsrc", "rtph26%sdepay" % n, "h26%sparse" % n] + decode + ["videoconvert", "appsink"]


@dataclass(frozen=True)
class Attempt:
    """One way to open a network camera: ``backend`` (``FFmpeg`` or ``GStreamer``), the OpenCV API,
    what to open (the URL, or a pipeline), and ``shown``: the same without a password."""

    backend: str
    api: int
    source: str
    shown: str


def network_attempts(uri: str, codec_setting: str = "auto", build_info: Optional[str] = None,
                     jetson: Optional[bool] = None) -> List[Attempt]:
    """How a network camera is opened, in order: OpenCV's FFmpeg when OpenCV has it; then, for
    ``rtsp(s)://`` when OpenCV has GStreamer, :func:`rtsp_pipeline` (the fallback). Empty when this
    OpenCV can open none. ``jetson``: None = ask edge.health.board."""
    info = cv2.getBuildInformation() if build_info is None else build_info
    out: List[Attempt] = []
    if opencv_has_ffmpeg(info):
        out.append(Attempt("FFmpeg", cv2.CAP_FFMPEG, uri, redact_uri(uri)))
    if uri.split("://", 1)[0].lower() in _RTSP_SCHEMES and opencv_has_gstreamer(info):
        if jetson is None:
            from edge.health.board import detect_board

            jetson = detect_board().is_jetson
        codec = rtsp_codec(uri, codec_setting)
        out.append(Attempt("GStreamer", cv2.CAP_GSTREAMER, rtsp_pipeline(uri, codec, jetson),
                           rtsp_pipeline(redact_uri(uri), codec, jetson)))
    return out


NO_NETWORK_BACKEND_FIX = ("use an OpenCV with FFmpeg or GStreamer: on a Jetson JetPack's (sudo apt-get install "
                          "libopencv-python; remove pip's opencv-python from the venv), elsewhere pip install "
                          "opencv-python-headless")


GSTREAMER_MISSING = "camera %s (%s): this OpenCV (%s, %s) was built without GStreamer, which CSI cameras need."
GSTREAMER_FIX = ("On a Jetson use JetPack's OpenCV: `pip uninstall opencv-python opencv-python-headless` in the "
                 "fallwatch venv (made with --system-site-packages) so that `import cv2` finds /usr/lib/python3/"
                 "dist-packages/cv2; check with python3 -c \"import cv2; print(cv2.getBuildInformation())\" | "
                 "grep GStreamer")


def check_camera(name: str, uri: str, build_info: Optional[str] = None) -> None:
    """Fail at start for what no retry can fix: an unknown scheme, csi:// without GStreamer, a network
    camera this OpenCV has no backend for."""
    kind, target = uri_kind(uri)
    if kind == "network" and not network_attempts(uri, build_info=build_info, jetson=False):
        raise SourceError("camera %s (%s): this OpenCV (%s, %s) has %s: it cannot open this camera" % (
            name, redact_uri(uri), cv2.__version__, os.path.dirname(cv2.__file__), "neither FFmpeg nor GStreamer"
            if uri.split("://", 1)[0].lower() in _RTSP_SCHEMES else "no FFmpeg"), NO_NETWORK_BACKEND_FIX, joint="; ")
    if kind == "csi":
        if not target.isdigit():
            raise SourceError("camera %s: %s: expected csi://N with N the sensor id (0, 1, ...)" % (name, uri))
        if not opencv_has_gstreamer(build_info):
            raise SourceError(GSTREAMER_MISSING % (name, uri, cv2.__version__, os.path.dirname(cv2.__file__)),
                              GSTREAMER_FIX, joint=" ")


GST_INSPECT = "gst-inspect-1.0"
ARGUS_FIX = ("install JetPack's GStreamer plugins (sudo apt-get install nvidia-l4t-gstreamer) and check with "
             "gst-inspect-1.0 nvarguscamerasrc")


def probe_backend(camera, build_info: Optional[str] = None, gst_inspect: Optional[str] = None,
                  jetson: Optional[bool] = None) -> str:
    """What can be known about ``camera``'s backend without reading frames from it (``fallwatch doctor``,
    also with ``--no-cameras``): a file exists, is readable and OpenCV opens it; a V4L2 device node
    exists, is a character device this user may open; a CSI camera has OpenCV with GStreamer and
    GStreamer has ``nvarguscamerasrc`` (asked of ``gst-inspect-1.0`` when it is installed); a network
    camera is not opened: the phrase names the backend(s) :func:`network_attempts` would try, and
    for the GStreamer pipeline which elements ``gst-inspect-1.0`` found (or that none were checked). Returns what was checked, as a phrase; raises :class:`SourceError` with the
    fix for what ``fallwatch run`` would trip on. Never blocks for long (a file is opened, not played)."""
    name, uri = camera.name, camera.uri
    kind, target = uri_kind(uri)
    if kind == "csi":
        check_camera(name, uri, build_info)
        tool = gst_inspect or shutil.which(GST_INSPECT)
        if tool is None:
            return "OpenCV has GStreamer; nvarguscamerasrc not checked (no %s here)" % GST_INSPECT
        try:
            found = subprocess.run([tool, "--exists", "nvarguscamerasrc"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=20).returncode == 0
        except (OSError, subprocess.SubprocessError) as exc:
            return "OpenCV has GStreamer; nvarguscamerasrc not checked (%s failed: %s)" % (GST_INSPECT, exc)
        if not found:
            raise SourceError("camera %s (%s): GStreamer has no nvarguscamerasrc element" % (name, uri), ARGUS_FIX,
                              joint="; ")
        return "OpenCV has GStreamer, GStreamer has nvarguscamerasrc"
    if kind == "v4l2":
        try:
            mode = os.stat(target).st_mode
        except OSError:
            raise SourceError("camera %s: %s does not exist" % (name, target),
                              "is the camera plugged in? (ls /dev/video*)", joint="; ") from None
        if not stat.S_ISCHR(mode):
            raise SourceError("camera %s: %s is not a device" % (name, target),
                              "give the camera's device node, e.g. /dev/video0 (ls /dev/video*)", joint="; ")
        if not os.access(target, os.R_OK | os.W_OK):
            raise SourceError("camera %s: no permission to open %s" % (name, target),
                              "add the user fallwatch runs as to the video group (sudo usermod -aG video USER)",
                              joint="; ")
        return "a device node this user may open"
    if kind == "network":
        return _probe_network(camera, build_info, gst_inspect, jetson)
    if os.path.exists(target) and not os.path.isdir(target) and stat.S_ISFIFO(os.stat(target).st_mode):
        return "a pipe (not opened: reading it would take its frames)"
    try:
        VideoReader(target, camera.flip).release()
    except VideoError as exc:
        raise SourceError("camera %s: %s" % (name, exc), "check the uri of camera %r in cameras" % name,
                          joint="; ") from None
    return "opens as a video file"


GST_RTSP_FIX = ("install the GStreamer plugins the pipeline needs: sudo apt-get install gstreamer1.0-plugins-good "
                "gstreamer1.0-plugins-bad and, on a Jetson, nvidia-l4t-gstreamer (elsewhere gstreamer1.0-libav)")


def _missing_elements(elements: List[str], tool: str) -> Optional[List[str]]:
    """The elements ``gst-inspect-1.0 --exists`` does not find; None when the tool could not be run."""
    missing = []
    for element in elements:
        try:
            code = subprocess.run([tool, "--exists", element], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=20).returncode
        except (OSError, subprocess.SubprocessError):
            return None
        if code != 0:
            missing.append(element)
    return missing


def _probe_network(camera, build_info: Optional[str], gst_inspect: Optional[str], jetson: Optional[bool]) -> str:
    name, uri = camera.name, camera.uri
    if jetson is None:
        from edge.health.board import detect_board

        jetson = detect_board().is_jetson
    attempts = network_attempts(uri, getattr(camera, "rtsp_codec", "auto"), build_info, jetson)
    rtsp = uri.split("://", 1)[0].lower() in _RTSP_SCHEMES
    if not attempts:
        raise SourceError("camera %s (%s): this OpenCV (%s) has %s: it cannot open this camera" % (
            name, redact_uri(uri), cv2.__version__, "neither FFmpeg nor GStreamer" if rtsp else "no FFmpeg"),
            NO_NETWORK_BACKEND_FIX, joint="; ")
    gst = [a for a in attempts if a.backend == "GStreamer"]
    if not gst:
        return "OpenCV's FFmpeg (not opened)%s" % (
            "; no GStreamer fallback: this OpenCV has no GStreamer" if rtsp else "")
    codec = rtsp_codec(uri, getattr(camera, "rtsp_codec", "auto"))
    decoder = "nvv4l2decoder" if jetson else "avdec_h26%s" % codec[-1]
    how = ("OpenCV's FFmpeg, else GStreamer with %s" % decoder if len(attempts) > 1
           else "GStreamer with %s (this OpenCV has no FFmpeg)" % decoder)
    if not jetson:
        how += "; not a Jetson, so the Jetson's pipeline (nvv4l2decoder) is not checked here"
    tool = gst_inspect or shutil.which(GST_INSPECT)
    missing = None if tool is None else _missing_elements(rtsp_elements(codec, jetson), tool)
    if missing is None:
        return "%s (not opened; GStreamer elements not checked: no working %s here)" % (how, GST_INSPECT)
    if missing and len(attempts) > 1:
        return "%s (not opened); the GStreamer fallback cannot work: no %s (%s)" % (how, ", ".join(missing),
                                                                                  GST_RTSP_FIX)
    if missing:
        raise SourceError("camera %s (%s): this OpenCV has no FFmpeg and GStreamer lacks %s, which the camera "
                          "needs" % (name, redact_uri(uri), ", ".join(missing)), GST_RTSP_FIX, joint="; ")
    return "%s (not opened; GStreamer has %s)" % (how, ", ".join(rtsp_elements(codec, jetson)))


class Capture:
    """An opened camera: :meth:`read` gives the next BGR frame or None at the end or on failure;
    ``backend`` says how it was opened (``GStreamer``, ``V4L2``, ``FFmpeg``)."""

    def __init__(self, cap: "cv2.VideoCapture", kind: str, flip: str, backend: str = "") -> None:
        self._cap = cap
        self.kind = kind
        self.backend = backend
        self._flip = "none" if kind == "csi" else flip  # CSI cameras flip on the GPU (nvvidconv)
        self.fps = usable_fps(cap.get(cv2.CAP_PROP_FPS))

    def read(self) -> Optional[np.ndarray]:
        ok, image = self._cap.read()
        if not ok or image is None or image.ndim != 3 or image.shape[2] != 3:
            return None
        return correct_orientation(image, self._flip)

    def release(self) -> None:
        self._cap.release()


def _video_capture(source: str, api: int, params: Optional[List[int]] = None) -> "cv2.VideoCapture":
    """cv2.VideoCapture: the one place a network camera's capture is made (tests may stand in here)."""
    return cv2.VideoCapture(source, api, params) if params else cv2.VideoCapture(source, api)


def open_network(camera, settings: SourceSettings = SourceSettings(), build_info: Optional[str] = None,
                 jetson: Optional[bool] = None) -> Capture:
    """Open a network camera by :func:`network_attempts`, first that opens wins; raises
    :class:`SourceError` naming every backend tried (the URI without its password)."""
    name, uri = camera.name, camera.uri
    attempts = network_attempts(uri, getattr(camera, "rtsp_codec", "auto"), build_info, jetson)
    if not attempts:
        raise SourceError("camera %s: cannot open %s: this OpenCV (%s) has %s" % (
            name, redact_uri(uri), cv2.__version__, "neither FFmpeg nor GStreamer"
            if uri.split("://", 1)[0].lower() in _RTSP_SCHEMES else "no FFmpeg"), NO_NETWORK_BACKEND_FIX, joint="; ")
    params: List[int] = []
    for prop, value in (("CAP_PROP_OPEN_TIMEOUT_MSEC", int(settings.open_timeout_s * 1000)),
                        ("CAP_PROP_READ_TIMEOUT_MSEC", int(settings.stall_timeout_s * 1000))):
        if hasattr(cv2, prop):
            params += [getattr(cv2, prop), value]
    failed = []
    for attempt in attempts:
        log.debug("camera %s: opening with %s: %s", name, attempt.backend, attempt.shown)
        cap = _video_capture(attempt.source, attempt.api, params if attempt.backend == "FFmpeg" else None)
        if cap.isOpened():
            if failed:
                log.info("camera %s (%s): %s could not open it; opened through %s: %s", name, redact_uri(uri),
                         " or ".join(failed), attempt.backend, attempt.shown)
            return Capture(cap, "network", camera.flip, attempt.backend)
        cap.release()
        failed.append(attempt.backend)
    hint = ("is the stream reachable and the URL right? (try: ffplay '%s'; for RTSP over TCP set "
            "OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp)" % redact_uri(uri))
    if uri.split("://", 1)[0].lower() in _RTSP_SCHEMES and "GStreamer" not in failed:
        hint += ("; this OpenCV has no GStreamer to fall back on (JetPack's has: sudo apt-get install "
                 "libopencv-python)")
    raise SourceError("camera %s: cannot open %s (tried %s)" % (name, redact_uri(uri), ", then ".join(failed)),
                      hint, joint="; ")


def open_capture(camera, settings: SourceSettings = SourceSettings()) -> Union[Capture, VideoReader]:
    """Open ``camera`` (a config.CameraConfig: name, uri, width, height, fps, flip); a video file
    is opened with the one video reader (edge.capture.video), a network camera by :func:`open_network`.

    Raises :class:`SourceError` saying what failed; the caller retries with backoff.
    """
    name, uri = camera.name, camera.uri
    kind, target = uri_kind(uri)
    if kind == "csi":
        check_camera(name, uri)
        pipeline = csi_pipeline(int(target), camera.width, camera.height, camera.fps, camera.flip)
        log.debug("camera %s: GStreamer pipeline: %s", name, pipeline)
        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        hint = ("is the camera connected and nvargus-daemon running (sudo systemctl restart nvargus-daemon)? "
                "does the sensor offer %dx%d at %g fps (see the sensor modes nvarguscamerasrc prints)?"
                % (camera.width, camera.height, camera.fps))
    elif kind == "v4l2":
        if not os.path.exists(target):
            raise SourceError("camera %s: %s does not exist" % (name, target),
                              "is the camera plugged in? (ls /dev/video*)", joint="; ")
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, camera.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, camera.height)
            cap.set(cv2.CAP_PROP_FPS, camera.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        hint = "is another program using it? does your user belong to the video group?"
    elif kind == "network":
        return open_network(camera, settings)
    else:
        try:
            return VideoReader(target, camera.flip)
        except VideoError as exc:
            raise SourceError("camera %s: %s" % (name, exc)) from None
    if not cap.isOpened():
        cap.release()
        raise SourceError("camera %s: cannot open %s" % (name, redact_uri(uri)), hint, joint="; ")
    return Capture(cap, kind, camera.flip, "GStreamer" if kind == "csi" else "V4L2")


class CameraSource:
    """A camera read in its own thread; only the newest frame is kept.

    ``clock`` gives ``Frame.t`` (monotonic seconds), ``wall`` gives ``Frame.wall``; ``on_frame``
    is called (from the capture thread) after each new frame, e.g. to wake the scheduler.
    """

    def __init__(self, camera, settings: SourceSettings = SourceSettings(),
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 opener: Callable = open_capture, on_frame: Optional[Callable[[], None]] = None) -> None:
        self.camera = camera
        self.name = camera.name
        self.settings = settings
        self._clock, self._wall, self._opener, self._on_frame = clock, wall, opener, on_frame
        self._kind = uri_kind(camera.uri)[0]
        self._lock = threading.Lock()
        self._taken_cond = threading.Condition(self._lock)  # a frame was taken (realtime: false files wait)
        self._file_offset = 0.0  # realtime: false: seconds of the file played by earlier loops
        self._stop = threading.Event()
        self._generation = 0
        self._threads: List[threading.Thread] = []
        self._latest: Optional[Frame] = None
        self._taken_index = -1
        self._state, self._last_error = CONNECTING, None  # type: Tuple[str, Optional[str]]
        self._frames = self._taken = self._dropped = self._reconnects = 0
        self._progress_t = clock()  # last time the reader showed life (opened, read a frame)
        self._last_frame_t: Optional[float] = None
        self._size: Optional[Tuple[int, int]] = None
        self._announce = True  # log "streaming" at info after a start or a failure, not at each loop

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        check_camera(self.name, self.camera.uri)
        self._spawn()

    def stop(self) -> None:
        """Ask the capture thread to finish; :meth:`join` waits for it."""
        self._stop.set()
        with self._lock:
            if self._state != ENDED:
                self._state = STOPPED

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the capture threads; False if one is stuck in a read."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    @property
    def ended(self) -> bool:
        with self._lock:
            return self._state in (ENDED, STOPPED)

    def _spawn(self) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._progress_t = self._clock()
        thread = threading.Thread(target=self._run, args=(generation,), daemon=True,
                                  name="capture-%s-%d" % (self.name, generation))
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def check_stall(self) -> bool:
        """Call periodically: a reader with no progress for too long is abandoned for a new one.
        Returns True when it did so."""
        now = self._clock()
        with self._lock:
            if self._stop.is_set() or self._state not in (CONNECTING, STREAMING, STALLED):
                return False
            limit = self.settings.stall_timeout_s if self._state == STREAMING else self.settings.open_timeout_s
            idle = now - self._progress_t
            if idle <= limit:
                return False
            self._state = STALLED
            self._last_error = "no frame for %.1f s" % idle
            self._reconnects += 1
            self._announce = True
        stuck = sum(t.is_alive() for t in self._threads)
        log.warning("camera %s (%s): no frame for %.1f s (stall_timeout_s %.1f); abandoning the stuck reader "
                    "and reopening (%d reader thread(s) still blocked)", self.name, redact_uri(self.camera.uri),
                    idle, limit, stuck)
        self._spawn()
        return True

    # ---------------------------------------------------------------- frames

    def take(self) -> Optional[Frame]:
        """The newest frame not handed out before, or None."""
        with self._lock:
            frame = self._latest
            if frame is None or frame.index <= self._taken_index:
                return None
            self._taken_index = frame.index
            self._taken += 1
            self._taken_cond.notify_all()
            return frame

    @property
    def pending(self) -> bool:
        """Whether a frame is waiting to be taken."""
        with self._lock:
            return self._latest is not None and self._latest.index > self._taken_index

    def status(self) -> CameraStatus:
        with self._lock:
            since = None if self._last_frame_t is None else self._clock() - self._last_frame_t
            return CameraStatus(self.name, redact_uri(self.camera.uri), self._state, self._frames, self._taken,
                                self._dropped, self._reconnects, self._last_error, since, self._size)

    # ---------------------------------------------------------------- the capture thread

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _set_state(self, generation: int, state: str, error: Optional[str] = None) -> bool:
        with self._lock:
            if not self._current(generation):
                return False
            self._state, self._last_error = state, error
            return True

    def _run(self, generation: int) -> None:
        backoff = self.settings.reconnect_min_s
        again = False  # a looping file reopened at its end stays "streaming"
        while self._current(generation):
            if not again and not self._set_state(generation, CONNECTING, self._last_error):
                return
            again = False
            try:
                capture = self._opener(self.camera, self.settings)
            except SourceError as exc:
                error: Optional[str] = str(exc)
            except Exception as exc:  # OpenCV backends raise cv2.error and others
                error = "camera %s: cannot open %s: %s" % (self.name, redact_uri(self.camera.uri), exc)
            else:
                try:
                    outcome, error, got_frame = self._stream(generation, capture)
                except Exception as exc:  # never let a capture thread die silently: report and retry
                    log.exception("camera %s: capture failed", self.name)
                    outcome, error, got_frame = "failed", "camera %s: capture failed: %s: %s" % (
                        self.name, type(exc).__name__, exc), False
                if got_frame:
                    backoff = self.settings.reconnect_min_s
                if outcome == "done":
                    return
                if outcome == "again":  # a looping file reached its end: reopen at once
                    again = True
                    continue
            with self._lock:
                if not self._current(generation):
                    return
                self._state, self._last_error = RECONNECTING, error
                self._reconnects += 1
                self._announce = True
            log.warning("%s; retrying in %.1f s", error, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    def _stream(self, generation: int, capture: Capture) -> Tuple[str, Optional[str], bool]:
        """Read until the end or a failure: ``(outcome, error, whether a frame was read)``; outcome
        is ``done`` (stopped, superseded, or a file ended without loop), ``again`` (a looping file
        ended) or ``failed``."""
        got = False
        try:
            with self._lock:
                if not self._current(generation):
                    return "done", None, False
                self._progress_t = self._clock()
            is_file = capture.kind == "file"
            realtime = not is_file or getattr(self.camera, "realtime", True)
            rate = capture.fps or self.camera.fps
            period = 1.0 / rate
            start = time.monotonic()
            count = 0
            while self._current(generation):
                if not realtime and not self._wait_until_taken(generation):
                    break
                image = capture.read()
                now_t, now_wall = self._clock(), self._wall()
                if image is None:
                    break
                if not got:
                    got = True
                    announce = log.info if self._announce else log.debug
                    self._announce = False
                    announce("camera %s (%s): streaming %dx%d%s%s", self.name, redact_uri(self.camera.uri),
                             image.shape[1], image.shape[0], " at %.3g fps" % capture.fps if capture.fps else "",
                             " through %s" % capture.backend if getattr(capture, "backend", "") else "")
                # realtime: false: the frame's time is its place in the file, as in replay
                t = now_t if realtime else self._file_offset + count / rate
                self._publish(generation, image, t, now_wall, now_t)
                count += 1
                if is_file and realtime:  # a file plays at its own frame rate, like a camera
                    delay = start + count * period - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
            if not realtime:
                self._file_offset += count / rate
        finally:
            capture.release()
        if not self._current(generation):
            return "done", None, got
        where = "camera %s: video file %s" % (self.name, self.camera.uri)
        if capture.kind == "file":
            if not got:
                return "failed", "%s gave no frame (unreadable, truncated or empty)" % where, got
            if getattr(self.camera, "loop", False):
                log.debug("%s ended; playing it again", where)
                return "again", None, got
            self._set_state(generation, ENDED, None)
            log.info("%s ended (set loop: true to play it again)", where)
            return "done", None, got
        return "failed", "camera %s (%s): the stream failed or ended" % (self.name, redact_uri(self.camera.uri)), got

    def _wait_until_taken(self, generation: int) -> bool:
        """``realtime: false``: wait until the pipeline took the last frame (waiting for it is
        progress, not a stall); False when stopped or superseded."""
        with self._taken_cond:
            while self._current(generation) and self._latest is not None and self._latest.index > self._taken_index:
                self._progress_t = self._clock()
                self._taken_cond.wait(0.1)
            return self._current(generation)

    def _publish(self, generation: int, image: np.ndarray, t: float, wall: float, captured: float) -> None:
        with self._lock:
            if not self._current(generation):
                return
            if self._latest is not None and self._latest.index > self._taken_index:
                self._dropped += 1
            index = self._frames
            self._frames += 1
            self._latest = Frame(self.name, index, t, wall, image, captured)
            self._progress_t = self._last_frame_t = captured
            self._size = (image.shape[1], image.shape[0])
            self._state, self._last_error = STREAMING, None
        if self._on_frame is not None:
            self._on_frame()
