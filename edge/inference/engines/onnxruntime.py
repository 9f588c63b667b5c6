"""ONNX Runtime CPU backend: the engine off a Jetson (laptops, CI, x86 servers)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional

import numpy as np

from edge.inference.engines.base import Engine, EngineError

MODEL_FIX = ("run `fallwatch model fetch` (it fetches and converts the default model again when its file is "
             "missing or damaged), or point model.onnx at a good ONNX file")


class OnnxRuntimeEngine(Engine):
    """Runs an ONNX model on the CPU. A model with a fixed batch of 1 still takes any batch
    (the views of one frame), run one item at a time."""

    def __init__(self, model_path: Path, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineError("onnxruntime is not installed: pip install 'fallwatch[cpu]' "
                              "(or onnxruntime) to use engine.backend: onnxruntime") from None
        if not Path(model_path).is_file():
            raise EngineError("model file %s does not exist" % model_path, MODEL_FIX, joint="; ")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            reason = " ".join(str(exc).split()).rstrip(".")
            raise EngineError("cannot load the model %s with onnxruntime (damaged, truncated or not an ONNX "
                              "model): %s" % (model_path, reason), MODEL_FIX, joint="; ") from None
        inputs = self._session.get_inputs()
        # the image is the 4-D input; a single_person_3d model has others (camera geometry, constants)
        inp = next((i for i in inputs if len(i.shape or ()) == 4), inputs[0])
        self.input_name = inp.name
        self.extra_inputs = {i.name: tuple(d if isinstance(d, int) and d > 0 else -1 for d in (i.shape or ()))
                             for i in inputs if i.name != inp.name}
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        self.output_shapes = {o.name: tuple(d if isinstance(d, int) and d > 0 else -1 for d in (o.shape or ()))
                              for o in self._session.get_outputs()}
        self._fixed_batch = self.input_shape[0] if self.input_shape and self.input_shape[0] > 0 else 0

    def run(self, batch: np.ndarray, extra: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
        """``extra``: the model's other inputs by name, batch first like ``batch`` (see ``extra_inputs``)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        feeds = {n: np.ascontiguousarray(v, dtype=np.float32) for n, v in (extra or {}).items()}
        missing = [n for n in self.extra_inputs if n not in feeds]
        if missing:
            raise EngineError("the model also takes %s, which nothing fed" % ", ".join(missing))
        expected = self.input_shape[1:]
        if batch.ndim != len(self.input_shape) or any(e > 0 and e != g for e, g in zip(expected, batch.shape[1:])):
            raise EngineError("input of shape %s does not fit the model's %s %s"
                              % (batch.shape, self.input_name, self.input_shape))
        if self._fixed_batch and batch.shape[0] != self._fixed_batch:
            parts = [self._session.run(None, dict({n: v[i:i + 1] for n, v in feeds.items()},
                                                  **{self.input_name: batch[i:i + 1]}))
                     for i in range(batch.shape[0])]
            return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(self.output_names)}
        feeds[self.input_name] = batch
        return dict(zip(self.output_names, self._session.run(None, feeds)))

    def close(self) -> None:
        self._session = None
