"""Snapshots for the MQTT ``<camera>/snapshot`` topic: the skeletons drawn over nothing or over a blurred frame.

Privacy first: mode ``blank`` draws on a black canvas and needs no pixels from the camera; mode
``blur`` draws over the frame after a strong Gaussian blur, and only when the frame record carries
the image; mode ``video`` (the web page with ``web.show_video: true`` only) draws over the frame as
it is. A frame record is a skeleton-JSONL record (DESIGN.md contract 2: ``width``, ``height``,
``people[i].keypoints`` as 18 rows of normalised x, y, confidence) as a dict or an object with those
attributes, optionally with ``image``: the BGR uint8 frame (H, W, 3).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from edge.skeleton import NUM_KEYPOINTS, draw_skeletons


def _get(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, dict):
        return record.get(name, default)
    return getattr(record, name, default)


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """A Gaussian blur of ``sigma_px`` pixels, computed at a quarter of the sigma's scale: the image is
    shrunk by ``sigma / 3`` (what such a blur leaves has no detail finer than that), blurred with
    sigma 3 and enlarged back. The same picture as a full-size blur, at a few percent of its cost
    (about 48 ms -> 2 ms for 640x480 at sigma 12 on a loaded 2-core x86: the web page's live view
    draws several a second)."""
    import cv2

    h, w = image.shape[:2]
    factor = max(1.0, sigma_px / 3.0)
    small_w, small_h = max(1, int(round(w / factor))), max(1, int(round(h / factor)))
    if factor <= 1.0 or small_w < 4 or small_h < 4:
        return cv2.GaussianBlur(image, (0, 0), sigma_px)
    small = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma_px / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def render_snapshot(record: Any, mode: str = "blank", width_px: int = 640, blur_sigma_px: float = 12.0,
                    jpeg_quality: int = 80, min_confidence: float = 0.05, labels: Optional[Sequence[str]] = None,
                    colours: Optional[Sequence[Tuple[int, int, int]]] = None) -> bytes:
    """JPEG bytes of the record's skeletons, ``width_px`` wide, the frame's aspect kept; ``labels`` and
    ``colours``: one per person, as :func:`edge.skeleton.draw_skeletons` takes them."""
    import cv2

    frame_w, frame_h = int(_get(record, "width") or 640), int(_get(record, "height") or 480)
    height_px = max(1, int(round(width_px * frame_h / float(frame_w))))
    image: Optional[np.ndarray] = _get(record, "image")
    if mode in ("blur", "video") and image is not None:
        canvas = cv2.resize(np.ascontiguousarray(image[:, :, :3]), (width_px, height_px), interpolation=cv2.INTER_AREA)
        if mode == "blur":
            canvas = blur(canvas, blur_sigma_px)
    else:
        canvas = np.zeros((height_px, width_px, 3), np.uint8)
    people = [np.asarray(_get(person, "keypoints"), np.float32).reshape(NUM_KEYPOINTS, 3)
              for person in _get(record, "people") or ()]
    canvas = draw_skeletons(canvas, np.array(people, np.float32).reshape(-1, NUM_KEYPOINTS, 3),
                            labels=labels, colours=colours, line_px=max(2, width_px // 160),
                            min_confidence=min_confidence)
    ok, jpeg = cv2.imencode(".jpg", canvas, [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode the snapshot as JPEG")
    return jpeg.tobytes()
