"""The configuration: one YAML file, loaded once at start into frozen, typed dataclasses.

Every section is a frozen dataclass whose fields declare their own schema in the field
metadata (see :func:`setting`): type (the annotation), default, allowed range, choices or
pattern, and a one-line title. One generic validator walks the YAML mapping against those
dataclasses, so a mistake is reported with its key path::

    config.yaml: cameras[1].fps: got 'fast' (str); expected a number from 1 to 240
    config.yaml: mqtt.hots: unknown key; did you mean 'host'?

Every key has a default: an empty file, a missing section or ``load_config(None)`` is valid.
Relative paths are resolved against the directory of the config file (the current directory
when there is no file). The MQTT password is resolved from, in this order: the environment
variable named by ``mqtt.password_env``, the first line of ``mqtt.password_file``, then
``mqtt.password``; it lives in ``config.mqtt.password``, which ``repr`` and
:meth:`Config.redacted` never show.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import yaml

from edge import specs

SYSTEM_CONFIG = Path("/etc/fallwatch/config.yaml")
REDACTED = "***"


class ConfigError(ValueError):
    """The configuration cannot be used. ``str(error)`` is one line naming the file, the key path
    (also in ``error.key``, None when the problem is not one key), the value given and what is allowed."""

    def __init__(self, message: str, key: Optional[str] = None) -> None:
        super().__init__(message)
        self.key = key


def setting(default: Any, title: str, *, between: Optional[Tuple[float, float]] = None,
            choices: Optional[Tuple[str, ...]] = None, pattern: Optional[str] = None,
            hint: Optional[str] = None, check: Optional[Callable[[Any], Optional[str]]] = None,
            secret: bool = False) -> Any:
    """A config field: its default, a one-line title (meaning, unit) and what values are allowed.

    ``between`` is an inclusive (min, max); ``pattern`` must match the whole string; ``hint``
    replaces the generated "expected ..." text; ``check(value)`` returns why a value is wrong or
    None; ``secret`` fields are left out of ``repr`` and shown as ``***`` by ``to_dict``.
    """
    meta = dict(title=title, between=between, choices=choices, pattern=pattern, hint=hint,
                check=check, secret=secret)
    return field(default=default, repr=not secret, metadata=meta)


def section(factory: Callable[[], Any], title: str) -> Any:
    return field(default_factory=factory, metadata=dict(title=title))


class _Section:
    """Base of every config section: conversion back to plain YAML-able values."""

    def to_dict(self, redact: bool = True) -> Dict[str, Any]:
        """Plain dicts, lists, strings and numbers (paths as strings); secrets as ``***`` when redact."""
        return {f.name: _plain(getattr(self, f.name), redact and f.metadata.get("secret", False), redact)
                for f in _fields(type(self))}


def _fields(cls: type) -> Tuple["dataclasses.Field[Any]", ...]:
    """The fields that are config keys."""
    return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("internal"))


def _plain(value: Any, hide: bool, redact: bool) -> Any:
    if hide and value is not None:
        return REDACTED
    if isinstance(value, _Section):
        return value.to_dict(redact)
    if isinstance(value, tuple):
        return [_plain(v, False, redact) for v in value]
    return str(value) if isinstance(value, Path) else value


def _check_uri(uri: str) -> Optional[str]:
    scheme = uri.split("://", 1)[0] if "://" in uri else None
    if scheme is None or scheme in ("v4l2", "rtsp", "rtsps", "http", "https"):
        return None if uri.strip() else "expected a camera URI or a video file path"
    if scheme == "csi" and re.fullmatch(r"csi://\d+", uri):
        return None
    return ("expected csi://N, v4l2:///dev/videoN, /dev/videoN, rtsp://..., http(s)://... "
            "or a video file path")


@dataclass(frozen=True)
class PathsConfig(_Section):
    models_dir: Path = setting(Path("models"), "where fetched and converted models live")
    state_dir: Path = setting(Path("state"), "engines and the event outbox (on a Jetson: /var/lib/fallwatch)")


@dataclass(frozen=True)
class ModelConfig(_Section):
    spec: str = setting("openpose-mobilenet-thin", "a built-in model spec name or the path of a spec YAML file")
    onnx: Optional[Path] = setting(None, "the ONNX model; null = the default model under models_dir")
    input_height: int = setting(368, "network input height, pixels", between=(32, 2048))
    input_width: int = setting(432, "network input width, pixels", between=(32, 2048))
    resize: str = setting("stretch", "how frames of another aspect ratio are fitted (stretch finds more people; "
                          "BENCHMARKS.md, Views)", choices=("letterbox", "stretch"))


@dataclass(frozen=True)
class EngineConfig(_Section):
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
class ZoneConfig(_Section):
    kind: str = setting("ignore", "ignore: no fall alerts for people lying here (a bed, a sofa); floor: once "
                        "any floor zone exists, alerts only there", choices=("ignore", "floor"))
    polygon: Tuple[Tuple[float, ...], ...] = setting(
        (), "corners [x, y] as fractions of the frame width and height (0..1), at least 3", check=_check_polygon)


@dataclass(frozen=True)
class CameraConfig(_Section):
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
    zones: Tuple[ZoneConfig, ...] = section(tuple, "zones of this camera's picture for the fall detector")


@dataclass(frozen=True)
class TlsConfig(_Section):
    enabled: bool = setting(False, "connect to the broker over TLS")
    ca_file: Optional[Path] = setting(None, "CA certificate(s), PEM; null = the system CA store")
    cert_file: Optional[Path] = setting(None, "client certificate, PEM")
    key_file: Optional[Path] = setting(None, "client private key, PEM")
    insecure: bool = setting(False, "skip hostname verification (testing only)")


@dataclass(frozen=True)
class OutboxConfig(_Section):
    file: Optional[Path] = setting(None, "the SQLite event outbox; null = <state_dir>/outbox.sqlite3")
    max_events: int = setting(10000, "events kept at most while the broker is unreachable; the oldest go first",
                              between=(1, 10000000))
    max_age_s: float = setting(604800, "events older than this are dropped unsent, seconds (604800 = 7 days)",
                               between=(60, 31536000))


@dataclass(frozen=True)
class HomeAssistantConfig(_Section):
    enabled: bool = setting(True, "announce a binary_sensor per camera through Home Assistant MQTT discovery")
    discovery_prefix: str = setting("homeassistant", "Home Assistant's discovery topic prefix",
                                    pattern=r"[^#+/\s]+(/[^#+/\s]+)*",
                                    hint="topic levels separated by /, without #, + or spaces")
    birth_topic: Optional[str] = setting(None, "Home Assistant's birth topic; null = <discovery_prefix>/status",
                                         pattern=r"[^#+\s]+", hint="a topic without #, + or spaces")


@dataclass(frozen=True)
class SnapshotConfig(_Section):
    enabled: bool = setting(False, "publish a retained JPEG of the skeleton at each fall on <camera>/snapshot")
    mode: str = setting("blank", "what is under the skeleton: blank (nothing) or blur (the frame, blurred)",
                        choices=("blank", "blur"))
    blur_sigma_px: float = setting(12, "Gaussian blur sigma in snapshot pixels (mode blur)", between=(1, 200))
    width_px: int = setting(640, "snapshot width in pixels; the height keeps the frame's aspect", between=(64, 4096))
    jpeg_quality: int = setting(80, "JPEG quality, 1 (small) to 100 (best)", between=(1, 100))


@dataclass(frozen=True)
class MqttConfig(_Section):
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
    stats_interval_s: float = setting(30, "publish <device>/stats this often, seconds; 0 = never", between=(0, 86400))
    close_timeout_s: float = setting(5, "at shutdown, wait this long for acknowledgements in flight, seconds",
                                     between=(0, 300))
    outbox: OutboxConfig = section(OutboxConfig, "the durable event outbox")
    homeassistant: HomeAssistantConfig = section(HomeAssistantConfig, "Home Assistant MQTT discovery")
    snapshot: SnapshotConfig = section(SnapshotConfig, "skeleton snapshots")


@dataclass(frozen=True)
class DaemonConfig(_Section):
    stats_interval_s: float = setting(30, "log the daemon's figures and hand them to the outputs this often, "
                                      "seconds; 0 = never", between=(0, 86400))
    queue_size: int = setting(1, "frames preprocessed ahead of the engine, and waiting for post-processing, at most "
                              "(more adds latency, not speed)", between=(1, 64))
    reconnect_min_s: float = setting(0.5, "first wait before reopening a failed camera, seconds; doubles per "
                                     "failure", between=(0.01, 3600))
    reconnect_max_s: float = setting(30, "longest wait before reopening a failed camera, seconds",
                                     between=(0.01, 86400))
    stall_timeout_s: float = setting(5, "a streaming camera with no frame for this long is reopened, seconds",
                                     between=(0.1, 3600))
    open_timeout_s: float = setting(20, "opening a camera may take this long before it counts as stalled, seconds",
                                    between=(0.1, 3600))


@dataclass(frozen=True)
class TrackerConfig(_Section):
    max_match_distance_heights: float = setting(
        0.5, "a person matches a track when their keypoints are on average at most this far apart, in "
        "person heights (the larger side of the skeleton's box)", between=(0.01, 10))
    max_speed_heights_per_s: float = setting(
        2, "the match distance grows by this much per second a track goes unseen, person heights per second",
        between=(0, 100))
    max_missed_s: float = setting(2, "a track keeps its id this long without being seen, seconds", between=(0, 3600))
    min_hits: int = setting(3, "frames in a row a new person must be seen in before getting a track id",
                            between=(1, 100))
    min_keypoint_confidence: float = setting(0.05, "keypoints below this confidence count as missing",
                                             between=(0, 1))
    min_common_keypoints: int = setting(2, "fewer keypoints in common: compare skeleton box centres instead",
                                        between=(1, 18))
    min_person_size: float = setting(0.05, "smallest person height used to scale distances, fraction of the "
                                     "frame height", between=(0.001, 1))
    size_memory_s: float = setting(5, "a track's person size is the largest side of its skeleton's box over this "
                                   "much past, seconds (a person half seen or falling keeps their size)",
                                   between=(0, 3600))
    history_s: float = setting(10, "each track keeps this much past for the fall detector, seconds",
                               between=(0, 3600))


@dataclass(frozen=True)
class ViewsConfig(_Section):
    policy: str = setting("auto", "when the frame is also run rotated by 90 degrees (people lying on the floor): "
                          "always, never, or auto (while a track looks like a fall, and hold_s after)",
                          choices=("auto", "always", "never"))
    rotated_views: str = setting("both", "the extra views: both (90 degrees clockwise and counter-clockwise), cw "
                                 "or ccw", choices=("both", "cw", "ccw"))
    hold_s: float = setting(3, "auto: extra views keep running this long after the last suspicious moment, seconds",
                            between=(0, 3600))
    suspicious_torso_angle_deg: float = setting(
        60, "auto: a track whose torso (hips to neck) is this far from vertical is suspicious, degrees",
        between=(0, 180))
    suspicious_torso_s: float = setting(
        1, "auto: ... once its torso has been so for this long, seconds (bending down for a moment is not)",
        between=(0, 60))
    suspicious_descent_bh_per_s: float = setting(
        0.5, "auto: a track whose hips go down this fast is suspicious, body heights per second", between=(0, 100))
    descent_window_s: float = setting(0.5, "auto: the descent speed is measured over this much of a track's past, "
                                      "seconds", between=(0.01, 60))
    lost_near_floor_s: float = setting(2, "auto: a track lost inside the picture (not walking out through an edge) or "
                                       "after going down stays suspicious this long after it was last seen, seconds",
                                       between=(0, 3600))
    lost_edge_margin: float = setting(0.03, "auto: 'inside the picture' means last seen at least this far from every "
                                      "border, fraction of the frame", between=(0, 0.5))
    lost_drop_bh: float = setting(0.15, "auto: 'going down' means last seen at least this far below its highest "
                                  "point of the last seconds, body heights", between=(0, 10))
    probe_every_s: float = setting(0, "auto: run the extra views once this often even when nothing is suspicious, "
                                   "seconds; 0 = never", between=(0, 86400))
    merge_distance: float = setting(0.45, "one person seen in two views: skeletons whose parts are at most this far "
                                    "apart (median, in person sizes) are merged", between=(0, 10))
    merge_box_overlap: float = setting(0.5, "... and so are skeletons whose boxes (widened by 10%) cover at least this "
                                       "fraction of the smaller box", between=(0, 1))


@dataclass(frozen=True)
class FallConfig(_Section):
    """Thresholds of edge/fall.py (bh = the person's own body height); see FallParams."""

    min_keypoint_confidence: float = setting(0.1, "keypoints below this confidence count as missing", between=(0, 1))
    descent_window_s: float = setting(1.5, "a descent is measured over at most this much past, seconds",
                                      between=(0.2, 10))
    min_descent_bh: float = setting(0.35, "the head must go down at least this far, body heights", between=(0.05, 2))
    min_descent_speed_bh_per_s: float = setting(0.5, "... at least this fast, body heights per second",
                                                between=(0.05, 10))
    gap_s: float = setting(0.4, "a person unseen this long, then back low, may carry a fast descent seen before "
                           "the gap across it, seconds", between=(0.05, 30))
    confirm_within_s: float = setting(3.0, "after a descent the person must be down within this time, seconds",
                                      between=(0.2, 30))
    min_down_s: float = setting(0.6, "and stay down this long before fall_detected, seconds", between=(0, 30))
    max_head_height_bh: float = setting(0.35, "down: head at most this high above the floor, body heights",
                                        between=(0.05, 1.5))
    max_head_height_lying_bh: float = setting(
        0.5, "down: or this high when the torso is lying (see lying_torso_angle_deg), body heights",
        between=(0.05, 1.5))
    max_hip_height_bh: float = setting(0.35, "down: and the hips (when seen) at most this high, body heights",
                                       between=(0.05, 1.5))
    lying_torso_angle_deg: float = setting(50.0, "a torso this far from vertical counts as lying, degrees",
                                           between=(10, 90))
    max_floor_head_bh: float = setting(0.2, "lying on the floor: head and hips at most this high, body heights",
                                       between=(0.01, 1.0))
    floor_lying_s: float = setting(1.5, "lying on the floor this long is a fall even without a fast descent, "
                                   "seconds", between=(0.2, 600))
    upright_torso_angle_deg: float = setting(30.0, "the floor under a person is learned only while their torso "
                                             "is at most this far from vertical, degrees", between=(5, 80))
    up_head_height_bh: float = setting(0.6, "up again: head at least this high above the floor, body heights",
                                       between=(0.1, 2))
    min_up_s: float = setting(2.0, "up for this long -> fall_cleared, seconds", between=(0, 600))
    long_lie_s: float = setting(60.0, "still not up this long after fall_detected -> long_lie, seconds",
                                between=(1, 86400))
    cooldown_s: float = setting(10.0, "no new fall_detected for a person this soon after fall_cleared, seconds",
                                between=(0, 86400))
    size_memory_s: float = setting(10.0, "a person's size is a high quantile over this much past, seconds",
                                   between=(1, 600))
    min_size_px: float = setting(20.0, "people smaller than this (body height, pixels) are not judged",
                                 between=(1, 2000))


@dataclass(frozen=True)
class Config(_Section):
    device_id: str = setting("fallwatch", "this device's name; part of MQTT topics",
                             pattern=r"[A-Za-z0-9_-]{1,64}", hint="1 to 64 of A-Z, a-z, 0-9, _ and -")
    log_level: str = setting("info", "log verbosity", choices=("debug", "info", "warning", "error"))
    paths: PathsConfig = section(PathsConfig, "where files live")
    model: ModelConfig = section(ModelConfig, "the pose model")
    engine: EngineConfig = section(EngineConfig, "the inference engine")
    cameras: Tuple[CameraConfig, ...] = section(lambda: (CameraConfig(),), "the cameras")
    mqtt: MqttConfig = section(MqttConfig, "the MQTT connection")
    daemon: DaemonConfig = section(DaemonConfig, "the daemon (fallwatch run)")
    tracker: TrackerConfig = section(TrackerConfig, "the person tracker")
    views: ViewsConfig = section(ViewsConfig, "rotated views for people lying on the floor")
    fall: FallConfig = section(FallConfig, "fall detection thresholds")
    # Not a key: the absolute path of the file loaded, None for the built-in defaults.
    source: Optional[Path] = field(default=None, compare=False, metadata=dict(internal=True))

    def redacted(self) -> Dict[str, Any]:
        """The effective configuration as plain values, secrets shown as ``***``."""
        return self.to_dict(redact=True)


# ---------------------------------------------------------------- the generic validator


@dataclass(frozen=True)
class _Ctx:
    source: str  # the config file as named by the caller, or "<defaults>"
    base: Path  # relative paths are resolved against this directory


def _fail(ctx: _Ctx, key: str, message: str) -> typing.NoReturn:
    raise ConfigError("%s: %s: %s" % (ctx.source, key, message), key)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _section_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, _Section)


def _default(f: "dataclasses.Field[Any]") -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def _show(value: Any, secret: bool = False) -> str:
    if value is None:
        return "null"
    if secret:
        return "a value of type %s" % type(value).__name__
    text = repr(value)
    return "%s (%s)" % (text if len(text) <= 80 else text[:77] + "...", type(value).__name__)


def _expected(tp: Any, meta: Mapping[str, Any], optional: bool) -> str:
    between = meta.get("between")
    span = " from %g to %g" % between if between else ""
    if meta.get("hint"):
        text = meta["hint"]
    elif meta.get("choices"):
        text = "one of " + ", ".join(repr(c) for c in meta["choices"])
    elif tp is bool:
        text = "true or false"
    elif tp is int:
        text = "an integer" + span
    elif tp is float:
        text = "a number" + span
    elif tp is str:
        text = "a string matching %s" % meta["pattern"] if meta.get("pattern") else "a string"
    elif tp is Path:
        text = "a path"
    elif _section_type(tp):
        text = "a mapping with keys " + ", ".join(f.name for f in _fields(tp))
    else:
        text = "a list"
    return text + (" or null" if optional else "")


def iter_schema(cls: Optional[type] = None, prefix: str = "") -> Iterator[Tuple[str, "dataclasses.Field[Any]"]]:
    """Every leaf key as (key path, dataclass field); list entries appear as ``cameras[i].name``."""
    cls = cls or Config
    for f in _fields(cls):
        tp, key = _hints(cls)[f.name], prefix + f.name
        if _section_type(tp):
            yield from iter_schema(tp, key + ".")
        elif typing.get_origin(tp) is tuple and _section_type(typing.get_args(tp)[0]):
            yield from iter_schema(typing.get_args(tp)[0], key + "[i].")
        else:
            yield key, f


def _unknown_key(cls: type, name: Any) -> str:
    names = [f.name for f in _fields(cls)]
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
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(ctx, key or "top level", "got %s; expected %s" % (_show(raw), _expected(cls, {}, False)))
    fields = {f.name: f for f in _fields(cls)}
    for name in raw:
        if name not in fields:
            _fail(ctx, _join(key, name), _unknown_key(cls, name))
    values = {}
    for name, f in fields.items():
        value = raw[name] if name in raw else _plain(_default(f), False, False)
        values[name] = _value(_hints(cls)[name], value, _join(key, name), f.metadata, ctx)
    return cls(**values)


def _value(tp: Any, value: Any, key: str, meta: Mapping[str, Any], ctx: _Ctx) -> Any:
    optional = typing.get_origin(tp) is Union
    if optional:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if value is None:
            return None
    given, secret = value, meta.get("secret", False)

    def wrong() -> typing.NoReturn:
        _fail(ctx, key, "got %s; expected %s" % (_show(given, secret), _expected(tp, meta, optional)))

    if _section_type(tp):
        return _build(tp, value, key, ctx) if isinstance(value, dict) or value is None else wrong()
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list):
            wrong()
        item = typing.get_args(tp)[0]
        items = tuple(_value(item, v, "%s[%d]" % (key, i), {}, ctx) for i, v in enumerate(value))
        reason = meta["check"](items) if meta.get("check") else None
        if reason:
            _fail(ctx, key, "got %s; %s" % (_show(given, secret), reason))
        return items
    if value is None or isinstance(value, bool) is not (tp is bool):
        wrong()
    if tp is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, str if tp is Path else tp):
        wrong()
    if tp is Path:
        return _resolve(ctx, value) if value.strip() else wrong()
    between, choices, pattern = meta.get("between"), meta.get("choices"), meta.get("pattern")
    if between and not between[0] <= value <= between[1]:
        wrong()
    if (choices and value not in choices) or (pattern and not re.fullmatch(pattern, value)):
        wrong()
    reason = meta["check"](value) if meta.get("check") else None
    if reason:
        _fail(ctx, key, "got %s; %s" % (_show(given, secret), reason))
    return value


def _resolve(ctx: _Ctx, value: str) -> Path:
    return Path(os.path.normpath(ctx.base / Path(value).expanduser()))


# ---------------------------------------------------------------- checks across fields


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_model(model: ModelConfig, ctx: _Ctx) -> ModelConfig:
    name = model.spec
    if name not in specs.BUILTIN_SPECS:
        path = _resolve(ctx, name) if name.strip() else ctx.base
        if not path.is_file():
            _fail(ctx, "model.spec", "got %s; expected one of %s or the path of a spec YAML file"
                  % (_show(name), ", ".join(specs.BUILTIN_SPECS)))
        name = str(path)
    try:
        spec = specs.load_spec(name)
    except (specs.SpecError, OSError, yaml.YAMLError) as exc:
        _fail(ctx, "model.spec", "cannot use %s: %s" % (name, str(exc).replace("\n", " ")))
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


def _finish(config: Config, ctx: _Ctx, path: Optional[Path], env: Mapping[str, str]) -> Config:
    cameras: List[CameraConfig] = []
    seen: Dict[str, int] = {}
    for i, cam in enumerate(config.cameras):
        if cam.name in seen:
            _fail(ctx, "cameras[%d].name" % i, "%r is used by cameras[%d] too; camera names must be unique"
                  % (cam.name, seen[cam.name]))
        seen[cam.name] = i
        is_file = "://" not in cam.uri and not cam.uri.startswith("/dev/")
        cameras.append(dataclasses.replace(cam, uri=str(_resolve(ctx, cam.uri))) if is_file else cam)
    return dataclasses.replace(config, cameras=tuple(cameras), model=_check_model(config.model, ctx),
                               mqtt=_check_mqtt(config, ctx, path, env),
                               source=None if path is None else Path(os.path.abspath(path)))


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
        raise ConfigError("%s: no such file; pass --config FILE, set FALLWATCH_CONFIG, or copy the "
                          "documented config.yaml that ships with fallwatch" % source) from None
    except IsADirectoryError:
        raise ConfigError("%s: is a directory; expected a YAML file" % source) from None
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


def load_config(path: Union[str, "os.PathLike[str]", None], env: Mapping[str, str] = os.environ) -> Config:
    """Read, validate and resolve the config file at ``path`` (None: the built-in defaults).

    ``env`` supplies the environment variable named by ``mqtt.password_env``. Raises
    :class:`ConfigError` with a one-line message for the first problem found.
    """
    if path is None:
        raw, file, ctx = None, None, _Ctx("<defaults>", Path.cwd())
    else:
        file = Path(path)
        ctx = _Ctx(str(path), Path(os.path.abspath(file)).parent)
        raw = _read(file, ctx.source)
    return _finish(_build(Config, raw, "", ctx), ctx, file, env)


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
