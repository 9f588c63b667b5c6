"""Where calibration frames come from: folders of images, video files, live cameras.

Every source yields :class:`Frame` (a BGR uint8 image and where it came from). Videos are sampled
evenly over their whole length; cameras are sampled over time (one frame every ``interval_s``) so
that 500 frames are not 500 copies of one second. Unreadable files are skipped and counted.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np

log = logging.getLogger("fallwatch.calibration")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class FramesError(ValueError):
    """A calibration source cannot be used; the message names it and says what to do."""


@dataclass(frozen=True)
class Frame:
    source: str  # "path/to/image.jpg" or "video.mp4#frame" or "camera-uri#n"
    image: np.ndarray  # BGR uint8 (H, W, 3)


def image_files(folder: Path) -> List[Path]:
    """JPEG and PNG files under ``folder`` (recursively), sorted; FramesError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FramesError("--images %s: not a folder" % folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FramesError("--images %s: no .jpg, .jpeg or .png files in it (searched recursively)" % folder)
    return files


def read_images(files: Sequence[Path], skipped: Optional[List[str]] = None) -> Iterator[Frame]:
    """Decode ``files``; a file OpenCV cannot read is logged, appended to ``skipped`` and left out."""
    import cv2

    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            log.warning("skipping %s: not an image OpenCV can read", path)
            if skipped is not None:
                skipped.append(str(path))
            continue
        yield Frame(str(path), image)


def sample_indices(total: int, count: int) -> List[int]:
    """``count`` frame indices spread evenly over ``0 .. total-1`` (all of them when count >= total)."""
    if total <= 0 or count <= 0:
        return []
    if count >= total:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, count)})


def video_frames(path: Path, count: int) -> Iterator[Frame]:
    """``count`` frames spread evenly over the video file (every frame when it has fewer), read with
    the daemon's video reader (edge.capture.video)."""
    from edge.capture.video import VideoError, VideoReader, count_frames

    path = Path(path)
    if not path.is_file():
        raise FramesError("--video %s: no such file" % path)
    try:
        total = count_frames(path)
        if total == 0:
            raise FramesError("--video %s: no frame could be decoded" % path)
        wanted = set(sample_indices(total, count))
        with VideoReader(path) as reader:
            for index in range(max(wanted) + 1):
                if index in wanted:
                    image = reader.read()
                    if image is None:
                        break
                    yield Frame("%s#%d" % (path, index), image)
                elif not reader.grab():
                    break
    except VideoError as exc:
        raise FramesError("--video: %s" % exc) from None


def camera_frames(uri: str, count: int, interval_s: float = 0.2, timeout_s: float = 10.0,
                  clock=time.monotonic) -> Iterator[Frame]:
    """``count`` frames from a live camera, one every ``interval_s`` seconds (frames in between are
    read and dropped so the next one is current). URIs as in the config (csi://N needs OpenCV with
    GStreamer, i.e. JetPack's OpenCV). FramesError when it cannot be opened or stops delivering."""
    from edge.config import CameraConfig, ConfigError
    from edge.capture.sources import SourceError, open_capture

    try:
        capture = open_capture(CameraConfig(name="calibration", uri=uri))
    except ConfigError as exc:
        raise FramesError("--camera: %s" % exc.reason) from None
    except SourceError as exc:
        raise FramesError("--camera: %s" % exc) from None
    try:
        taken, next_at, last_frame_at = 0, clock(), clock()
        while taken < count:
            image = capture.read()
            now = clock()
            if image is None:
                if now - last_frame_at > timeout_s:
                    raise FramesError("--camera %s: no frame for %.0f s after %d frames" % (uri, timeout_s, taken))
                time.sleep(0.01)
                continue
            last_frame_at = now
            if now >= next_at:
                yield Frame("%s#%d" % (uri, taken), image)
                taken += 1
                next_at = now + interval_s
    finally:
        capture.release()
