"""A stand-in for NVIDIA TAO BodyPoseNet with its exact I/O contract, built from mobilenet_thin.

BodyPoseNet's weights are not redistributable, so tests check the ``bodyposenet`` spec with this
wrapper around the real mobilenet_thin ONNX model (converted at 288x384):

* input ``input_1:0``: float32 ``(1, 288, 384, 3)`` NHWC, RGB, ``(pixel - 128) / 256``;
* output ``heatmap_out/BiasAdd:0``: float32 ``(1, 36, 48, 19)`` NHWC, mobilenet channels 0..18
  (CMU order, background last);
* output ``conv2d_transpose_1/BiasAdd:0``: float32 ``(1, 144, 192, 38)`` NHWC, mobilenet PAF
  channels 19..56 in the same numbering, upsampled x4 by ONNX Resize (linear, half_pixel).

The graph: ``Mul(256) -> Add(128)`` undoes the normalisation, ``Gather([2, 1, 0], axis=3)``
turns RGB into the BGR mobilenet expects, then the unchanged mobilenet graph, then ``Slice`` for
the channel ranges and ``Transpose -> Resize -> Transpose`` for the PAFs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "input_1:0"
HEATMAPS = "heatmap_out/BiasAdd:0"
PAFS = "conv2d_transpose_1/BiasAdd:0"
MOBILENET_INPUT = "image"
MOBILENET_OUTPUT = "Openpose/concat_stage7"
HEIGHT, WIDTH = 288, 384


def _const(name: str, values, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def build_bodyposenet_like(mobilenet_onnx_288x384_path: Union[str, Path]) -> onnx.ModelProto:
    """Wrap the mobilenet_thin ONNX model (input 288x384) into BodyPoseNet's I/O contract."""
    inner = onnx.load(str(mobilenet_onnx_288x384_path))
    dims = [d.dim_value or d.dim_param for d in inner.graph.input[0].type.tensor_type.shape.dim]
    if inner.graph.input[0].name != MOBILENET_INPUT or dims[1:] != [HEIGHT, WIDTH, 3]:
        raise ValueError("%s is not mobilenet_thin converted at %dx%d (input %s %s)"
                         % (mobilenet_onnx_288x384_path, HEIGHT, WIDTH, inner.graph.input[0].name, dims))
    if [o.name for o in inner.graph.output] != [MOBILENET_OUTPUT]:
        raise ValueError("%s does not have the single output %s" % (mobilenet_onnx_288x384_path, MOBILENET_OUTPUT))
    hh, hw = HEIGHT // 8, WIDTH // 8

    pre = [
        helper.make_node("Mul", [INPUT, "bpn/scale"], ["bpn/rgb_0_255_scaled"], name="bpn/unnormalise_mul"),
        helper.make_node("Add", ["bpn/rgb_0_255_scaled", "bpn/offset"], ["bpn/rgb"], name="bpn/unnormalise_add"),
        helper.make_node("Gather", ["bpn/rgb", "bpn/rgb_to_bgr"], [MOBILENET_INPUT], name="bpn/rgb_to_bgr", axis=3),
    ]
    post = [
        helper.make_node("Slice", [MOBILENET_OUTPUT, "bpn/heat_start", "bpn/heat_end", "bpn/axis_c"],
                         [HEATMAPS], name="bpn/heatmaps"),
        helper.make_node("Slice", [MOBILENET_OUTPUT, "bpn/paf_start", "bpn/paf_end", "bpn/axis_c"],
                         ["bpn/paf_nhwc"], name="bpn/pafs"),
        helper.make_node("Transpose", ["bpn/paf_nhwc"], ["bpn/paf_nchw"], name="bpn/paf_to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Resize", ["bpn/paf_nchw", "", "bpn/scales"], ["bpn/paf_up_nchw"], name="bpn/paf_resize",
                         mode="linear", coordinate_transformation_mode="half_pixel"),
        helper.make_node("Transpose", ["bpn/paf_up_nchw"], [PAFS], name="bpn/paf_to_nhwc", perm=[0, 2, 3, 1]),
    ]
    inits = [
        _const("bpn/scale", [256.0], np.float32),
        _const("bpn/offset", [128.0], np.float32),
        _const("bpn/rgb_to_bgr", [2, 1, 0], np.int64),
        _const("bpn/heat_start", [0], np.int64), _const("bpn/heat_end", [19], np.int64),
        _const("bpn/paf_start", [19], np.int64), _const("bpn/paf_end", [57], np.int64),
        _const("bpn/axis_c", [3], np.int64),
        _const("bpn/scales", [1.0, 1.0, 4.0, 4.0], np.float32),
    ]
    graph = helper.make_graph(
        pre + list(inner.graph.node) + post, "bodyposenet_like",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, HEIGHT, WIDTH, 3])],
        [helper.make_tensor_value_info(HEATMAPS, TensorProto.FLOAT, [1, hh, hw, 19]),
         helper.make_tensor_value_info(PAFS, TensorProto.FLOAT, [1, hh * 4, hw * 4, 38])],
        initializer=list(inner.graph.initializer) + inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="fallwatch.tests.bodyposenet_onnx")
    model.ir_version = inner.ir_version
    onnx.checker.check_model(model)
    return model
