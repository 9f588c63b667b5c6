"""Editing the configuration file in place: a camera's ``zones:`` (the zone editor of the web page,
and ``fallwatch zones set``).

Contracts:

* :func:`camera_zones` reads the file through :func:`edge.config.load_config` (so an invalid file is
  the same :class:`~edge.settings.ConfigError` as ``fallwatch config check``) and returns every
  camera's zones as plain lists: ``{"room1": [{"kind": "ignore", "polygon": [[x, y], ...]}]}``.
* :func:`save_zones` replaces one camera's ``zones:`` value and nothing else: every other byte of the
  file (comments, blank lines, quoting, key order, other cameras' zones) is kept as it was. The new
  document is validated by :func:`edge.config.load_config` itself (the validator of ``fallwatch config
  check``, no second one) before the file is touched; an invalid result raises ``ConfigError`` with
  the validator's message, naming the config file, and the file is left byte for byte as it was.
  Coordinates are rounded to 4 decimals (1/10000 of the frame: finer than any camera's pixel).
* The write is atomic: a temporary file beside the config (same directory, so relative paths in it
  resolve as in the config, and ``os.replace`` is a rename on one file system), given the config's
  mode and owner, fsynced, validated, then renamed over the config and the directory fsynced. A
  crash at any point leaves either the old file or the new one, never a mix; the temporary file is
  removed on every error. When the owner cannot be kept (a non-root user saving a file owned by
  someone else) nothing is written: ``ConfigError`` says so (README, "Zones": ``install.sh
  --web-edits`` gives the config to the service user for the web page).
* Errors are ``ConfigError`` (one line naming the file, and ``fix`` when there is something to do):
  no config file (the built-in defaults), no ``cameras:`` in the file (cameras from the defaults),
  an unknown camera (naming it and the cameras there are), a file changed by someone else during
  the save, a file or directory that cannot be written.

How the edit is made, and why not ruamel.yaml: a text splice at the positions PyYAML's composer
gives for the camera's ``zones`` key and value (``yaml.compose``: node marks, character offsets
into the text). Only the characters of the old value are replaced (from the end of the key to the
end of the old value's last item; comments after it belong to the next key and stay), or a
``zones:`` line is inserted after the camera's last key when it had none. ruamel.yaml's round trip
keeps comments too, but re-emits the whole document: it re-indents sequences it was not told the
style of, wraps long flow lists at its line width, and drops the comment lines that follow a
replaced block sequence (they hang on its last item), so "the rest of the file intact" would hold
only approximately; the splice keeps it exactly, with PyYAML, which fallwatch already needs.
Comments inside the old zones value itself are replaced with it (they described the old polygons).

Concurrent saves: the file is read, edited and checked unchanged just before the rename, so a save
that raced with another is refused ("changed while saving; try again") rather than losing it.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from edge.config import load_config
from edge.settings import ConfigError

DECIMALS = 4
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def camera_zones(config_path: Optional[Path]) -> Dict[str, List[dict]]:
    """Camera name -> its zones, ``[{"kind": "ignore" | "floor", "polygon": [[x, y], ...]}]``, in the
    order of the file. Raises ConfigError when there is no file or it is not valid."""
    path = _need_file(config_path)
    config = load_config(path)
    _cameras_node(path, _read_text(path)[0])  # cameras from the defaults: not editable, say so
    return {cam.name: [{"kind": z.kind, "polygon": [[float(x), float(y)] for x, y in z.polygon]}
                       for z in cam.zones] for cam in config.cameras}


def save_zones(config_path: Optional[Path], camera: str, zones: List[dict]) -> None:
    """Replace the ``zones:`` of ``camera`` in the file at ``config_path`` with ``zones`` (each
    ``{"kind": ..., "polygon": [[x, y], ...]}``), atomically, keeping the rest of the file byte for
    byte and its mode and owner; validated first with the validator of ``fallwatch config check``.
    Raises ConfigError (nothing written) when the result is not valid or the file cannot be written."""
    path = _need_file(config_path)
    # Read before loading: the file is checked unchanged from these bytes just before the rename.
    text, raw = _read_text(path) if path.is_file() else ("", b"")
    config = load_config(path)  # the current file must be valid to find the camera in it (or its error)
    cameras = _cameras_node(path, text)
    names = [c.name for c in config.cameras]
    if camera not in names:
        raise ConfigError("%s: no camera named %r; the cameras there are: %s" % (path, camera, ", ".join(names)),
                          key="cameras", fix="give one of %s" % ", ".join(names))
    index = names.index(camera)
    new_text = splice_zones(text, cameras, index, zones, path)
    write_atomic(Path(os.path.realpath(str(path))), path, new_text, raw)


# ---------------------------------------------------------------- reading and locating


def _need_file(config_path: Optional[Path]) -> Path:
    if config_path is None:
        fix = "pass --config FILE (or set FALLWATCH_CONFIG) naming a config file with a cameras: list"
        raise ConfigError("no configuration file: the cameras come from the built-in defaults, and zones are "
                          "saved in a file; " + fix, fix=fix)
    return Path(config_path)


def _read_text(path: Path) -> Tuple[str, bytes]:
    try:
        raw = path.read_bytes()
        return raw.decode("utf-8"), raw
    except OSError as exc:
        raise ConfigError("%s: cannot read it (%s)" % (path, exc.strerror)) from None
    except UnicodeDecodeError:
        raise ConfigError("%s: is not UTF-8 text" % path) from None


def _cameras_node(path: Path, text: str) -> yaml.SequenceNode:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    node = _value_of(root, "cameras") if isinstance(root, yaml.MappingNode) else None
    if not isinstance(node, yaml.SequenceNode):
        fix = "add a cameras: list to it (config.yaml documents every key)"
        raise ConfigError("%s: has no cameras: list, so its cameras come from the built-in defaults and their "
                          "zones cannot be saved there; %s" % (path, fix), key="cameras", fix=fix)
    return node


def _pair_of(mapping: yaml.MappingNode, key: str) -> Optional[Tuple[yaml.Node, yaml.Node]]:
    for k, v in mapping.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k, v
    return None


def _value_of(mapping: yaml.MappingNode, key: str) -> Optional[yaml.Node]:
    pair = _pair_of(mapping, key)
    return pair[1] if pair else None


def _content_end(node: yaml.Node) -> int:
    """Offset just after the last character of ``node``'s own text. A block collection's end mark
    is where the next token starts (after any comments and blank lines that follow it), so take the
    end of its last item instead."""
    while isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    return node.end_mark.index


# ---------------------------------------------------------------- the splice


def _number(value: Any) -> Any:
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return round(value, DECIMALS) + 0.0  # + 0.0: no -0.0
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _rounded(value: Any) -> Any:
    """Every number in a polygon as a float rounded to DECIMALS places; anything else as given (the
    validator says what is wrong with it)."""
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return _number(value)


def _flow(value: Any, path: Path) -> str:
    """``value`` as one line of YAML flow text (JSON is a subset of YAML flow style); a word that
    YAML reads back as the same string (ignore, floor) without quotes."""
    if isinstance(value, str) and _PLAIN_KEY.fullmatch(value) and yaml.safe_load(value) == value:
        return value
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError("%s: zones: cannot write %r (%s); expected kind and polygon [[x, y], ...] of numbers"
                          % (path, value, exc), key="zones") from None


def _key(name: Any, path: Path) -> str:
    return name if isinstance(name, str) and _PLAIN_KEY.fullmatch(name) else _flow(str(name), path)


def _zone_items(zones: Any, path: Path) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """Each zone as ("mapping", [(key, flow value)]) or ("other", flow text): mappings are written
    in block style, anything else as given, for the validator to refuse."""
    if not isinstance(zones, (list, tuple)):
        return [("value", _flow(zones, path))]
    items = []
    for zone in zones:
        if isinstance(zone, dict):
            order = sorted(zone, key=lambda k: ({"kind": 0, "polygon": 1}.get(k, 2), str(k)))
            items.append(("mapping", [(_key(k, path), _flow(_rounded(zone[k]) if k == "polygon" else zone[k], path))
                                      for k in order]))
        else:
            items.append(("other", _flow(zone, path)))
    return items


def render_zones(zones: Any, indent: int, flow: bool, path: Path, newline: str = "\n") -> str:
    """The text after ``zones`` (from the colon on): ``: []``, a block list indented ``indent``
    columns (the ``-`` two columns right of the key, like config.yaml's example), or one flow line."""
    items = _zone_items(zones, path)
    if items and items[0][0] == "value":
        return ": " + items[0][1]
    if flow or not items:
        parts = ["{%s}" % ", ".join("%s: %s" % kv for kv in body) if kind == "mapping" else body
                 for kind, body in items]
        return ": [" + ", ".join(parts) + "]"
    lines = [":"]
    for kind, body in items:
        if kind == "mapping" and body:
            lines.append(" " * indent + "- %s: %s" % body[0])
            lines += [" " * (indent + 2) + "%s: %s" % kv for kv in body[1:]]
        elif kind == "mapping":
            lines.append(" " * indent + "- {}")
        else:
            lines.append(" " * indent + "- " + body)
    return newline.join(lines)


def splice_zones(text: str, cameras: yaml.SequenceNode, index: int, zones: Any, path: Path) -> str:
    """``text`` with the zones of ``cameras.value[index]`` replaced by ``zones``: only the old value's
    characters change (or one line is added when the camera had no ``zones`` key)."""
    newline = "\r\n" if "\r\n" in text else "\n"
    cam = cameras.value[index]
    pair = _pair_of(cam, "zones") if isinstance(cam, yaml.MappingNode) else None
    inside = cameras.start_mark.index <= cam.start_mark.index and (
        pair is None or pair[0].end_mark.index <= pair[1].start_mark.index)  # an alias points back to its anchor
    if not isinstance(cam, yaml.MappingNode) or sum(c is cam for c in cameras.value) > 1 or not inside:
        raise ConfigError("%s: cameras[%d] or its zones are written through a YAML alias (*name) or not as a "
                          "mapping, so saving them would change the text they share; edit them in the file by hand"
                          % (path, index), key="cameras[%d].zones" % index)
    if cam.flow_style:  # {name: a, uri: b, zones: [...]}: stay on one line
        if pair:
            return text[:pair[0].end_mark.index] + render_zones(zones, 0, True, path) + text[_content_end(pair[1]):]
        end = cam.end_mark.index - 1  # the closing brace
        return text[:end].rstrip() + ", zones" + render_zones(zones, 0, True, path) + text[end:]
    if pair:
        key, value = pair
        start, end = key.end_mark.index, _content_end(value)
        between = text[start:value.start_mark.index]
        comment = between.split("\n", 1)[0].strip()[1:].strip()  # "zones:  # beds" keeps "# beds"
        head = render_zones(zones, key.start_mark.column + 2, False, path, newline)
        if comment.startswith("#"):
            first, _, rest = head.partition(newline)
            head = first + "  " + comment + (newline + rest if rest else "")
        return text[:start] + head + text[end:]
    first_key = cam.value[0][0]
    end = text.find("\n", _content_end(cam.value[-1][1]))  # after a comment ending that line
    end = len(text) if end < 0 else end - (text[end - 1] == "\r")
    column = first_key.start_mark.column
    line = newline + " " * column + "zones" + render_zones(zones, column + 2, False, path, newline)
    return text[:end] + line + text[end:]


# ---------------------------------------------------------------- the atomic write


def _config_error(exc: ConfigError, tmp: str, path: Path) -> ConfigError:
    """The validator's error about the temporary file, told about the config file instead."""
    def fix_name(s: str) -> str:
        return s.replace(tmp, str(path))
    return ConfigError(fix_name(str(exc)), exc.key, fix_name(exc.reason), fix_name(exc.fix))


def _write_error(path: Path, exc: OSError, what: str) -> ConfigError:
    why = exc.strerror or str(exc)
    fix = ""
    if getattr(exc, "errno", None) in (1, 13, 30):  # EPERM, EACCES, EROFS
        fix = ("run it as the file's owner or with sudo; for the web page, the service may write the config only "
               "after `sudo ./install.sh --web-edits` (README, Zones)")
    return ConfigError("%s: cannot %s (%s)%s" % (path, what, why, "; " + fix if fix else ""), fix=fix)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, shown: Path, text: str, original: bytes,
                 validate: Optional[Any] = None) -> None:
    """Write ``text`` over ``target`` (the config, ``shown`` in messages) through a temporary file that
    ``validate(tmp_path)`` accepts (default: :func:`edge.config.load_config`, the validator of ``fallwatch
    config check``; a ConfigError it raises names ``shown``); refuse when the file no longer holds
    ``original``. Mode and owner kept (refused when the owner cannot be), fsynced, renamed, directory
    fsynced; nothing is left behind on any error. Also ``fallwatch floor estimate --write``'s writer."""
    st = os.stat(str(target))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + target.name + ".", suffix=".tmp", dir=str(target.parent))
    except OSError as exc:
        raise _write_error(target.parent, exc, "create a temporary file beside %s" % target.name) from None
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fchmod(fh.fileno(), st.st_mode & 0o7777)
                if (os.fstat(fh.fileno()).st_uid, os.fstat(fh.fileno()).st_gid) != (st.st_uid, st.st_gid):
                    try:
                        os.fchown(fh.fileno(), st.st_uid, st.st_gid)
                    except PermissionError:
                        raise ConfigError(
                            "%s: belongs to uid %d gid %d, which this user (uid %d) cannot keep when replacing it; "
                            "nothing written: run it as the file's owner or with sudo (README, Zones: "
                            "`install.sh --web-edits` for the web page)" % (shown, st.st_uid, st.st_gid, os.getuid()),
                            fix="run it as the file's owner or with sudo") from None
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _write_error(shown, exc, "write the new file") from None
        try:
            (validate or load_config)(tmp)  # the validator, on exactly what will be the config
        except ConfigError as exc:
            raise _config_error(exc, tmp, shown) from None
        if target.read_bytes() != original:
            raise ConfigError("%s: changed while saving (another editor?); nothing written: try again" % shown)
        try:
            os.replace(tmp, str(target))
        except OSError as exc:
            raise _write_error(shown, exc, "replace it") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        _fsync_dir(target.parent)
    except OSError:
        pass  # the rename is done; only its durability across a power cut is not forced
