"""RTSP cameras on an OpenCV without FFmpeg (JetPack's may be built so): the GStreamer fallback.

The pipelines are compared as exact strings. Which backends are tried, in which order, is decided
from OpenCV's build information (:func:`network_attempts`) and run against this machine's real
OpenCV (it has FFmpeg, no GStreamer, and nothing serves RTSP here: every real open fails, which is
the path the fallback takes). Only a capture that *opens* through GStreamer cannot happen here, so
that one case goes through the ``_video_capture`` seam with a stand-in.
"""
from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any, List, Tuple

import cv2
import numpy as np
import pytest

from edge.capture import sources
from edge.capture.sources import (SourceError, SourceSettings, network_attempts, opencv_has_ffmpeg,
                                  probe_backend, rtsp_codec, rtsp_pipeline)
from edge.config import CameraConfig
from mosquitto import free_port

BOTH = "  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   YES (1.20.3)\n"
FFMPEG_ONLY = "  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   NO\n"
GST_ONLY = "  Video I/O:\n    FFMPEG:                      NO\n    GStreamer:                   YES (1.16.3)\n"
NEITHER = "  Video I/O:\n    FFMPEG:                      NO\n    GStreamer:                   NO\n"
URI = "rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/101"
SHOWN = "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101"


def test_pipelines_on_and_off_the_jetson() -> None:
    assert rtsp_pipeline(URI, "h264", jetson=True) == (
        'rtspsrc location="rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/101" latency=200 ! rtph264depay ! '
        "h264parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1")
    assert rtsp_pipeline(URI, "h265", jetson=True) == (
        'rtspsrc location="rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/101" latency=200 ! rtph265depay ! '
        "h265parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1")
    assert rtsp_pipeline(URI, "h264", jetson=False) == (
        'rtspsrc location="rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/101" latency=200 ! rtph264depay ! '
        "h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1")
    assert rtsp_pipeline(URI, "h265", jetson=False, latency_ms=0) == (
        'rtspsrc location="rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/101" latency=0 ! rtph265depay ! '
        "h265parse ! avdec_h265 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1")


def test_a_password_with_pipeline_syntax_stays_inside_the_quoted_location() -> None:
    assert rtsp_pipeline('rtsp://u:a!b"c\\d@cam/live', "h264", jetson=False).startswith(
        'rtspsrc location="rtsp://u:a!b\\"c\\\\d@cam/live" latency=200 ! rtph264depay ! ')


@pytest.mark.parametrize("uri, setting, codec", [
    ("rtsp://cam:554/h265Preview_01_main", "auto", "h265"),
    ("rtsp://cam/live/HEVC", "auto", "h265"),
    ("rtsp://cam/stream?codec=h.265", "auto", "h265"),
    ("rtsp://h265cam.local/live", "auto", "h264"),  # the host's name says nothing about the stream
    ("rtsp://cam/h264Preview_01_main", "auto", "h264"),
    ("rtsp://cam/h264Preview_01_main", "h265", "h265"),
    ("rtsp://cam/live/hevc", "h264", "h264"),
])
def test_codec_from_the_setting_or_the_uri(uri: str, setting: str, codec: str) -> None:
    assert rtsp_codec(uri, setting) == codec


def tried(uri: str, build_info: str, jetson: bool = True, codec: str = "auto") -> List[Tuple[str, int, str]]:
    return [(a.backend, a.api, a.shown) for a in network_attempts(uri, codec, build_info, jetson)]


def test_which_backends_are_tried_and_in_which_order() -> None:
    gst = 'rtspsrc location="%s" latency=200 ! rtph264depay ! h264parse ! nvv4l2decoder' % SHOWN
    assert tried(URI, FFMPEG_ONLY) == [("FFmpeg", cv2.CAP_FFMPEG, SHOWN)]
    both = tried(URI, BOTH)
    assert both[0] == ("FFmpeg", cv2.CAP_FFMPEG, SHOWN) and both[1][:2] == ("GStreamer", cv2.CAP_GSTREAMER)
    assert both[1][2].startswith(gst) and len(both) == 2
    assert [(b, a) for b, a, _ in tried(URI, GST_ONLY)] == [("GStreamer", cv2.CAP_GSTREAMER)]
    assert "avdec_h265" in tried("rtsps://cam/h265/main", GST_ONLY, jetson=False)[0][2]
    assert tried(URI, NEITHER) == []
    assert tried("http://cam/video.mjpg", BOTH) == [("FFmpeg", cv2.CAP_FFMPEG, "http://cam/video.mjpg")]
    attempt = network_attempts(URI, "auto", BOTH, True)[1]
    assert attempt.source == rtsp_pipeline(URI, "h264", True) and "hunter2" not in attempt.shown


def camera(uri: str, **kw: Any) -> CameraConfig:
    return CameraConfig(name="door", uri=uri, **kw)


FAST = SourceSettings(open_timeout_s=3.0, stall_timeout_s=2.0)


def test_real_opencv_ffmpeg_refused_and_the_fallback_tried(caplog: pytest.LogCaptureFixture) -> None:
    """This OpenCV's FFmpeg really fails on a closed port; with build information that says it has
    GStreamer too, the GStreamer pipeline is really tried next (and fails: it has none)."""
    assert opencv_has_ffmpeg()  # what the test relies on: pip's OpenCV has FFmpeg
    uri = "rtsp://admin:hunter2@127.0.0.1:%d/stream" % free_port()
    with caplog.at_level(logging.DEBUG, logger="fallwatch.sources"):
        with pytest.raises(SourceError) as plain:
            sources.open_network(camera(uri), FAST)
        with pytest.raises(SourceError) as fallback:
            sources.open_network(camera(uri), FAST, build_info=BOTH, jetson=True)
    assert "(tried FFmpeg)" in plain.value.what and "no GStreamer to fall back on" in plain.value.fix
    assert "(tried FFmpeg, then GStreamer)" in fallback.value.what
    assert "no GStreamer to fall back on" not in fallback.value.fix
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert 'opening with GStreamer: rtspsrc location="rtsp://admin:***@127.0.0.1' in logged
    text = logged + str(plain.value) + str(fallback.value)
    assert "hunter2" not in text


def test_an_opencv_with_neither_backend_says_so_and_run_refuses_to_start() -> None:
    with pytest.raises(SourceError) as err:
        sources.open_network(camera(URI), FAST, build_info=NEITHER, jetson=True)
    assert "neither FFmpeg nor GStreamer" in err.value.what and "libopencv-python" in err.value.fix
    assert SHOWN in err.value.what and "hunter2" not in str(err.value)
    with pytest.raises(SourceError) as err:  # what CameraSource.start() checks: no retry can fix it
        sources.check_camera("door", URI, build_info=NEITHER)
    assert "neither FFmpeg nor GStreamer" in err.value.what and "hunter2" not in str(err.value)
    with pytest.raises(SourceError, match="has no FFmpeg"):
        sources.check_camera("door", "http://cam/video.mjpg", build_info=GST_ONLY)
    for info in (FFMPEG_ONLY, GST_ONLY, BOTH):
        sources.check_camera("door", URI, build_info=info)


class OpensOnly:
    """Stand-in for cv2.VideoCapture at the ``_video_capture`` seam: only ``api`` opens (no OpenCV with
    GStreamer and no RTSP server exist here); it gives one black frame."""

    def __init__(self, api: int, calls: List[Tuple[str, int]]) -> None:
        self.api, self.calls = api, calls

    def __call__(self, source: str, api: int, params: Any = None) -> Any:
        self.calls.append((source, api))
        opened = api == self.api

        class Cap:
            def isOpened(self) -> bool:
                return opened

            def get(self, prop: int) -> float:
                return 0.0

            def read(self) -> Tuple[bool, Any]:
                return True, np.zeros((4, 6, 3), np.uint8)

            def release(self) -> None:
                pass

        return Cap()


def test_ffmpeg_cannot_open_it_so_gstreamer_does(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    calls: List[Tuple[str, int]] = []
    monkeypatch.setattr(sources, "_video_capture", OpensOnly(cv2.CAP_GSTREAMER, calls))
    with caplog.at_level(logging.INFO, logger="fallwatch.sources"):
        capture = sources.open_network(camera(URI), FAST, build_info=BOTH, jetson=True)
    assert capture.backend == "GStreamer" and capture.read().shape == (4, 6, 3)
    assert calls == [(URI, cv2.CAP_FFMPEG), (rtsp_pipeline(URI, "h264", True), cv2.CAP_GSTREAMER)]
    message = caplog.records[-1].getMessage()
    assert message.startswith("camera door (%s): FFmpeg could not open it; opened through GStreamer: " % SHOWN)
    assert "nvv4l2decoder" in message and "hunter2" not in message

    calls.clear()
    monkeypatch.setattr(sources, "_video_capture", OpensOnly(cv2.CAP_FFMPEG, calls))
    assert sources.open_network(camera(URI), FAST, build_info=BOTH, jetson=True).backend == "FFmpeg"
    assert calls == [(URI, cv2.CAP_FFMPEG)]  # FFmpeg opened it: GStreamer is not tried


# ------------------------------------------------------------------ what doctor says about the backend


def fake_gst_inspect(folder: Path, has: List[str]) -> Path:
    """A stand-in for gst-inspect-1.0 --exists ELEMENT (no GStreamer tools are installed here)."""
    tool = folder / "gst-inspect-1.0"
    tool.write_text("#!/bin/sh\n[ \"$1\" = --exists ] || exit 2\ncase \"$2\" in\n  %s) exit 0;;\nesac\nexit 1\n"
                    % "|".join(has))
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool


JETSON_ELEMENTS = ["rtspsrc", "rtph264depay", "h264parse", "nvv4l2decoder", "nvvidconv", "videoconvert", "appsink"]


def test_probe_names_the_backend_and_checks_the_pipelines_elements(tmp_path: Path) -> None:
    cam = camera(URI)
    assert probe_backend(cam, build_info=FFMPEG_ONLY, jetson=True) == (
        "OpenCV's FFmpeg (not opened); no GStreamer fallback: this OpenCV has no GStreamer")
    everything = str(fake_gst_inspect(tmp_path, JETSON_ELEMENTS))
    assert probe_backend(cam, build_info=GST_ONLY, gst_inspect=everything, jetson=True) == (
        "GStreamer with nvv4l2decoder (this OpenCV has no FFmpeg) (not opened; GStreamer has rtspsrc, rtph264depay, "
        "h264parse, nvv4l2decoder, nvvidconv, videoconvert, appsink)")
    no_nvdec = str(fake_gst_inspect(tmp_path, [e for e in JETSON_ELEMENTS if e != "nvv4l2decoder"]))
    with pytest.raises(SourceError) as err:
        probe_backend(cam, build_info=GST_ONLY, gst_inspect=no_nvdec, jetson=True)
    assert "GStreamer lacks nvv4l2decoder" in err.value.what and "nvidia-l4t-gstreamer" in err.value.fix
    assert "hunter2" not in str(err.value)
    fallback_only = probe_backend(cam, build_info=BOTH, gst_inspect=no_nvdec, jetson=True)
    assert fallback_only.startswith("OpenCV's FFmpeg, else GStreamer with nvv4l2decoder (not opened); the GStreamer "
                                    "fallback cannot work: no nvv4l2decoder")
    off = probe_backend(camera("rtsp://cam/h265Preview_01_main"), build_info=BOTH, gst_inspect=str(tmp_path / "gone"),
                        jetson=False)
    assert off == ("OpenCV's FFmpeg, else GStreamer with avdec_h265; not a Jetson, so the Jetson's pipeline "
                   "(nvv4l2decoder) is not checked here (not opened; GStreamer elements not checked: no working "
                   "gst-inspect-1.0 here)")
    with pytest.raises(SourceError) as err:
        probe_backend(cam, build_info=NEITHER, jetson=True)
    assert "neither FFmpeg nor GStreamer" in err.value.what


def test_doctor_names_each_cameras_backend(tmp_path: Path) -> None:
    """Through the real CLI on this machine's OpenCV (FFmpeg, no GStreamer), --no-cameras: the RTSP
    camera's line says FFmpeg and that no fallback exists; the password is not shown."""
    import json

    from conftest import run_cli

    path = tmp_path / "config.yaml"
    path.write_text("paths:\n  state_dir: %s\ncameras:\n  - name: door\n    uri: %s\n" % (tmp_path / "state", URI),
                    encoding="utf-8")
    proc = run_cli("doctor", "--config", str(path), "--no-mqtt", "--no-cameras", "--json", "--only", "camera")
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    door = checks["camera door"]
    assert door["status"] == "skip" and door["message"] == (
        "%s: OpenCV's FFmpeg (not opened); no GStreamer fallback: this OpenCV has no GStreamer; no frame read "
        "(--no-cameras)" % SHOWN)
    assert "hunter2" not in proc.stdout + proc.stderr
