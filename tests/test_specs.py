"""Model specs as data, and the one decode that makes every model's outputs canonical."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from edge.inference.specs import BUILTIN_SPECS, KEYPOINT_INDEX, KEYPOINTS, SpecError, decode, load_spec, spec_from_dict


def _labelled(n_channels, h, w, layout, offset=0):
    """A raw output whose every channel holds its own index (+offset), in the given layout."""
    data = np.broadcast_to((np.arange(n_channels, dtype=np.float32) + offset)[None, :, None, None],
                           (1, n_channels, h, w)).copy()
    return data if layout == "NCHW" else data.transpose(0, 2, 3, 1).copy()


def test_builtin_specs_load():
    assert set(BUILTIN_SPECS) == {"openpose-mobilenet-thin", "bodyposenet", "trt_pose", "pose_resnet_50_256x192",
                                  "bodypose3dnet"}
    assert {load_spec(n).family for n in BUILTIN_SPECS} == {"bottom_up", "top_down", "single_person_3d"}
    assert len(load_spec("bodyposenet").limbs) == 19 and len(load_spec("trt_pose").limbs) == 21


def test_mobilenet_decode_splits_one_tensor_and_orders_pafs_by_limb():
    spec = load_spec("openpose-mobilenet-thin")
    heat, paf = decode(spec, {"Openpose/concat_stage7": _labelled(57, 46, 54, "NHWC")})
    assert heat.shape == (1, 19, 46, 54) and paf.shape == (1, 38, 46, 54)
    assert heat.flags.c_contiguous and paf.dtype == np.float32
    assert heat[0, :, 0, 0].tolist() == list(range(19))
    # DESIGN.md: limb (1,2) -> raw PAF channels 12, 13; (1,8) -> 0, 1; (5,17) -> 26, 27
    expect = {(1, 2): (12, 13), (1, 8): (0, 1), (5, 17): (26, 27), (14, 16): (34, 35)}
    for k, limb in enumerate(spec.limbs):
        if (limb.a, limb.b) in expect:
            assert (paf[0, 2 * k, 0, 0] - 19, paf[0, 2 * k + 1, 0, 0] - 19) == expect[(limb.a, limb.b)]


def test_bodyposenet_and_mobilenet_share_the_cmu_limb_layout():
    bpn, mob = load_spec("bodyposenet"), load_spec("openpose-mobilenet-thin")
    assert [(l.a, l.b, l.paf_x, l.paf_y) for l in bpn.limbs] == [(l.a, l.b, l.paf_x, l.paf_y) for l in mob.limbs]
    # TAO numbering: limb k of its list in channels 2k, 2k+1
    tao = [(1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 2), (2, 3), (3, 4), (2, 16), (1, 5),
           (5, 6), (6, 7), (5, 17), (1, 0), (0, 14), (0, 15), (14, 16), (15, 17)]
    by_pair = {(l.a, l.b): (l.paf_x, l.paf_y) for l in bpn.limbs}
    assert all(by_pair[pair] == (2 * k, 2 * k + 1) for k, pair in enumerate(tao))


def test_trt_pose_decode_reorders_keypoints_and_swaps_yx():
    spec = load_spec("trt_pose")
    heat, paf = decode(spec, {"cmap": _labelled(18, 56, 56, "NCHW"), "paf": _labelled(42, 56, 56, "NCHW")})
    assert heat.shape == (1, 18, 56, 56) and paf.shape == (1, 42, 56, 56)
    assert heat[0, KEYPOINT_INDEX["neck"], 0, 0] == 17 and heat[0, KEYPOINT_INDEX["nose"], 0, 0] == 0
    assert heat[0, KEYPOINT_INDEX["l_eye"], 0, 0] == 1 and heat[0, KEYPOINT_INDEX["r_ear"], 0, 0] == 4
    # link k: raw channel 2k is y, 2k+1 is x; canonical has x first
    assert paf[0, 0, 0, 0] == 1 and paf[0, 1, 0, 0] == 0 and paf[0, 41, 0, 0] == 40


def test_decode_takes_batches_and_names_missing_outputs():
    spec = load_spec("openpose-mobilenet-thin")
    raw = np.concatenate([_labelled(57, 4, 5, "NHWC"), _labelled(57, 4, 5, "NHWC", 100)])
    heat, paf = decode(spec, {"Openpose/concat_stage7": raw})
    assert heat.shape[0] == 2 and heat[1, 0, 0, 0] == 100
    with pytest.raises(ValueError, match="Openpose/concat_stage7"):
        decode(spec, {"other": raw})


def test_a_model_without_some_keypoints_gets_zero_maps():
    raw = yaml.safe_load((load_spec.__globals__["SPEC_DIR"] / "trt_pose.yaml").read_text())
    raw["keypoints"] = raw["keypoints"][:17]  # no neck
    raw["outputs"]["heatmaps"]["channels"] = [0, 17]
    raw["limbs"] = [l for l in raw["limbs"] if "neck" not in l]
    spec = spec_from_dict(raw, "no-neck.yaml")
    heat, _ = decode(spec, {"cmap": _labelled(17, 8, 8, "NCHW", 1), "paf": _labelled(42, 8, 8, "NCHW")})
    assert heat.shape == (1, len(KEYPOINTS), 8, 8) and heat[0, KEYPOINT_INDEX["neck"]].max() == 0
    assert heat[0, KEYPOINT_INDEX["nose"], 0, 0] == 1


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["limbs"].append(["neck", "elbow", 0, 1]), "limbs\\[19\\]: 'elbow' is not a keypoint"),
    (lambda r: r["limbs"].append(["neck", "nose", 0, 99]), "PAF channel outside 0..37"),
    (lambda r: r["input"].update(layout="HWC"), "input.layout is 'HWC'"),
    (lambda r: r["outputs"]["heatmaps"].update(channels=[0, 18]), "18 channels"),
    (lambda r: r.pop("limbs"), "missing field 'limbs'"),
])
def test_bad_spec_files_say_what_is_wrong(mutate, message):
    raw = yaml.safe_load((load_spec.__globals__["SPEC_DIR"] / "openpose-mobilenet-thin.yaml").read_text())
    mutate(raw)
    with pytest.raises(SpecError, match=message):
        spec_from_dict(raw, "my.yaml")


def test_unknown_spec_name_lists_the_builtins():
    with pytest.raises(SpecError, match="bodyposenet"):
        load_spec("openpose")


def test_input_size_rules():
    assert load_spec("openpose-mobilenet-thin").check_input_size(368, 432) is None
    assert "multiples of 8" in load_spec("openpose-mobilenet-thin").check_input_size(370, 432)
    assert "exactly 288x384" in load_spec("bodyposenet").check_input_size(368, 432)
