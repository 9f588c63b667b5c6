"""Output paths checked before a command does its work: what OpenCV can write, and where.

Every command that writes a picture (``detect --out``, ``model check --out``), an annotated
video (``run`` and ``replay --preview``) or a report (``evaluate --json``) calls one of these
first, so a wrong extension or folder is one line and a non-zero status at once, not an OpenCV
traceback (or a logged assertion and no file) after minutes of work. Imports OpenCV lazily.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, List, Union

from edge.errors import FallwatchError

# Video containers the preview writes, with the codec (fourcc) used in each.
VIDEO_CODECS: Dict[str, str] = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
IMAGE_HINT = ".png or .jpg"


def _one_of(suffixes: List[str]) -> str:
    return ", ".join(suffixes[:-1]) + " or " + suffixes[-1]


class OutputPathError(FallwatchError, ValueError):
    """An output path OpenCV cannot write: the message names the path and what to use instead."""


def check_output_file(path: Union[str, Path], what: str = "output file") -> Path:
    """``path`` if a file can be made there: not a folder, in an existing folder this process can
    write; else raises :class:`OutputPathError`."""
    path = Path(path)
    _check_folder(path, what)
    if not path.parent.is_dir():
        raise OutputPathError("%s %s: no folder %s" % (what, path, path.parent), "create it first")
    return path


def _check_folder(path: Path, what: str) -> None:
    folder = path.parent
    if path.is_dir():
        raise OutputPathError("%s %s is a folder" % (what, path), "give a file name")
    if folder.exists() and not folder.is_dir():
        raise OutputPathError("%s %s: %s is not a folder" % (what, path, folder), "give another path")
    if folder.is_dir() and not os.access(str(folder), os.W_OK | os.X_OK):
        raise OutputPathError("%s %s: cannot write in %s (permission denied)" % (what, path, folder),
                              "give a path in a folder you can write")


def check_image_output(path: Union[str, Path], what: str = "output image") -> Path:
    """``path`` if OpenCV has a writer for its extension and its folder can be written (a missing
    folder is not created here: it is refused); else raises :class:`OutputPathError`."""
    import cv2

    path = Path(path)
    ok = bool(cv2.haveImageWriter(str(path)))  # by the extension; OpenCV 4.x (JetPack 5 and 6)
    if not ok:
        raise OutputPathError("%s %s: OpenCV cannot write %s files" % (what, path, path.suffix or "extension-less"),
                              "name it %s" % IMAGE_HINT)
    return check_output_file(path, what)


def video_fourcc(path: Union[str, Path]) -> str:
    """The codec the preview writes into ``path``'s container (by its extension)."""
    return VIDEO_CODECS[Path(path).suffix.lower()]


def check_video_output(path: Union[str, Path], what: str = "preview video") -> Path:
    """``path`` if it names a container of :data:`VIDEO_CODECS` and OpenCV opens a writer for it
    there (tried on a scratch file beside it, then removed; a missing folder is created, as the
    outputs do); else raises :class:`OutputPathError`."""
    import cv2

    path = Path(path)
    if path.suffix.lower() not in VIDEO_CODECS:
        raise OutputPathError("%s %s: cannot write %s files" % (what, path, path.suffix or "extension-less"),
                              "name it %s" % _one_of(list(VIDEO_CODECS)))
    _check_folder(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(suffix=path.suffix, prefix=".probe-", dir=str(path.parent))
    except OSError as exc:
        raise OutputPathError("%s %s: cannot write in %s (%s)" % (what, path, path.parent, exc.strerror),
                              "give a path in a folder you can write") from None
    os.close(fd)
    try:
        writer = cv2.VideoWriter(scratch, cv2.VideoWriter_fourcc(*video_fourcc(path)), 10.0, (64, 48))
        opened = writer.isOpened()
        writer.release()
    finally:
        os.unlink(scratch)
    if not opened:
        others = [s for s, codec in VIDEO_CODECS.items() if codec != video_fourcc(path)]
        raise OutputPathError("%s %s: this OpenCV cannot write %s video (codec %s)"
                              % (what, path, path.suffix, video_fourcc(path)),
                              "try %s" % _one_of(others) if others else "")
    return path
