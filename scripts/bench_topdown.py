"""Cost of the top-down path per frame against the number of people, beside one bottom-up pass.

Runs, on one real frame and within one process (so the ratios hold on a shared machine), the
top-down stages for N = 1, 2, 4, 8 crops of the person in it (crop making, one engine batch of N,
decode) through the PoseResNet stand-in (tests/poseresnet_onnx.py: mobilenet_thin behind
PoseResNet's I/O, so its per-crop cost is mobilenet's at 256x192, not ResNet-50's), and the
bottom-up pass of the default model at 368x432 (preprocess, engine, decode, parse), and one pass of the
person-detector stand-in (tests/person_detector_onnx.py: mobilenet_thin at 368x432 behind EfficientNMS
outputs; letterbox preprocess, engine, boxes back to the frame), the cost of ``topdown.detector`` per
frame it runs on. Medians of --repeats runs, ONNX Runtime CPU. Usage:

    PYTHONPATH=. nice python scripts/bench_topdown.py [--repeats 7] [--threads 0]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from edge.config import load_config  # noqa: E402
from edge.inference.crops import decode_heatmaps, make_crops, to_project  # noqa: E402
from edge.inference.engines.onnxruntime import OnnxRuntimeEngine  # noqa: E402
from edge.inference.model import PoseModel  # noqa: E402
from edge.inference.models import fetch_default_model  # noqa: E402
from edge.inference.specs import load_spec  # noqa: E402
from edge.pipeline import CameraPipeline  # noqa: E402
from edge.skeleton import skeleton_bbox  # noqa: E402
from edge.inference.detector import PersonDetector, load_detector_spec  # noqa: E402
from person_detector_onnx import write_detector_like  # noqa: E402
from poseresnet_onnx import write_poseresnet_like  # noqa: E402

CLIP = REPO.parent / "shared" / "data" / "gmdcsa24" / "subject1" / "ADL" / "10.mp4"


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    cap = cv2.VideoCapture(str(CLIP))
    cap.set(cv2.CAP_PROP_POS_MSEC, 1500)
    ok, frame = cap.read()
    if not ok:
        print("cannot read %s" % CLIP, file=sys.stderr)
        return 1
    models = REPO / "models"
    bottom = PoseModel(load_spec("openpose-mobilenet-thin"),
                       OnnxRuntimeEngine(fetch_default_model(models, (368, 432), log=None), args.threads),
                       (368, 432), "stretch")
    pipeline = CameraPipeline("bench", load_config(None, env={}), bottom, view_policy=False)
    person = pipeline.detect(frame).keypoints
    box = skeleton_bbox(person[:1], 1e-9)
    with tempfile.TemporaryDirectory() as tmp:
        standin = write_poseresnet_like(models / "openpose-mobilenet-thin" / "graph_opt.pb", Path(tmp) / "s.onnx")
        engine = OnnxRuntimeEngine(standin, args.threads)
        spec = load_spec(str(REPO / "tests" / "specs" / "poseresnet-standin.yaml"))
        rows = [("bottom-up, 1 pass 368x432 (any number of people)", median_ms(lambda: pipeline.detect(frame),
                                                                               args.repeats))]
        for n in (1, 2, 4, 8):
            boxes, rotations = np.repeat(box, n, axis=0), (0,) * n

            def topdown() -> None:
                batch, _ = make_crops(frame, spec, boxes, rotations)
                heat = engine.run(batch)["output"]
                to_project(spec, decode_heatmaps(spec, heat), 0.1)

            rows.append(("top-down, %d crop(s) 256x192 in one batch" % n, median_ms(topdown, args.repeats)))
        engine.close()
        detector = PersonDetector(load_detector_spec(REPO / "tests" / "specs" / "person-detector-standin.yaml"),
                                  OnnxRuntimeEngine(write_detector_like(models / "openpose-mobilenet-thin" /
                                                                        "graph_opt.pb", Path(tmp) / "d.onnx"),
                                                    args.threads))
        rows.append(("person detector stand-in, 1 pass 368x432", median_ms(lambda: detector.detect(frame),
                                                                           args.repeats)))
        detector.close()
    bottom.close()
    load = os.getloadavg()
    print("frame %dx%d, ONNX Runtime CPU, threads %s, median of %d; load average %.2f %.2f %.2f"
          % (frame.shape[1], frame.shape[0], args.threads or "default", args.repeats, *load))
    base = rows[0][1]
    for name, ms in rows:
        print("%-52s %8.1f ms  %5.2fx" % (name, ms, ms / base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
