from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from edge import config as cfg
from edge.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "config.yaml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def error_for(tmp_path: Path, text: str, env: Dict[str, str] = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    message = str(info.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message
    return message


def nested(key: str, value: Any) -> Dict[str, Any]:
    """{'cameras[i].fps': v} -> {'cameras': [{'fps': v}]}."""
    head, _, rest = key.partition(".")
    if head.endswith("[i]"):
        return {head[:-3]: [nested(rest, value)]}
    return {head: nested(rest, value) if rest else value}


# ------------------------------------------------------------------ the documented default


def test_root_config_equals_builtin_defaults(monkeypatch):
    monkeypatch.chdir(ROOT)
    from_file = load_config(ROOT / "config.yaml", env={}).to_dict(redact=False)
    builtin = load_config(None, env={}).to_dict(redact=False)
    differing = [key for key, _ in cfg.iter_schema() if lookup(from_file, key) != lookup(builtin, key)]
    assert differing == []
    assert from_file == builtin


def lookup(tree: Any, key: str) -> Any:
    """The value at a schema key; the first entry of a list (None when the list is empty)."""
    for part in key.split("."):
        if part.endswith("[i]"):
            if not tree[part[:-3]]:
                return None
            tree = tree[part[:-3]][0]
        else:
            tree = tree[part]
    return tree


def test_root_config_writes_and_comments_every_key():
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    missing = []
    for key, _ in cfg.iter_schema():
        try:
            lookup(raw, key)
        except (KeyError, IndexError, TypeError):
            missing.append(key)
    assert missing == []
    lines = text.splitlines()
    uncommented = [line for i, line in enumerate(lines)
                   if ":" in line and not line.lstrip().startswith("#") and not line.rstrip().endswith(":")
                   and not any(lines[j].lstrip().startswith("#") for j in (i - 1, i - 2))]
    assert uncommented == []


def test_every_title_is_one_line():
    for key, field in cfg.iter_schema():
        assert field.metadata["title"] and "\n" not in field.metadata["title"], key


def test_empty_file_and_empty_section_are_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    defaults = load_config(None, env={})
    assert load_config(write(tmp_path, ""), env={}) == defaults
    assert load_config(write(tmp_path, "mqtt:\nmodel: {}\n"), env={}) == defaults
    assert defaults.cameras[0].name == "room1" and defaults.mqtt.client_id == "fallwatch-fallwatch"


def test_values_are_typed_and_frozen(tmp_path):
    config = load_config(write(tmp_path, "cameras: [{name: a, fps: 25}, {name: b, uri: 'csi://0'}]\n"), env={})
    assert isinstance(config.cameras, tuple) and config.cameras[0].fps == 25.0
    assert isinstance(config.cameras[0].fps, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mqtt.port = 1  # type: ignore[misc]


# ------------------------------------------------------------------ mistakes, each with its key path

BAD = [
    # (yaml, exact key path, pieces the message must hold)
    ("cameras: [{name: a}, {name: b, fps: fast}]", "cameras[1].fps",
     ["cameras[1].fps: got 'fast' (str); expected a number from 1 to 240"]),
    ("mqtt: {port: 70000}", "mqtt.port", ["got 70000 (int)", "an integer from 1 to 65535"]),
    ("mqtt: {hots: broker}", "mqtt.hots", ["mqtt.hots: unknown key; did you mean 'host'?"]),
    ("mqtt: {tls: {ca_fiel: ca.pem}}", "mqtt.tls.ca_fiel", ["did you mean 'ca_file'?"]),
    ("port: 1883", "port", ["did you mean 'mqtt.port'?"]),
    ("models_dir: m", "models_dir", ["did you mean 'paths.models_dir'?"]),
    ("colour: red", "colour", ["unknown key", "device_id"]),
    ("source: x.yaml", "source", ["unknown key"]),
    ("engine: {threads: true}", "engine.threads", ["got True (bool)", "an integer from 0 to 64"]),
    ("mqtt: {enabled: 1}", "mqtt.enabled", ["got 1 (int)", "true or false"]),
    ("mqtt: {keepalive_s: 2.5}", "mqtt.keepalive_s", ["got 2.5 (float)", "an integer from 5 to 3600"]),
    ("log_level: verbose", "log_level", ["got 'verbose' (str)", "one of 'debug', 'info'"]),
    ("mqtt: {protocol: 5}", "mqtt.protocol", ["got 5 (int)", "one of '3.1.1', '5'"]),
    ("cameras: [{name: Room 1}]", "cameras[0].name", ["got 'Room 1' (str)", "a-z"]),
    ("device_id: 'my device'", "device_id", ["got 'my device' (str)"]),
    ("mqtt: {host: 'mqtt://broker'}", "mqtt.host", ["got 'mqtt://broker' (str)", "no scheme"]),
    ("mqtt: {host: null}", "mqtt.host", ["got null", "expected a host name"]),
    ("mqtt: {topic_prefix: 'home/#'}", "mqtt.topic_prefix", ["got 'home/#' (str)"]),
    ("cameras: [{uri: 'usb://0'}]", "cameras[0].uri", ["got 'usb://0' (str)", "csi://N"]),
    ("cameras: [{name: hall}, {name: kitchen}, {name: hall}]", "cameras[2].name",
     ["cameras[2].name: 'hall' is used by cameras[0] too"]),
    ("model: {spec: openpose}", "model.spec",
     ["got 'openpose' (str)", "bodyposenet, openpose-mobilenet-thin, pose_resnet_50_256x192, trt_pose"]),
    ("model: {input_width: 430}", "model.input_width", ["got 430", "multiples of 8"]),
    ("model: {spec: bodyposenet}", "model.input_height", ["got 368", "exactly 288x384"]),
    ("model: {input_height: 4096}", "model.input_height", ["got 4096 (int)", "from 32 to 2048"]),
    ("paths: {models_dir: ''}", "paths.models_dir", ["got '' (str)", "a path"]),
    ("paths: {state_dir: 42}", "paths.state_dir", ["got 42 (int)", "a path"]),
    ("mqtt: [host, port]", "mqtt", ["mqtt: got ['host', 'port'] (list); expected a mapping with keys enabled"]),
    ("cameras: {name: a}", "cameras", ["got {'name': 'a'} (dict); expected a list"]),
    ("cameras: [room1]", "cameras[0]", ["got 'room1' (str); expected a mapping with keys name, uri"]),
    ("- a\n- b", "top level", ["got ['a', 'b'] (list); expected a mapping"]),
    ("mqtt: {password_file: nope.txt}", "mqtt.password_file", ["nope.txt", "No such file"]),
    ("mqtt: {tls: {enabled: true, ca_file: ca.pem}}", "mqtt.tls.ca_file", ["ca.pem", "readable file"]),
    ("mqtt: {enabled: true, host: broker.lan, username: u, password: p}", "mqtt.tls.enabled",
     ["'broker.lan'", "allow_plain_password"]),
]


@pytest.mark.parametrize("text, key, pieces", BAD, ids=[key for _, key, _ in BAD])
def test_bad_config_names_key_path_and_value(tmp_path, text, key, pieces):
    message = error_for(tmp_path, text + "\n")
    assert ": %s: " % key in message
    for piece in pieces:
        assert piece in message


def test_bad_config_error_carries_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "mqtt: {tls: {insecure: maybe}}\n"), env={})
    assert info.value.key == "mqtt.tls.insecure" and isinstance(info.value, ValueError)


# What the cross-field rules need beside a key so that both ends of its range are allowed: with
# the other keys at their defaults, fall.up_head_height_bh: 0.1 would be below the down thresholds.
BESIDE = {
    "fall.up_head_height_bh": {"fall.max_head_height_bh": 0.05, "fall.max_head_height_lying_bh": 0.05,
                               "fall.max_floor_head_bh": 0.01, "fall.down_margin_bh": 0},
    "fall.down_margin_bh": {"fall.up_head_height_bh": 2},
    "fall.max_head_height_bh": {"fall.up_head_height_bh": 2},
    "fall.max_head_height_lying_bh": {"fall.up_head_height_bh": 2},
    "fall.max_floor_head_bh": {"fall.up_head_height_bh": 2},
    "fall.upright_torso_angle_deg": {"fall.lying_torso_angle_deg": 90},
    "fall.lying_torso_angle_deg": {"fall.upright_torso_angle_deg": 5},
    "fall.gap_s": {"fall.confirm_within_s": 30},
    "fall.confirm_within_s": {"fall.gap_s": 0.05},
    "tracker.max_missed_s": {"views.lost_near_floor_s": 0},
    "tracker.history_s": {"views.policy": "never"},
    "views.descent_window_s": {"tracker.history_s": 60},
    "views.suspicious_torso_s": {"tracker.history_s": 60},
    "views.lost_near_floor_s": {"tracker.max_missed_s": 3600},
    "daemon.reconnect_min_s": {"daemon.reconnect_max_s": 3600},
    "daemon.reconnect_max_s": {"daemon.reconnect_min_s": 0.01},
    "mqtt.reconnect_min_s": {"mqtt.reconnect_max_s": 3600},
    "mqtt.reconnect_max_s": {"mqtt.reconnect_min_s": 0.1},
}


def with_beside(key: str, value: Any) -> Dict[str, Any]:
    """``nested(key, value)`` plus what BESIDE sets for that key."""
    tree = nested(key, value)
    for other, other_value in BESIDE.get(key, {}).items():
        section, name = other.split(".")
        tree.setdefault(section, {})[name] = other_value
    return tree


def test_every_range_is_enforced_at_its_key(tmp_path):
    ranged = [(key, f) for key, f in cfg.iter_schema() if f.metadata.get("between")]
    assert len(ranged) >= 8
    for key, field in ranged:
        lo, hi = field.metadata["between"]
        for value in (lo, hi):
            load_config(write(tmp_path, yaml.safe_dump(with_beside(key, value))), env={})
        for value in (lo - 1, hi + 1):
            message = error_for(tmp_path, yaml.safe_dump(with_beside(key, value)))
            assert ": %s: got %s " % (key.replace("[i]", "[0]"), value) in message


def test_each_rule_needs_what_is_set_beside_it(tmp_path):
    """BESIDE holds nothing that is not needed: without it, one end of the key's range breaks a rule."""
    for key in BESIDE:
        field = dict(cfg.iter_schema())[key]
        failing = []
        for value in field.metadata["between"]:
            try:
                load_config(write(tmp_path, yaml.safe_dump(nested(key, value))), env={})
            except ConfigError as exc:
                failing.append(exc.key)
        assert failing, key


def test_every_choice_is_accepted(tmp_path):
    for key, field in cfg.iter_schema():
        for choice in field.metadata.get("choices") or ():
            tree = nested(key, choice)
            if key.startswith("cameras[i].zones[i]."):  # a zone is nothing without its polygon
                tree["cameras"][0]["zones"][0]["polygon"] = [[0, 0], [1, 0], [1, 1]]
            load_config(write(tmp_path, yaml.safe_dump(tree)), env={})


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    message = error_for(tmp_path, "mqtt:\n  host: a\n port: 1\n")
    assert "line 3, column 2" in message and "invalid YAML" in message


def test_key_given_twice_is_an_error(tmp_path):
    message = error_for(tmp_path, "mqtt:\n  port: 1\n  host: a\n  port: 2\n")
    assert "line 4" in message and "'port' is given twice (first on line 2)" in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.yaml: no such file"):
        load_config(tmp_path / "nowhere.yaml", env={})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})


# ------------------------------------------------------------------ the password


def test_password_in_readable_file_is_refused(tmp_path):
    path = write(tmp_path, "mqtt: {password: hunter2}\n", mode=0o644)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert info.value.key == "mqtt.password" and "mode 0644" in message and "chmod 640" in message
    assert "hunter2" not in message
    path.chmod(0o640)
    assert load_config(path, env={}).mqtt.password == "hunter2"


def test_password_of_wrong_type_is_not_echoed(tmp_path):
    message = error_for(tmp_path, "mqtt: {password: 918273645}\n")
    assert "mqtt.password" in message and "918273645" not in message and "int" in message


def test_password_precedence(tmp_path):
    (tmp_path / "secret.txt").write_text("from-file\nsecond line\n", encoding="utf-8")
    text = "mqtt: {password: from-yaml, password_file: secret.txt, password_env: MY_PW}\n"
    path = write(tmp_path, text)
    assert load_config(path, env={"MY_PW": "from-env"}).mqtt.password == "from-env"
    assert load_config(path, env={"MY_PW": ""}).mqtt.password == "from-file"
    assert load_config(write(tmp_path, "mqtt: {password: from-yaml}\n"), env={}).mqtt.password == "from-yaml"
    default_env = write(tmp_path, "mqtt: {password: from-yaml}\n")
    assert load_config(default_env, env={"FALLWATCH_MQTT_PASSWORD": "x"}).mqtt.password == "x"
    no_env = write(tmp_path, "mqtt: {password: from-yaml, password_env: null}\n")
    assert load_config(no_env, env={"FALLWATCH_MQTT_PASSWORD": "x"}).mqtt.password == "from-yaml"


def test_empty_password_file_is_an_error(tmp_path):
    (tmp_path / "secret.txt").write_text("\n", encoding="utf-8")
    message = error_for(tmp_path, "mqtt: {password_file: secret.txt}\n")
    assert ": mqtt.password_file: " in message and "empty" in message


def test_password_never_shown(tmp_path):
    config = load_config(write(tmp_path, "mqtt: {username: u}\n"), env={"FALLWATCH_MQTT_PASSWORD": "s3cr3t-pw"})
    assert config.mqtt.password == "s3cr3t-pw"
    shown = config.to_dict(redact=True)
    assert shown["mqtt"]["password"] == "***" and shown["mqtt"]["username"] == "u"
    for text in (repr(config), str(config), repr(config.mqtt), str(shown), yaml.safe_dump(shown)):
        assert "s3cr3t-pw" not in text
    assert config.to_dict(redact=False)["mqtt"]["password"] == "s3cr3t-pw"


def test_plain_password_allowed_to_loopback_or_when_asked(tmp_path):
    env = {"FALLWATCH_MQTT_PASSWORD": "pw"}
    for mqtt in ("{enabled: true, host: 127.0.0.1}", "{enabled: true, host: '::1'}",
                 "{enabled: true, host: broker.lan, allow_plain_password: true}",
                 "{enabled: false, host: broker.lan}"):
        load_config(write(tmp_path, "mqtt: %s\n" % mqtt), env=env)


def test_tls_files_checked_only_when_enabled(tmp_path):
    load_config(write(tmp_path, "mqtt: {tls: {ca_file: missing.pem}}\n"), env={})
    (tmp_path / "client.key").write_text("key", encoding="utf-8")
    message = error_for(tmp_path, "mqtt: {tls: {enabled: true, key_file: client.key}}\n")
    assert ": mqtt.tls.cert_file: got null" in message


# ------------------------------------------------------------------ paths


def test_relative_paths_resolve_against_config_dir(tmp_path, monkeypatch):
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "pw").write_text("pw\n", encoding="utf-8")
    (sub / "ca.pem").write_text("ca", encoding="utf-8")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = """
paths: {models_dir: models, state_dir: /var/lib/fallwatch}
model: {onnx: ../onnx/pose.onnx}
engine: {engine_file: ~/pose.engine}
cameras: [{name: a, uri: clips/fall.mp4}, {name: b, uri: /dev/video1}, {name: c, uri: 'rtsp://cam/1'}]
mqtt: {password_file: pw, tls: {enabled: true, ca_file: ca.pem}}
"""
    write(sub, text)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc") / "config.yaml", env={})  # a relative config path
    assert config.paths.models_dir == sub / "models"
    assert config.paths.state_dir == Path("/var/lib/fallwatch")
    assert config.model.onnx == tmp_path / "onnx" / "pose.onnx"
    assert config.engine.engine_file == tmp_path / "home" / "pose.engine"
    assert [c.uri for c in config.cameras] == [str(sub / "clips" / "fall.mp4"), "/dev/video1", "rtsp://cam/1"]
    assert config.mqtt.password_file == sub / "pw" and config.mqtt.password == "pw"
    assert config.mqtt.tls.ca_file == sub / "ca.pem"
    assert all(p.is_absolute() for p in (config.paths.models_dir, config.model.onnx))


def test_defaults_resolve_against_current_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.paths.models_dir == tmp_path / "models" and config.paths.state_dir == tmp_path / "state"
    assert config.source is None and "source" not in config.to_dict()


def test_source_is_the_absolute_file(tmp_path, monkeypatch):
    write(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    assert load_config("config.yaml", env={}).source == tmp_path / "config.yaml"


def test_spec_given_as_path(tmp_path):
    spec = (ROOT / "edge" / "inference" / "specs" / "trt_pose.yaml").read_text(encoding="utf-8")
    (tmp_path / "my_spec.yaml").write_text(spec, encoding="utf-8")
    config = load_config(write(tmp_path, "model: {spec: my_spec.yaml, input_height: 224, input_width: 224}\n"),
                         env={})
    assert config.model.spec == str(tmp_path / "my_spec.yaml")


def test_default_config_path(tmp_path, monkeypatch):
    monkeypatch.setattr(cfg, "SYSTEM_CONFIG", tmp_path / "etc.yaml")
    assert cfg.default_config_path({"FALLWATCH_CONFIG": "/x/c.yaml"}) == Path("/x/c.yaml")
    assert cfg.default_config_path({}) == Path("config.yaml")
    write(tmp_path, "", name="etc.yaml")
    assert cfg.default_config_path({}) == tmp_path / "etc.yaml"


# ------------------------------------------------------------------ exit status


def test_load_config_or_exit_exits_2_with_one_line(tmp_path):
    write(tmp_path, "mqtt:\n  port: high\n", name="bad.yaml")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", "from edge.config import load_config_or_exit; load_config_or_exit('bad.yaml')"],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "bad.yaml: mqtt.port: got 'high' (str); expected an integer from 1 to 65535"]


def _cli_without_config_variable(args, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m edge ARGS`` in ``cwd`` with FALLWATCH_CONFIG unset, then set from ``env``."""
    full = {k: v for k, v in os.environ.items() if k != "FALLWATCH_CONFIG"}
    full.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edge"] + list(args), cwd=str(cwd), env=full,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["config", "check"], ["run"]])
def test_fallwatch_config_naming_a_missing_file_fails_like_config_does(tmp_path, command):
    """The variable names a file on purpose: a missing one is refused exactly as --config refuses
    it (status 2, the same one line), never replaced by the built-in defaults (MQTT off)."""
    write(tmp_path, "mqtt: {enabled: true}\n")  # ./config.yaml: must not be used instead either
    missing = tmp_path / "gone" / "fallwatch.yaml"
    by_variable = _cli_without_config_variable(command, tmp_path, FALLWATCH_CONFIG=str(missing))
    by_flag = _cli_without_config_variable(command + ["--config", str(missing)], tmp_path)
    for result in (by_variable, by_flag):
        assert result.returncode == 2 and result.stdout == ""
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines() == [
            "%s: no such file; pass --config FILE, set FALLWATCH_CONFIG, or copy the documented config.yaml "
            "that ships with fallwatch" % missing]


def test_fallwatch_config_names_the_file_used(tmp_path):
    named = write(tmp_path, "device_id: from_variable\n", name="mine.yaml")
    write(tmp_path, "device_id: from_cwd\n")
    result = _cli_without_config_variable(["config", "show"], tmp_path, FALLWATCH_CONFIG=str(named))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["device_id"] == "from_variable" and result.stderr == ""


def test_only_the_implicit_search_falls_back_to_defaults_and_says_where_it_looked(tmp_path):
    assert not cfg.SYSTEM_CONFIG.exists()  # else this machine's file would be found
    result = _cli_without_config_variable(["config", "check"], tmp_path)
    assert result.returncode == 0 and result.stdout == "built-in defaults: ok\n"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and " WARNING " in lines[0], lines
    assert lines[0].endswith("no configuration file (no --config, FALLWATCH_CONFIG unset, none at "
                             "/etc/fallwatch/config.yaml, %s): using the built-in defaults, MQTT off, "
                             "cameras /dev/video0" % (tmp_path / "config.yaml")), lines[0]
    write(tmp_path, "")
    found = _cli_without_config_variable(["config", "check"], tmp_path)
    assert found.stdout == "%s: ok\n" % (tmp_path / "config.yaml") and found.stderr == ""


# ------------------------------------------------------------------ settings of the stages, through the CLI

BROKEN = [
    # (yaml, the one line on stderr after "<file>: ")
    ("fall: {up_head_height_bh: 0.3}", "fall.up_head_height_bh: got 0.3 (float); must be above max_head_height_bh "
     "(0.35) and max_head_height_lying_bh (0.5): a person cannot be up and down at once"),
    ("fall: {max_head_height_lying_bh: 0.8}", "fall.up_head_height_bh: got 0.6 (float); must be above "
     "max_head_height_bh (0.35) and max_head_height_lying_bh (0.8)"),
    ("fall: {max_floor_head_bh: 0.6}", "fall.max_floor_head_bh: got 0.6 (float); must be below "
     "up_head_height_bh (0.6)"),
    ("fall: {upright_torso_angle_deg: 60}", "fall.upright_torso_angle_deg: got 60 (int); must be at most "
     "lying_torso_angle_deg (50.0)"),
    ("fall: {gap_s: 5, confirm_within_s: 4}", "fall.gap_s: got 5 (int); must be at most confirm_within_s (4)"),
    ("fall: {descent_window_s: 0}", "fall.descent_window_s: got 0 (int); expected a number from 0.2 to 10"),
    ("fall: {min_keypoint_confidence: 0}", "fall.min_keypoint_confidence: got 0 (int); expected a number from "
     "0.01 to 1"),
    ("tracker: {min_hits: 0}", "tracker.min_hits: got 0 (int); expected an integer from 1 to 100"),
    ("tracker: {min_keypoint_confidence: 0.0}", "tracker.min_keypoint_confidence: got 0.0 (float); expected a "
     "number from 0.01 to 1"),
    ("tracker: {max_missed_s: 1}", "views.lost_near_floor_s: got 2.0 (float); must be at most "
     "tracker.max_missed_s (1.0)"),
    ("tracker: {history_s: 0.2}", "views.descent_window_s: got 0.5 (float); must be at most tracker.history_s (0.2)"),
    ("views: {suspicious_torso_s: 20}", "views.suspicious_torso_s: got 20.0 (float); must be at most "
     "tracker.history_s (10.0)"),
    ("views: {policy: often}", "views.policy: got 'often' (str); expected one of 'auto', 'always', 'never'"),
    ("daemon: {reconnect_min_s: 60}", "daemon.reconnect_min_s: got 60 (int); must be at most reconnect_max_s (30)"),
    ("mqtt: {reconnect_max_s: 0.5}", "mqtt.reconnect_min_s: got 1 (int); must be at most reconnect_max_s (0.5)"),
]


def assert_one_line(result: subprocess.CompletedProcess, path: Path, line: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("%s: %s" % (path, line)), lines


@pytest.mark.parametrize("text, line", BROKEN, ids=[text for text, _ in BROKEN])
def test_config_check_rejects_a_broken_setting_with_its_key_path(tmp_path, text, line):
    from conftest import run_cli

    path = write(tmp_path, text + "\n")
    result = run_cli("config", "check", "--config", str(path))
    assert_one_line(result, path, line)
    assert result.stdout == ""


def test_run_replay_and_evaluate_refuse_a_broken_setting_without_a_traceback(tmp_path):
    from conftest import run_cli, shared_data

    data = shared_data("gmdcsa24")
    video = data / "subject1" / "Fall" / "13.mp4"
    path = write(tmp_path, "cameras: [{name: hall, uri: '%s'}]\nfall: {up_head_height_bh: 0.3}\n" % video)
    line = BROKEN[0][1]
    for args in (["run"], ["replay", str(video)], ["evaluate", str(data)]):
        result = run_cli(*(args + ["--config", str(path)]))
        assert_one_line(result, path, line)


def test_a_config_made_in_code_keeps_the_rules_across_sections():
    from edge.track import TrackerConfig

    config = load_config(None, env={})
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(config, tracker=TrackerConfig(max_missed_s=1))
    assert info.value.key == "views.lost_near_floor_s" and "tracker.max_missed_s (1.0)" in str(info.value)
    assert dataclasses.replace(config, tracker=TrackerConfig(max_missed_s=1),
                               views=dataclasses.replace(config.views, lost_near_floor_s=1)).tracker.max_missed_s == 1
