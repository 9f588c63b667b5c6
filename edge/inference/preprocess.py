"""Frame -> network input tensor: the one preprocess of the daemon and the calibrator alike.

Calibrating INT8 on data prepared differently from what the daemon feeds the engine silently
ruins accuracy, so both call :func:`preprocess` and nothing else; that includes the brightening
of dark frames (:class:`LowLight`), which both take from ``model.low_light`` of the configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from edge.inference.specs import ModelSpec

RESIZE_MODES = ("letterbox", "stretch")
# Rotations preprocess can apply, degrees clockwise -> (cv2 rotate code, normalised rotated -> frame map
# as (a, b, c, d, e, f): X = a*x' + b*y' + c, Y = d*x' + e*y' + f). -90 is the same as 270.
ROTATIONS = {
    0: (None, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)),
    90: (cv2.ROTATE_90_CLOCKWISE, (0.0, 1.0, 0.0, -1.0, 0.0, 1.0)),
    180: (cv2.ROTATE_180, (-1.0, 0.0, 1.0, 0.0, -1.0, 1.0)),
    -90: (cv2.ROTATE_90_COUNTERCLOCKWISE, (0.0, -1.0, 1.0, 1.0, 0.0, 0.0)),
}
ROTATIONS[270] = ROTATIONS[-90]


@dataclass(frozen=True)
class Transform:
    """Affine map from normalised network-input coordinates to normalised frame coordinates.

    Both are continuous: (0, 0) is the top-left corner of the top-left pixel and (1, 1) the
    bottom-right corner of the bottom-right one, so a pixel centre is at (col + 0.5) / width.
    ``matrix`` is 2x3: ``[X, Y] = matrix @ [u, v, 1]``.
    """

    matrix: Tuple[Tuple[float, float, float], Tuple[float, float, float]]

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Map points ``(..., 2)`` in input coordinates to frame coordinates (float32)."""
        m = np.asarray(self.matrix, dtype=np.float64)
        pts = np.asarray(xy, dtype=np.float64)
        out = pts @ m[:, :2].T + m[:, 2]
        return out.astype(np.float32)

    def keypoints_to_frame(self, keypoints: np.ndarray) -> np.ndarray:
        """Map parser keypoints ``(N, K, 3)`` (x, y, confidence) to the frame; missing parts stay 0."""
        out = np.array(keypoints, dtype=np.float32, copy=True)
        if out.size:
            present = out[..., 2] > 0
            out[..., :2] = np.where(present[..., None], self.to_frame(out[..., :2]), 0.0)
        return out


@dataclass(frozen=True)
class LowLight:
    """Brightening of dark frames before the network, decided frame by frame.

    A frame whose mean luma (BT.601, 0..255, :func:`mean_luma`) is below ``threshold`` is
    brightened after it is resized and before it is padded and normalised: a gamma curve that
    takes its mean luma to ``target``, then CLAHE (``clip_limit``, ``tiles`` x ``tiles``) on the
    L channel of LAB. Other frames pass untouched. Geometry never changes.
    """

    threshold: float = 60.0
    target: float = 110.0
    clip_limit: float = 2.0
    tiles: int = 8

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 255.0:
            raise ValueError("low-light threshold %r: a mean luma from 0 to 255" % (self.threshold,))


def mean_luma(frame: np.ndarray) -> float:
    """Mean BT.601 luma (0..255) of a BGR uint8 frame (under 1 ms at 1280x720)."""
    b, g, r = cv2.mean(frame)[:3]
    return float(0.114 * b + 0.587 * g + 0.299 * r)


def brighten(image: np.ndarray, luma: float, light: LowLight) -> np.ndarray:
    """``image`` (BGR uint8) lifted by a gamma that takes ``luma`` to ``light.target``, then CLAHE on L."""
    gamma = float(np.clip(np.log(light.target / 255.0) / np.log(max(luma, 1.0) / 255.0), 0.25, 1.0))
    lut = np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=light.clip_limit, tileGridSize=(light.tiles, light.tiles))
    lab[:, :, 0] = clahe.apply(cv2.LUT(lab[:, :, 0], lut))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def fit(frame_hw: Tuple[int, int], input_hw: Tuple[int, int], mode: str) -> Tuple[int, int, int, int]:
    """Where a frame lands in the input: ``(x0, y0, width, height)`` of its resized image.

    ``letterbox`` keeps the aspect ratio and centres the frame on a black canvas;
    ``stretch`` fills the input, distorting people when aspect ratios differ.
    """
    fh, fw = frame_hw
    ih, iw = input_hw
    if mode == "stretch":
        return 0, 0, iw, ih
    if mode != "letterbox":
        raise ValueError("resize mode %r: use one of %s" % (mode, ", ".join(RESIZE_MODES)))
    scale = min(iw / fw, ih / fh)
    w, h = max(1, min(iw, int(round(fw * scale)))), max(1, min(ih, int(round(fh * scale))))
    return (iw - w) // 2, (ih - h) // 2, w, h


def preprocess(frame: np.ndarray, spec: ModelSpec, input_hw: Tuple[int, int], mode: str = "letterbox",
               out: Optional[np.ndarray] = None, rotation: int = 0,
               light: Optional[LowLight] = None) -> Tuple[np.ndarray, Transform]:
    """Turn a BGR uint8 frame ``(H, W, 3)`` into the network's input tensor.

    Returns ``(tensor, transform)``: the tensor is float32 ``(1, h, w, 3)`` for NHWC specs or
    ``(1, 3, h, w)`` for NCHW, in the spec's colour order and normalisation
    (``(pixel - mean) / std``; padding is pixel value 0 before normalisation); ``transform``
    maps normalised input coordinates back to normalised frame coordinates. ``out``, when
    given, is a tensor of that shape to write into (a slot of a batch), and is returned.
    ``rotation`` (degrees clockwise: 0, 90, 180, -90 or 270) turns the frame before it is fitted,
    so a person lying on the floor can stand upright for the network; the transform still maps
    back to the original (unrotated) frame, exactly. ``light``: brighten the frame when it is dark
    (:class:`LowLight`; None = never); a frame that is not dark gives the same tensor as without.
    """
    if frame is None or frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError("preprocess takes a BGR image of shape (H, W, 3); got %s"
                         % (None if frame is None else frame.shape,))
    if rotation not in ROTATIONS:
        raise ValueError("rotation %r: use one of 0, 90, 180, -90 (degrees clockwise)" % (rotation,))
    code, back = ROTATIONS[rotation]
    luma = mean_luma(frame) if light is not None else 255.0
    if code is not None:
        frame = cv2.rotate(frame, code)
    ih, iw = input_hw
    x0, y0, w, h = fit(frame.shape[:2], input_hw, mode)
    interp = cv2.INTER_AREA if w < frame.shape[1] else cv2.INTER_LINEAR
    canvas = np.zeros((ih, iw, 3), np.uint8)
    resized = cv2.resize(frame, (w, h), interpolation=interp)
    if light is not None and luma < light.threshold:
        resized = brighten(resized, luma, light)
    canvas[y0:y0 + h, x0:x0 + w] = resized
    if spec.color == "RGB":
        canvas = canvas[:, :, ::-1]
    nhwc = spec.input_layout == "NHWC"
    if out is None:
        out = np.empty((1, ih, iw, 3) if nhwc else (1, 3, ih, iw), np.float32)
    elif out.dtype != np.float32 or out.shape != ((1, ih, iw, 3) if nhwc else (1, 3, ih, iw)):
        raise ValueError("preprocess: out is %s %s, the tensor is float32 %s" % (
            out.dtype, out.shape, (1, ih, iw, 3) if nhwc else (1, 3, ih, iw)))
    # Written in place, with no temporary float image: the same float32 operations as
    # ``(canvas.astype(float32) - mean) / std``, so the same bits.
    pixels = out[0] if nhwc else out[0].transpose(1, 2, 0)  # the slot, seen as (h, w, 3)
    np.copyto(pixels, canvas, casting="unsafe")
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    if mean.any() or (std != 1).any():
        pixels -= mean
        pixels /= std
    tensor = out
    # input u in [0,1] -> input pixels u*iw -> frame fraction (u*iw - x0) / w
    sx, tx, sy, ty = iw / w, -x0 / w, ih / h, -y0 / h
    if code is None:
        matrix = ((sx, 0.0, tx), (0.0, sy, ty))
    else:  # then the rotated frame's fraction -> the original frame's fraction
        a, b, c, d, e, f = back
        matrix = ((a * sx, b * sy, a * tx + b * ty + c), (d * sx, e * sy, d * tx + e * ty + f))
    return tensor, Transform(matrix)
