"""The web page's server answering raw HTTP requests on loopback without a login (no daemon, no browser):
what it refuses before any route runs. A real edge.web.server.WebServer from a real config file, real
sockets; the heavier end-to-end checks live in tests/test_web.py."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edge.config import load_config
from edge.web.server import WebServer
from mosquitto import free_port


@pytest.fixture()
def server(tmp_path: Path):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text("paths:\n  state_dir: %s\ncameras:\n  - name: room1\n    uri: /dev/video0\n"
                      "web:\n  enabled: true\n  bind: 127.0.0.1\n  port: %d\n  token_env: null\n"
                      % (tmp_path / "state", port), encoding="utf-8")
    web = WebServer(load_config(config, env={})).start()
    yield web
    web.stop()


def ask(web: WebServer, request: bytes) -> bytes:
    """Send ``request`` and read the answer until the server closes or 5 s pass (then b'TIMEOUT')."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as conn:
        conn.sendall(request)
        answer = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return answer
                answer += data
        except socket.timeout:
            return b"TIMEOUT " + answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8080", "localhost:8080", "[::1]:8080"])
def test_loopback_host_names_are_served(server, host):
    answer = ask(server, b"GET /api/cameras HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
    assert status_of(answer) == 200
    assert b'"room1"' in answer


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "192.168.1.20:8080"])
def test_other_host_names_are_refused_without_a_login(server, host):
    """DNS rebinding: a site re-pointing its own name at 127.0.0.1 is same-origin with the page; its
    requests still carry its own name in Host, and get 403 (GET and a POST with X-Fallwatch: 1)."""
    answer = ask(server, b"GET /api/cameras HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
    assert status_of(answer) == 403
    assert b'"room1"' not in answer
    body = b'{"zones": []}'
    answer = ask(server, b"POST /api/zones/room1 HTTP/1.1\r\nHost: %s\r\nX-Fallwatch: 1\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (host.encode(), len(body), body))
    assert status_of(answer) == 403
    assert b"loopback" in answer


@pytest.mark.parametrize("length", [b"-1", b"many"])
def test_a_bad_content_length_is_refused_at_once(server, length):
    """Content-Length -1 made the server read until the client closed, with no bound on the size."""
    answer = ask(server, b"POST /api/events/x/label HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Fallwatch: 1\r\n"
                 b"Content-Length: %s\r\n\r\n{}" % length)
    assert not answer.startswith(b"TIMEOUT"), answer
    assert status_of(answer) == 400
    assert b"Content-Length" in answer


def test_the_timeline_without_matplotlib_is_a_clear_501_not_a_logged_traceback(server, tmp_path, monkeypatch, caplog):
    """install.sh does not install matplotlib (the plots extra) on a Jetson: the review page's timeline
    then answers 501 with the fix, and the log holds no error with a traceback for each event shown."""
    import json
    import logging
    import sys

    folder = tmp_path / "state" / "review" / "events" / "ev1"
    folder.mkdir(parents=True)
    (folder / "event.json").write_text(json.dumps({"event": {"type": "fall_detected", "event_id": "ev1"},
                                                   "camera": "room1", "wall": 1.0}), encoding="utf-8")
    (folder / "skeletons.jsonl").write_text("", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    with caplog.at_level(logging.DEBUG, logger="fallwatch.web"):
        answer = ask(server, b"GET /api/events/ev1/timeline.png HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Connection: close\r\n\r\n")
    assert status_of(answer) == 501
    assert b"matplotlib" in answer
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    answer = ask(server, b"GET /api/events/nosuch/timeline.png HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 404


def test_an_ipv6_loopback_bind_is_served(tmp_path):
    """config.yaml names ::1 as a loopback web.bind; the server was IPv4 only and refused to start on it."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text("paths:\n  state_dir: %s\ncameras:\n  - name: room1\n    uri: /dev/video0\n"
                      "web:\n  enabled: true\n  bind: \"::1\"\n  port: %d\n  token_env: null\n"
                      % (tmp_path / "state", port), encoding="utf-8")
    web = WebServer(load_config(config, env={})).start()
    try:
        with socket.create_connection(("::1", web.port), timeout=5) as conn:
            conn.sendall(b"GET /api/cameras HTTP/1.1\r\nHost: [::1]:%d\r\nConnection: close\r\n\r\n" % web.port)
            answer = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                answer += data
    finally:
        web.stop()
    assert status_of(answer) == 200 and b'"room1"' in answer


def test_password_checks_run_one_at_a_time(monkeypatch):
    """A wrong password costs a PBKDF2 of 200000 rounds: many connections at once must not take every
    core from the detector. The real verify_password runs; the wrapper only counts how many at once."""
    import base64
    import threading

    from edge.web import auth

    running, most, lock = [0], [0], threading.Lock()
    real = auth.verify_password

    def counted(password, encoded):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(password, encoded)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(auth, "verify_password", counted)
    checker = auth.Authenticator("admin", auth.hash_password("right", iterations=20000), None)
    header = "Basic " + base64.b64encode(b"admin:wrong").decode()
    results = []
    threads = [threading.Thread(target=lambda: results.append(checker.check_header(header))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False] * 6
    assert most[0] == 1
    assert checker.check_header("Basic " + base64.b64encode(b"admin:right").decode()) is True
