"""The configuration: one YAML file, loaded once at start into frozen, typed dataclasses.

Every section is a frozen dataclass whose fields declare their own schema in the field
metadata (see :func:`edge.settings.setting`): type (the annotation), default, allowed range,
choices or pattern, and a one-line title; the sections a stage takes are defined beside it
(``FallConfig`` in edge.fall, ``TrackerConfig`` in edge.track, ``ViewsConfig`` in edge.inference.views)
and only assembled here. One generic loader walks the YAML mapping against those dataclasses;
each section checks its own values and cross-field rules when constructed, and the loader
reports a mistake with its key path::

    config.yaml: cameras[1].fps: got 'fast' (str); expected a number from 1 to 240
    config.yaml: mqtt.hots: unknown key; did you mean 'host'?
    config.yaml: fall.up_head_height_bh: got 0.3 (float); must be above max_head_height_bh (0.35) ...

Every key has a default: an empty file, a missing section or ``load_config(None)`` is valid.
Relative paths are resolved against the directory of the config file (the current directory
when there is no file). The MQTT password is resolved from, in this order: the environment
variable named by ``mqtt.password_env``, the first line of ``mqtt.password_file``, then
``mqtt.password``; it lives in ``config.mqtt.password``, which ``repr`` and
``to_dict()`` never show.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import yaml

from edge.inference import specs
from edge.fall import FallConfig
from edge.settings import (ConfigError, Section, expected, fields_of, is_section, plain, problem,
                           section, setting, show, type_hints, unwrap)
from edge.track import TrackerConfig
from edge.inference.views import ViewsConfig
from edge.inference.topdown import TopDownConfig
from edge.web.options import WebConfig, is_loopback, resolve_web
from edge.review.settings import ReviewConfig


SYSTEM_CONFIG = Path("/etc/fallwatch/config.yaml")


def _check_uri(uri: str) -> Optional[str]:
    scheme = uri.split("://", 1)[0] if "://" in uri else None
    if scheme is None or scheme in ("v4l2", "rtsp", "rtsps", "http", "https"):
        return None if uri.strip() else "expected a camera URI or a video file path"
    if scheme == "csi" and re.fullmatch(r"csi://\d+", uri):
        return None
    return ("expected csi://N, v4l2:///dev/videoN, /dev/videoN, rtsp://..., http(s)://... "
            "or a video file path")


@dataclass(frozen=True)
class PathsConfig(Section):
    models_dir: Path = setting(Path("models"), "where fetched and converted models live")
    state_dir: Path = setting(Path("state"), "engines and the event outbox (on a Jetson: /var/lib/fallwatch)")


@dataclass(frozen=True)
class ModelConfig(Section):
    spec: str = setting("openpose-mobilenet-thin", "a built-in model spec name or the path of a spec YAML file")
    onnx: Optional[Path] = setting(None, "the ONNX model; null = the default model under models_dir")
    input_height: int = setting(368, "network input height, pixels", between=(32, 2048))
    input_width: int = setting(432, "network input width, pixels", between=(32, 2048))
    resize: str = setting("stretch", "how frames of another aspect ratio are fitted (stretch finds more people; "
                          "BENCHMARKS.md, Views)", choices=("letterbox", "stretch"))
    low_light: str = setting("never", "auto: brighten frames darker than low_light_luma (gamma, then CLAHE) before "
                             "the network, in the daemon and in INT8 calibration alike; never: pass every frame as "
                             "it is (BENCHMARKS.md, Low light)", choices=("auto", "never"))
    low_light_luma: float = setting(60, "mean luma, 0 (black) to 255 (white), below which low_light auto brightens "
                                    "a frame", between=(0, 255))


@dataclass(frozen=True)
class EngineConfig(Section):
    backend: str = setting("onnxruntime", "inference backend", choices=("onnxruntime", "tensorrt"))
    threads: int = setting(0, "ONNX Runtime intra-op threads, 0 = library default", between=(0, 64))
    engine_file: Optional[Path] = setting(
        None, "TensorRT engine; null = <state_dir>/engines/<model>_<H>x<W>_<precision>.engine")
    precision: str = setting("int8", "precision of the TensorRT engine (its default file name; fallwatch-calibrate's "
                             "default)", choices=("int8", "fp16", "fp32"))


def _check_polygon(points: Tuple[Tuple[float, ...], ...]) -> Optional[str]:
    if len(points) < 3 or any(len(p) != 2 or not (0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0) for p in points):
        return "expected at least 3 corners [x, y], each between 0 and 1 (fractions of the frame)"
    return None


@dataclass(frozen=True)
class ZoneConfig(Section):
    kind: str = setting("ignore", "ignore: no fall alerts for people lying here (a bed, a sofa); floor: once "
                        "any floor zone exists, alerts only there", choices=("ignore", "floor"))
    polygon: Tuple[Tuple[float, ...], ...] = setting(
        (), "corners [x, y] as fractions of the frame width and height (0..1), at least 3", check=_check_polygon)


def _check_intrinsics(values: Tuple[float, ...]) -> Optional[str]:
    if values and (len(values) != 4 or values[0] <= 0 or values[1] <= 0):
        return "expected [] or [fx, fy, cx, cy] in pixels of the frame, fx and fy above 0"
    return None


def _check_plane(values: Tuple[float, ...]) -> Optional[str]:
    if values and (len(values) != 4 or not sum(v * v for v in values[:3]) > 0):
        return "expected [] or [a, b, c, d] (a x + b y + c z + d = 0, metres), with (a, b, c) not all 0"
    return None


@dataclass(frozen=True)
class CameraConfig(Section):
    name: str = setting("room1", "camera name, unique; part of MQTT topics", pattern=r"[a-z0-9_]{1,32}",
                        hint="1 to 32 of a-z, 0-9 and _")
    uri: str = setting("/dev/video0", "csi://N, v4l2:///dev/videoN, /dev/videoN, rtsp://... or a video file",
                       check=_check_uri)
    width: int = setting(1280, "capture width, pixels", between=(1, 7680))
    height: int = setting(720, "capture height, pixels", between=(1, 4320))
    fps: float = setting(30, "capture frame rate, frames per second", between=(1, 240))
    max_fps: float = setting(0, "process at most this many frames per second, 0 = as fast as possible",
                             between=(0, 240))
    flip: str = setting("none", "image orientation correction",
                        choices=("none", "horizontal", "vertical", "rotate_180", "rotate_90_cw", "rotate_90_ccw"))
    loop: bool = setting(False, "video files only: play the file again from the start when it ends (testing)")
    realtime: bool = setting(True, "video files only: true plays the file at its own frame rate, like a camera "
                             "(frames the pipeline cannot keep up with are dropped); false reads every frame at the "
                             "pipeline's pace, timed by its place in the file, as `fallwatch replay` does")
    rtsp_codec: str = setting("auto", "rtsp:// cameras opened through GStreamer (an OpenCV without FFmpeg): the "
                              "stream's codec; auto = h265 when the URI's path names h265 or hevc, else h264",
                              choices=("auto", "h264", "h265"))
    zones: Tuple[ZoneConfig, ...] = section(tuple, "zones of this camera's picture for the fall detector")
    intrinsics: Tuple[float, ...] = setting(
        (), "3D models only: [fx, fy, cx, cy], the focal lengths and principal point in pixels of the frame as "
        "the pipeline sees it (after flip); [] = from hfov_deg", check=_check_intrinsics)
    floor_plane: Tuple[float, ...] = setting(
        (), "3D models with fall.use_3d only: the floor as [a, b, c, d], a x + b y + c z + d = 0 in this camera's "
        "coordinates (metres; x right, y down, z forward), (a, b, c) pointing up into the room; [] = unknown "
        "(fallwatch floor estimate measures it)",
        check=_check_plane)
    hfov_deg: float = setting(77.3, "3D models only, when intrinsics is []: the assumed horizontal field of view, "
                              "degrees (fx = fy = width / 2 / tan(hfov / 2), principal point at the centre)",
                              between=(10, 170))


@dataclass(frozen=True)
class TlsConfig(Section):
    enabled: bool = setting(False, "connect to the broker over TLS")
    ca_file: Optional[Path] = setting(None, "CA certificate(s), PEM; null = the system CA store")
    cert_file: Optional[Path] = setting(None, "client certificate, PEM")
    key_file: Optional[Path] = setting(None, "client private key, PEM")
    insecure: bool = setting(False, "skip hostname verification (testing only)")


@dataclass(frozen=True)
class OutboxConfig(Section):
    file: Optional[Path] = setting(None, "the SQLite event outbox; null = <state_dir>/outbox.sqlite3")
    max_events: int = setting(10000, "events kept at most while the broker is unreachable; the oldest go first",
                              between=(1, 10000000))
    max_age_s: float = setting(604800, "events older than this are dropped unsent, seconds (604800 = 7 days)",
                               between=(60, 31536000))


@dataclass(frozen=True)
class HomeAssistantConfig(Section):
    enabled: bool = setting(True, "announce a binary_sensor per camera through Home Assistant MQTT discovery")
    discovery_prefix: str = setting("homeassistant", "Home Assistant's discovery topic prefix",
                                    pattern=r"[^#+/\s]+(/[^#+/\s]+)*",
                                    hint="topic levels separated by /, without #, + or spaces")
    birth_topic: Optional[str] = setting(None, "Home Assistant's birth topic; null = <discovery_prefix>/status",
                                         pattern=r"[^#+\s]+", hint="a topic without #, + or spaces")


@dataclass(frozen=True)
class SnapshotConfig(Section):
    enabled: bool = setting(False, "publish a retained JPEG of the skeleton at each fall on <camera>/snapshot")
    mode: str = setting("blank", "what is under the skeleton: blank (nothing) or blur (the frame, blurred)",
                        choices=("blank", "blur"))
    blur_sigma_px: float = setting(12, "Gaussian blur sigma in snapshot pixels (mode blur)", between=(1, 200))
    width_px: int = setting(640, "snapshot width in pixels; the height keeps the frame's aspect", between=(64, 4096))
    jpeg_quality: int = setting(80, "JPEG quality, 1 (small) to 100 (best)", between=(1, 100))


@dataclass(frozen=True)
class MqttConfig(Section):
    enabled: bool = setting(False, "publish events over MQTT")
    host: str = setting("localhost", "broker host name or IP address", pattern=r"[^\s/]+",
                        hint="a host name or IP address (no scheme, no port)")
    port: int = setting(1883, "broker TCP port", between=(1, 65535))
    protocol: str = setting("3.1.1", "MQTT protocol version (quote it in YAML)", choices=("3.1.1", "5"))
    client_id: Optional[str] = setting(None, "MQTT client id; null = fallwatch-<device_id>",
                                       pattern=r"[A-Za-z0-9_.-]{1,128}")
    keepalive_s: int = setting(30, "keepalive interval, seconds", between=(5, 3600))
    topic_prefix: str = setting("fallwatch", "topics are <topic_prefix>/<device_id>/...",
                                pattern=r"[^#+/\s]+(/[^#+/\s]+)*",
                                hint="topic levels separated by /, without #, + or spaces")
    username: Optional[str] = setting(None, "broker user name")
    password: Optional[str] = setting(None, "broker password (the resolved one after loading)", secret=True)
    password_env: Optional[str] = setting("FALLWATCH_MQTT_PASSWORD", "environment variable holding the password",
                                          pattern=r"[A-Za-z_][A-Za-z0-9_]*")
    password_file: Optional[Path] = setting(None, "a file whose first line is the password")
    allow_plain_password: bool = setting(False, "allow a password over plain TCP to a non-loopback host")
    tls: TlsConfig = section(TlsConfig, "TLS settings")
    inflight_max: int = setting(20, "events published but not yet acknowledged, at most", between=(1, 1000))
    connect_timeout_s: float = setting(10, "a connection attempt (TCP, TLS, CONNACK) may take this long, seconds",
                                       between=(1, 300))
    reconnect_min_s: float = setting(1, "first wait before reconnecting, seconds; doubles per failed attempt",
                                     between=(0.1, 3600))
    reconnect_max_s: float = setting(60, "longest wait between reconnection attempts, seconds (at least reconnect_min_s)",
                                     between=(0.1, 86400))
    stats_interval_s: float = setting(30, "publish <device>/stats with the daemon's figures (handed over every "
                                      "daemon.stats_interval_s) at most this often, seconds; 0 = never",
                                      between=(0, 86400))
    close_timeout_s: float = setting(5, "at shutdown, wait this long for acknowledgements in flight, seconds",
                                     between=(0, 300))
    outbox: OutboxConfig = section(OutboxConfig, "the durable event outbox")
    homeassistant: HomeAssistantConfig = section(HomeAssistantConfig, "Home Assistant MQTT discovery")
    snapshot: SnapshotConfig = section(SnapshotConfig, "skeleton snapshots")

    def rules(self) -> Iterator[Tuple[str, str]]:
        if self.reconnect_min_s > self.reconnect_max_s:
            yield "reconnect_min_s", "got %s; must be at most reconnect_max_s (%r)" % (
                show(self.reconnect_min_s), self.reconnect_max_s)


@dataclass(frozen=True)
class DaemonConfig(Section):
    stats_interval_s: float = setting(30, "log the daemon's figures and hand them to the outputs this often, "
                                      "seconds; 0 = never", between=(0, 86400))
    queue_size: int = setting(1, "frames preprocessed ahead of the engine, and waiting for post-processing, at most "
                              "(more adds latency, not speed)", between=(1, 64))
    reconnect_min_s: float = setting(0.5, "first wait before reopening a failed camera, seconds; doubles per "
                                     "failure", between=(0.01, 3600))
    reconnect_max_s: float = setting(30, "longest wait before reopening a failed camera, seconds (at least "
                                     "reconnect_min_s)",
                                     between=(0.01, 86400))
    stall_timeout_s: float = setting(5, "a streaming camera with no frame for this long is reopened, seconds",
                                     between=(0.1, 3600))
    open_timeout_s: float = setting(20, "opening a camera may take this long before it counts as stalled, seconds",
                                    between=(0.1, 3600))

    def rules(self) -> Iterator[Tuple[str, str]]:
        if self.reconnect_min_s > self.reconnect_max_s:
            yield "reconnect_min_s", "got %s; must be at most reconnect_max_s (%r): the wait starts there and " \
                "doubles up to reconnect_max_s" % (show(self.reconnect_min_s), self.reconnect_max_s)


@dataclass(frozen=True)
class Config(Section):
    device_id: str = setting("fallwatch", "this device's name; part of MQTT topics",
                             pattern=r"[A-Za-z0-9_-]{1,64}", hint="1 to 64 of A-Z, a-z, 0-9, _ and -")
    log_level: str = setting("info", "log verbosity", choices=("debug", "info", "warning", "error"))
    paths: PathsConfig = section(PathsConfig, "where files live")
    model: ModelConfig = section(ModelConfig, "the pose model")
    engine: EngineConfig = section(EngineConfig, "the inference engine")
    cameras: Tuple[CameraConfig, ...] = section(lambda: (CameraConfig(),), "the cameras")
    mqtt: MqttConfig = section(MqttConfig, "the MQTT connection")
    daemon: DaemonConfig = section(DaemonConfig, "the daemon (fallwatch run)")
    review: ReviewConfig = section(ReviewConfig, "alert review: a skeleton clip of every fall, and the site dataset")
    tracker: TrackerConfig = section(TrackerConfig, "the person tracker")
    views: ViewsConfig = section(ViewsConfig, "rotated views for people lying on the floor")
    topdown: TopDownConfig = section(TopDownConfig, "top-down models (model.spec of family top_down): person crops")
    fall: FallConfig = section(FallConfig, "fall detection thresholds")
    web: WebConfig = section(WebConfig, "the setup and review page (fallwatch run)")
    # Not a key: the absolute path of the file loaded, None for the built-in defaults.
    source: Optional[Path] = field(default=None, compare=False, metadata=dict(internal=True))

    def rules(self) -> Iterator[Tuple[str, str]]:
        """Rules between the tracker and the views policy that reads its tracks (``auto`` only)."""
        views, tracker = self.views, self.tracker
        if views.policy != "auto":
            return
        if views.lost_near_floor_s > tracker.max_missed_s:
            yield "views.lost_near_floor_s", (
                "got %s; must be at most tracker.max_missed_s (%r): a track unseen longer is dropped, so it "
                "cannot stay suspicious that long" % (show(views.lost_near_floor_s), tracker.max_missed_s))
        for name in ("descent_window_s", "suspicious_torso_s"):
            if getattr(views, name) > tracker.history_s:
                yield "views." + name, (
                    "got %s; must be at most tracker.history_s (%r): a track keeps only that much past"
                    % (show(getattr(views, name)), tracker.history_s))


# ---------------------------------------------------------------- the generic validator


@dataclass(frozen=True)
class _Ctx:
    source: str  # the config file as named by the caller, or "<defaults>"
    base: Path  # relative paths are resolved against this directory


def _fail(ctx: _Ctx, key: str, message: str) -> typing.NoReturn:
    raise ConfigError("%s: %s: %s" % (ctx.source, key, message), key)


def _default(f: "dataclasses.Field[Any]") -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def iter_schema(cls: Optional[type] = None, prefix: str = "") -> Iterator[Tuple[str, "dataclasses.Field[Any]"]]:
    """Every leaf key as (key path, dataclass field); list entries appear as ``cameras[i].name``."""
    cls = cls or Config
    for f in fields_of(cls):
        tp, key = type_hints(cls)[f.name], prefix + f.name
        if is_section(tp):
            yield from iter_schema(tp, key + ".")
        elif typing.get_origin(tp) is tuple and is_section(typing.get_args(tp)[0]):
            yield from iter_schema(typing.get_args(tp)[0], key + "[i].")
        else:
            yield key, f


def _unknown_key(cls: type, name: Any) -> str:
    names = [f.name for f in fields_of(cls)]
    elsewhere = [k for k, _ in iter_schema() if k.rsplit(".", 1)[-1] == str(name)]
    if elsewhere:
        return "unknown key here; did you mean %r?" % elsewhere[0]
    close = difflib.get_close_matches(str(name), names, n=1)
    if close:
        return "unknown key; did you mean %r?" % close[0]
    return "unknown key; allowed here: " + ", ".join(names)


def _join(prefix: str, name: Any) -> str:
    return "%s.%s" % (prefix, name) if prefix else str(name)


def _build(cls: type, raw: Any, key: str, ctx: _Ctx) -> Any:
    """The section ``cls`` from the mapping ``raw``: values converted here (nested sections,
    lists, paths), checked by the section itself (edge.settings), errors given the key path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(ctx, key or "top level", "got %s; expected %s" % (show(raw), expected(cls, {})))
    fields = {f.name: f for f in fields_of(cls)}
    for name in raw:
        if name not in fields:
            _fail(ctx, _join(key, name), _unknown_key(cls, name))
    values = {}
    for name, f in fields.items():
        value = raw[name] if name in raw else plain(_default(f), False, False)
        values[name] = _value(type_hints(cls)[name], value, _join(key, name), f.metadata, ctx)
    try:
        return cls(**values)
    except ConfigError as exc:
        _fail(ctx, _join(key, exc.key) if exc.key else key or "top level", exc.reason)


def _value(tp: Any, value: Any, key: str, meta: Mapping[str, Any], ctx: _Ctx) -> Any:
    """``value`` converted to ``tp``: sections built, lists made tuples (their items checked),
    paths resolved. Scalars are passed as given: their section checks them."""
    inner, optional = unwrap(tp)

    def wrong() -> typing.NoReturn:
        _fail(ctx, key, "got %s; expected %s" % (show(value, meta.get("secret", False)),
                                                 expected(inner, meta, optional)))

    if is_section(inner):
        return _build(inner, value, key, ctx) if isinstance(value, dict) or value is None else wrong()
    if value is None:
        return None if optional else wrong()
    if typing.get_origin(inner) is tuple:
        if not isinstance(value, list):
            wrong()
        item = typing.get_args(inner)[0]
        return tuple(_item(item, v, "%s[%d]" % (key, i), ctx) for i, v in enumerate(value))
    if inner is Path:
        return _resolve(ctx, value) if isinstance(value, str) and value.strip() else wrong()
    return value


def _item(tp: Any, value: Any, key: str, ctx: _Ctx) -> Any:
    """A list entry: converted like a field, and checked here when a scalar (it has no section)."""
    value = _value(tp, value, key, {}, ctx)
    reason = problem(tp, value, {})
    if reason:
        _fail(ctx, key, reason)
    return float(value) if tp is float and type(value) is int else value


def _resolve(ctx: _Ctx, value: str) -> Path:
    return Path(os.path.normpath(ctx.base / Path(value).expanduser()))


# ---------------------------------------------------------------- checks across fields


_is_loopback = is_loopback  # one rule for the broker's host and the web page's bind


def _spec_setting(ctx: _Ctx, key: str, name: str, expected: str) -> Tuple[str, "specs.ModelSpec"]:
    """A setting naming a model spec (a built-in name, or a spec file resolved like every path of the
    config) -> (the name or absolute path, the spec); one line naming ``key`` when it cannot be used."""
    if name not in specs.BUILTIN_SPECS:
        path = _resolve(ctx, name) if name.strip() else ctx.base
        if not path.is_file():
            _fail(ctx, key, "got %s; expected %sone of %s or the path of a spec YAML file"
                  % (show(name), expected, ", ".join(specs.BUILTIN_SPECS)))
        name = str(path)
    try:
        return name, specs.load_spec(name)
    except (specs.SpecError, OSError, yaml.YAMLError) as exc:
        _fail(ctx, key, "cannot use %s: %s" % (name, str(exc).replace("\n", " ")))


def _check_model(model: ModelConfig, ctx: _Ctx) -> ModelConfig:
    name, spec = _spec_setting(ctx, "model.spec", model.spec, "")
    h, w = model.input_height, model.input_width
    reason = spec.check_input_size(h, w)
    if reason:
        if spec.input_size:
            culprit = "input_height" if h != spec.input_size[0] else "input_width"
        else:
            culprit = "input_height" if h % spec.multiple_of else "input_width"
        _fail(ctx, "model." + culprit, "got %d (input size %dx%d, height x width); %s"
              % (getattr(model, culprit), h, w, reason))
    return dataclasses.replace(model, spec=name)


def _check_topdown(td: TopDownConfig, ctx: _Ctx) -> TopDownConfig:
    """``topdown.seed_spec``: a built-in name, or a spec file (resolved like model.spec) of a bottom-up model;
    ``topdown.detector.spec``: a detector spec file (edge.inference.detector), with its ``onnx``."""
    det = td.detector
    if det.spec is not None:
        from edge.inference.detector import load_detector_spec

        try:
            load_detector_spec(det.spec)
        except specs.SpecError as exc:
            _fail(ctx, "topdown.detector.spec", str(exc).replace("\n", " "))
        if det.onnx is None:
            _fail(ctx, "topdown.detector.onnx", "got null; topdown.detector.spec is set, so name the detector's "
                  "model file")
    if td.seed_spec is None:
        return td
    name, spec = _spec_setting(ctx, "topdown.seed_spec", td.seed_spec, "null, ")
    if spec.family != "bottom_up":
        _fail(ctx, "topdown.seed_spec", "%s is a %s model; the seed must be bottom_up (it finds people on whole "
              "frames)" % (name, spec.family))
    return dataclasses.replace(td, seed_spec=name)


def _check_mqtt(config: Config, ctx: _Ctx, path: Optional[Path], env: Mapping[str, str]) -> MqttConfig:
    mqtt, tls = config.mqtt, config.mqtt.tls
    if mqtt.password is not None and path is not None:
        mode = path.stat().st_mode & 0o777
        if mode & 0o037:
            _fail(ctx, "mqtt.password", "a password is set in a file with mode %04o, which lets others read it; run "
                  "`chmod 640 %s`, or move the password to the environment variable named by "
                  "mqtt.password_env (%s) or to mqtt.password_file" % (mode, path, mqtt.password_env))
    from_file = None
    if mqtt.password_file is not None:
        try:
            with open(mqtt.password_file, encoding="utf-8") as fh:
                from_file = fh.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            _fail(ctx, "mqtt.password_file", "got '%s'; cannot read it (%s)" % (mqtt.password_file, why))
        if not from_file:
            _fail(ctx, "mqtt.password_file", "got '%s'; its first line is empty, expected the password"
                  % mqtt.password_file)
    password = (env.get(mqtt.password_env) if mqtt.password_env else None) or from_file or mqtt.password
    if tls.enabled:
        for name in ("ca_file", "cert_file", "key_file"):
            file = getattr(tls, name)
            if file is not None and not (file.is_file() and os.access(file, os.R_OK)):
                _fail(ctx, "mqtt.tls." + name, "got '%s'; expected a readable file (mqtt.tls.enabled is true)"
                      % file)
        if tls.key_file is not None and tls.cert_file is None:
            _fail(ctx, "mqtt.tls.cert_file",
                  "got null; mqtt.tls.key_file is set, so give the client certificate too")
    elif mqtt.enabled and password and not mqtt.allow_plain_password and not _is_loopback(mqtt.host):
        _fail(ctx, "mqtt.tls.enabled", "got false; the password would go unencrypted to %r: enable "
              "mqtt.tls, or set mqtt.allow_plain_password: true to accept that" % mqtt.host)
    return dataclasses.replace(mqtt, password=password,
                               client_id=mqtt.client_id or "fallwatch-" + config.device_id)


def _check_web(config: Config, ctx: _Ctx, env: Mapping[str, str]) -> WebConfig:
    try:
        return resolve_web(config.web, env)
    except ConfigError as exc:
        _fail(ctx, exc.key or "web", exc.reason)


def _check_floor(config: Config, ctx: _Ctx) -> None:
    """``fall.use_3d`` needs every camera's ``floor_plane``: without it a camera's people would be judged in
    the picture's geometry, silently."""
    if not config.fall.use_3d:
        return
    for i, cam in enumerate(config.cameras):
        if not cam.floor_plane:
            _fail(ctx, "cameras[%d].floor_plane" % i, "got []; fall.use_3d is true, so camera %s needs its floor "
                  "plane: estimate it with `fallwatch floor estimate --camera %s --write FILE.jsonl` (README, "
                  "\"Measuring the floor plane\"), or set fall.use_3d: false" % (cam.name, cam.name))


def _finish(config: Config, ctx: _Ctx, path: Optional[Path], env: Mapping[str, str],
            need_floor: bool = True) -> Config:
    cameras: List[CameraConfig] = []
    seen: Dict[str, int] = {}
    for i, cam in enumerate(config.cameras):
        if cam.name in seen:
            _fail(ctx, "cameras[%d].name" % i, "%r is used by cameras[%d] too; camera names must be unique"
                  % (cam.name, seen[cam.name]))
        seen[cam.name] = i
        is_file = "://" not in cam.uri and not cam.uri.startswith("/dev/")
        cameras.append(dataclasses.replace(cam, uri=str(_resolve(ctx, cam.uri))) if is_file else cam)
    config = dataclasses.replace(config, cameras=tuple(cameras), model=_check_model(config.model, ctx),
                                 topdown=_check_topdown(config.topdown, ctx),
                                 mqtt=_check_mqtt(config, ctx, path, env), web=_check_web(config, ctx, env),
                                 source=None if path is None else Path(os.path.abspath(path)))
    if need_floor:
        _check_floor(config, ctx)
    return config


# ---------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, "key %r is given twice (first on line %d)"
                        % (key_node.value, seen[key_node.value] + 1), key_node.start_mark)
                seen[key_node.value] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _read(path: Path, source: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_Loader)
    except FileNotFoundError:
        fix = "pass --config FILE, set FALLWATCH_CONFIG, or copy the documented config.yaml that ships with fallwatch"
        raise ConfigError("%s: no such file; %s" % (source, fix), fix=fix) from None
    except IsADirectoryError:
        raise ConfigError("%s: is a directory; expected a YAML file" % source) from None
    except PermissionError as exc:
        raise ConfigError("%s: cannot read it (%s)" % (source, exc.strerror),
                          fix="run it with sudo: the configuration is readable by root and group fallwatch "
                              "only") from None
    except OSError as exc:
        raise ConfigError("%s: cannot read it (%s)" % (source, exc.strerror)) from None
    except UnicodeDecodeError:
        raise ConfigError("%s: is not UTF-8 text" % source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = "line %d, column %d: " % (mark.line + 1, mark.column + 1) if mark else ""
        raise ConfigError("%s: %sinvalid YAML: %s" % (source, where, exc.problem or exc.context)) from None
    except yaml.YAMLError as exc:
        raise ConfigError("%s: invalid YAML: %s" % (source, str(exc).replace("\n", " "))) from None


def load_config(path: Union[str, "os.PathLike[str]", None], env: Mapping[str, str] = os.environ,
                need_floor: bool = True) -> Config:
    """Read, validate and resolve the config file at ``path`` (None: the built-in defaults).

    ``env`` supplies the environment variable named by ``mqtt.password_env``. ``need_floor`` False lets
    ``fall.use_3d`` pass without a camera's ``floor_plane`` (only for ``fallwatch floor estimate``, which
    measures it). Raises
    :class:`ConfigError` with a one-line message for the first problem found.
    """
    if path is None:
        raw, file, ctx = None, None, _Ctx("<defaults>", Path.cwd())
    else:
        file = Path(path)
        ctx = _Ctx(str(path), Path(os.path.abspath(file)).parent)
        raw = _read(file, ctx.source)
    return _finish(_build(Config, raw, "", ctx), ctx, file, env, need_floor)


def load_config_or_exit(path: Union[str, "os.PathLike[str]", None],
                        env: Mapping[str, str] = os.environ) -> Config:
    """:func:`load_config`, or print the error to stderr and exit with status 2."""
    try:
        return load_config(path, env)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    """``$FALLWATCH_CONFIG`` if set, else /etc/fallwatch/config.yaml if it exists, else ./config.yaml."""
    if env.get("FALLWATCH_CONFIG"):
        return Path(env["FALLWATCH_CONFIG"])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else Path("config.yaml")


def find_config(given: Union[str, "os.PathLike[str]", None] = None,
                env: Mapping[str, str] = os.environ) -> Optional[Path]:
    """The configuration file a command uses: ``given`` (``--config``), else ``$FALLWATCH_CONFIG``
    (both named on purpose, so they are returned even when missing and loading them fails as
    for any bad file), else the first of /etc/fallwatch/config.yaml and ./config.yaml that is a
    file, else None: the built-in defaults (only this implicit search may end there)."""
    if given is not None:
        return Path(given)
    path = default_config_path(env)
    return path if env.get("FALLWATCH_CONFIG") or path.is_file() else None


def search_places() -> str:
    """Where :func:`find_config` looks when neither ``--config`` nor ``$FALLWATCH_CONFIG`` is given."""
    return "%s, %s" % (SYSTEM_CONFIG, Path.cwd() / "config.yaml")
