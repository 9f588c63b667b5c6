"""Off the Jetson: an INT8 ONNX model by ONNX Runtime's static quantisation, from the same
calibration frames (same preprocess) as the TensorRT path.

Choices (measured on mobilenet_thin, see BENCHMARKS.md "Engines: FP32 vs INT8"): QDQ format
(ONNX Runtime fuses QuantizeLinear/DequantizeLinear pairs around Conv into integer QLinearConv
kernels on the CPU), uint8 activations with int8 per-channel weights (the U8S8 kernels of MLAS),
depthwise/pointwise equalisation first (:mod:`calibration.equalize`), and the nodes named by
``keep_float`` (regular expressions on node names and outputs) left in float: for mobilenet_thin its
refinement stages and first six backbone blocks (:data:`KEEP_FLOAT_BY_SPEC`).
"""
from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from calibration.data import TensorSet
from calibration.frames import sample_indices
from calibration.progress import Progress, counted

log = logging.getLogger("fallwatch.calibration")

CALIBRATORS = ("entropy", "minmax")
EQUALIZE_MAX_FRAMES = 32  # channel ranges for equalisation are measured on at most this many frames
# Nodes left in float, by model spec (regular expressions on node names and output names). INT8's
# per-tensor activation noise is amplified by mobilenet_thin enough to flip its borderline people
# (measured, BENCHMARKS.md "Engines: FP32 vs INT8"): all INT8 finds a third of FP32's people, the
# whole MobileNet backbone in INT8 still misses 7% of them; with the six refinement stages and the
# first six backbone blocks in float, 99% of people agree (mean OKS 0.97). Other models are quantised
# whole unless --keep-float says otherwise.
KEEP_FLOAT_BY_SPEC: Dict[str, Tuple[str, ...]] = {
    "openpose-mobilenet-thin": (r"^Openpose/", r"(^|/)Conv2d_[0-5][_/]"),
}


class QuantizeError(RuntimeError):
    """ONNX Runtime's quantisation failed; the message says what to check."""


@dataclass(frozen=True)
class OrtInt8Options:
    calibrator: str = "minmax"  # minmax | entropy
    per_channel: bool = True
    equalize: bool = True
    keep_float: Tuple[str, ...] = ()
    moving_average: bool = False  # minmax: average the batches' min/max instead of the extremes
    equalize_strength: float = 0.5
    quant_format: str = "qdq"  # qdq | qoperator


def _reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds ONNX Runtime's calibrator from a :class:`TensorSet`, batch by batch, with a progress bar."""

        def __init__(self, data: TensorSet, input_name: str, batch_size: int, progress: bool) -> None:
            bar = Progress("calibrating (onnxruntime)", len(data)) if progress else None
            self._feeds = counted(data.feeds(batch_size, input_name), bar)

        def get_next(self) -> Optional[Dict[str, object]]:
            return next(self._feeds, None)  # every input of the model by name (several for a 3D model)

    return Reader


def kept_float(model, patterns: Sequence[str]) -> Tuple[str, ...]:
    """Names of the nodes whose name or first output matches one of ``patterns``."""
    compiled = [re.compile(p) for p in patterns]
    return tuple(n.name for n in model.graph.node
                 if any(c.search(name) for c in compiled for name in (n.name, n.output[0] if n.output else "")))


def quantize(model_path: Path, out_path: Path, data: TensorSet, input_name: str, options: OrtInt8Options,
             batch_size: int = 1, progress: bool = True) -> Dict[str, object]:
    """Write the INT8 model of ``model_path`` to ``out_path`` (atomically); returns what was done."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from calibration.equalize import channel_ranges, equalize
    from edge.inference.models import atomic_write

    if options.calibrator not in CALIBRATORS:
        raise ValueError("calibrator %r: use one of %s" % (options.calibrator, ", ".join(CALIBRATORS)))
    started = time.monotonic()
    model = onnx.load(str(model_path))
    for node in model.graph.node:  # ONNX Runtime's quantiser needs node names to exclude nodes
        if not node.name:
            node.name = node.output[0]
    equalized = 0
    if options.equalize:
        sample = data.subset(sample_indices(len(data), EQUALIZE_MAX_FRAMES))
        log.info("measuring channel ranges on %d frames for equalisation", len(sample))
        equalized = equalize(model, channel_ranges(model, sample.feeds(batch_size, input_name), input_name),
                             options.equalize_strength)
        log.info("equalised %d depthwise/pointwise pairs", equalized)
    exclude = kept_float(model, options.keep_float)
    method = CalibrationMethod.Entropy if options.calibrator == "entropy" else CalibrationMethod.MinMax
    extra: Dict[str, object] = {"CalibMaxIntermediateOutputs": 16}
    if options.calibrator == "minmax" and options.moving_average:
        extra["CalibMovingAverage"] = True
    with tempfile.TemporaryDirectory(prefix="fallwatch-quant-", dir=str(Path(out_path).parent)) as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(prepared))
        try:
            quantize_static(str(prepared), str(quantized), _reader_class()(data, input_name, batch_size, progress),
                            quant_format=QuantFormat.QOperator if options.quant_format == "qoperator"
                            else QuantFormat.QDQ, per_channel=options.per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, nodes_to_exclude=list(exclude), extra_options=extra)
        except Exception as exc:  # onnxruntime raises many types here
            raise QuantizeError("ONNX Runtime could not quantise %s: %s" % (model_path, exc)) from None
        atomic_write(out_path, quantized.read_bytes())
    return {"calibrator": options.calibrator, "per_channel": options.per_channel, "equalized_pairs": equalized,
            "kept_float_nodes": len(exclude),
            "format": "%s, uint8 activations, int8 weights" % options.quant_format.upper(),
            "calibration_frames": len(data), "seconds": round(time.monotonic() - started, 1)}
