#!/usr/bin/env python3
"""FP32 vs INT8 inference time of the pose model on ONNX Runtime (CPU), same frames, interleaved.

Each round runs every model once on the next frame, alternating which goes first, so load from
other processes hits all models alike; reports the median and the 10th/90th percentiles per model
over ``--runs`` rounds after ``--warmup`` rounds. Example (figures in BENCHMARKS.md):

    python scripts/bench_engine.py --model models/openpose-mobilenet-thin/mobilenet_thin_368x432.onnx \\
        --model models/openpose-mobilenet-thin/mobilenet_thin_368x432_int8.onnx \\
        --images ../shared/data/images --runs 60
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, type=Path, help="an ONNX model (repeat)")
    parser.add_argument("--images", type=Path, required=True, help="folder of images (frames to run on)")
    parser.add_argument("--spec", default="openpose-mobilenet-thin")
    parser.add_argument("--height", type=int, default=368)
    parser.add_argument("--width", type=int, default=432)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    import cv2
    import onnxruntime

    from calibration.frames import image_files
    from edge.inference.engines.onnxruntime import OnnxRuntimeEngine
    from edge.inference.preprocess import preprocess
    from edge.inference.specs import load_spec

    spec = load_spec(args.spec)
    frames = [preprocess(cv2.imread(str(p)), spec, (args.height, args.width))[0] for p in image_files(args.images)]
    engines = [OnnxRuntimeEngine(m, threads=args.threads) for m in args.model]
    times: Dict[int, List[float]] = {i: [] for i in range(len(engines))}
    for round_ in range(args.warmup + args.runs):
        frame = frames[round_ % len(frames)]
        order = list(range(len(engines)))
        if round_ % 2:
            order.reverse()
        for i in order:
            start = time.perf_counter()
            engines[i].run(frame)
            if round_ >= args.warmup:
                times[i].append((time.perf_counter() - start) * 1000.0)
    result = {"cpu": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__,
              "runs": args.runs, "frames": len(frames), "models": []}
    base = float(np.median(times[0]))
    print("%-60s %10s %8s %8s %8s" % ("model", "median ms", "p10", "p90", "vs first"))
    for i, model in enumerate(args.model):
        t = np.asarray(times[i])
        row = {"model": str(model), "median_ms": round(float(np.median(t)), 1),
               "p10_ms": round(float(np.percentile(t, 10)), 1), "p90_ms": round(float(np.percentile(t, 90)), 1)}
        result["models"].append(row)
        print("%-60s %10.1f %8.1f %8.1f %7.2fx" % (str(model)[-60:], row["median_ms"], row["p10_ms"], row["p90_ms"],
                                                   base / row["median_ms"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for engine in engines:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
