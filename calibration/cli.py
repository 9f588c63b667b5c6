"""``fallwatch-calibrate``: builds engines from an ONNX pose model and calibration images.

Not implemented in this version: the command says so and exits with status 2, so that no
script mistakes it for a working build.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fallwatch-calibrate",
        description="Build a TensorRT engine (or an ONNX Runtime INT8 model) from an ONNX pose model, "
                    "calibrated on images through fallwatch's own preprocessing. "
                    "NOT AVAILABLE YET in this version of fallwatch.")
    parser.parse_args(argv)
    print("fallwatch-calibrate: engine building and INT8 calibration are not part of this version yet; "
          "use engine.backend: onnxruntime with the FP32 ONNX model", file=sys.stderr)
    return 2
