"""scripts/bench_peer.py hands the peer (ambianic falldetect) our skeletons in PoseNet's layout:
the keypoint order, the coordinates of its input tensor and PIL's rotations. No network: the peer
itself is downloaded only by the benchmark."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from edge.skeleton import KEYPOINTS, NUM_KEYPOINTS

REPO = Path(__file__).resolve().parents[1]

# PoseNet's 17 COCO keypoints (falldetect pipeline/pose_engine.py) and the index of each in ours,
# as the benchmark's docstring lists them.
POSENET = ("nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder",
           "left elbow", "right elbow", "left wrist", "right wrist", "left hip", "right hip", "left knee",
           "right knee", "left ankle", "right ankle")
OURS = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_peer", str(REPO / "scripts" / "bench_peer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_our_keypoints_go_to_posenets_places_by_name():
    bench = _bench()
    assert bench.POSENET_KEYPOINTS == POSENET
    for name, i in zip(POSENET, OURS):
        side, _, part = name.rpartition(" ")
        assert KEYPOINTS[i] == ({"left": "l_", "right": "r_"}[side] + part if side else part)
    kp = np.zeros((NUM_KEYPOINTS, 3))
    kp[:, 0] = np.arange(NUM_KEYPOINTS) / 100.0
    kp[:, 1] = 0.5
    kp[:, 2] = 0.5
    kp[1, 2] = 0.9  # the neck: PoseNet has none
    kp[8, 2] = 1.2  # r_hip: above PoseNet's score range
    kp[13] = 0.0  # l_ankle missing
    coco = bench.to_posenet(kp)
    assert coco.shape == (17, 3)
    for row, i in enumerate(OURS):
        if i == 13:
            assert coco[row].tolist() == [0.0, 0.0, 0.0]
        else:
            assert coco[row, 0] == i / 100.0
    assert coco[POSENET.index("right hip"), 2] == 1.0


def test_posenet_output_is_y_x_score_in_the_thumbnail_of_its_input_tensor():
    bench = _bench()
    assert bench.thumbnail_size((640, 480), (257, 257)) == (257, 193)  # what PIL's thumbnail gives
    assert bench.thumbnail_size((1280, 720), (257, 257)) == (257, 145)
    assert bench.thumbnail_size((200, 100), (257, 257)) == (200, 100)  # never enlarged
    coco = np.zeros((17, 3))
    coco[5] = (0.5, 0.25, 0.8)  # left shoulder
    coco[11] = (0.999, 0.999, 0.3)  # left hip
    kps = bench.posenet_output(coco, (640, 480))
    assert kps[5].tolist() == [48.0, 128.0, np.float32(0.8)]  # y 0.25 * 193, x 0.5 * 257, truncated
    assert kps[11, :2].tolist() == [192.0, 256.0]
    assert not kps[[i for i in range(17) if i not in (5, 11)]].any()


def test_rotated_frames_come_back_through_the_peers_own_unrotation():
    """falldetect rotates the picture with PIL (ROTATE_90: counter-clockwise) when no pose is found
    and maps the rotated pose back with width - y (ROTATE_90) or height - x (ROTATE_270), width
    and height of the unrotated thumbnail: our rotated skeleton must land where it was."""
    bench = _bench()
    rng = np.random.default_rng(3)
    coco = np.column_stack([rng.uniform(0.05, 0.95, (17, 2)), rng.uniform(0.2, 1.0, 17)])
    frame = bench.FrameImage(coco, (640, 480), "R90", "R270")
    width, height = bench.thumbnail_size(frame.size, (257, 257))
    upright = bench.posenet_output(coco, frame.size)
    for method in ("R90", "R270"):
        turned = frame.transpose(method)
        assert turned.size == (480, 640)
        kps = bench.posenet_output(turned.coco, turned.size)
        x, y = kps[:, 1], kps[:, 0]
        back = (width - y, x) if method == "R90" else (y, height - x)
        assert np.abs(back[0] - upright[:, 1]).max() <= 1.0
        assert np.abs(back[1] - upright[:, 0]).max() <= 1.0
        assert (kps[:, 2] == upright[:, 2]).all()


def test_the_person_with_the_best_seen_shoulders_and_hips_is_handed_over():
    bench = _bench()
    faint, clear = np.zeros((NUM_KEYPOINTS, 3)), np.zeros((NUM_KEYPOINTS, 3))
    faint[:, 2] = 0.9  # every part but the torso strong
    faint[[2, 5, 8, 11], 2] = 0.2
    clear[[2, 5, 8, 11], 2] = 0.6
    assert bench.pick_person([faint, clear]) is not None
    assert (bench.pick_person([faint, clear]) == clear).all()
    assert bench.pick_person([]) is None
