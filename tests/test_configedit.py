"""The zone editor's backend (edge.configedit) and `fallwatch zones`, on copies of the repository's own
heavily commented config.yaml: only the zones value changes, byte for byte; what is saved parses back
as written; mode and owner are kept; the real `fallwatch config check` accepts the result; bad zones
are refused with the validator's reason and leave the file byte-identical; a crash mid-write leaves
the original and no temporary file."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli
from edge.configedit import camera_zones, save_zones
from edge.settings import ConfigError

ORIGINAL = (REPO / "config.yaml").read_text()
EMPTY = "    zones: []\n"

ZONES = [{"kind": "ignore", "polygon": [[0.05, 0.55], [0.45, 0.55], [0.45, 0.95123456], [0.05, 0.95]]},
         {"kind": "floor", "polygon": [[0, 0], [1, 0], [1.0, 1.0], [0, 1]]}]
# What the file must then hold, written out by hand: coordinates rounded to 4 decimals, floats.
SAVED = [{"kind": "ignore", "polygon": [[0.05, 0.55], [0.45, 0.55], [0.45, 0.9512], [0.05, 0.95]]},
         {"kind": "floor", "polygon": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]}]
SAVED_TEXT = ("    zones:\n"
              "      - kind: ignore\n"
              "        polygon: [[0.05, 0.55], [0.45, 0.55], [0.45, 0.9512], [0.05, 0.95]]\n"
              "      - kind: floor\n"
              "        polygon: [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\n")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A copy of config.yaml, mode 0640 (as install.sh leaves it), owned by another user when we may."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "config.yaml"
    shutil.copyfile(str(REPO / "config.yaml"), str(path))
    path.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(str(path), 1, 1)  # daemon:daemon on Debian: the temporary file (root's) must not keep root
    assert EMPTY in ORIGINAL and ORIGINAL.count("zones: []") == 1
    return path


def comment_lines(text: str) -> list:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def test_save_changes_only_the_zones_and_keeps_comments_mode_and_owner(config: Path) -> None:
    before = config.stat()
    assert camera_zones(config) == {"room1": []}
    save_zones(config, "room1", ZONES)
    text = config.read_text()
    assert text == ORIGINAL.replace(EMPTY, SAVED_TEXT)  # every other byte as it was
    assert len(comment_lines(ORIGINAL)) > 200 and comment_lines(text) == comment_lines(ORIGINAL)
    assert yaml.safe_load(text)["cameras"][0]["zones"] == SAVED
    assert camera_zones(config) == {"room1": SAVED}
    after = config.stat()
    assert after.st_mode & 0o7777 == 0o640
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert sorted(os.listdir(str(config.parent))) == ["config.yaml"]  # no temporary file left
    proc = run_cli("--config", str(config), "config", "check")
    assert proc.returncode == 0 and proc.stdout.strip() == "%s: ok" % config, proc.stderr


def test_saving_again_and_clearing_gives_back_the_original_bytes(config: Path) -> None:
    """Block list -> another block list -> none: the comments after a block list stay (the trap of
    ruamel.yaml's round trip), and clearing restores the file exactly."""
    save_zones(config, "room1", ZONES)
    save_zones(config, "room1", [{"kind": "floor", "polygon": [[0.1, 0.2], [0.3, 0.2], [0.3, 0.4]]}])
    assert config.read_text() == ORIGINAL.replace(EMPTY, "    zones:\n      - kind: floor\n"
                                                  "        polygon: [[0.1, 0.2], [0.3, 0.2], [0.3, 0.4]]\n")
    save_zones(config, "room1", [])
    assert config.read_bytes() == (REPO / "config.yaml").read_bytes()


def test_several_cameras_block_flow_and_missing_zones(config: Path) -> None:
    others = ("  - name: hall\n"
              "    uri: rtsp://cam.local/hall\n"
              "    zones:  # the sofa\n"
              "      - kind: ignore\n"
              "        polygon: [[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]]\n"
              "    # a comment between hall's zones and its flip\n"
              "    flip: none\n"
              "  - {name: porch, uri: rtsp://cam.local/porch}\n"
              "  - name: attic\n"
              "    uri: rtsp://cam.local/attic  # the last line of attic\n")
    text = ORIGINAL.replace("\nmqtt:\n", others + "\nmqtt:\n", 1)
    config.write_text(text)
    square = [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]]
    save_zones(config, "hall", [{"kind": "floor", "polygon": square}])
    save_zones(config, "porch", [{"kind": "ignore", "polygon": square}])
    save_zones(config, "attic", [{"kind": "floor", "polygon": square}])
    poly = "[[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]]"
    expected = ORIGINAL.replace("\nmqtt:\n", (
        "  - name: hall\n"
        "    uri: rtsp://cam.local/hall\n"
        "    zones:  # the sofa\n"
        "      - kind: floor\n"
        "        polygon: " + poly + "\n"
        "    # a comment between hall's zones and its flip\n"
        "    flip: none\n"
        "  - {name: porch, uri: rtsp://cam.local/porch, zones: [{kind: ignore, polygon: " + poly + "}]}\n"
        "  - name: attic\n"
        "    uri: rtsp://cam.local/attic  # the last line of attic\n"
        "    zones:\n"
        "      - kind: floor\n"
        "        polygon: " + poly + "\n"
        "\nmqtt:\n"), 1)
    assert config.read_text() == expected
    sq = [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]]
    assert camera_zones(config) == {"room1": [], "hall": [{"kind": "floor", "polygon": sq}],
                                    "porch": [{"kind": "ignore", "polygon": sq}],
                                    "attic": [{"kind": "floor", "polygon": sq}]}


@pytest.mark.parametrize("zone, reason", [
    ({"kind": "ignore", "polygon": [[0.1, 0.1], [0.5, 0.5]]},
     "cameras[0].zones[0].polygon: got [[0.1, 0.1], [0.5, 0.5]] (list); expected at least 3 corners"),
    ({"kind": "ignore", "polygon": [[0.1, 0.1], [1.2, 0.1], [0.5, 0.5]]},
     "cameras[0].zones[0].polygon: got [[0.1, 0.1], [1.2, 0.1], [0.5, 0.5]] (list); expected at least 3 corners "
     "[x, y], each between 0 and 1"),
    ({"kind": "wall", "polygon": [[0.1, 0.1], [0.9, 0.1], [0.5, 0.5]]},
     "cameras[0].zones[0].kind: got 'wall' (str); expected one of 'ignore', 'floor'"),
    ({"kind": "floor", "polygon": [[0.1, 0.1], [0.9, 0.1], [0.5, 0.5]], "colour": "red"},
     "cameras[0].zones[0].colour: unknown key"),
])
def test_bad_zones_are_refused_with_the_reason_and_nothing_written(config: Path, zone: dict, reason: str) -> None:
    before = config.read_bytes()
    with pytest.raises(ConfigError) as info:
        save_zones(config, "room1", [zone])
    assert str(info.value).startswith("%s: %s" % (config, reason)), str(info.value)  # names the config, not a temp file
    assert config.read_bytes() == before
    assert sorted(os.listdir(str(config.parent))) == ["config.yaml"]


def test_unknown_camera_and_cameras_from_the_defaults(config: Path, tmp_path: Path) -> None:
    before = config.read_bytes()
    with pytest.raises(ConfigError, match=r"no camera named 'garage'; the cameras there are: room1"):
        save_zones(config, "garage", [])
    assert config.read_bytes() == before
    with pytest.raises(ConfigError, match="no configuration file: the cameras come from the built-in defaults"):
        save_zones(None, "room1", [])
    bare = tmp_path / "bare.yaml"
    bare.write_text("# no cameras here\ndevice_id: kitchen\n")
    for call in (lambda: save_zones(bare, "room1", []), lambda: camera_zones(bare)):
        with pytest.raises(ConfigError, match="has no cameras: list, so its cameras come from the built-in defaults"):
            call()
    assert bare.read_text() == "# no cameras here\ndevice_id: kitchen\n"


def test_zones_shared_through_an_alias_are_not_spliced(tmp_path: Path) -> None:
    path = tmp_path / "alias.yaml"
    text = ("cameras:\n  - name: a\n    uri: rtsp://cam.local/a\n    zones: &bed\n      - kind: ignore\n"
            "        polygon: [[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]]\n"
            "  - name: b\n    uri: rtsp://cam.local/b\n    zones: *bed\n")
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"cameras\[1\] or its zones are written through a YAML alias"):
        save_zones(path, "b", [])
    with pytest.raises(ConfigError, match="found undefined alias 'bed'"):  # a's anchor would go: refused
        save_zones(path, "a", [])
    assert path.read_text() == text


@pytest.mark.parametrize("crash", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_a_crash_before_the_rename_leaves_the_original_and_no_temporary_file(config: Path, monkeypatch,
                                                                             crash: BaseException) -> None:
    before = config.read_bytes()

    def replace(src, dst):
        assert Path(src).read_text() == ORIGINAL.replace(EMPTY, SAVED_TEXT)  # it got that far
        raise crash

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises((ConfigError, KeyboardInterrupt)) as info:
        save_zones(config, "room1", ZONES)
    if isinstance(crash, OSError):
        assert "cannot replace it (Input/output error)" in str(info.value)
    assert config.read_bytes() == before
    assert sorted(os.listdir(str(config.parent))) == ["config.yaml"]


def test_a_file_changed_during_the_save_is_not_overwritten(config: Path, monkeypatch) -> None:
    import edge.configedit as configedit

    real = configedit.load_config
    calls = []

    def load_and_meddle(path, *args, **kwargs):  # the real validator; meanwhile someone else saves
        calls.append(path)
        if len(calls) == 2:
            config.write_text(ORIGINAL.replace("device_id: fallwatch", "device_id: edited", 1))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(configedit, "load_config", load_and_meddle)
    with pytest.raises(ConfigError, match="changed while saving"):
        save_zones(config, "room1", ZONES)
    assert "device_id: edited" in config.read_text() and "zones: []" in config.read_text()
    assert sorted(os.listdir(str(config.parent))) == ["config.yaml"]


@pytest.mark.skipif(os.geteuid() != 0, reason="saving as another user needs root to set that up (CI runs as root)")
def test_an_owner_that_cannot_be_kept_refuses_the_save() -> None:
    """A user who may write the directory but not give the file back to its owner writes nothing."""
    folder = Path(tempfile.mkdtemp(prefix="fallwatch-owner-"))  # not under pytest's root-only tmp_path
    try:
        folder.chmod(0o777)
        config = folder / "config.yaml"
        shutil.copyfile(str(REPO / "config.yaml"), str(config))
        config.chmod(0o644)
        proc = subprocess.run(["setpriv", "--reuid=1", "--regid=1", "--clear-groups", sys.executable, "-m", "edge",
                               "--config", str(config), "zones", "set", "room1", "--floor", "0,0 1,0 1,1"],
                              cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "belongs to uid 0 gid 0, which this user (uid 1) cannot keep when replacing it" in proc.stderr
        assert config.read_bytes() == (REPO / "config.yaml").read_bytes()
        assert (config.stat().st_uid, config.stat().st_gid) == (0, 0)
        assert sorted(os.listdir(str(folder))) == ["config.yaml"]
    finally:
        shutil.rmtree(str(folder))


@pytest.mark.skipif(os.geteuid() != 0, reason="saving as another user needs root to set that up (CI runs as root)")
def test_the_service_user_cannot_save_into_the_default_install_layout() -> None:
    """As install.sh leaves /etc/fallwatch without --web-edits (0750 root:fallwatch, config 0640
    root:fallwatch; 'daemon' stands in for fallwatch): refused, saying what to do, nothing written."""
    top = Path(tempfile.mkdtemp(prefix="fallwatch-layout-"))
    try:
        top.chmod(0o755)
        folder = top / "fallwatch"
        folder.mkdir(mode=0o750)
        config = folder / "config.yaml"
        shutil.copyfile(str(REPO / "config.yaml"), str(config))
        config.chmod(0o640)
        for path in (folder, config):
            os.chown(str(path), 0, 1)
        proc = subprocess.run(["setpriv", "--reuid=1", "--regid=1", "--clear-groups", sys.executable, "-m", "edge",
                               "--config", str(config), "zones", "set", "room1", "--floor", "0,0 1,0 1,1"],
                              cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert ("%s: cannot create a temporary file beside config.yaml (Permission denied); run it as the file's "
                "owner or with sudo; for the web page, the service may write the config only after `sudo "
                "./install.sh --web-edits`" % folder) in proc.stderr
        assert config.read_bytes() == (REPO / "config.yaml").read_bytes()
        assert sorted(os.listdir(str(folder))) == ["config.yaml"]
    finally:
        shutil.rmtree(str(top))


def test_cli_zones_set_and_show_round_trip(config: Path) -> None:
    proc = run_cli("--config", str(config), "zones", "set", "room1",
                   "--ignore", "0.05,0.55 0.45,0.55 0.45,0.95123456 0.05,0.95", "--floor", "0,0 1,0 1,1 0,1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "wrote %s:" % config,
        "room1: 2 zones",
        "  ignore 0.05,0.55 0.45,0.55 0.45,0.9512 0.05,0.95",
        "  floor  0.0,0.0 1.0,0.0 1.0,1.0 0.0,1.0",
        "apply it: sudo systemctl reload fallwatch (the service), or kill -HUP <pid> of a `fallwatch run`; the "
        "daemon reads the file again and keeps running as it was if the file is not valid (see its log)"]
    assert config.read_text() == ORIGINAL.replace(EMPTY, SAVED_TEXT)

    proc = run_cli("--config", str(config), "zones", "show", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"room1": SAVED}, proc.stderr
    proc = run_cli("--config", str(config), "zones", "show", "--camera", "room1")
    assert proc.stdout.splitlines()[1:] == ["room1: 2 zones", "  ignore 0.05,0.55 0.45,0.55 0.45,0.9512 0.05,0.95",
                                            "  floor  0.0,0.0 1.0,0.0 1.0,1.0 0.0,1.0"]

    proc = run_cli("--config", str(config), "zones", "set", "room1", "--floor", "0.1,0.1 1.2,0.1 0.5,0.5")
    assert proc.returncode == 2 and "cameras[0].zones[0].polygon: got [[0.1, 0.1], [1.2, 0.1], [0.5, 0.5]]" \
        in proc.stderr and proc.stdout == ""
    assert config.read_text() == ORIGINAL.replace(EMPTY, SAVED_TEXT)
    proc = run_cli("--config", str(config), "zones", "set", "room1", "--floor", "0.1;0.1 0.5,0.5 0.9,0.1")
    assert proc.returncode == 2 and "'0.1;0.1' is not a corner x,y" in proc.stderr
    proc = run_cli("--config", str(config), "zones", "set", "room1")
    assert proc.returncode == 2 and "give --ignore and/or --floor polygons, or --clear" in proc.stderr
    proc = run_cli("--config", str(config), "zones", "show", "--camera", "garage")
    assert proc.returncode == 2 and "no camera named 'garage'" in proc.stderr

    proc = run_cli("--config", str(config), "zones", "set", "room1", "--clear")
    assert proc.returncode == 0 and "room1: 0 zones" in proc.stdout, proc.stderr
    assert config.read_bytes() == (REPO / "config.yaml").read_bytes()
