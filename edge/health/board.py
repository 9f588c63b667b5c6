"""Which board is this, and which L4T / JetPack release does it run?

Read from files only, under a root prefix so tests (and image builds) can point elsewhere:

- the L4T release: ``$FALLWATCH_L4T_RELEASE`` (e.g. ``R35.4.1`` or ``36.3.0``), else
  ``<root>/etc/nv_tegra_release`` (``# R35 (release), REVISION: 4.1, ...``), else the version of
  the installed ``nvidia-l4t-core`` package in ``<root>/var/lib/dpkg/status``;
- the board: ``$FALLWATCH_BOARD_MODEL``, else ``<root>/proc/device-tree/model``.

The root is the ``root`` argument, else ``$FALLWATCH_ROOT``, else ``/``. install.sh does the
same detection in bash with the same variables and the same table (tests/test_install.py
checks that both agree).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple

# L4T (major, minor) -> JetPack release; (35, 6, 1) style keys refine a (major, minor) entry.
JETPACK_BY_L4T = {
    (35, 2): "5.1", (35, 3): "5.1.1", (35, 4): "5.1.2", (35, 5): "5.1.3", (35, 6): "5.1.4",
    (35, 6, 1): "5.1.5",
    (36, 2): "6.0 DP", (36, 3): "6.0", (36, 4): "6.1", (36, 4, 3): "6.2", (36, 4, 4): "6.2.1",
}
SUPPORTED_TEXT = "L4T R35.2 or later R35 (JetPack 5.1.x) or L4T R36 (JetPack 6.x)"

L4T = Tuple[int, int, int]


@dataclass(frozen=True)
class Board:
    """What :func:`detect_board` found. ``l4t`` is (major, minor, patch), None when not a Jetson."""

    model: Optional[str]
    l4t: Optional[L4T]
    l4t_source: Optional[str]

    @property
    def is_jetson(self) -> bool:
        return self.l4t is not None

    @property
    def release(self) -> Optional[str]:
        """``R35.4.1``, or None."""
        return None if self.l4t is None else "R%d.%d.%d" % self.l4t

    @property
    def jetpack(self) -> Optional[str]:
        """The JetPack release (``5.1.2``), ``5.1.x`` / ``6.x`` for a release not in the table, or None."""
        if self.l4t is None:
            return None
        exact = JETPACK_BY_L4T.get(self.l4t) or JETPACK_BY_L4T.get(self.l4t[:2])
        if exact:
            return exact
        return {35: "5.x", 36: "6.x"}.get(self.l4t[0], "unknown")

    @property
    def supported(self) -> bool:
        """True for L4T R35.2+ (JetPack 5.1.x, TensorRT 8.5) and R36 (JetPack 6.x)."""
        return self.l4t is not None and ((self.l4t[0] == 35 and self.l4t[1] >= 2) or self.l4t[0] == 36)

    def describe(self) -> str:
        """One line: board, release, JetPack."""
        name = self.model or "unknown board"
        if self.l4t is None:
            return "%s (no L4T release found: not a Jetson)" % name
        return "%s, L4T %s (JetPack %s)" % (name, self.release, self.jetpack)


def parse_l4t(text: str) -> Optional[L4T]:
    """``R35.4.1``, ``35.4.1-20230801124926`` or an nv_tegra_release line -> (35, 4, 1); None if neither."""
    text = text.strip()
    m = re.match(r"#?\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if m is None:
        m = re.match(r"R?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~].*)?$", text)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def dpkg_version(root: Path, package: str) -> Optional[str]:
    """The version of ``package`` when installed, from ``<root>/var/lib/dpkg/status``."""
    status = _read(root / "var/lib/dpkg/status")
    if status is None:
        return None
    for stanza in re.split(r"\n\s*\n", status):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.M))
        if fields.get("Package") == package and fields.get("Status", "").endswith(" installed"):
            return fields.get("Version")
    return None


def detect_board(root: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> Board:
    """Detect the board model and L4T release (see the module docstring for the sources)."""
    env = os.environ if env is None else env
    base = Path(root or env.get("FALLWATCH_ROOT") or "/")
    l4t, source = None, None
    if env.get("FALLWATCH_L4T_RELEASE"):
        l4t, source = parse_l4t(env["FALLWATCH_L4T_RELEASE"]), "$FALLWATCH_L4T_RELEASE"
    if l4t is None:
        text = _read(base / "etc/nv_tegra_release")
        if text:
            l4t, source = parse_l4t(text.splitlines()[0]), str(base / "etc/nv_tegra_release")
    if l4t is None:
        version = dpkg_version(base, "nvidia-l4t-core")
        if version:
            l4t, source = parse_l4t(version), "package nvidia-l4t-core %s" % version
    model = env.get("FALLWATCH_BOARD_MODEL") or None
    if model is None:
        text = _read(base / "proc/device-tree/model")
        model = text.strip("\0\n ") or None if text else None
    return Board(model=model, l4t=l4t, l4t_source=source if l4t else None)
