"""Preprocess: layout, colour, normalisation, and an exact way back to frame coordinates."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.capture.sources import Frame
from edge.config import load_config
from edge.inference.model import PoseModel, low_light
from edge.inference.preprocess import LowLight, fit, mean_luma, preprocess
from edge.inference.specs import load_spec
from edge.pipeline import CameraPipeline

MOBILENET = load_spec("openpose-mobilenet-thin")


def _blob_frame(h, w, cx, cy, r=6):
    """A black frame with a white disc centred at pixel-continuous (cx, cy)."""
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.zeros((h, w, 3), np.uint8)
    frame[(xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r] = 255
    return frame


def _centroid(img2d):
    ys, xs = np.mgrid[0:img2d.shape[0], 0:img2d.shape[1]]
    wsum = img2d.sum()
    return ((xs + 0.5) * img2d).sum() / wsum, ((ys + 0.5) * img2d).sum() / wsum


@pytest.mark.parametrize("frame_hw", [(480, 640), (720, 1280), (640, 360), (368, 432), (100, 100)])
@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_transform_maps_a_spot_back_to_where_it_was(frame_hw, mode):
    h, w = frame_hw
    rng = np.random.default_rng(h * w)
    for _ in range(3):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        tensor, transform = preprocess(_blob_frame(h, w, cx, cy, r=max(4, min(h, w) // 20)), MOBILENET,
                                       (368, 432), mode)
        assert tensor.shape == (1, 368, 432, 3) and tensor.dtype == np.float32
        u, v = _centroid(tensor[0, :, :, 0])
        fx, fy = transform.to_frame(np.array([u / 432, v / 368]))
        # the spot's centroid survives resampling to well under a frame pixel
        assert abs(fx * w - cx) < 0.6 * max(1.0, w / 432) and abs(fy * h - cy) < 0.6 * max(1.0, h / 368)


def test_letterbox_keeps_aspect_and_centres():
    assert fit((480, 640), (368, 432), "letterbox") == (0, 22, 432, 324)
    assert fit((720, 1280), (368, 432), "letterbox") == (0, 62, 432, 243)
    assert fit((640, 360), (368, 432), "letterbox") == (112, 0, 207, 368)
    assert fit((480, 640), (368, 432), "stretch") == (0, 0, 432, 368)


def test_letterbox_pads_with_black_and_stretch_fills():
    frame = np.full((480, 640, 3), 200, np.uint8)
    boxed, _ = preprocess(frame, MOBILENET, (368, 432), "letterbox")
    assert boxed[0, :22].max() == 0 and boxed[0, -22:].max() == 0 and boxed[0, 22:346].min() == 200
    stretched, _ = preprocess(frame, MOBILENET, (368, 432), "stretch")
    assert stretched.min() == 200


def test_colour_order_normalisation_and_layout_follow_the_spec():
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10, 20, 30  # B, G, R
    mob, _ = preprocess(frame, MOBILENET, (64, 64))
    assert mob[0, 5, 5].tolist() == [10, 20, 30]
    bpn, _ = preprocess(frame, load_spec("bodyposenet"), (64, 64))
    assert np.allclose(bpn[0, 5, 5], [(30 - 128) / 256, (20 - 128) / 256, (10 - 128) / 256])
    trt, _ = preprocess(frame, load_spec("trt_pose"), (64, 64))
    assert trt.shape == (1, 3, 64, 64)
    assert np.allclose(trt[0, :, 5, 5], [(30 - 123.675) / 58.395, (20 - 116.28) / 57.12, (10 - 103.53) / 57.375])


def test_writes_into_a_batch_slot():
    batch = np.zeros((2, 368, 432, 3), np.float32)
    frame = np.full((480, 640, 3), 7, np.uint8)
    preprocess(frame, MOBILENET, (368, 432), out=batch[1:2])
    assert batch[0].max() == 0 and batch[1, 100, 100, 0] == 7


@pytest.mark.parametrize("bad", [None, np.zeros((10, 10), np.uint8), np.zeros((0, 5, 3), np.uint8),
                                 np.zeros((10, 10, 4), np.uint8)])
def test_rejects_what_is_not_a_bgr_frame(bad):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess(bad, MOBILENET, (368, 432))


def test_keypoints_to_frame_leaves_missing_parts_at_zero():
    _, transform = preprocess(np.zeros((480, 640, 3), np.uint8), MOBILENET, (368, 432))
    kps = np.array([[[0.5, 0.5, 0.9], [0.3, 0.2, 0.0]]], np.float32)
    out = transform.keypoints_to_frame(kps)
    assert out[0, 1].tolist() == [0, 0, 0]
    assert np.allclose(out[0, 0, :2], [0.5, 0.5]) and out[0, 0, 2] == np.float32(0.9)


@pytest.mark.parametrize("rotation", [90, -90, 180, 270])
@pytest.mark.parametrize("frame_hw", [(480, 640), (720, 1280), (640, 360)])
@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_rotated_transform_maps_a_spot_back_to_where_it_was(rotation, frame_hw, mode):
    h, w = frame_hw
    rng = np.random.default_rng(h * w + rotation)
    for _ in range(3):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        tensor, transform = preprocess(_blob_frame(h, w, cx, cy, r=max(4, min(h, w) // 20)), MOBILENET,
                                       (368, 432), mode, rotation=rotation)
        u, v = _centroid(tensor[0, :, :, 0])
        fx, fy = transform.to_frame(np.array([u / 432, v / 368]))
        # a rotated view scales the frame's height onto the input's width and vice versa
        tol_x = 0.6 * max(1.0, w / (368 if rotation % 180 else 432))
        tol_y = 0.6 * max(1.0, h / (432 if rotation % 180 else 368))
        assert abs(fx * w - cx) < tol_x and abs(fy * h - cy) < tol_y


@pytest.mark.parametrize("rotation, corner", [(90, "top_right"), (-90, "bottom_left"), (270, "bottom_left"),
                                              (180, "bottom_right"), (0, "top_left")])
def test_rotation_turns_the_picture_clockwise(rotation, corner):
    frame = _blob_frame(400, 400, 60, 60, r=30)  # a spot near the top-left corner of a square frame
    tensor, _ = preprocess(frame, MOBILENET, (400, 400), "letterbox", rotation=rotation)
    img = tensor[0, :, :, 0]
    quadrants = {"top_left": img[:200, :200], "top_right": img[:200, 200:],
                 "bottom_left": img[200:, :200], "bottom_right": img[200:, 200:]}
    assert quadrants[corner].sum() == img.sum() > 0


@pytest.mark.parametrize("bad", [45, "cw", 1, -180])
def test_rejects_rotations_it_cannot_do(bad):
    with pytest.raises(ValueError, match="rotation"):
        preprocess(np.zeros((48, 64, 3), np.uint8), MOBILENET, (368, 432), rotation=bad)


# ---------------------------------------------------------------- low light

LIGHT = LowLight(threshold=60.0)


def _dim_spot_frame(h, w, cx, cy, r, background=6, spot=40):
    """A dark frame (mean luma well under 60) with a dim grey disc at (cx, cy) and a little noise."""
    rng = np.random.default_rng(h + w)
    frame = np.clip(rng.normal(background, 2, (h, w, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    frame[(xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r] = spot
    return frame


@pytest.mark.parametrize("spec_name", ["openpose-mobilenet-thin", "bodyposenet", "trt_pose"])
@pytest.mark.parametrize("rotation", [0, 90, -90])
def test_frames_that_are_not_dark_pass_bit_identical(spec_name, rotation):
    spec = load_spec(spec_name)
    hw = {"bodyposenet": (288, 384), "trt_pose": (224, 224)}.get(spec_name, (368, 432))
    rng = np.random.default_rng(7)
    for frame in (rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),  # mean ~128
                  np.full((720, 1280, 3), 61, np.uint8)):  # just above the threshold
        assert mean_luma(frame) >= LIGHT.threshold
        plain, t_plain = preprocess(frame, spec, hw, "letterbox", rotation=rotation)
        lit, t_lit = preprocess(frame, spec, hw, "letterbox", rotation=rotation, light=LIGHT)
        assert np.array_equal(plain, lit) and t_plain == t_lit


@pytest.mark.parametrize("rotation", [0, 90, -90])
@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_a_dark_frame_is_brightened_in_place(rotation, mode):
    h, w, cx, cy = 480, 640, 420.0, 170.0
    frame = _dim_spot_frame(h, w, cx, cy, r=30)
    assert mean_luma(frame) < LIGHT.threshold
    plain, t_plain = preprocess(frame, MOBILENET, (368, 432), mode, rotation=rotation)
    lit, t_lit = preprocess(frame, MOBILENET, (368, 432), mode, rotation=rotation, light=LIGHT)
    assert t_plain == t_lit  # geometry does not move
    x0, y0, fw, fh = fit((w, h) if rotation else (h, w), (368, 432), mode)
    inside = (slice(y0, y0 + fh), slice(x0, x0 + fw))
    assert lit[0][inside].mean() > plain[0][inside].mean() + 20
    if mode == "letterbox":  # padding stays black
        outside = np.ones((368, 432), bool)
        outside[inside] = False
        assert lit[0][outside].max() == 0
    for tensor, transform in ((plain, t_plain), (lit, t_lit)):
        img = tensor[0, :, :, 0]
        spot = (img > (img[inside].max() + np.median(img[inside])) / 2).astype(np.float64)
        u, v = _centroid(spot)
        fx, fy = transform.to_frame(np.array([u / 432, v / 368]))
        assert abs(fx * w - cx) < 2.0 and abs(fy * h - cy) < 2.0


def test_low_light_threshold_is_checked():
    with pytest.raises(ValueError, match="mean luma from 0 to 255"):
        LowLight(threshold=300)


def test_the_daemon_and_calibrator_take_low_light_from_the_model_section():
    config = load_config(None, env={})
    assert config.model.low_light == "never" and low_light(config) is None
    auto = dataclasses.replace(config, model=dataclasses.replace(config.model, low_light="auto", low_light_luma=42))
    assert low_light(auto) == LowLight(threshold=42.0)


def test_the_camera_pipeline_preprocesses_with_the_model_low_light():
    config = load_config(None, env={})
    frame = _dim_spot_frame(480, 640, 300, 200, r=40)
    for light in (None, LIGHT):
        model = PoseModel(MOBILENET, None, (368, 432), "stretch", light)
        job = CameraPipeline("cam", config, model, view_policy=False).prepare(Frame("cam", 0, 0.0, 0.0, frame))
        expected, _ = preprocess(frame, MOBILENET, (368, 432), "stretch", light=light)
        assert np.array_equal(job.batch[:1], expected)
