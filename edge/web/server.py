"""The setup and review page: an HTTP(S) server in a daemon thread of ``fallwatch run``.

Standard library only (``http.server.ThreadingHTTPServer`` and ``ssl``): a handful of routes, a few
requests per second from one or two browsers, no dependency to install on a Jetson. Routes (every
one behind :class:`edge.web.auth.Authenticator` when a password or token is configured, which
config check demands off loopback; unauthenticated requests get 401 and nothing else)::

    GET  /                              the page (edge/web/static/index.html), /static/<file> its files
    GET  /api/cameras                   [{name, zones (in the config file), zones_in_force (running)}]
    GET  /api/live/<camera>.jpg         the newest frame's skeletons (edge.web.live), blurred/blank
    GET  /api/live/<camera>/people      the newest frame's people: track ids, states, keypoints
    GET  /api/status                    the daemon's stats message (fps, stages, cameras, mqtt, jetson)
    POST /api/zones/<camera>            {"zones": [{"kind", "polygon"}]} -> edge.configedit.save_zones,
                                        then the SIGHUP reload; 400 with the validator's message
    GET  /api/events                    recent events, newest first (edge.review.list_events)
    GET  /api/events/<id>/snapshot.jpg  the event's skeleton snapshot, /timeline.png its timeline
    POST /api/events/<id>/label         {"label": "fall" | "adl"} -> edge.review.label_event

Without a login (loopback only), a request whose ``Host`` header names anything but a loopback address
or ``localhost`` gets 403 (a DNS-rebinding page would otherwise be same-origin with this one).
POSTs must carry the header ``X-Fallwatch: 1`` (a page of another site cannot send it without a
CORS preflight, which this server never grants). Requests are logged at debug level without any
header; credentials are never logged.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import mimetypes
import re
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edge.settings import ConfigError
from edge.web.auth import COOKIE, Authenticator
from edge.web.live import LiveFrames
from edge.web.options import is_loopback

log = logging.getLogger("fallwatch.web")

STATIC = Path(__file__).resolve().parent / "static"
RELOAD_WAIT_S = 20.0  # how long a zone save waits for the daemon to run on the new configuration
MAX_BODY = 1 << 20
_NAME = r"[A-Za-z0-9_.:-]{1,128}"


class WebError(Exception):
    """The page cannot be served (the address is taken, the certificate cannot be loaded)."""


class NoEvent(Exception):
    """The review has no event of that id (the message says where it looked)."""


class WebServer:
    """The page's server. ``config``: the loaded configuration (its ``web`` section, ``source`` the
    file zones are saved to, ``paths.state_dir`` and ``review.site_dir`` for the events); ``mqtt``: the MQTT
    sink or None (its counters join the status). :meth:`start` binds (raises WebError) and serves
    in a daemon thread; :meth:`stop` ends it within a fraction of a second."""

    def __init__(self, config: Any, mqtt: Any = None) -> None:
        web = config.web
        self.config = config
        self.web = web
        self.mqtt = mqtt
        self.live = LiveFrames()
        self.auth = Authenticator(web.username, web.password_hash_resolved, web.token_resolved, web.session_hours)
        self._daemon: Any = None
        self._generation = 0
        self._changed = threading.Condition()
        self._reloader: Optional[Callable[[], Any]] = None
        self._save_lock = threading.Lock()
        self._plot_lock = threading.Lock()
        self._previous: Optional[Tuple[float, Dict[str, int]]] = None
        self._thread: Optional[threading.Thread] = None
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._scratch = Path(tempfile.mkdtemp(prefix="fallwatch-web-"))

    # ---------------------------------------------------------------- lifecycle (the daemon's side)

    def start(self) -> "WebServer":
        web = self.web
        server_class = _Server6 if _is_ipv6(web.bind) else _Server
        try:
            httpd = server_class((web.bind.strip("[]"), web.port), _Handler)
        except OSError as exc:
            raise WebError("web: cannot listen on %s:%d: %s (web.bind, web.port)" % (web.bind, web.port,
                                                                                  exc.strerror or exc)) from None
        if web.tls.enabled:
            try:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(str(web.tls.cert_file), str(web.tls.key_file) if web.tls.key_file else None)
                if web.tls.ca_file is not None:
                    context.load_verify_locations(str(web.tls.ca_file))
                    context.verify_mode = ssl.CERT_REQUIRED
            except (OSError, ssl.SSLError) as exc:
                httpd.server_close()
                raise WebError("web.tls: cannot load the certificate or key: %s" % exc) from None
            # the handshake happens in the request's own thread (_Handler.setup), never in the accepting one:
            # a client that stalls it cannot hold up the others or the stop
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        httpd.app = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.1),
                                        name="fallwatch-web", daemon=True)
        self._thread.start()
        log.info("web page: %s://%s:%d/ (%s%s)", "https" if web.tls.enabled else "http",
                 "[%s]" % web.bind.strip("[]") if _is_ipv6(web.bind) else web.bind, self.port,
                 "login required" if self.auth.required else "no login: loopback only",
                 ", video shown" if web.show_video else ", skeletons over a %s frame" % ("blurred" if web.background == "blur" else "blank"))
        return self

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd is not None else self.web.port

    def stop(self) -> None:
        """Stop serving (requests in progress are left to finish in their daemon threads)."""
        with self._changed:
            self._daemon = None
            self._changed.notify_all()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        shutil.rmtree(str(self._scratch), ignore_errors=True)
        log.info("web page stopped")

    def attach(self, daemon: Any) -> None:
        """The daemon now running (at start and after each reload)."""
        with self._changed:
            self._daemon = daemon
            self._generation += 1
            self._changed.notify_all()

    def set_reloader(self, reload: Callable[[], Any]) -> None:
        """``reload()`` asks the daemon for the SIGHUP reload (edge.daemon.serve sets it)."""
        self._reloader = reload

    # ---------------------------------------------------------------- what the routes do

    def running_config(self) -> Any:
        daemon = self._daemon
        return daemon.config if daemon is not None else self.config

    def cameras(self) -> List[Dict[str, Any]]:
        running = self.running_config()
        try:
            in_file, error = self._zones_in_file(), None
        except ConfigError as exc:  # the file changed under the daemon and is invalid now
            in_file, error = None, str(exc)
        return [{"name": cam.name, "zones": in_file.get(cam.name, []) if in_file is not None else None,
                 "zones_error": error, "zones_in_force": [z.to_dict() for z in cam.zones]} for cam in running.cameras]

    def _zones_in_file(self) -> Optional[Dict[str, List[Dict[str, Any]]]]:
        if self.config.source is None:
            return None
        from edge.configedit import camera_zones

        return camera_zones(self.config.source)

    def status(self) -> Dict[str, Any]:
        """The stats message as MQTT publishes it (edge.daemon.Daemon.stats, the MQTT sink's counters,
        jtop's figures), taken now; the frame rates are over the time since the previous status."""
        from edge.health.jetson import read_stats

        daemon = self._daemon
        if daemon is None:
            return {"type": "stats", "running": False}
        stats = daemon.stats(advance=False)
        now = time.monotonic()
        counts = {name: cam["frames_processed"] for name, cam in stats["cameras"].items()}
        previous, self._previous = self._previous, (now, counts)
        if previous is not None and now > previous[0]:
            span = now - previous[0]
            for name, cam in stats["cameras"].items():
                cam["fps_processed"] = round((counts[name] - previous[1].get(name, 0)) / span, 2)
            stats["fps_processed"] = round(sum(counts.values()) - sum(previous[1].values()), 2) / span
            stats["fps_processed"] = round(stats["fps_processed"], 2)
        stats["running"] = True
        stats["zones_in_force"] = {cam.name: [z.to_dict() for z in cam.zones] for cam in daemon.config.cameras}
        stats["config_generation"] = self._generation
        if self.mqtt is not None:
            stats["mqtt"] = self.mqtt.snapshot_counters()
        jetson = read_stats()
        if jetson:
            stats["jetson"] = jetson
        return stats

    def save_zones(self, camera: str, zones: Any) -> Dict[str, Any]:
        """Validate and write the camera's zones, then reload; raises ConfigError (nothing written)."""
        from edge.configedit import save_zones

        with self._save_lock:
            save_zones(self.config.source, camera, zones)
            log.info("web: zones of camera %s saved to %s (%d zone(s)); reloading", camera, self.config.source,
                     len(zones))
            return self._reload()

    def _reload(self) -> Dict[str, Any]:
        if self._reloader is None:
            return {"ok": True, "reloaded": False, "message": "saved; the daemon is not running here, so nothing "
                    "was reloaded"}
        with self._changed:
            generation = self._generation
            self._reloader()
            deadline = time.monotonic() + RELOAD_WAIT_S
            while self._generation == generation and time.monotonic() < deadline:
                self._changed.wait(0.2)
            reloaded = self._generation != generation
        if reloaded:
            return {"ok": True, "reloaded": True, "message": "saved and in force: the daemon reloaded %s"
                    % self.config.source}
        return {"ok": True, "reloaded": False, "message": "saved to %s, but the daemon has not restarted on it within "
                "%d s: see its log" % (self.config.source, RELOAD_WAIT_S)}

    def state_dir(self) -> Path:
        return Path(self.running_config().paths.state_dir)

    def site_dir(self) -> Path:
        from edge.review import site_dir_of

        return site_dir_of(self.running_config())

    def events(self) -> List[Dict[str, Any]]:
        from edge.review import list_events

        return list_events(self.state_dir())

    def event_file(self, event_id: str, name: str) -> Optional[Path]:
        """The event's snapshot.jpg, or its timeline PNG (drawn once per event, label and configuration
        generation, with the running configuration's thresholds); raises edge.review.ReviewError for an unknown event."""
        from edge.review.store import SNAPSHOT, event_folder, read_label
        from edge.review import timeline_png

        folder = event_folder(self.state_dir(), event_id)
        if name == "snapshot.jpg":
            path = folder / SNAPSHOT
            return path if path.is_file() else None
        # per configuration too: a reload may change the fall thresholds the plot draws
        out = self._scratch / ("%s-%s-g%d-timeline.png" % (event_id, read_label(folder) or "none", self._generation))
        with self._plot_lock:  # matplotlib is not thread-safe, and one drawing per event is enough
            if not out.is_file():
                timeline_png(self.state_dir(), event_id, out, self.running_config())
        return out

    def label(self, event_id: str, label: str) -> Dict[str, Any]:
        """Label the event (edge.review.label_event); raises edge.review.ReviewError (the site dataset
        cannot be written, ...) and :class:`NoEvent` for an unknown event."""
        from edge.review import ReviewError, label_event
        from edge.review.store import event_folder

        try:
            event_folder(self.state_dir(), event_id)
        except ReviewError as exc:
            raise NoEvent(str(exc)) from None
        path = label_event(self.state_dir(), self.site_dir(), event_id, label)
        log.info("web: event %s labelled %s: %s", event_id, label, path)
        return {"ok": True, "path": str(path), "label": label}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: WebServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed (a TLS handshake refused, a client gone): a debug line, not a traceback."""
        log.debug("web: connection from %s failed: %s", client_address[0], sys.exc_info()[1])


class _Server6(_Server):
    address_family = socket.AF_INET6  # web.bind is an IPv6 address (::1, ::, ...)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        return False


def _host_name(header: Optional[str]) -> Optional[str]:
    """The host of a ``Host`` header without its port (``[::1]:8080`` -> ``::1``); None without the header."""
    if header is None:
        return None
    header = header.strip()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=False, default=str).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "fallwatch"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # within self.timeout (set on the socket by super().setup())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("web: %s %s", self.address_string(), format % args)

    # ---------------------------------------------------------------- plumbing

    def _send(self, status: int, body: bytes, content_type: str, headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, _json_bytes(obj), "application/json", headers)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"ok": False, "error": message})

    def _authorised(self) -> Optional[Dict[str, str]]:
        """Extra headers to send (a new session cookie) when the request may go on; None after a 401."""
        auth = self.server.app.auth
        if not auth.required:
            # No login (loopback only): a page of another site whose host name it re-points at 127.0.0.1
            # (DNS rebinding) would be same-origin, so its own header X-Fallwatch would pass: answer only
            # requests addressed to a loopback name or address.
            host = _host_name(self.headers.get("Host"))
            if host is not None and not is_loopback(host):
                self.close_connection = True
                self._error(HTTPStatus.FORBIDDEN, "without a login this page answers only to a loopback address "
                            "(127.0.0.1, localhost, [::1]), not to host %r; set web.password_hash or a token "
                            "to reach it by another name" % host[:100])
                return None
            return {}
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if COOKIE in cookie and auth.check_session(cookie[COOKIE].value):
            return {}
        if auth.check_header(self.headers.get("Authorization")):
            secure = "; Secure" if self.server.app.web.tls.enabled else ""
            return {"Set-Cookie": "%s=%s; Path=/; HttpOnly; SameSite=Strict%s" % (COOKIE, auth.new_session(), secure)}
        self.close_connection = True  # a body it sent is not read
        body = b"401: log in (web.username and the password or token)\n"
        self._send(HTTPStatus.UNAUTHORIZED, body, "text/plain; charset=utf-8",
                   {"WWW-Authenticate": 'Basic realm="fallwatch", charset="UTF-8"'})
        return None

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:  # rfile.read(-1) would read until the client closes, without any bound
            self.close_connection = True
            raise ValueError("the request's Content-Length is not a number of bytes")
        if length > MAX_BODY:
            self.close_connection = True  # the body is not read
            raise ValueError("the request body is larger than %d bytes" % MAX_BODY)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError):
            raise ValueError("the request body is not JSON") from None

    # ---------------------------------------------------------------- methods

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        headers = self._authorised()
        if headers is None:
            return
        try:
            self._get(self.path.split("?", 1)[0], headers)
        except (BrokenPipeError, ConnectionResetError) as exc:  # the browser went away mid-answer
            log.debug("web: GET %s: the client left (%s)", self.path.split("?", 1)[0], exc)
        except Exception as exc:  # a bug or a missing file: answer, log, keep serving
            log.exception("web: GET %s failed", self.path.split("?", 1)[0])
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "%s: %s" % (type(exc).__name__, exc))

    def do_POST(self) -> None:  # noqa: N802
        headers = self._authorised()
        if headers is None:
            return
        if self.headers.get("X-Fallwatch") != "1":
            self.close_connection = True
            self._error(HTTPStatus.FORBIDDEN, "POST requests need the header X-Fallwatch: 1")
            return
        try:
            self._post(self.path.split("?", 1)[0], headers)
        except (BrokenPipeError, ConnectionResetError) as exc:  # the browser went away mid-answer
            log.debug("web: POST %s: the client left (%s)", self.path.split("?", 1)[0], exc)
        except Exception as exc:
            log.exception("web: POST %s failed", self.path.split("?", 1)[0])
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "%s: %s" % (type(exc).__name__, exc))

    def do_PUT(self) -> None:  # noqa: N802
        if self._authorised() is not None:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use GET or POST")

    do_DELETE = do_PATCH = do_PUT

    def _get(self, path: str, headers: Dict[str, str]) -> None:
        app = self.server.app
        if path in ("/", "/index.html"):
            return self._file(STATIC / "index.html", headers)
        m = re.fullmatch(r"/static/([A-Za-z0-9_-]+\.(?:js|css|html|svg|png))", path)
        if m:
            return self._file(STATIC / m.group(1), headers)
        if path == "/api/cameras":
            return self._json(200, {"cameras": app.cameras(), "live_fps": app.web.live_fps,
                                    "show_video": app.web.show_video}, headers)
        if path == "/api/status":
            return self._json(200, app.status(), headers)
        m = re.fullmatch(r"/api/live/(%s)\.jpg" % _NAME, path)
        if m:
            web = app.web
            mode = "video" if web.show_video else web.background
            found = app.live.jpeg(m.group(1), mode, web.view_width_px, web.blur_sigma_px)
            if found is None:
                return self._error(404, "no frame from camera %s yet" % m.group(1))
            data, frame = found
            return self._send(200, data, "image/jpeg", dict(headers, **{"X-Fallwatch-Frame": str(frame)}))
        m = re.fullmatch(r"/api/live/(%s)/people" % _NAME, path)
        if m:
            people = app.live.people(m.group(1))
            if people is None:
                return self._error(404, "no frame from camera %s yet" % m.group(1))
            return self._json(200, people, headers)
        if path == "/api/events":
            return self._json(200, {"events": app.events()}, headers)
        m = re.fullmatch(r"/api/events/(%s)/(snapshot\.jpg|timeline\.png)" % _NAME, path)
        if m:
            from edge.errors import FallwatchError
            from edge.review import ReviewError

            try:
                file = app.event_file(m.group(1), m.group(2))
            except ReviewError as exc:
                return self._error(404, str(exc))
            except FallwatchError as exc:  # the timeline needs matplotlib, which the Jetson install leaves out
                log.debug("web: %s: %s", path, exc)
                return self._error(HTTPStatus.NOT_IMPLEMENTED, str(exc))
            if file is None or not file.is_file():
                return self._error(404, "event %s has no %s" % (m.group(1), m.group(2)))
            return self._file(file, headers)
        self._error(404, "no such page: %s" % path)

    def _post(self, path: str, headers: Dict[str, str]) -> None:
        app = self.server.app
        try:
            body = self._body()
        except ValueError as exc:
            return self._error(400, str(exc))
        m = re.fullmatch(r"/api/zones/(%s)" % _NAME, path)
        if m:
            zones = body.get("zones") if isinstance(body, dict) else None
            if not isinstance(zones, list):
                return self._error(400, 'expected {"zones": [{"kind": "ignore" | "floor", "polygon": [[x, y], ...]}]}')
            try:
                result = app.save_zones(m.group(1), zones)
            except ConfigError as exc:
                return self._error(400, str(exc))
            return self._json(200, result, headers)
        m = re.fullmatch(r"/api/events/(%s)/label" % _NAME, path)
        if m:
            label = body.get("label") if isinstance(body, dict) else None
            if label not in ("fall", "adl"):
                return self._error(400, 'expected {"label": "fall"} (a real fall) or {"label": "adl"} (a false alarm)')
            from edge.review import ReviewError

            try:
                result = app.label(m.group(1), label)
            except NoEvent as exc:
                return self._error(404, str(exc))
            except ReviewError as exc:
                return self._error(400, str(exc))
            return self._json(200, result, headers)
        self._error(404, "no such action: %s" % path)

    def _file(self, path: Path, headers: Dict[str, str]) -> None:
        if not path.is_file():
            return self._error(404, "no such file: %s" % path.name)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        self._send(200, path.read_bytes(), content_type, headers)
