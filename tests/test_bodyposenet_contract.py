"""The ``bodyposenet`` spec against a model with BodyPoseNet's exact I/O contract.

The model (see ``bodyposenet_onnx.py``) is the real mobilenet_thin behind BodyPoseNet's input
(``input_1:0``, RGB, (x-128)/256, NHWC 288x384) and outputs (heatmaps 36x48x19 NHWC, PAFs
upsampled to 144x192x38 NHWC). Both models get their input from the project's
``edge.inference.preprocess.preprocess`` with their own spec, and both outputs go through
``edge.inference.specs.decode``: if the bodyposenet spec (tensor names, layout, colour order,
normalisation, channel ranges, limb channels) is right, the canonical maps agree.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.inference import models
from edge.inference.specs import decode, load_spec

try:
    from tests.bodyposenet_onnx import HEATMAPS, INPUT, PAFS, build_bodyposenet_like
except ImportError:  # pytest's rootdir-relative import puts tests/ itself on sys.path
    from bodyposenet_onnx import HEATMAPS, INPUT, PAFS, build_bodyposenet_like

ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MODELS_DIR = REPO / "models"
SIZE = (288, 384)  # BodyPoseNet's fixed input, height x width

# PAF tolerance: ONNX Resize (linear, half_pixel) and cv2.resize(INTER_LINEAR) on float32 compute
# the same thing: source coordinate (x + 0.5) / 4 - 0.5, clamped at the borders, with weights of
# 1/8, 3/8, 5/8, 7/8 that float32 holds exactly. They differ only in the order and rounding of the
# multiply-adds (measured: at most 1.8e-7 on these images, about 1 ulp of values up to ~1), so
# 1e-5 leaves a wide margin, while a wrong interpolation is far off (measured on the same maps:
# asymmetric 0.41, align_corners 0.25, nearest 0.44) and so is any wrong channel.
PAF_TOL = 1e-5
HEAT_TOL = 1e-4


def _image(name: str) -> np.ndarray:
    path = DATA / "images" / name
    if not path.is_file():
        pytest.skip("test media %s is absent (../shared/data sits beside the repository)" % path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """(mobilenet 288x384 session, bodyposenet-like session), both on the real weights."""
    mobilenet = models.fetch_default_model(MODELS_DIR, SIZE, log=lambda *_: None)
    path = tmp_path_factory.mktemp("bodyposenet") / "bodyposenet_like.onnx"
    path.write_bytes(build_bodyposenet_like(mobilenet).SerializeToString())
    providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(mobilenet), providers=providers), ort.InferenceSession(str(path), providers=providers)


def _preprocess(frame, spec, mode):
    from edge.inference.preprocess import preprocess

    tensor, _ = preprocess(frame, spec, SIZE, mode)
    return tensor


def test_bodyposenet_like_interface(sessions):
    _, bpn = sessions
    assert [(i.name, i.shape) for i in bpn.get_inputs()] == [(INPUT, [1, 288, 384, 3])]
    assert [(o.name, o.shape) for o in bpn.get_outputs()] == [(HEATMAPS, [1, 36, 48, 19]), (PAFS, [1, 144, 192, 38])]
    spec = load_spec("bodyposenet")
    assert spec.input_tensor == INPUT and set(spec.output_names) == {HEATMAPS, PAFS}


@pytest.mark.parametrize("name, mode", [("apollo11_crew.jpg", "letterbox"), ("astronaut.png", "stretch"),
                                        ("coco/COCO_val2014_000000000192.jpg", "letterbox")])
def test_bodyposenet_spec_decodes_like_mobilenet(name, mode, sessions):
    mobilenet, bpn = sessions
    frame = _image(name)
    mn_spec, bpn_spec = load_spec("openpose-mobilenet-thin"), load_spec("bodyposenet")

    mn_in = _preprocess(frame, mn_spec, mode)
    bpn_in = _preprocess(frame, bpn_spec, mode)
    assert mn_in.shape == bpn_in.shape == (1, 288, 384, 3)
    # The two preprocessings are the same picture: RGB (x-128)/256 undone and reversed gives BGR 0..255.
    np.testing.assert_array_equal((bpn_in * 256 + 128)[..., ::-1], mn_in)

    mn_heat, mn_paf = decode(mn_spec, {"Openpose/concat_stage7": mobilenet.run(None, {"image": mn_in})[0]})
    bpn_out = dict(zip([o.name for o in bpn.get_outputs()], bpn.run(None, {INPUT: bpn_in})))
    bpn_heat, bpn_paf = decode(bpn_spec, bpn_out)

    assert mn_heat.shape == bpn_heat.shape == (1, 19, 36, 48)
    assert mn_paf.shape == (1, 38, 36, 48) and bpn_paf.shape == (1, 38, 144, 192)
    assert float(mn_heat[0, :18].max()) > 0.3  # real responses (people are in every image)
    heat_diff = float(np.abs(bpn_heat - mn_heat).max())
    assert heat_diff <= HEAT_TOL, heat_diff

    up = np.stack([cv2.resize(ch, (192, 144), interpolation=cv2.INTER_LINEAR) for ch in mn_paf[0]])
    paf_diff = float(np.abs(bpn_paf[0] - up).max())
    assert paf_diff <= PAF_TOL, paf_diff
    assert float(np.abs(up).max()) > 0.1
