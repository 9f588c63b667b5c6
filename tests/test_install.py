"""install.sh: run for real into a staging root (--root) with faked L4T files and stubbed system
commands, checked file by file; run twice (idempotent), then --uninstall and --purge.

The stubs (apt-get, useradd, usermod, userdel, systemctl, runuser, journalctl, python3 and the
venv's python) log every call as one JSON line; useradd/usermod/userdel edit the staging root's
/etc/passwd and /etc/group as the real ones would with --root. Everything else (install, chown,
ln, awk, sed) is the real thing, and so is apt-cache: APT_CONFIG points it at the staging root's
own apt world (sources.list, Packages lists of Ubuntu's archive and of JetPack's repository, the
dpkg status), so the candidate it picks is real apt's choice. apt-get's stand-in installs what it
is asked for (PACKAGE=VERSION, or apt-cache's candidate) into that dpkg status, and installing
cuda-toolkit-X-Y puts an nvcc into FALLWATCH_CUDA_HOME.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from edge.health.board import detect_board
from edge.config import load_config

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.sh"

STUB = r'''#!{python}
"""Test stub: logs its call as JSON to $STUB_LOG and imitates just enough of the real command."""
import json, os, re, subprocess, sys
from pathlib import Path

name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as fh:
    env = {{k: os.environ[k] for k in ("CUDA_ROOT",) if k in os.environ}}
    env["PATH0"] = os.environ["PATH"].split(":")[0]
    fh.write(json.dumps({{"cmd": name, "exe": sys.argv[0], "args": args, "env": env}}) + "\n")

def opt(flag):
    return args[args.index(flag) + 1] if flag in args else ""

def edit(path, change):
    p = Path(path)
    lines = p.read_text().splitlines() if p.exists() else []
    p.write_text("".join(l + "\n" for l in change(lines)))

root = opt("--root")
if name == "apt-get" and "install" in args:
    # All or nothing, like apt-get: every PACKAGE[=VERSION] must be one apt-cache knows.
    status = Path(os.environ["APT_CONFIG"]).parents[2] / "var/lib/dpkg/status"
    chosen = []
    for spec in [a for a in args[args.index("install") + 1:] if not a.startswith("-")]:
        pkg, _, want = spec.partition("=")
        policy = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True,
                                env=dict(os.environ, LC_ALL="C")).stdout
        versions = re.findall(r"^ (?:\*\*\*|   ) (\S+) -?\d+$", policy, re.M)
        candidate = re.search(r"^  Candidate: (\S+)$", policy, re.M)
        version = want or (candidate.group(1) if candidate else "")
        if version not in versions or version == "(none)":
            print("E: Version '%s' for '%s' was not found" % (want, pkg) if want else
                  "E: Unable to locate package %s" % pkg, file=sys.stderr)
            sys.exit(100)
        chosen.append((pkg, version))
    with open(str(status), "a") as fh:
        for pkg, version in chosen:
            fh.write("\nPackage: %s\nStatus: install ok installed\nArchitecture: arm64\nVersion: %s\n"
                     "Maintainer: stub\nDescription: stub\n" % (pkg, version))
            cuda = re.match(r"cuda-toolkit-(\d+)-(\d+)$", pkg)
            if cuda and not os.environ.get("STUB_NO_NVCC"):
                nvcc = Path(os.environ["FALLWATCH_CUDA_HOME"]) / "bin/nvcc"
                nvcc.parent.mkdir(parents=True, exist_ok=True)
                nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release %s.%s, V%s'\n"
                                % (cuda.group(1), cuda.group(2), version))
                nvcc.chmod(0o755)
elif name == "python3" and args[:2] == ["-m", "venv"]:
    bindir = Path(args[-1]) / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(os.path.abspath(sys.argv[0]))
elif name == "python3" and args[:1] == ["-c"]:
    print(os.environ.get("STUB_PYTHON_VERSION", "3.8"))
elif name == "python":
    bindir = Path(sys.argv[0]).parent
    if args[:1] == ["-c"] and "pycuda" in args[1]:
        sys.exit(0 if (bindir / ".pycuda").exists() else 1)
    if args[:1] == ["-c"] and "tensorrt" in args[1]:
        print("TensorRT 8.5.2.2, OpenCV 4.5.4, NumPy 1.24.4")
    if args[:3] == ["-m", "pip", "install"]:
        if "pycuda" in args:
            (bindir / ".pycuda").touch()
        if any((Path(a) / "pyproject.toml").is_file() for a in args):
            for tool in ("fallwatch", "fallwatch-calibrate"):
                if not (bindir / tool).exists():
                    (bindir / tool).symlink_to(os.path.abspath(sys.argv[0]))
elif name == "useradd":
    user = args[-1]
    edit(root + "/etc/passwd", lambda ls: ls + ["%s:x:998:998:fallwatch:%s:%s" % (user, opt("--home-dir"), opt("--shell"))])
    edit(root + "/etc/group", lambda ls: ls + ["%s:x:998:" % user])
elif name == "usermod":
    user, group = args[-1], opt("--groups")
    def add(ls):
        out = []
        for l in ls:
            if l.split(":")[0] == group:
                l = l + ("," if not l.endswith(":") else "") + user
            out.append(l)
        return out
    edit(root + "/etc/group", add)
elif name == "userdel":
    user = args[-1]
    edit(root + "/etc/passwd", lambda ls: [l for l in ls if l.split(":")[0] != user])
    edit(root + "/etc/group", lambda ls: [l for l in ls if l.split(":")[0] != user])
elif name == "runuser" and os.environ.get("STUB_RUNUSER_EXEC"):
    command = args[args.index("--") + 1:]
    os.execvp(command[0], command)
elif name == "journalctl":
    print("stub journal: fallwatch[1234]: camera room1: cannot open /dev/video0")
elif name == "systemctl" and os.environ.get("STUB_STATES") and args[:1] == ["show"]:
    # STUB_STATES: lines "INVOCATION STATE"; each ActiveState query moves to the next line.
    lines = Path(os.environ["STUB_STATES"]).read_text().split("\n")
    pos_file = Path(os.environ["STUB_STATES"] + ".pos")
    pos = int(pos_file.read_text()) if pos_file.exists() else 0
    if "ActiveState,SubState" in args:
        inv, state = lines[min(pos, len(lines) - 1)].split()
        pos_file.write_text(str(pos + 1))
        print("\n".join(state.split("/")))
    elif "InvocationID" in args:
        print(lines[min(max(pos - 1, 0), len(lines) - 1)].split()[0])
sys.exit(0)
'''

STUBBED = ("apt-get", "useradd", "usermod", "userdel", "systemctl", "runuser", "journalctl", "python3")
# Commands that change the system; a dry run must call none of them.
MUTATING = {"apt-get", "useradd", "usermod", "userdel", "systemctl", "runuser", "python"}

L4T_35 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
L4T_36 = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024\n"
ORIN = "NVIDIA Jetson Orin Nano Developer Kit"


def dpkg_stanza(package: str, version: str, status: str = "install ok installed") -> str:
    return ("Package: %s\nStatus: %s\nArchitecture: arm64\nVersion: %s\nMaintainer: test\nDescription: test\n"
            % (package, status, version))


# The apt repositories a board sees: Ubuntu's ports archive and JetPack's common repository, with
# the arm64 packages install.sh asks for. Names and versions as published: JetPack 5.1.2's
# python3-libnvinfer 8.5.2-1+cuda11.4 and libopencv-python 4.5.4-8-g3e4c170df4 (dpkg -l of a
# JetPack 5.1 device), nvidia-jetpack 6.0+b106 / 6.1+b123 (apt show on JetPack 6 devices; its
# nvidia-* components share that version), cuda-toolkit-11-4 / -12-2 / -12-6 (JetPack 5.1 / 6.0 /
# 6.1+), and Ubuntu 22.04's own arm64 nvidia-cuda-dev 11.5.1-1ubuntu1 in multiverse
# (packages.ubuntu.com/jammy/arm64/nvidia-cuda-dev), whose higher version number is apt's
# candidate over JetPack's. Build numbers of cuda-toolkit-* are illustrative.
UBUNTU = {
    "focal": ("http://ports.ubuntu.com/ubuntu-ports focal main", {
        "python3-venv": "3.8.2-0ubuntu2", "python3-pip": "20.0.2-5ubuntu1.10", "python3-dev": "3.8.2-0ubuntu2",
        "build-essential": "12.8ubuntu1.1", "v4l-utils": "1.18.0-2build1"}),
    "jammy": ("http://ports.ubuntu.com/ubuntu-ports jammy multiverse", {
        "python3-venv": "3.10.6-1~22.04.1", "python3-pip": "22.0.2+dfsg-1ubuntu0.4",
        "python3-dev": "3.10.6-1~22.04.1", "build-essential": "12.9ubuntu3", "v4l-utils": "1.22.1-2build1",
        "nvidia-cuda-dev": "11.5.1-1ubuntu1"}),
}
JETPACK = {
    "r35.4": {"cuda-toolkit-11-4": "11.4.19-1", "nvidia-cuda-dev": "5.1.2-b104",
              "python3-libnvinfer": "8.5.2-1+cuda11.4", "libopencv-python": "4.5.4-8-g3e4c170df4"},
    "r36.3": {"cuda-toolkit-12-2": "12.2.12-1", "nvidia-cuda-dev": "6.0+b106",
              "python3-libnvinfer": "8.6.2.3-1+cuda12.2", "libopencv-python": "4.8.0-1-g6371ee1"},
    "r36.4": {"cuda-toolkit-12-6": "12.6.11-1", "nvidia-cuda-dev": "6.1+b123",
              "python3-libnvinfer": "10.3.0.30-1+cuda12.5", "libopencv-python": "4.8.0-1-g6371ee1"},
}
JETPACK_URI = "https://repo.download.nvidia.com/jetson/common"


def make_apt_world(root: Path, ubuntu: str, jetpack: Optional[str]) -> Path:
    """Sources and Packages lists under root, read by the real apt-cache through APT_CONFIG (the
    returned file): Ubuntu's archive for ``ubuntu``, JetPack's common repository for the L4T release
    ``jetpack`` (r35.4, r36.3, ...), or none when ``jetpack`` is None."""
    for sub in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                "var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    published = dict(JETPACK.get(jetpack or "", JETPACK["r36.4" if ubuntu == "jammy" else "r35.4"]))
    # JetPack's other meta packages, at nvidia-jetpack's version like nvidia-cuda-dev
    published.update({name: published["nvidia-cuda-dev"] for name in ("nvidia-tensorrt", "nvidia-opencv")})
    repos = [UBUNTU[ubuntu]] + ([("%s %s main" % (JETPACK_URI, jetpack), published)] if jetpack else [])
    sources = []
    for line, packages in repos:
        uri, suite, component = line.split()
        sources.append("deb [trusted=yes] %s %s %s\n" % (uri, suite, component))
        lists = "%s_dists_%s_%s_binary-arm64_Packages" % (uri.split("://")[1].replace("/", "_"), suite, component)
        (root / "var/lib/apt/lists" / lists).write_text("".join(
            "Package: %s\nArchitecture: arm64\nVersion: %s\nFilename: pool/%s_%s_arm64.deb\n\n"
            % (p, v, p, v) for p, v in packages.items()))
    (root / "etc/apt/sources.list").write_text("".join(sources))
    conf = root / "etc/apt/apt.conf"
    conf.write_text('Dir "%s/";\nDir::State::status "%s/var/lib/dpkg/status";\n'
                    'APT::Architecture "arm64";\nAPT::Architectures { "arm64"; };\n'
                    'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' % (root, root))
    return conf


def make_jetson_root(root: Path, release: Optional[str] = L4T_35, model: Optional[str] = ORIN,
                     packages: Optional[Dict[str, str]] = None, groups: List[str] = ("video",),
                     csi: bool = True, jetpack_repo: bool = True) -> Path:
    """A staging root that looks like a fresh JetPack flash (L4T without nvidia-jetpack) to
    install.sh and edge.health.board; its apt sees Ubuntu's archive and, with ``jetpack_repo``,
    JetPack's repository for the release."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if release is not None:
        (root / "etc/nv_tegra_release").write_text(release)
    if model is not None:
        (root / "proc/device-tree").mkdir(parents=True)
        (root / "proc/device-tree/model").write_bytes(model.encode() + b"\0")
    pkgs = {"python3-venv": "3.8.2-0ubuntu2"} if packages is None else packages
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("\n".join(dpkg_stanza(p, v) for p, v in pkgs.items()))
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n" + "".join("%s:x:%d:\n" % (g, 44 + i) for i, g in enumerate(groups)))
    if csi:
        (root / "sys/class/video4linux/video0").mkdir(parents=True)
        (root / "sys/class/video4linux/video0/name").write_text("vi-output, imx219 9-0010\n")
    l4t = re.match(r"# R(\d+) \(release\), REVISION: (\d+)", release or "")
    series = "r%s.%s" % l4t.groups() if l4t else "r35.4"
    make_apt_world(root, "jammy" if series.startswith("r36") else "focal", series if jetpack_repo else None)
    return root


class Installer:
    """Runs install.sh with the stubs first on PATH; ``calls()`` reads what the stubs saw."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.stubs = tmp / "stubs"
        self.stubs.mkdir()
        stub = self.stubs / "stub"
        stub.write_text(STUB.format(python=sys.executable))
        stub.chmod(0o755)
        for name in STUBBED:
            (self.stubs / name).symlink_to("stub")
        self.log = tmp / "stub.log"
        self.cuda = tmp / "cuda"  # its bin/nvcc comes with cuda-toolkit-X-Y (apt-get's stand-in)
        self.root = make_jetson_root(tmp / "root")

    def env(self, **extra: str) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FALLWATCH_", "STUB_"))}
        env.update(PATH="%s:%s" % (self.stubs, env.get("PATH", "/usr/bin:/bin")), STUB_LOG=str(self.log),
                   FALLWATCH_CUDA_HOME=str(self.cuda), FALLWATCH_POLL_S="0.05")
        env.update(extra)
        return env

    def run(self, *args: str, expect: int = 0, **env: str) -> subprocess.CompletedProcess:
        self.log.write_text("")
        root = args[args.index("--root") + 1] if "--root" in args else env.get("FALLWATCH_ROOT", str(self.root))
        env.setdefault("APT_CONFIG", str(Path(root) / "etc/apt/apt.conf"))
        proc = subprocess.run(["bash", str(INSTALL)] + list(args), env=self.env(**env),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == expect, "exit %d, expected %d\nstderr:\n%s" % (proc.returncode, expect, proc.stderr)
        return proc

    def install(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return self.run("--root", str(self.root), *args, **env)

    def rows(self) -> List[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def calls(self, cmd: Optional[str] = None) -> List[List[str]]:
        return [[r["cmd"]] + r["args"] for r in self.rows() if cmd is None or r["cmd"] == cmd]


@pytest.fixture
def installer(tmp_path: Path) -> Installer:
    return Installer(tmp_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def snapshot(root: Path) -> Dict[str, tuple]:
    """Every path under root with its type, mode and content (files) or target (links)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(str(path)))
        elif path.is_dir():
            out[rel] = ("dir", mode(path))
        else:
            out[rel] = ("file", mode(path), path.read_bytes())
    return out


# ---------------------------------------------------------------- a full install, file by file


def test_install_into_root_file_by_file(installer: Installer) -> None:
    proc = installer.install()
    root = installer.root
    err = proc.stderr

    # code: the venv with JetPack's system packages, the package without the [cpu] extra
    assert mode(root / "opt/fallwatch") == 0o755
    assert (root / "opt/fallwatch/venv/bin/python").is_symlink()
    assert (root / "opt/fallwatch/constraints.txt").read_text().splitlines()[-1] == "numpy<2"
    assert (root / "opt/fallwatch/README.md").read_bytes() == (REPO / "README.md").read_bytes()
    for tool in ("fallwatch", "fallwatch-calibrate"):
        link = root / "usr/local/bin" / tool
        assert link.is_symlink() and os.readlink(str(link)) == "/opt/fallwatch/venv/bin/" + tool

    # configuration: adapted copy, 0640, never world-readable; env file 0600; the template beside it
    conf_dir, config_file = root / "etc/fallwatch", root / "etc/fallwatch/config.yaml"
    assert mode(conf_dir) == 0o750
    assert mode(config_file) == 0o640
    assert mode(root / "etc/fallwatch/env") == 0o600
    assert "FALLWATCH_MQTT_PASSWORD" in (root / "etc/fallwatch/env").read_text()
    assert (root / "etc/fallwatch/config.yaml.example").read_bytes() == (REPO / "config.yaml").read_bytes()
    config = load_config(config_file, env={})
    assert config.paths.models_dir == Path("/var/lib/fallwatch/models")
    assert config.paths.state_dir == Path("/var/lib/fallwatch")
    assert config.engine.backend == "tensorrt"
    assert config.engine.precision == "fp16"  # what install.sh builds (INT8 needs calibration images)
    assert config.cameras[0].uri == "csi://0"  # the fake sysfs has an imx219 on vi-output
    assert config.model.onnx is None
    text = config_file.read_text()
    assert text.startswith("# Adapted for this device by install.sh")
    assert "L4T R35.4.1 (JetPack 5.1.2)" in text.splitlines()[0]
    # every other line of the documented default is kept, comments included
    kept = [line for line in (REPO / "config.yaml").read_text().splitlines() if line not in (
        "  models_dir: models", "  state_dir: state", "  backend: onnxruntime", "  precision: int8",
        "    uri: /dev/video0")]
    assert [line for line in text.splitlines()[4:] if line in kept] == kept

    # state and cache
    for sub in ("var/lib/fallwatch", "var/lib/fallwatch/models", "var/lib/fallwatch/engines", "var/cache/fallwatch"):
        assert mode(root / sub) == 0o750, sub

    # the unit, as shipped
    unit = root / "etc/systemd/system/fallwatch.service"
    assert unit.read_bytes() == (REPO / "systemd/fallwatch.service").read_bytes()
    assert mode(unit) == 0o644

    # what was run
    calls = installer.calls()
    apt = installer.calls("apt-get")
    assert apt[0] == ["apt-get", "update"]
    installed = apt[1][apt[1].index("--no-install-recommends") + 1:]
    assert "python3-venv" not in installed  # in the fake dpkg status already
    # JetPack 5.1.2's packages by their JetPack names, each at the version of JetPack's repository
    assert {"python3-pip", "python3-dev", "build-essential", "v4l-utils", "cuda-toolkit-11-4=11.4.19-1", "nvidia-cuda-dev=5.1.2-b104",
            "python3-libnvinfer=8.5.2-1+cuda11.4", "libopencv-python=4.5.4-8-g3e4c170df4"} == set(installed)
    assert "nvcc: Cuda compilation tools, release 11.4" in err
    assert ["useradd", "--root", str(root), "--system", "--user-group", "--home-dir", "/var/lib/fallwatch",
            "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment", "fallwatch service",
            "fallwatch"] in calls
    assert ["usermod", "--root", str(root), "--append", "--groups", "video", "fallwatch"] in calls
    assert not any(c[0] == "usermod" and "jtop" in c for c in calls)  # no jtop group on this board
    assert "no group 'jtop'" in err
    assert ["python3", "-m", "venv", "--system-site-packages", str(root / "opt/fallwatch/venv")] in calls
    pips = [c[4:] for c in installer.calls("python") if c[1:4] == ["-m", "pip", "install"]]
    constraint = ["-c", str(root / "opt/fallwatch/constraints.txt")]
    assert constraint + ["numpy<2"] in pips
    assert constraint + ["pycuda"] in pips
    assert ["--upgrade"] + constraint + [str(REPO)] in pips
    for args in pips:  # never pip's OpenCV or TensorRT, never the [cpu] extra
        assert not any(a.startswith(("opencv", "tensorrt")) or "[cpu" in a for a in args), args
    assert "building pycuda against %s" % installer.cuda in err
    pycuda = [r for r in installer.rows() if r["cmd"] == "python" and "pycuda" in r["args"]]
    assert pycuda[0]["env"] == {"CUDA_ROOT": str(installer.cuda), "PATH0": str(installer.cuda / "bin")}
    assert "venv sees TensorRT 8.5.2.2, OpenCV 4.5.4, NumPy 1.24.4" in err
    assert installer.calls("systemctl") == [["systemctl", "--root=%s" % root, "enable", "fallwatch.service"]]
    assert installer.calls("runuser") == []  # model and engine are built on the device, not under --root
    assert "skipped under --root" in err

    # owners: this machine has no user fallwatch, so none were set, and the log says what they should be
    assert "owner of %s/var/lib/fallwatch should be fallwatch:fallwatch: not set" % root in err
    assert "owner of %s/etc/fallwatch/config.yaml should be root:fallwatch: not set" % root in err
    # the fake root's passwd/group now have the user, in group video
    assert (root / "etc/passwd").read_text().splitlines()[-1].startswith("fallwatch:x:998:998:")
    assert "video:x:44:fallwatch" in (root / "etc/group").read_text().splitlines()


def test_install_twice_is_idempotent_and_never_overwrites_config(installer: Installer) -> None:
    installer.install()
    first_calls = installer.calls()
    config_file = installer.root / "etc/fallwatch/config.yaml"
    env_file = installer.root / "etc/fallwatch/env"
    edited = config_file.read_text().replace("  enabled: false\n  # Broker host", "  enabled: true\n  # Broker host", 1)
    assert edited != config_file.read_text()
    config_file.write_text(edited)
    env_file.write_text("FALLWATCH_MQTT_PASSWORD=s3cret\n")
    before = snapshot(installer.root)

    proc = installer.install()
    assert snapshot(installer.root) == before  # same files, modes, contents (the user's edits kept)
    assert "config.yaml exists: kept as it is" in proc.stderr
    assert "etc/fallwatch/env exists: kept" in proc.stderr
    calls = installer.calls()
    # second time: no user, group, venv or pycuda work; the code is reinstalled (an update)
    for cmd in ("useradd", "usermod", "python3 -m venv"):
        assert not any(" ".join(c).startswith(cmd) for c in calls), cmd
    assert not any("pycuda" in c for c in calls)
    assert "pycuda is importable" in proc.stderr
    assert "user fallwatch exists" in proc.stderr and "fallwatch is in group video" in proc.stderr
    assert any(c[-1] == str(REPO) for c in calls if c[0] == "python")
    assert len(calls) < len(first_calls)


def test_uninstall_keeps_config_and_data_then_purge_removes_them(installer: Installer) -> None:
    installer.install()
    root = installer.root
    (root / "var/lib/fallwatch/outbox.sqlite3").write_bytes(b"events")
    installer.install("--uninstall")
    assert installer.calls("systemctl") == [["systemctl", "--root=%s" % root, "disable", "fallwatch.service"]]
    for gone in ("etc/systemd/system/fallwatch.service", "opt/fallwatch", "usr/local/bin/fallwatch",
                 "usr/local/bin/fallwatch-calibrate"):
        assert not os.path.lexists(str(root / gone)), gone
    for kept in ("etc/fallwatch/config.yaml", "etc/fallwatch/env", "var/lib/fallwatch/outbox.sqlite3",
                 "var/cache/fallwatch"):
        assert (root / kept).exists(), kept
    assert "fallwatch:" in (root / "etc/passwd").read_text()

    installer.install("--uninstall")  # again: nothing left to remove, still fine
    installer.install("--purge")
    for gone in ("etc/fallwatch", "var/lib/fallwatch", "var/cache/fallwatch"):
        assert not (root / gone).exists(), gone
    assert ["userdel", "--root", str(root), "fallwatch"] in installer.calls()
    assert "fallwatch:" not in (root / "etc/passwd").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="setting owners needs root (CI runs as root)")
def test_owners_are_set_when_the_user_exists(installer: Installer) -> None:
    # 'daemon' (user and group) exists on Debian/Ubuntu: stands in for a created fallwatch user.
    user = pwd.getpwnam("daemon")
    installer.install(FALLWATCH_USER="daemon")
    root = installer.root
    for sub in ("var/lib/fallwatch", "var/lib/fallwatch/engines", "var/cache/fallwatch"):
        st = (root / sub).stat()
        assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid), sub
    for sub in ("etc/fallwatch", "etc/fallwatch/config.yaml"):
        st = (root / sub).stat()
        assert (st.st_uid, st.st_gid) == (0, grp.getgrnam("daemon").gr_gid), sub
    assert (root / "etc/fallwatch/env").stat().st_uid == 0
    unit = (root / "etc/systemd/system/fallwatch.service").read_text()
    assert "\nUser=daemon\n" in unit and "\nUser=fallwatch\n" not in unit


# ---------------------------------------------------------------- --web-edits (the web page's zone editor)


def test_web_edits_make_the_config_the_services_until_undone(installer: Installer) -> None:
    root = installer.root
    conf_dir, config_file = root / "etc/fallwatch", root / "etc/fallwatch/config.yaml"
    dropin = root / "etc/systemd/system/fallwatch.service.d/web-edits.conf"
    proc = installer.install("--web-edits")
    assert mode(conf_dir) == 0o1770  # sticky: the service replaces only its own files there
    assert mode(config_file) == 0o640 and mode(root / "etc/fallwatch/env") == 0o600
    assert dropin.read_bytes() == (REPO / "systemd/web-edits.conf").read_bytes()
    assert "\nReadWritePaths=/etc/fallwatch\n" in dropin.read_text() and mode(dropin) == 0o644
    assert "owner of %s should be fallwatch:fallwatch: not set" % config_file in proc.stderr
    before = snapshot(root)
    proc = installer.install()  # an update without the flag keeps what was chosen
    assert snapshot(root) == before and "web edits on" in proc.stderr
    proc = installer.install("--no-web-edits")
    assert mode(conf_dir) == 0o750 and not dropin.exists()
    assert "owner of %s should be root:fallwatch: not set" % config_file in proc.stderr
    installer.install("--web-edits")
    installer.install("--uninstall")
    assert not dropin.exists() and config_file.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="setting owners needs root (CI runs as root)")
def test_web_edits_let_the_service_user_save_zones_but_not_replace_the_env_file() -> None:
    """With 'daemon' standing in for the service user: it saves zones through the real CLI (owner and
    mode kept), and cannot rename over or delete root's env file in the sticky directory."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="fallwatch-webedits-"))  # not pytest's root-only tmp_path
    try:
        tmp.chmod(0o755)
        installer = Installer(tmp)
        installer.install("--web-edits", FALLWATCH_USER="daemon")
        user = pwd.getpwnam("daemon")
        conf_dir, config_file = installer.root / "etc/fallwatch", installer.root / "etc/fallwatch/config.yaml"
        assert (conf_dir.stat().st_uid, conf_dir.stat().st_gid, mode(conf_dir)) == (0, user.pw_gid, 0o1770)
        assert (config_file.stat().st_uid, config_file.stat().st_gid) == (user.pw_uid, user.pw_gid)
        as_daemon = ["setpriv", "--reuid=daemon", "--regid=daemon", "--init-groups"]
        proc = subprocess.run(as_daemon + [sys.executable, "-m", "edge", "--config", str(config_file), "zones", "set",
                                           "room1", "--ignore", "0.1,0.5 0.4,0.5 0.4,0.9"],
                              cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "        polygon: [[0.1, 0.5], [0.4, 0.5], [0.4, 0.9]]\n" in config_file.read_text()
        st = config_file.stat()
        assert (st.st_uid, st.st_gid, mode(config_file)) == (user.pw_uid, user.pw_gid, 0o640)
        assert sorted(os.listdir(str(conf_dir))) == ["config.yaml", "config.yaml.example", "env"]
        proc = subprocess.run(as_daemon + [sys.executable, "-c", "import os, sys; d = sys.argv[1]; "
                                           "open(d + '/mine', 'w').close(); os.replace(d + '/mine', d + '/env')",
                                           str(conf_dir)], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "PermissionError" in proc.stderr
        assert "FALLWATCH_MQTT_PASSWORD" in (conf_dir / "env").read_text()
    finally:
        shutil.rmtree(str(tmp))


@pytest.mark.skipif(os.geteuid() != 0, reason="setting owners needs root (CI runs as root)")
def test_web_edits_never_chown_through_a_link_the_service_put_in_place_of_the_config() -> None:
    """With --web-edits the service user owns config.yaml and may write /etc/fallwatch: if it replaces the
    file with a symbolic link to another file, a later install.sh (as root) must not give that file away."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="fallwatch-webedits-"))
    try:
        tmp.chmod(0o755)
        installer = Installer(tmp)
        installer.install("--web-edits", FALLWATCH_USER="daemon")
        config_file = installer.root / "etc/fallwatch/config.yaml"
        victim = tmp / "victim"  # stands for /etc/shadow
        victim.write_text("secret\n")
        victim.chmod(0o640)
        os.chown(str(victim), 0, 0)
        config_file.unlink()
        config_file.symlink_to(victim)
        for flag in ("--no-web-edits", "--web-edits"):
            proc = installer.install(flag, FALLWATCH_USER="daemon")
            assert (victim.stat().st_uid, victim.stat().st_gid) == (0, 0), flag
            assert "config.yaml is a symbolic link: its owner is not changed" in proc.stderr
    finally:
        shutil.rmtree(str(tmp))


# ---------------------------------------------------------------- variants


def test_jetpack6_with_jtop_group_and_usb_camera(installer: Installer, tmp_path: Path) -> None:
    root = make_jetson_root(tmp_path / "jp6", release=L4T_36, groups=["video", "jtop"], csi=False,
                            packages={"nvidia-l4t-core": "36.3.0-20240506102626"})
    (root / "dev").mkdir()
    (root / "dev/video1").write_text("")  # a USB webcam's node (a plain file will do for the guess)
    proc = installer.run("--root", str(root), STUB_PYTHON_VERSION="3.10")
    assert "JetPack 6.0 (expects Python 3.10)" in proc.stderr
    assert "warning: python3" not in proc.stderr
    assert ["usermod", "--root", str(root), "--append", "--groups", "jtop", "fallwatch"] in installer.calls()
    assert load_config(root / "etc/fallwatch/config.yaml", env={}).cameras[0].uri == "/dev/video1"


# ---------------------------------------------------------------- JetPack's packages, not Ubuntu's


L4T_36_4 = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n"
JP6 = [  # (nv_tegra_release, its JetPack repository, CUDA)
    pytest.param(L4T_36, "r36.3", "12.2", id="jetpack6.0"),
    pytest.param(L4T_36_4, "r36.4", "12.6", id="jetpack6.1"),
]


def apt_policy(root: Path, package: str) -> str:
    """What the real apt-cache says about package on the staging root's apt world."""
    return subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, check=True,
                          env=dict(os.environ, LC_ALL="C", APT_CONFIG=str(root / "etc/apt/apt.conf"))).stdout


def installed(root: Path) -> Dict[str, str]:
    """Package -> version in the staging root's dpkg status (where apt-get's stand-in installs)."""
    text = (root / "var/lib/dpkg/status").read_text()
    return dict(re.findall(r"^Package: (\S+)\n(?:.+\n)*?Version: (\S+)$", text, re.M))


def errors(proc: subprocess.CompletedProcess) -> List[str]:
    return [line for line in proc.stderr.splitlines() if "ERROR" in line]


@pytest.mark.parametrize("release, series, cuda", JP6)
def test_jetpack6_installs_jetpack_packages_although_ubuntus_cuda_is_apts_candidate(
        installer: Installer, tmp_path: Path, release: str, series: str, cuda: str) -> None:
    root = make_jetson_root(tmp_path / "jp6", release=release, csi=False)
    # the conflict, as real apt sees it: Ubuntu's CUDA 11.5 nvidia-cuda-dev is the candidate
    policy = apt_policy(root, "nvidia-cuda-dev")
    assert "Candidate: 11.5.1-1ubuntu1" in policy and JETPACK[series]["nvidia-cuda-dev"] in policy

    proc = installer.run("--root", str(root), STUB_PYTHON_VERSION="3.10")
    jetpack = JETPACK[series]
    apt = installer.calls("apt-get")
    assert apt[0] == ["apt-get", "update"]
    asked = apt[1][apt[1].index("--no-install-recommends") + 1:]
    assert ["%s=%s" % item for item in sorted(jetpack.items())] == sorted(a for a in asked if "=" in a)
    assert installed(root)["nvidia-cuda-dev"] == jetpack["nvidia-cuda-dev"]
    assert installed(root)["cuda-toolkit-%s" % cuda.replace(".", "-")] == jetpack["cuda-toolkit-%s" % cuda.replace(".", "-")]
    assert ("nvidia-cuda-dev: apt would pick 11.5.1-1ubuntu1 from http://ports.ubuntu.com/ubuntu-ports "
            "jammy/multiverse; installing JetPack's %s instead" % jetpack["nvidia-cuda-dev"]) in proc.stderr
    assert "nvcc: Cuda compilation tools, release %s" % cuda in proc.stderr
    pycuda = [r for r in installer.rows() if r["cmd"] == "python" and "pycuda" in r["args"]]
    assert pycuda[0]["env"] == {"CUDA_ROOT": str(installer.cuda), "PATH0": str(installer.cuda / "bin")}

    proc = installer.run("--root", str(root), STUB_PYTHON_VERSION="3.10")  # again: nothing to install
    assert installer.calls("apt-get") == []
    assert "nvidia-cuda-dev %s: installed, from JetPack" % jetpack["nvidia-cuda-dev"] in proc.stderr


@pytest.mark.parametrize("release, series, cuda, why", [
    pytest.param(L4T_36, "r36.3", "12.2", "apt would install nvidia-cuda-dev 11.5.1-1ubuntu1 from "
                 "http://ports.ubuntu.com/ubuntu-ports jammy/multiverse", id="jetpack6"),
    pytest.param(L4T_35, "r35.4", "11.4", "apt knows no nvidia-cuda-dev", id="jetpack5.1"),
])
def test_without_jetpacks_repository_the_install_stops_with_the_line_to_add(
        installer: Installer, tmp_path: Path, release: str, series: str, cuda: str, why: str) -> None:
    root = make_jetson_root(tmp_path / "bare", release=release, csi=False, jetpack_repo=False)
    proc = installer.run("--root", str(root), expect=1, STUB_PYTHON_VERSION="3.10" if cuda != "11.4" else "3.8")
    line = "deb https://repo.download.nvidia.com/jetson/common %s main" % series
    assert errors(proc) == [
        "install.sh: ERROR: JetPack's repository for L4T R%s is not configured, so JetPack's packages are not "
        "available (apt knows no cuda-toolkit-%s; %s; apt knows no python3-libnvinfer; apt knows no libopencv-python). "
        "Run: echo '%s' | sudo tee -a /etc/apt/sources.list.d/nvidia-l4t-apt-source.list && sudo apt-get update "
        "&& sudo ./install.sh" % (series[1:], cuda.replace(".", "-"), why, line)]
    assert installer.calls("apt-get") == [["apt-get", "update"]]  # nothing installed, no venv, no pycuda
    assert "nvidia-cuda-dev" not in installed(root) and not (root / "opt").exists()

    # what the error says to run (its apt-get update: the repository's Packages list appears; trusted=yes
    # because staged lists have no signed Release file), then install.sh again
    with open(str(root / "etc/apt/sources.list.d/nvidia-l4t-apt-source.list"), "a") as fh:
        fh.write(line.replace("deb ", "deb [trusted=yes] ") + "\n")
    make_apt_world(tmp_path / "repo", "jammy" if cuda != "11.4" else "focal", series)
    for lists in (tmp_path / "repo/var/lib/apt/lists").glob("repo.download.nvidia.com_*"):
        shutil.copy(str(lists), str(root / "var/lib/apt/lists" / lists.name))
    installer.run("--root", str(root), STUB_PYTHON_VERSION="3.10" if cuda != "11.4" else "3.8")
    assert installed(root)["nvidia-cuda-dev"] == JETPACK[series]["nvidia-cuda-dev"]


def test_ubuntus_cuda_already_installed_is_refused(installer: Installer, tmp_path: Path) -> None:
    root = make_jetson_root(tmp_path / "jp6", release=L4T_36, csi=False,
                            packages={"python3-venv": "3.10.6-1~22.04.1", "nvidia-cuda-dev": "11.5.1-1ubuntu1"})
    proc = installer.run("--root", str(root), expect=1, STUB_PYTHON_VERSION="3.10")
    assert errors(proc) == [
        "install.sh: ERROR: nvidia-cuda-dev 11.5.1-1ubuntu1 is installed from http://ports.ubuntu.com/ubuntu-ports "
        "jammy/multiverse, not from JetPack's repository repo.download.nvidia.com/jetson: fallwatch needs JetPack's "
        "CUDA, TensorRT and OpenCV (Ubuntu's nvidia-cuda-dev is CUDA 11.5, without %s/bin/nvcc for pycuda). "
        "Run: sudo apt-get remove nvidia-cuda-dev && sudo ./install.sh" % installer.cuda]
    assert installer.calls("apt-get") == [["apt-get", "update"]]

    status = root / "var/lib/dpkg/status"  # sudo apt-get remove nvidia-cuda-dev, then again
    status.write_text(status.read_text().replace(dpkg_stanza("nvidia-cuda-dev", "11.5.1-1ubuntu1"), ""))
    installer.run("--root", str(root), STUB_PYTHON_VERSION="3.10")
    assert installed(root)["nvidia-cuda-dev"] == "6.0+b106"


@pytest.mark.parametrize("versioned_dir", [False, True], ids=["no-nvcc", "no-cuda-link"])
def test_no_nvcc_stops_before_building_pycuda(installer: Installer, versioned_dir: bool) -> None:
    versioned = installer.cuda.parent / "cuda-11.4"
    if versioned_dir:  # the toolkit is there, /usr/local/cuda does not point to it
        (versioned / "bin").mkdir(parents=True)
        (versioned / "bin/nvcc").write_text("#!/bin/sh\n")
        (versioned / "bin/nvcc").chmod(0o755)
    proc = installer.install(expect=1, STUB_NO_NVCC="1")
    if versioned_dir:
        fix = ("no %s/bin/nvcc, but JetPack's CUDA is in %s: pycuda is built with %s. Run: sudo ln -sfn %s %s "
               "&& sudo ./install.sh" % (installer.cuda, versioned, installer.cuda, versioned, installer.cuda))
    else:
        fix = ("no %s/bin/nvcc (JetPack's CUDA 11.4 compiler), which pycuda is built with: cuda-toolkit-11-4 is "
               "11.4.19-1. Run: sudo apt-get install --reinstall cuda-nvcc-11-4 && sudo ./install.sh (or set "
               "FALLWATCH_CUDA_HOME to another CUDA)" % installer.cuda)
    assert errors(proc) == ["install.sh: ERROR: " + fix]
    assert not any("pycuda" in c for c in installer.calls("python"))


def test_camera_flag_and_onnx_model(installer: Installer, tmp_path: Path) -> None:
    model = tmp_path / "my_pose.onnx"
    model.write_bytes(b"onnx bytes")
    installer.install("--camera", "rtsp://cam.local/stream", "--model", str(model))
    root = installer.root
    config = load_config(root / "etc/fallwatch/config.yaml", env={})
    assert config.cameras[0].uri == "rtsp://cam.local/stream"
    assert config.model.onnx == Path("/var/lib/fallwatch/models/my_pose.onnx")
    copied = root / "var/lib/fallwatch/models/my_pose.onnx"
    assert copied.read_bytes() == b"onnx bytes" and mode(copied) == 0o640


def test_graph_pb_model_goes_where_model_fetch_looks(installer: Installer, tmp_path: Path) -> None:
    from edge.inference.models import model_dir

    graph = tmp_path / "graph_opt.pb"
    graph.write_bytes(b"frozen graph")
    installer.install("--model", str(graph))
    where = model_dir(Path("/var/lib/fallwatch/models")) / "graph_opt.pb"
    assert (installer.root / str(where).lstrip("/")).read_bytes() == b"frozen graph"
    assert load_config(installer.root / "etc/fallwatch/config.yaml", env={}).model.onnx is None


def test_no_camera_found_keeps_dev_video0_and_says_so(installer: Installer, tmp_path: Path) -> None:
    root = make_jetson_root(tmp_path / "nocam", csi=False)
    proc = installer.run("--root", str(root))
    assert "no camera found" in proc.stderr
    assert load_config(root / "etc/fallwatch/config.yaml", env={}).cameras[0].uri == "/dev/video0"


def test_dry_run_into_root_changes_nothing(installer: Installer) -> None:
    before = snapshot(installer.root)
    proc = installer.install("--dry-run")
    assert snapshot(installer.root) == before
    assert not [c for c in installer.calls() if c[0] in MUTATING]
    for action in ("would run: apt-get update", "would run: useradd", "would run: python3 -m venv",
                   "would run: install -m 0640", "would run: systemctl --root=", "nothing was changed"):
        assert action in proc.stderr, action


def test_dry_run_on_the_system_prints_the_whole_plan(installer: Installer) -> None:
    """Without --root: the real paths, model fetch, engine build, daemon-reload, enable, restart."""
    proc = installer.run("--dry-run", FALLWATCH_ROOT=str(installer.root))
    assert not [c for c in installer.calls() if c[0] in MUTATING]
    err = proc.stderr
    for action in ("would run: install -d -m 0750 /var/lib/fallwatch",
                   "/fallwatch.service /etc/systemd/system/fallwatch.service",
                   "would run: runuser -u fallwatch -- env HOME=/var/lib/fallwatch PIP_NO_CACHE_DIR=1 "
                   "/opt/fallwatch/venv/bin/fallwatch --config /etc/fallwatch/config.yaml model fetch",
                   "would run: systemctl daemon-reload", "would run: systemctl enable fallwatch.service",
                   "would run: systemctl restart --no-block fallwatch.service"):
        assert action in err, action


def test_skip_engine_and_no_start(installer: Installer) -> None:
    proc = installer.run("--dry-run", "--skip-engine", "--no-start", FALLWATCH_ROOT=str(installer.root))
    assert "model fetch" not in proc.stderr.replace("sudo -u fallwatch /usr/local/bin/fallwatch model fetch", "")
    assert "skipped (--skip-engine)" in proc.stderr
    assert "not started (--no-start)" in proc.stderr
    assert "restart" not in " ".join(" ".join(c) for c in installer.calls())


# ---------------------------------------------------------------- refusing unsupported boards


@pytest.mark.parametrize("release, why", [
    ("R32.7.4", "is not supported"),     # JetPack 4.6: TensorRT 8.2, Python 3.6
    ("R35.1.0", "is not supported"),     # JetPack 5.0.2: TensorRT 8.4
    ("R34.1.1", "is not supported"),
])
def test_unsupported_release_is_refused(installer: Installer, release: str, why: str) -> None:
    proc = installer.install(expect=3, FALLWATCH_L4T_RELEASE=release)
    assert why in proc.stderr and "JetPack 5.1.x" in proc.stderr and "JetPack 6.x" in proc.stderr
    assert installer.calls("apt-get") == [] and not (installer.root / "opt").exists()


def test_not_a_jetson_is_refused(installer: Installer, tmp_path: Path) -> None:
    root = make_jetson_root(tmp_path / "laptop", release=None, model=None, csi=False)
    proc = installer.run("--root", str(root), expect=3)
    assert "not an NVIDIA Jetson" in proc.stderr and "pip install '.[cpu]'" in proc.stderr


def test_bad_usage(installer: Installer) -> None:
    assert "unknown option" in installer.run("--frobnicate", expect=2).stderr
    assert "no such file" in installer.run("--dry-run", "--model", "/nonexistent.onnx", expect=2).stderr
    assert "Usage: sudo ./install.sh" in installer.run("--help").stdout


# ---------------------------------------------------------------- detection agrees with edge.health.board


DETECT_CASES = [
    dict(release=L4T_35, model=ORIN),
    dict(release=L4T_36, model="NVIDIA Jetson AGX Orin Developer Kit"),
    dict(release="# R35 (release), REVISION: 2.1, GCID: 32413640, BOARD: t186ref\n", model="NVIDIA Jetson Xavier NX"),
    dict(release="# R35 (release), REVISION: 6.1, GCID: 1\n", model=None),
    dict(release="# R36 (release), REVISION: 4.3, GCID: 1\n", model=ORIN),
    dict(release="# R32 (release), REVISION: 7.4, GCID: 1\n", model="NVIDIA Jetson Nano Developer Kit"),
    dict(release=None, model=None, packages={"nvidia-l4t-core": "35.5.0-20240219203809"}),
    dict(release=None, model=ORIN, packages={"nvidia-l4t-core": "36.4.0-20240912212859"}),
    dict(release=None, model=None, packages={}),
    dict(release="garbage\n", model=ORIN, packages={"nvidia-l4t-core": "35.3.1-20230319081403"}),
    dict(release=L4T_35, model=ORIN, env={"FALLWATCH_L4T_RELEASE": "R36.2.0", "FALLWATCH_BOARD_MODEL": "Test Board"}),
    dict(release=L4T_35, model=ORIN, env={"FALLWATCH_L4T_RELEASE": "R35.1.0"}),
]


@pytest.mark.parametrize("case", DETECT_CASES, ids=lambda c: "%s-%s" % (
    (c.get("release") or "none").split(",")[:2][-1].strip()[:14], sorted(c.get("env", {}).values())))
def test_bash_and_python_detection_agree(installer: Installer, tmp_path: Path, case: dict) -> None:
    root = make_jetson_root(tmp_path / "r", release=case["release"], model=case["model"],
                            packages=case.get("packages", {}), csi=False)
    env = dict(case.get("env", {}), FALLWATCH_ROOT=str(root))
    proc = subprocess.run(["bash", str(INSTALL), "--detect"], env=installer.env(**env),
                          capture_output=True, text=True, timeout=30)
    shown = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    board = detect_board(env=env)
    assert shown["board"] == (board.model or "unknown")
    assert shown["l4t"] == (board.release or "none")
    assert shown["jetpack"] == (board.jetpack or "none")
    assert shown["supported"] == ("yes" if board.supported else "no")
    assert proc.returncode == (0 if board.supported else 3)


# ---------------------------------------------------------------- waiting for the service


def _wait(installer: Installer, states: str, timeout_s: str = "5") -> subprocess.CompletedProcess:
    """Source install.sh and run start_service against a systemctl that plays ``states``."""
    state_file = installer.tmp / "states"
    state_file.write_text(states)
    installer.log.write_text("")
    script = 'source "%s"; TMP_DIR=$(mktemp -d); start_service' % INSTALL
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env=installer.env(STUB_STATES=str(state_file), FALLWATCH_READY_TIMEOUT_S=timeout_s))


def test_start_waits_for_the_new_run_to_be_ready(installer: Installer) -> None:
    # the old run is active: that must not count; the restarted run activates, then is ready
    proc = _wait(installer, "old active/running\nold deactivating/stop-sigterm\nnew activating/start\n"
                            "new activating/start\nnew active/running")
    assert proc.returncode == 0, proc.stderr
    assert "fallwatch.service is ready" in proc.stderr
    assert "new activating/start" not in proc.stderr  # (states are logged, not invocation ids)
    assert "activating/start" in proc.stderr
    shown = [c for c in installer.calls("systemctl") if c[1] != "show"]
    assert shown == [["systemctl", "reset-failed", "fallwatch.service"],
                     ["systemctl", "restart", "--no-block", "fallwatch.service"]]


def test_start_failure_shows_the_journal_and_points_to_doctor(installer: Installer) -> None:
    proc = _wait(installer, "old inactive/dead\nnew activating/start\nnew activating/auto-restart\nnew failed/failed")
    assert proc.returncode == 1
    assert "did not become ready (state failed/failed)" in proc.stderr
    assert "stub journal: fallwatch[1234]: camera room1: cannot open /dev/video0" in proc.stderr
    assert "fallwatch doctor" in proc.stderr
    assert ["journalctl", "-u", "fallwatch.service", "-n", "30", "--no-pager"] in installer.calls()


def test_start_times_out(installer: Installer) -> None:
    proc = _wait(installer, "old inactive/dead\nnew activating/start", timeout_s="3")
    assert proc.returncode == 1 and "did not become ready (state activating/start)" in proc.stderr


# ---------------------------------------------------------------- model and engine (without --root)


def _model_step(installer: Installer, tmp_path: Path) -> subprocess.CompletedProcess:
    """Source install.sh and run its model/engine step for real: `fallwatch model fetch` and
    `fallwatch doctor --only engine` run (as the stubbed runuser's command), fallwatch-calibrate is a stub."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "fallwatch").write_text("#!/bin/sh\nexec %s -m edge \"$@\"\n" % sys.executable)
    (venv_bin / "fallwatch").chmod(0o755)
    (venv_bin / "fallwatch-calibrate").symlink_to(installer.stubs / "stub")
    config = tmp_path / "config.yaml"
    config.write_text("paths:\n  models_dir: %s\n  state_dir: %s\nengine:\n  backend: tensorrt\n"
                      "  precision: fp16\n" % (REPO / "models", tmp_path / "state"))
    installer.log.write_text("")
    script = 'source "%s"; VENV=%s; CONFIG=%s; install_model' % (INSTALL, venv_bin.parent, config)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=str(REPO),
                          env=installer.env(STUB_RUNUSER_EXEC="1"))


def test_engine_is_built_when_missing(installer: Installer, tmp_path: Path, model_onnx: Path) -> None:
    proc = _model_step(installer, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "already present, nothing to do" in proc.stderr  # model fetch ran, found the model
    assert "fail  engine" in proc.stderr and "does not exist" in proc.stderr
    config = str(tmp_path / "config.yaml")
    assert installer.calls("fallwatch-calibrate") == [["fallwatch-calibrate", "--config", config, "--precision", "fp16"]]
    as_user = ["runuser", "-u", "fallwatch", "--", "env", "HOME=/var/lib/fallwatch", "PIP_NO_CACHE_DIR=1"]
    venv_bin = str(tmp_path / "venv" / "bin")
    assert installer.calls("runuser") == [
        as_user + [venv_bin + "/fallwatch", "--config", config, "model", "fetch"],
        ["runuser", "-u", "fallwatch", "--", "env", "HOME=/var/lib/fallwatch", venv_bin + "/fallwatch",
         "--config", config, "doctor", "--only", "engine"],
        as_user + [venv_bin + "/fallwatch-calibrate", "--config", config, "--precision", "fp16"]]


def test_engine_that_cannot_be_checked_here_is_not_rebuilt(installer: Installer, tmp_path: Path,
                                                            model_onnx: Path) -> None:
    from test_doctor import ORIN_FACTS, fake_engine

    fake_engine(tmp_path / "state", model_onnx, ORIN_FACTS)
    proc = _model_step(installer, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warn  engine" in proc.stderr and "cannot compare it with this device" in proc.stderr
    assert "not building it" in proc.stderr
    assert installer.calls("fallwatch-calibrate") == []


# ---------------------------------------------------------------- shellcheck


def test_shell_scripts_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck; .ci/run installs it)")
    scripts = [INSTALL] + sorted((REPO / "scripts").glob("*.sh")) + [REPO / ".ci/run"]
    proc = subprocess.run(["shellcheck", "--shell=bash", "--severity=style"] + [str(s) for s in scripts],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
