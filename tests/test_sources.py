"""Camera sources: URIs, the CSI pipeline, and capture threads that fail, stall and recover on real files."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import shared_data
from edge.config import CameraConfig
from edge.capture.sources import (CameraSource, SourceError, SourceSettings, check_camera, correct_orientation, csi_pipeline,
                          open_capture, opencv_has_gstreamer, redact_uri, uri_kind)

FAST = SourceSettings(reconnect_min_s=0.05, reconnect_max_s=0.2, stall_timeout_s=0.6, open_timeout_s=2.0)


def make_clip(path: Path, frames: int = 12, fps: float = 20.0, source: str = "subject2/ADL/23.mp4") -> Path:
    """The first ``frames`` frames of a real GMDCSA24 video, as a small MJPEG AVI at ``fps``."""
    cap = cv2.VideoCapture(str(shared_data("gmdcsa24", *source.split("/"))))
    writer = None
    for _ in range(frames):
        ok, image = cap.read()
        assert ok
        image = cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
        writer.write(image)
    writer.release()
    cap.release()
    return path


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))


# ------------------------------------------------------------------ URIs and the CSI pipeline


@pytest.mark.parametrize("uri, kind, target", [
    ("csi://0", "csi", "0"), ("csi://1", "csi", "1"),
    ("v4l2:///dev/video0", "v4l2", "/dev/video0"), ("/dev/video2", "v4l2", "/dev/video2"),
    ("rtsp://user:pw@10.0.0.5:554/stream1", "network", "rtsp://user:pw@10.0.0.5:554/stream1"),
    ("rtsps://cam/s", "network", "rtsps://cam/s"), ("http://cam/video.mjpg", "network", "http://cam/video.mjpg"),
    ("/data/clips/fall.mp4", "file", "/data/clips/fall.mp4"), ("clip.avi", "file", "clip.avi"),
])
def test_uri_kinds(uri, kind, target):
    assert uri_kind(uri) == (kind, target)


def test_unknown_scheme_is_refused_with_the_choices():
    with pytest.raises(SourceError, match="unknown scheme 'gopher'.*csi://N"):
        uri_kind("gopher://cam")


def test_passwords_never_reach_logs():
    assert redact_uri("rtsp://admin:s3cret@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    assert redact_uri("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert redact_uri("/dev/video0") == "/dev/video0"


def test_csi_pipeline_asks_the_sensor_mode_and_flips_on_the_gpu():
    text = csi_pipeline(1, 1920, 1080, 30, "none")
    assert text.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=1920, height=1080, "
                           "format=NV12, framerate=30/1 ! nvvidconv flip-method=0 ! ")
    assert "video/x-raw, width=1920, height=1080, format=BGRx" in text
    assert text.endswith("appsink drop=true max-buffers=1 sync=false")
    assert "framerate=2997/100" in csi_pipeline(0, 1280, 720, 29.97)
    rotated = csi_pipeline(0, 1280, 720, 60, "rotate_90_cw")
    assert "flip-method=3" in rotated and "video/x-raw, width=720, height=1280, format=BGRx" in rotated
    assert "flip-method=2" in csi_pipeline(0, 1280, 720, 60, "rotate_180")
    assert "flip-method=6" in csi_pipeline(0, 1280, 720, 60, "vertical")


def test_gstreamer_support_is_read_from_the_build_information():
    assert opencv_has_gstreamer("  Video I/O:\n    GStreamer:                   YES (1.16.3)\n")
    assert not opencv_has_gstreamer("  Video I/O:\n    GStreamer:                   NO\n")


def test_csi_without_gstreamer_fails_at_start_saying_how_to_fix_it():
    with pytest.raises(SourceError) as info:
        check_camera("door", "csi://0", build_info="    GStreamer:                   NO\n")
    message = str(info.value)
    assert "camera door" in message and "without GStreamer" in message
    assert "pip uninstall opencv-python" in message and "JetPack" in message
    check_camera("door", "csi://0", build_info="    GStreamer:                   YES (1.20.3)\n")
    with pytest.raises(SourceError, match="csi://N"):
        check_camera("door", "csi://front", build_info="GStreamer: YES")


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_this_opencv_really_lacks_gstreamer_and_a_csi_source_refuses_to_start():
    source = CameraSource(CameraConfig(name="door", uri="csi://0"), FAST)
    with pytest.raises(SourceError, match="without GStreamer"):
        source.start()


def test_orientation_corrections():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert correct_orientation(image, "none") is image
    assert correct_orientation(image, "rotate_90_cw").shape == (3, 2, 3)
    np.testing.assert_array_equal(correct_orientation(image, "rotate_90_cw")[0, 0], image[1, 0])
    np.testing.assert_array_equal(correct_orientation(image, "horizontal")[:, 0], image[:, 2])
    np.testing.assert_array_equal(correct_orientation(image, "vertical")[0], image[1])
    np.testing.assert_array_equal(correct_orientation(image, "rotate_180")[0, 0], image[1, 2])
    np.testing.assert_array_equal(correct_orientation(image, "rotate_90_ccw")[0, 0], image[0, 2])


# ------------------------------------------------------------------ opening


def test_open_a_real_video_file(tmp_path):
    clip = make_clip(tmp_path / "clip.avi", frames=5, fps=20)
    capture = open_capture(CameraConfig(name="c", uri=str(clip)))
    try:
        assert capture.kind == "file" and capture.fps == pytest.approx(20)
        images = [capture.read() for _ in range(6)]
    finally:
        capture.release()
    assert all(img.shape == (240, 320, 3) for img in images[:5]) and images[5] is None


def test_open_flips_frames(tmp_path):
    clip = make_clip(tmp_path / "clip.avi", frames=2)
    capture = open_capture(CameraConfig(name="c", uri=str(clip), flip="rotate_90_ccw"))
    try:
        assert capture.read().shape == (320, 240, 3)
    finally:
        capture.release()


@pytest.mark.parametrize("uri, message", [
    ("/dev/video_fallwatch_absent", "camera c: /dev/video_fallwatch_absent does not exist; is the camera plugged in"),
    ("v4l2:///dev/video_fallwatch_absent", "/dev/video_fallwatch_absent does not exist"),
    ("/nonexistent/clip.mp4", "camera c: video file /nonexistent/clip.mp4 does not exist"),
])
def test_missing_cameras_say_what_is_missing(uri, message):
    with pytest.raises(SourceError) as info:
        open_capture(CameraConfig(name="c", uri=uri))
    assert message in str(info.value)


def test_a_file_that_is_not_a_video(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match="junk.mp4.* cannot open"):
        open_capture(CameraConfig(name="c", uri=str(junk)))


# ------------------------------------------------------------------ the capture thread


def test_capture_keeps_only_the_newest_frame_with_capture_times(tmp_path):
    clip = make_clip(tmp_path / "clip.avi", frames=12, fps=40)
    t0 = time.monotonic()
    source = CameraSource(CameraConfig(name="c", uri=str(clip), loop=True), FAST, clock=lambda: time.monotonic() - t0)
    source.start()
    try:
        first = wait_for(source.take, 3, "a first frame")
        assert source.take() is None or True  # another frame may have arrived already
        time.sleep(0.5)  # ~20 frames at 40 fps: nobody takes them
        newest = source.take()
        assert newest is not None and newest.index > first.index + 5
        assert newest.t > first.t and 0 < newest.t < time.monotonic() - t0 + 1e-3
        assert abs(newest.wall - time.time()) < 1.0
        assert newest.image.shape == (240, 320, 3) and newest.camera == "c"
        status = source.status()
        assert status.state == "streaming" and status.dropped >= 5 and status.taken == 2
        assert status.frames > 12  # the 12-frame clip looped
    finally:
        source.stop()
        assert source.join(2.0)
    assert source.status().state == "stopped"


def test_a_file_without_loop_ends(tmp_path):
    clip = make_clip(tmp_path / "clip.avi", frames=4, fps=40)
    source = CameraSource(CameraConfig(name="c", uri=str(clip)), FAST)
    source.start()
    wait_for(lambda: source.ended, 3, "the end of the file")
    assert source.status().state == "ended" and source.status().frames == 4
    assert source.join(1.0)


@pytest.mark.parametrize("how", ["moved away", "truncated"])
def test_a_camera_file_that_goes_away_is_retried_and_comes_back(tmp_path, how):
    clip = make_clip(tmp_path / "clip.avi", frames=6, fps=40)
    kept = tmp_path / "kept.avi"
    source = CameraSource(CameraConfig(name="c", uri=str(clip), loop=True), FAST)
    source.start()
    try:
        wait_for(lambda: source.status().frames >= 3, 3, "frames")
        if how == "moved away":
            os.replace(clip, kept)
        else:
            kept.write_bytes(clip.read_bytes())
            clip.write_bytes(b"")
        status = wait_for(lambda: source.status() if source.status().state == "reconnecting" else None, 3,
                          "the camera to report the failure")
        assert "clip.avi" in status.last_error
        assert ("does not exist" if how == "moved away" else "cannot open") in status.last_error
        failed_frames = source.status().frames
        time.sleep(0.5)  # still failing: backoff grows to reconnect_max_s, the thread keeps trying
        assert source.status().state in ("reconnecting", "connecting") and source.status().reconnects >= 2
        os.replace(kept, clip)
        wait_for(lambda: source.status().state == "streaming" and source.status().frames > failed_frames + 3, 3,
                 "the camera to come back")
        assert source.status().last_error is None
    finally:
        source.stop()
        assert source.join(2.0)


def test_a_missing_device_keeps_being_retried(tmp_path):
    source = CameraSource(CameraConfig(name="c", uri="/dev/video_fallwatch_absent"), FAST)
    source.start()
    try:
        status = wait_for(lambda: source.status() if source.status().reconnects >= 3 else None, 3, "retries")
        assert status.state in ("reconnecting", "connecting") and status.frames == 0
        assert "/dev/video_fallwatch_absent does not exist" in status.last_error
    finally:
        source.stop()
        assert source.join(1.0)


def test_a_stream_that_stalls_is_abandoned_and_reopened(tmp_path):
    """A FIFO whose writer stops writing mid-stream without closing: OpenCV's read() blocks. The
    watchdog gives up on that reader, and the next one opens what is at the path by then."""
    clip = make_clip(tmp_path / "clip.avi", frames=30, fps=40)
    data = clip.read_bytes()
    fifo = tmp_path / "stream.avi"
    os.mkfifo(str(fifo))
    release = threading.Event()

    def writer() -> None:
        with open(fifo, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            release.wait(20)

    threading.Thread(target=writer, daemon=True).start()
    source = CameraSource(CameraConfig(name="c", uri=str(fifo)), replace(FAST, stall_timeout_s=0.5))
    source.start()
    try:
        wait_for(lambda: source.status().frames >= 5, 5, "frames from the FIFO")
        stalled_at = wait_for(lambda: source.status().frames if source.status().since_last_frame_s > 0.3 else 0,
                              5, "the stream to stall")
        assert source.status().state == "streaming"  # not yet past stall_timeout_s
        os.replace(clip, fifo)  # what the next reader will find at the path: a working video
        assert wait_for(source.check_stall, 3, "the watchdog to notice")
        wait_for(lambda: source.status().frames > stalled_at + 5 and source.status().state == "streaming", 5,
                 "frames from the reopened camera")
        assert source.status().reconnects >= 1
    finally:
        release.set()
        source.stop()
        assert source.join(5.0)
