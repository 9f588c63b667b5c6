"""Cross-layer equalisation of depthwise-separable blocks, before INT8 quantisation.

INT8 quantises each activation tensor with one scale, but in mobilenet_thin the channels of one
tensor span very different ranges (depthwise outputs from +-1 to +-300; ReLU outputs from 0..0.5 to
0..30): a single scale wipes out the small channels, and the error compounds over ~70 layers
(measured: the INT8 model then finds a third of the people FP32 finds). Two exact rewrites fix it
(Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", 2019,
section 4.1, here with ranges measured on the calibration frames):

* pointwise Conv -> ReLU -> depthwise Conv: dividing output channel ``c`` of the first convolution
  (weights and bias) by ``s_c > 0`` divides the ReLU output by ``s_c`` (ReLU is positively
  homogeneous); multiplying the depthwise weights of channel ``c`` by ``s_c`` restores the result;
* depthwise Conv (no bias) -> Conv: divide the depthwise channel ``c`` by ``s_c``, multiply the next
  convolution's input channel ``c`` by ``s_c``.

``s_c = (r_c / max r)^strength`` with ``r_c`` the channel's largest |value| over the frames;
``strength`` 1 gives every channel the same range, 0.5 splits the difference between activations
and weights (which per-channel weight quantisation tolerates better). Dead channels keep s = 1.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Tuple

import numpy as np

DEAD_CHANNEL = 1e-3  # a channel whose range is below this fraction of the largest keeps its scale


def _attr(node, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def _consumers(model) -> Dict[str, List[object]]:
    consumers: Dict[str, List[object]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def equalizable(model) -> List[Tuple[str, object, object]]:
    """``(tensor, producer Conv, consumer Conv)`` for every boundary both rewrites apply to; the tensor
    is the one whose channels get rescaled (a ReLU output or a depthwise output)."""
    consumers = _consumers(model)
    weights = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        depthwise = _attr(node, "group", 1) > 1
        users = consumers.get(node.output[0], [])
        if depthwise and len(node.input) == 2 and len(users) == 1 and users[0].op_type == "Conv" \
                and _attr(users[0], "group", 1) == 1 and users[0].input[0] == node.output[0] \
                and users[0].input[1] in weights and node.output[0] not in outputs:
            found.append((node.output[0], node, users[0]))
        if not depthwise and len(users) == 1 and users[0].op_type == "Relu" and node.output[0] not in outputs:
            relu = users[0]
            after = consumers.get(relu.output[0], [])
            if len(after) == 1 and after[0].op_type == "Conv" and _attr(after[0], "group", 1) > 1 \
                    and after[0].input[0] == relu.output[0] and after[0].input[1] in weights \
                    and relu.output[0] not in outputs and (len(node.input) < 3 or node.input[2] in weights):
                found.append((relu.output[0], node, after[0]))
    return found


def channel_ranges(model, batches: Iterable[Any], input_name: str) -> Dict[str, np.ndarray]:
    """Largest |value| per channel of every tensor :func:`equalizable` rescales, over ``batches``."""
    import onnx
    import onnxruntime as ort

    names = [t for t, _, _ in equalizable(model)]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: Dict[str, np.ndarray] = {}
    for batch in batches:
        feed = batch if isinstance(batch, dict) else {input_name: batch}  # dict: every input of a multi-input model
        for name, value in zip(names, session.run(names, feed)):
            peak = np.abs(value).max(axis=(0, 2, 3))
            ranges[name] = peak if name not in ranges else np.maximum(ranges[name], peak)
    return ranges


def equalize(model, ranges: Dict[str, np.ndarray], strength: float = 1.0) -> int:
    """Rescale every boundary of :func:`equalizable` in place from ``ranges``; returns how many."""
    from onnx import numpy_helper

    weights = {i.name: i for i in model.graph.initializer}

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(weights[name]).astype(np.float32)

    def put(name: str, value: np.ndarray) -> None:
        weights[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    done = 0
    for tensor, first, second in equalizable(model):
        r = ranges.get(tensor)
        if r is None or not np.all(np.isfinite(r)) or r.max() <= 0:
            continue
        scale = np.where(r > DEAD_CHANNEL * r.max(), (r / r.max()) ** strength, 1.0).astype(np.float32)
        w1, w2 = get(first.input[1]), get(second.input[1])
        if w1.shape[0] != scale.size:
            continue
        if _attr(second, "group", 1) > 1:  # first -> ReLU -> depthwise second
            if w2.shape[0] != scale.size or w2.shape[1] != 1:
                continue
            put(second.input[1], w2 * scale[:, None, None, None])
        else:  # depthwise first -> second
            if w2.shape[1] != scale.size:
                continue
            put(second.input[1], w2 * scale[None, :, None, None])
        put(first.input[1], w1 / scale[:, None, None, None])
        if len(first.input) > 2:
            put(first.input[2], get(first.input[2]) / scale)
        done += 1
    return done
