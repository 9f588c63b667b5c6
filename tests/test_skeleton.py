"""edge.skeleton: the keypoint names every stage shares, the box of a skeleton, the one drawer."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge import skeleton
from edge.parse import parse_poses
from edge.skeleton import (KEYPOINT_INDEX, KEYPOINTS, LIMBS, MIRROR, box_size, draw_skeletons, parts_box,
                           skeleton_bbox, track_colour)

try:
    from tests.scenes import random_scene, render
except ImportError:  # tests/ itself on sys.path
    from scenes import random_scene, render

MOBILENET_MAPS = ((46, 54), (46, 54))  # heatmap and PAF sizes of openpose-mobilenet-thin at 368x432


def test_names_follow_the_design_order():
    assert KEYPOINTS[:2] == ("nose", "neck") and KEYPOINTS[-1] == "l_ear" and len(KEYPOINTS) == 18
    for name, i in KEYPOINT_INDEX.items():
        assert getattr(skeleton, name.upper()) == i
    assert skeleton.HEAD == tuple(KEYPOINT_INDEX[n] for n in ("nose", "r_eye", "l_eye", "r_ear", "l_ear"))
    assert [KEYPOINTS[i] for i in MIRROR[:8]] == ["nose", "neck", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder",
                                                   "r_elbow", "r_wrist"]
    assert (MIRROR[MIRROR] == np.arange(18)).all()
    assert all(0 <= a < 18 and 0 <= b < 18 and a != b for a, b in LIMBS)


def test_importing_it_loads_nothing_heavy():
    code = "import sys, edge.skeleton; print(sorted(m for m in ('cv2', 'yaml', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_boxes_of_the_parts_present():
    kp = np.zeros((3, 18, 3))
    kp[0, [0, 10], :] = [[0.2, 0.1, 0.9], [0.3, 0.8, 0.05]]
    kp[1, 5] = [0.5, 0.5, 0.9]
    boxes = skeleton_bbox(kp, 0.1)
    assert boxes.tolist() == [[0.2, 0.1, 0.2, 0.1], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0]]
    assert skeleton_bbox(kp, 0.01)[0].tolist() == [0.2, 0.1, 0.3, 0.8]
    assert box_size(skeleton_bbox(kp, 0.01), (100, 50))[0] == pytest.approx(35.0)
    pixels = kp[..., :2] * [100, 50]
    assert parts_box(pixels, kp[..., 2] > 0)[0] == pytest.approx([20, 5, 30, 40])


def test_draw_skeletons():
    people = random_scene(np.random.default_rng(12), 2, MOBILENET_MAPS[0], min_height_cells=15, separate=True)
    keypoints, scores = parse_poses(*render(people, "openpose-mobilenet-thin", *MOBILENET_MAPS),
                                    "openpose-mobilenet-thin")
    image = np.zeros((368, 432, 3), np.uint8)
    drawn = draw_skeletons(image, keypoints, ["%.2f" % s for s in scores])
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert not image.any() and drawn.any()  # a copy, with people on it
    neck = keypoints[0, KEYPOINT_INDEX["neck"], :2] * [432, 368]
    col, row = int(neck[0]), int(neck[1])
    assert drawn[max(row - 3, 0):row + 4, max(col - 3, 0):col + 4].any()
    # nothing to draw, missing parts, absurd coordinates: no error
    assert not draw_skeletons(image, np.zeros((0, 18, 3), np.float32)).any()
    odd = np.array([[[np.nan, 1e30, 1.0]] * 18], np.float32)
    draw_skeletons(image, odd)
    with pytest.raises(ValueError, match="uint8"):
        draw_skeletons(image.astype(np.float32), keypoints)
    with pytest.raises(ValueError, match=r"\(N, 18, 3\)"):
        draw_skeletons(image, keypoints[0])
    with pytest.raises(ValueError, match="labels has 1 entries for 2 people"):
        draw_skeletons(image, keypoints, ["x"])


def test_colours_labels_and_confidence_threshold():
    kp = np.zeros((1, 18, 3), np.float32)
    kp[0, KEYPOINT_INDEX["neck"]] = [0.5, 0.25, 0.9]
    kp[0, KEYPOINT_INDEX["r_hip"]] = [0.5, 0.75, 0.9]
    image = np.zeros((200, 200, 3), np.uint8)
    drawn = draw_skeletons(image, kp, colours=[(0, 0, 255)], line_px=4)
    limb = drawn[90:110, 95:105].reshape(-1, 3)  # the neck-hip line, between the dots
    assert limb[:, 2].max() == 255 and limb[:, :2].max() == 0
    assert drawn[49, 99].min() == 255  # a part: a white dot
    assert not draw_skeletons(image, kp, min_confidence=0.9).any()
    labelled = draw_skeletons(image, kp, labels=["#7"], colours=[track_colour(7)])
    assert labelled[:45].any() and not drawn[:40].any()  # the label above the person
    assert track_colour(0) == (160, 160, 160) and track_colour(7) != track_colour(8)
