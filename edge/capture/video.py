"""The one video-file reader: the daemon's file cameras, ``replay``/``evaluate`` and calibration.

A :class:`VideoReader` gives a file's frames in order, BGR uint8 ``(H, W, 3)``, each turned by the
camera's ``flip`` (config: none, horizontal, vertical, rotate_180, rotate_90_cw, rotate_90_ccw), and
the file's frame rate (0 when the container does not say). Frame ``i`` is at ``t = i / fps``.
Errors are :class:`VideoError` with the file and what is wrong in fields, so each caller words
its own message around them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import cv2
import numpy as np

_CPU_FLIP = {
    "horizontal": lambda img: cv2.flip(img, 1),
    "vertical": lambda img: cv2.flip(img, 0),
    "rotate_180": lambda img: cv2.rotate(img, cv2.ROTATE_180),
    "rotate_90_cw": lambda img: cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
    "rotate_90_ccw": lambda img: cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def correct_orientation(image: np.ndarray, flip: str) -> np.ndarray:
    """Apply a camera's ``flip`` to a BGR image on the CPU."""
    fn = _CPU_FLIP.get(flip)
    return fn(image) if fn is not None else image


def usable_fps(value: float) -> float:
    """A frame rate OpenCV reported, or 0 when it is missing or absurd."""
    return float(value) if value and np.isfinite(value) and 0 < value < 1000 else 0.0


class VideoError(Exception):
    """A video file cannot be read: ``path`` and ``problem``, a phrase that completes
    "video file <path> ..." (``str(error)`` is that sentence)."""

    def __init__(self, path: Union[str, Path], problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__("video file %s %s" % (path, problem))


class VideoReader:
    """An open video file. ``read()`` gives the next frame or None at the end (or on a frame the
    decoder cannot give); ``grab()`` skips one. Use it as a context manager, or ``release()``."""

    kind = "file"

    def __init__(self, path: Union[str, Path], flip: str = "none") -> None:
        path = str(path)
        if not os.path.exists(path) or os.path.isdir(path):
            raise VideoError(path, "does not exist")
        if not os.access(path, os.R_OK):
            raise VideoError(path, "is not readable (check its permissions)")
        self.path = path
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            self._cap.release()
            raise VideoError(path, "is one OpenCV cannot open (empty, truncated, or a format its FFmpeg does "
                                   "not decode?)")
        self._flip = _CPU_FLIP.get(flip)
        self.fps = usable_fps(self._cap.get(cv2.CAP_PROP_FPS))
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)  # the container's word for it: for progress only
        self.frame_count = int(count) if count == count and 0 < count < 1e9 else 0

    def read(self) -> Optional[np.ndarray]:
        ok, image = self._cap.read()
        if not ok or image is None or image.ndim != 3 or image.shape[2] != 3:
            return None
        return self._flip(image) if self._flip else image

    def grab(self) -> bool:
        return bool(self._cap.grab())

    def frames(self) -> Iterator[Tuple[int, float, np.ndarray]]:
        """``(index, t seconds, image)`` for every frame; VideoError when the frame rate is unknown."""
        if self.fps <= 0:
            raise VideoError(self.path, "does not say its frame rate, so frame times are unknown")
        index = 0
        while True:
            image = self.read()
            if image is None:
                return
            yield index, index / self.fps, image
            index += 1

    def release(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def count_frames(path: Union[str, Path]) -> int:
    """Frames in a video file, counted by decoding (container headers are often wrong)."""
    with VideoReader(path) as reader:
        n = 0
        while reader.grab():
            n += 1
    return n
