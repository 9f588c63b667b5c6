"""A stand-in for NVIDIA's BodyPose3DNet with its I/O contract, built from mobilenet_thin.

BodyPose3DNet's weights cannot be fetched here (NGC), so the single_person_3d path is tested with this
wrapper around the real mobilenet_thin graph (converted at 256x192), whose 2D outputs are real on real
images. Its tensors are those of edge/inference/specs/bodypose3dnet.yaml, batch dimension open:

* inputs ``input0`` ``(N, 3, 256, 192)`` NCHW BGR, pixel / 255; ``k_inv`` ``(N, 3, 3)``;
  ``t_form_inv`` ``(N, 3, 3)``; ``scale_normalized_mean_limb_lengths`` ``(N, 36)``; ``mean_limb_lengths``
  ``(N, 36)``;
* outputs ``pose2d`` ``(N, 34, 3)``, ``pose2d_org_img`` ``(N, 34, 3)``, ``pose25d`` ``(N, 34, 4)``,
  ``pose3d`` ``(N, 34, 3)``, keypoints in NVIDIA's order (:data:`NVIDIA34`).

2D, inside the graph: mobilenet's 18 heatmaps, upsampled x2 (Resize, linear, half_pixel: stride 4, cell
k centred on input pixel ``(k + 0.5) * 4``), argmax per part: x, y in crop input pixels at that cell's
centre, confidence the maximum. The 34 are filled from the 18 (:data:`FROM_CMU`): a part mobilenet has
is copied, ``pelvis`` is the midpoint of the hips and ``torso`` the midpoint of pelvis and neck (confidence:
the lowest of their parts); toes, heels and hand points have confidence 0 (and x = y = 0).
``pose2d_org_img`` is ``t_form_inv @ [x, y, 1]``.

3D, a documented simple camera model (not NVIDIA's): the person is a flat figure facing the camera at one
depth. Each keypoint's ray is ``k_inv @ t_form_inv @ [x, y, 1]`` (the point on the plane z = 1 of the
camera); the depth is ``Z = mean_limb_lengths[:, 2] / |ray(neck) - ray(pelvis)|`` (the neck-to-pelvis
length, 492.7 mm in NVIDIA's constants, over its length on that plane, at least 1e-3), and
``pose3d = Z * ray`` (millimetres, as the spec's ``pose3d_unit_m: 0.001`` reads them). ``pose25d`` is
``(x, y, 0, confidence)``: every part at the pelvis' depth. ``scale_normalized_mean_limb_lengths`` is taken
and not used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from poseresnet_onnx import HEIGHT, MOBILENET_INPUT, MOBILENET_OUTPUT, WIDTH, mobilenet_256x192

INPUTS = ("input0", "k_inv", "t_form_inv", "scale_normalized_mean_limb_lengths", "mean_limb_lengths")
OUTPUTS = ("pose2d", "pose2d_org_img", "pose25d", "pose3d")
NVIDIA34 = ("pelvis", "left_hip", "right_hip", "torso", "left_knee", "right_knee", "neck", "left_ankle", "right_ankle",
            "left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe", "left_heel", "right_heel", "nose",
            "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
            "right_elbow", "left_wrist", "right_wrist", "left_pinky_knuckle", "right_pinky_knuckle",
            "left_middle_tip", "right_middle_tip", "left_index_knuckle", "right_index_knuckle", "left_thumb_tip",
            "right_thumb_tip")
CMU18 = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip", "r_knee",
         "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
# NVIDIA keypoint -> {mobilenet (CMU) part: weight}; absent: confidence 0
FROM_CMU = {
    "pelvis": {"r_hip": 0.5, "l_hip": 0.5}, "left_hip": {"l_hip": 1}, "right_hip": {"r_hip": 1},
    "torso": {"r_hip": 0.25, "l_hip": 0.25, "neck": 0.5}, "left_knee": {"l_knee": 1}, "right_knee": {"r_knee": 1},
    "neck": {"neck": 1}, "left_ankle": {"l_ankle": 1}, "right_ankle": {"r_ankle": 1}, "nose": {"nose": 1},
    "left_eye": {"l_eye": 1}, "right_eye": {"r_eye": 1}, "left_ear": {"l_ear": 1}, "right_ear": {"r_ear": 1},
    "left_shoulder": {"l_shoulder": 1}, "right_shoulder": {"r_shoulder": 1}, "left_elbow": {"l_elbow": 1},
    "right_elbow": {"r_elbow": 1}, "left_wrist": {"l_wrist": 1}, "right_wrist": {"r_wrist": 1},
}
NECK34, PELVIS34 = NVIDIA34.index("neck"), NVIDIA34.index("pelvis")
MIN_RAY = 1e-3
GRID_W = WIDTH // 4  # 48 columns of the upsampled heatmaps


def _const(name: str, values, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _tables():
    weights = np.zeros((34, 19), np.float32)  # column 18: the zero row appended to the 18 parts
    sources = np.full((34, 3), 18, np.int64)
    for i, name in enumerate(NVIDIA34):
        parts = FROM_CMU.get(name, {})
        for j, (part, w) in enumerate(parts.items()):
            weights[i, CMU18.index(part)] = w
            sources[i, j] = CMU18.index(part)
        for j in range(len(parts), 3):
            sources[i, j] = sources[i, 0]
    return weights, sources


def build_bodypose3dnet_like(inner: onnx.ModelProto) -> onnx.ModelProto:
    """Wrap the mobilenet_thin ONNX model (input 256x192, NHWC) into BodyPose3DNet's I/O contract."""
    dims = [d.dim_value or d.dim_param for d in inner.graph.input[0].type.tensor_type.shape.dim]
    if inner.graph.input[0].name != MOBILENET_INPUT or dims[1:] != [HEIGHT, WIDTH, 3]:
        raise ValueError("not mobilenet_thin converted at %dx%d (input %s %s)"
                         % (HEIGHT, WIDTH, inner.graph.input[0].name, dims))
    weights, sources = _tables()
    n = helper.make_node
    pre = [
        n("Mul", ["input0", "b3d/255"], ["b3d/bgr"], name="b3d/unscale"),
        n("Transpose", ["b3d/bgr"], [MOBILENET_INPUT], name="b3d/to_nhwc", perm=[0, 2, 3, 1]),
    ]
    post = [
        # 2D: argmax of each upsampled heatmap
        n("Gather", [MOBILENET_OUTPUT, "b3d/parts"], ["b3d/heat_nhwc"], name="b3d/parts18", axis=3),
        n("Transpose", ["b3d/heat_nhwc"], ["b3d/heat"], name="b3d/to_nchw", perm=[0, 3, 1, 2]),
        n("Resize", ["b3d/heat", "", "b3d/scales"], ["b3d/heat2"], name="b3d/resize", mode="linear",
          coordinate_transformation_mode="half_pixel"),
        n("Reshape", ["b3d/heat2", "b3d/flat_shape"], ["b3d/flat"], name="b3d/flatten"),
        n("ArgMax", ["b3d/flat"], ["b3d/idx"], name="b3d/argmax", axis=2, keepdims=1),
        n("ReduceMax", ["b3d/flat"], ["b3d/conf18"], name="b3d/max", axes=[2], keepdims=1),
        n("Mod", ["b3d/idx", "b3d/grid_w"], ["b3d/col"], name="b3d/col"),
        n("Div", ["b3d/idx", "b3d/grid_w"], ["b3d/row"], name="b3d/row"),
        n("Cast", ["b3d/col"], ["b3d/colf"], name="b3d/colf", to=TensorProto.FLOAT),
        n("Cast", ["b3d/row"], ["b3d/rowf"], name="b3d/rowf", to=TensorProto.FLOAT),
        n("Add", ["b3d/colf", "b3d/half"], ["b3d/colc"], name="b3d/colc"),
        n("Add", ["b3d/rowf", "b3d/half"], ["b3d/rowc"], name="b3d/rowc"),
        n("Mul", ["b3d/colc", "b3d/stride"], ["b3d/x18"], name="b3d/x18"),
        n("Mul", ["b3d/rowc", "b3d/stride"], ["b3d/y18"], name="b3d/y18"),
        n("Concat", ["b3d/x18", "b3d/y18", "b3d/conf18"], ["b3d/p18"], name="b3d/p18", axis=2),
        n("Pad", ["b3d/p18", "b3d/pads"], ["b3d/p19"], name="b3d/zero_row"),
        # 18 -> 34
        n("Slice", ["b3d/p19", "b3d/s0", "b3d/s2", "b3d/s_axis"], ["b3d/xy19"], name="b3d/xy19"),
        n("Slice", ["b3d/p19", "b3d/s2", "b3d/s3", "b3d/s_axis"], ["b3d/c19"], name="b3d/c19"),
        n("MatMul", ["b3d/weights", "b3d/xy19"], ["b3d/xy34"], name="b3d/xy34"),
        n("Gather", ["b3d/c19", "b3d/sources"], ["b3d/c34_all"], name="b3d/c34_gather", axis=1),
        n("ReduceMin", ["b3d/c34_all"], ["b3d/c34"], name="b3d/c34", axes=[2], keepdims=0),
        n("Concat", ["b3d/xy34", "b3d/c34"], ["pose2d"], name="b3d/pose2d", axis=2),
        # to the frame: t_form_inv @ [x, y, 1]
        n("Mul", ["b3d/c34", "b3d/zero"], ["b3d/zeros"], name="b3d/zeros"),
        n("Add", ["b3d/zeros", "b3d/one"], ["b3d/ones"], name="b3d/ones"),
        n("Concat", ["b3d/xy34", "b3d/ones"], ["b3d/xy1"], name="b3d/xy1", axis=2),
        n("Transpose", ["t_form_inv"], ["b3d/t_t"], name="b3d/t_t", perm=[0, 2, 1]),
        n("MatMul", ["b3d/xy1", "b3d/t_t"], ["b3d/frame1"], name="b3d/frame1"),
        n("Slice", ["b3d/frame1", "b3d/s0", "b3d/s2", "b3d/s_axis"], ["b3d/frame_xy"], name="b3d/frame_xy"),
        n("Concat", ["b3d/frame_xy", "b3d/c34"], ["pose2d_org_img"], name="b3d/pose2d_org_img", axis=2),
        n("Concat", ["b3d/xy34", "b3d/zeros", "b3d/c34"], ["pose25d"], name="b3d/pose25d", axis=2),
        # 3D: rays k_inv @ frame point, one depth from the neck-to-pelvis length
        n("Transpose", ["k_inv"], ["b3d/k_t"], name="b3d/k_t", perm=[0, 2, 1]),
        n("MatMul", ["b3d/frame1", "b3d/k_t"], ["b3d/rays"], name="b3d/rays"),
        n("Gather", ["b3d/rays", "b3d/neck"], ["b3d/ray_neck"], name="b3d/ray_neck", axis=1),
        n("Gather", ["b3d/rays", "b3d/pelvis"], ["b3d/ray_pelvis"], name="b3d/ray_pelvis", axis=1),
        n("Sub", ["b3d/ray_neck", "b3d/ray_pelvis"], ["b3d/torso_ray"], name="b3d/torso_ray"),
        n("Slice", ["b3d/torso_ray", "b3d/s0", "b3d/s2", "b3d/s_axis"], ["b3d/torso_xy"], name="b3d/torso_xy"),
        n("Mul", ["b3d/torso_xy", "b3d/torso_xy"], ["b3d/torso_sq"], name="b3d/torso_sq"),
        n("ReduceSum", ["b3d/torso_sq", "b3d/axis2"], ["b3d/torso_r2"], name="b3d/torso_r2", keepdims=1),
        n("Sqrt", ["b3d/torso_r2"], ["b3d/torso_r"], name="b3d/torso_r"),
        n("Max", ["b3d/torso_r", "b3d/min_ray"], ["b3d/torso_rc"], name="b3d/torso_rc"),
        n("Gather", ["mean_limb_lengths", "b3d/limb2"], ["b3d/torso_len"], name="b3d/torso_len", axis=1),
        n("Unsqueeze", ["b3d/torso_len", "b3d/axis2"], ["b3d/torso_len3"], name="b3d/torso_len3"),
        n("Div", ["b3d/torso_len3", "b3d/torso_rc"], ["b3d/depth"], name="b3d/depth"),
        n("Mul", ["b3d/rays", "b3d/depth"], ["pose3d"], name="b3d/pose3d"),
    ]
    inits = [
        _const("b3d/255", 255.0, np.float32),
        _const("b3d/parts", list(range(18)), np.int64),
        _const("b3d/scales", [1.0, 1.0, 2.0, 2.0], np.float32),
        _const("b3d/flat_shape", [0, 18, -1], np.int64),
        _const("b3d/grid_w", GRID_W, np.int64),
        _const("b3d/half", 0.5, np.float32),
        _const("b3d/stride", 4.0, np.float32),
        _const("b3d/pads", [0, 0, 0, 0, 1, 0], np.int64),
        _const("b3d/s0", [0], np.int64), _const("b3d/s2", [2], np.int64), _const("b3d/s3", [3], np.int64),
        _const("b3d/s_axis", [2], np.int64), _const("b3d/axis2", [2], np.int64),
        _const("b3d/weights", weights, np.float32),
        _const("b3d/sources", sources, np.int64),
        _const("b3d/zero", 0.0, np.float32), _const("b3d/one", 1.0, np.float32),
        _const("b3d/neck", [NECK34], np.int64), _const("b3d/pelvis", [PELVIS34], np.int64),
        _const("b3d/min_ray", MIN_RAY, np.float32), _const("b3d/limb2", [2], np.int64),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        pre + list(inner.graph.node) + post, "bodypose3dnet_like",
        [helper.make_tensor_value_info("input0", f, ["N", 3, HEIGHT, WIDTH]),
         helper.make_tensor_value_info("k_inv", f, ["N", 3, 3]),
         helper.make_tensor_value_info("t_form_inv", f, ["N", 3, 3]),
         helper.make_tensor_value_info("scale_normalized_mean_limb_lengths", f, ["N", 36]),
         helper.make_tensor_value_info("mean_limb_lengths", f, ["N", 36])],
        [helper.make_tensor_value_info("pose2d", f, ["N", 34, 3]),
         helper.make_tensor_value_info("pose2d_org_img", f, ["N", 34, 3]),
         helper.make_tensor_value_info("pose25d", f, ["N", 34, 4]),
         helper.make_tensor_value_info("pose3d", f, ["N", 34, 3])],
        initializer=list(inner.graph.initializer) + inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="fallwatch.tests.bodypose3dnet_onnx")
    model.ir_version = inner.ir_version
    onnx.checker.check_model(model)
    return model


def write_bodypose3dnet_like(graph_opt_pb: Union[str, Path], path: Union[str, Path]) -> Path:
    """Build the stand-in from ``graph_opt.pb`` and write it to ``path``."""
    path = Path(path)
    path.write_bytes(build_bodypose3dnet_like(mobilenet_256x192(graph_opt_pb)).SerializeToString())
    return path
