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
            canvas = cv2.GaussianBlur(canvas, (0, 0), blur_sigma_px)
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
