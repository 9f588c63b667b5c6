"""sd_notify over a real AF_UNIX datagram socket bound by the test, and the frame-fed watchdog."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List

import cv2
import pytest

from conftest import REPO, shared_data
from edge.health.notify import Notifier, Watchdog


class Listener:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def messages(self) -> List[str]:
        """Everything received so far (waits briefly for the first datagram only if none is queued)."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(2.0)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path):
    path = str(tmp_path / "notify.sock")
    lst = Listener(path)
    lst.path = path
    yield lst
    lst.close()


def test_messages_reach_a_path_socket(listener: Listener) -> None:
    n = Notifier({"NOTIFY_SOCKET": listener.path})
    assert n.enabled and n.watchdog_interval_s is None
    assert n.ready("engine loaded")
    assert n.status("room1: 12.5 fps")
    assert n.watchdog()
    assert n.extend_timeout(90)
    assert n.stopping()
    assert listener.messages() == ["READY=1\nSTATUS=engine loaded", "STATUS=room1: 12.5 fps", "WATCHDOG=1",
                                   "EXTEND_TIMEOUT_USEC=90000000", "STOPPING=1"]
    n.close()


def test_abstract_socket() -> None:
    name = "fallwatch-test-%s" % uuid.uuid4().hex
    lst = Listener("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert lst.messages() == ["READY=1"]
    finally:
        lst.close()


def test_no_socket_is_a_silent_no_op() -> None:
    n = Notifier({"WATCHDOG_USEC": "30000000"})
    assert not n.enabled and n.watchdog_interval_s is None
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    w = Watchdog(n, clock=lambda: 0.0)
    w.frame_advanced(1.0)
    assert w.is_ready and w.pings == 0


def test_default_environment_is_read(monkeypatch, listener: Listener) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval_s == 4.0


@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),   # for us
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),   # for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_honours_usec_and_pid(listener: Listener, env: dict, expected) -> None:
    n = Notifier(dict(env, NOTIFY_SOCKET=listener.path), pid=4242)
    assert n.watchdog_interval_s == expected


def test_a_relative_socket_name_is_refused(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="fallwatch.notify"):
        n = Notifier({"NOTIFY_SOCKET": "notify.sock"})
    assert not n.enabled
    assert "neither a path nor an @abstract name" in caplog.text


def test_send_failure_is_logged_once_and_never_raises(tmp_path: Path, caplog) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level(logging.WARNING, logger="fallwatch.notify"):
        assert n.watchdog() is False
        assert n.watchdog() is False
    assert caplog.text.count("cannot notify systemd") == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_pings_only_while_frames_advance(listener: Listener) -> None:
    clock = Clock()
    n = Notifier({"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "10000000"})
    w = Watchdog(n, clock=clock)
    assert w.ping_interval_s == 5.0
    assert listener.messages() == []
    w.frame_advanced(0.0, "room1")                       # first frame: READY
    assert listener.messages() == ["READY=1\nSTATUS=processing frames"]
    t = 0.0
    for _ in range(40):                                 # 10 s of frames at 4 fps: a ping every 5 s
        clock.now += 0.25
        t += 0.25
        w.frame_advanced(t, "room1")
    assert listener.messages() == ["WATCHDOG=1", "WATCHDOG=1"]
    # the camera repeats a stale frame (same timestamp) for 20 s: no ping
    for _ in range(80):
        clock.now += 0.25
        w.frame_advanced(t, "room1")
    assert listener.messages() == []
    # frames stop altogether: nothing calls the watchdog, nothing is sent
    clock.now += 60
    assert listener.messages() == []
    # frames come back: the next advancing frame pings at once (the last ping is long ago)
    w.frame_advanced(t + 0.25, "room1")
    assert listener.messages() == ["WATCHDOG=1"]
    assert w.pings == 3


def test_each_source_advances_on_its_own(listener: Listener) -> None:
    clock = Clock()
    w = Watchdog(Notifier({"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "2000000"}), clock=clock)
    w.frame_advanced(100.0, "room1")
    w.frame_advanced(5.0, "hall")     # another camera's clock: earlier than room1's, still new for hall
    clock.now += 1.5
    w.frame_advanced(5.0, "hall")     # hall stale
    w.frame_advanced(100.0, "room1")  # room1 stale
    assert listener.messages() == ["READY=1\nSTATUS=processing frames"]
    w.frame_advanced(5.1, "hall")
    assert listener.messages() == ["WATCHDOG=1"]


def test_no_watchdog_configured_sends_ready_only(listener: Listener) -> None:
    clock = Clock()
    w = Watchdog(Notifier({"NOTIFY_SOCKET": listener.path}), clock=clock)
    for i in range(100):
        clock.now += 1
        w.frame_advanced(float(i))
    assert listener.messages() == ["READY=1\nSTATUS=processing frames"]
    w.stopping("shutting down")
    assert listener.messages() == ["STOPPING=1\nSTATUS=shutting down"]


# ---------------------------------------------------------------- the daemon under a test "systemd"


class MjpegCamera:
    """An HTTP MJPEG camera (multipart/x-mixed-replace, as IP cameras serve) made of a real video's
    frames: it streams at ``fps`` until :meth:`stall`, then keeps every connection open and silent,
    like a camera whose encoder hung."""

    def __init__(self, video: Path, fps: float = 10.0, frames: int = 60) -> None:
        cap = cv2.VideoCapture(str(video))
        self.jpegs = []
        while len(self.jpegs) < frames:
            ok, image = cap.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", image)[1].tobytes())
        cap.release()
        assert self.jpegs, "cannot read %s" % video
        self.stalled = threading.Event()
        self.closing = threading.Event()
        self.last_frame_sent = 0.0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not camera.stalled.is_set() and not camera.closing.is_set():
                        jpeg = camera.jpegs[i % len(camera.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                         % (len(jpeg), jpeg))
                        self.wfile.flush()
                        camera.last_frame_sent = time.monotonic()
                        i += 1
                        time.sleep(1.0 / fps)
                except OSError:
                    return
                camera.closing.wait(120)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d/stream.mjpg" % self.server.server_address[1]

    def stall(self) -> None:
        self.stalled.set()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def test_daemon_ready_then_pings_while_frames_advance_and_none_after_a_stall(tmp_path: Path, model_onnx) -> None:
    """`fallwatch run` with the test's own NOTIFY_SOCKET: READY once the model is loaded and a frame
    went through, WATCHDOG every half interval while the camera streams, none once it stalls."""
    camera = MjpegCamera(shared_data("gmdcsa24", "subject1", "Fall", "13.mp4"))
    config = tmp_path / "config.yaml"
    config.write_text("paths:\n  models_dir: %s\n  state_dir: %s\ndaemon:\n  stats_interval_s: 0\n"
                      "cameras:\n  - name: room1\n    uri: %s\n" % (REPO / "models", tmp_path / "state", camera.url))
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    interval_s = 4.0
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC=str(int(interval_s * 1e6)))
    env.pop("WATCHDOG_PID", None)
    log_file = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config), "run"], cwd=str(REPO),
                            env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    received = []  # (monotonic time, message)

    def collect(until: float) -> None:
        while time.monotonic() < until and proc.poll() is None:
            try:
                received.append((time.monotonic(), sock.recv(4096).decode()))
            except socket.timeout:
                pass

    try:
        deadline = time.monotonic() + 90
        while not any(m.startswith("READY=1") for _, m in received):
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "daemon.log").read_text()
            collect(time.monotonic() + 0.5)
        ready_at = received[-1][0]
        collect(ready_at + 10.0)                       # streaming
        camera.stall()
        stalled_at = time.monotonic()
        collect(stalled_at + 3 * interval_s)           # stalled: frames stop, so must the pings
        assert proc.poll() is None, "the daemon exited during the stall:\n" + (tmp_path / "daemon.log").read_text()
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        collect(time.monotonic() + 5.0)
        assert proc.wait(10) == 0, (tmp_path / "daemon.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        camera.close()
        sock.close()
        log_file.close()

    messages = [m for _, m in received]
    log_text = (tmp_path / "daemon.log").read_text()
    assert messages[0] == "READY=1\nSTATUS=processing frames", messages
    pings = [t for t, m in received if m == "WATCHDOG=1"]
    streaming = [t for t in pings if t <= stalled_at]
    assert len(streaming) >= 3, (messages, log_text)
    gaps = [b - a for a, b in zip([ready_at] + streaming, streaming)]
    # never much more often than half the interval (received times jitter on a loaded machine)
    assert min(gaps) >= interval_s / 2 - 0.5, gaps
    assert max(gaps) < interval_s, gaps                     # always in time for systemd
    # Frames already captured before the stall may still finish (queues of 2); after that, silence.
    late = [t - stalled_at for t in pings if t > stalled_at]
    assert len(late) <= 1 and all(dt < interval_s / 2 + 2.0 for dt in late), late
    # then nothing for well over the watchdog interval: systemd would have restarted the service
    assert stopped_at - max(pings) > 1.5 * interval_s
    assert messages[-1].startswith("STOPPING=1"), messages
