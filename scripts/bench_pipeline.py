#!/usr/bin/env python3
"""The daemon's pipeline against the bare engine on the same frames, per-stage times, and memory over time.

1. Throughput, interleaved in rounds so that load from other processes hits both alike:
   *engine* runs ``engine.run`` back to back on frames preprocessed beforehand (nothing else);
   *pipeline* runs the daemon (edge.daemon.Daemon: schedule + preprocess, engine, post threads)
   fed by a camera that always has a new frame ready (``--source memory``: decoded frames kept in
   memory, so capture costs nothing, as with a hardware decoder; ``--source file``: the real
   capture thread reading the video file in a loop, decoding on the CPU, paced at its frame rate).
   Reports frames per second of each and their ratio (goal: pipeline >= 0.9 x engine).
2. Median and 90th percentile of every stage, from the daemon's own timers.
3. Resident memory: the pipeline keeps running for ``--soak-s`` seconds; RSS is sampled every
   10 s and reported at 1 minute and at the end.

Example (figures in BENCHMARKS.md, section Pipeline):

    python scripts/bench_pipeline.py --video ../shared/data/gmdcsa24/subject1/ADL/10.mp4 --soak-s 600
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.capture.sources import CameraSource, CameraStatus, Frame  # noqa: E402


class MemorySource:
    """A camera that always has the next frame ready (the CameraSource interface the daemon uses)."""

    def __init__(self, camera: Any, settings: Any, clock: Any, on_frame: Any = None) -> None:
        self.camera, self.name, self._clock = camera, camera.name, clock
        self.images: List[np.ndarray] = []
        self._index = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float) -> bool:
        return True

    def check_stall(self) -> bool:
        return False

    @property
    def ended(self) -> bool:
        return False

    @property
    def pending(self) -> bool:
        return True

    def take(self) -> Optional[Frame]:
        with self._lock:
            index = self._index
            self._index += 1
        return Frame(self.name, index, self._clock(), time.time(), self.images[index % len(self.images)])

    def status(self) -> CameraStatus:
        return CameraStatus(self.name, "memory", "streaming", self._index, self._index, 0, 0, None, 0.0,
                            tuple(self.images[0].shape[1::-1]))


class CountingSinks:
    """Outputs that only count frames, and wake whoever waits for a count (no polling)."""

    def __init__(self) -> None:
        self.frames = 0
        self.changed = threading.Condition()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.frames >= count, timeout)

    def emit(self, event: Dict[str, Any]) -> None:
        pass

    def frame(self, record: Any) -> None:
        with self.changed:
            self.frames += 1
            self.changed.notify_all()

    def stats(self, stats: Dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True, help="a real video (its first --frames frames are used)")
    parser.add_argument("--config", type=Path, default=None, help="configuration (default: built-in defaults)")
    parser.add_argument("--frames", type=int, default=60, help="frames decoded and cycled through")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved engine/pipeline rounds")
    parser.add_argument("--per-round", type=int, default=30, help="frames measured per round and mode")
    parser.add_argument("--source", choices=("memory", "file"), default="memory")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: config)")
    parser.add_argument("--soak-s", type=float, default=600, help="keep the pipeline running this long for memory")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    import onnxruntime

    from edge.config import load_config
    from edge.daemon import Daemon, rss_bytes
    from edge.inference.model import open_pose_model
    from edge.inference.preprocess import preprocess

    config = load_config(args.config)
    if args.threads is not None:
        config = replace(config, engine=replace(config.engine, threads=args.threads))
    camera = replace(config.cameras[0], name="bench", uri=str(args.video.resolve()), loop=True, max_fps=0)
    config = replace(config, cameras=(camera,), daemon=replace(config.daemon, stats_interval_s=0))
    from edge.capture.video import VideoReader

    images = []
    with VideoReader(args.video) as reader:
        while len(images) < args.frames:
            image = reader.read()
            if image is None:
                break
            images.append(image)
    if not images:
        raise SystemExit("cannot read frames from %s" % args.video)
    model = open_pose_model(config)
    tensors = [preprocess(img, model.spec, model.input_hw, model.resize)[0] for img in images]
    engine_fps: List[float] = []
    pipeline_fps: List[float] = []

    def engine_round(n: int) -> float:
        start = time.perf_counter()
        for k in range(n):
            model.engine.run(tensors[k % len(tensors)])
        return n / (time.perf_counter() - start)

    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    def factory(cam: Any, settings: Any, clock: Any, on_frame: Any) -> Any:
        if args.source == "file":
            return CameraSource(cam, settings, clock=clock, on_frame=on_frame)
        source = MemorySource(cam, settings, clock, on_frame)
        source.images = images
        return source

    sinks = CountingSinks()
    daemon = Daemon(config, model, sinks, clock, ids=itertools.count(1), source_factory=factory)
    gate = threading.Semaphore(0)  # the pipeline runs only during its rounds and the soak
    original_take = daemon.sources[0].take

    def gated_take() -> Optional[Frame]:
        if not gate.acquire(timeout=0.05):
            return None
        frame = original_take()
        if frame is None:
            gate.release()
        return frame

    daemon.sources[0].take = gated_take  # type: ignore[method-assign]

    def pipeline_round(n: int) -> float:
        done = sinks.frames
        start = time.perf_counter()
        for _ in range(n):
            gate.release()
        while not sinks.wait_for(done + n, 1.0):
            if daemon.fatal:
                raise SystemExit("the pipeline failed: %s" % daemon.fatal)
        return n / (time.perf_counter() - start)

    daemon.start()
    try:
        if args.source == "file":
            time.sleep(1.0)  # the capture thread opens the file
        engine_round(5)
        pipeline_round(5)
        for r in range(args.rounds):
            order = (engine_round, pipeline_round) if r % 2 == 0 else (pipeline_round, engine_round)
            for fn in order:
                (engine_fps if fn is engine_round else pipeline_fps).append(fn(args.per_round))
            print("round %d: engine %.2f fps, pipeline %.2f fps" % (r + 1, engine_fps[-1], pipeline_fps[-1]),
                  flush=True)
        stages = daemon.timer.summary()
        soak_stages: Dict[str, Any] = {}
        rss: List[Dict[str, float]] = []
        if args.soak_s > 0:
            daemon.sources[0].take = original_take  # type: ignore[method-assign]  # no gate: full speed
            soak_start = time.monotonic()
            next_sample = 0.0
            while True:
                elapsed = time.monotonic() - soak_start
                if elapsed >= next_sample or elapsed >= args.soak_s:
                    next_sample += 10
                    rss.append({"t_s": round(elapsed, 1), "rss_mb": round(rss_bytes() / 2 ** 20, 1),
                                "frames": daemon.processed["bench"]})
                    print("soak %5.0f s: rss %.1f MB, %d frames" % (elapsed, rss[-1]["rss_mb"], rss[-1]["frames"]),
                          flush=True)
                if elapsed >= args.soak_s or daemon.fatal:
                    break
                time.sleep(0.5)
            soak_stages = daemon.timer.summary()
    finally:
        daemon.stop()
        model.close()
    e, p = float(np.median(engine_fps)), float(np.median(pipeline_fps))
    at_1min = next((s for s in rss if s["t_s"] >= 60), None)
    result = {
        "cpu": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__,
        "video": str(args.video), "frame_size": list(images[0].shape[1::-1]), "source": args.source,
        "engine_threads": config.engine.threads, "rounds": args.rounds, "frames_per_round": args.per_round,
        "engine_fps_median": round(e, 2), "pipeline_fps_median": round(p, 2), "ratio": round(p / e, 3),
        "engine_fps_rounds": [round(v, 2) for v in engine_fps], "pipeline_fps_rounds": [round(v, 2) for v in pipeline_fps],
        "stages": stages, "soak_stages": soak_stages, "rss": rss,
        "rss_at_1min_mb": at_1min["rss_mb"] if at_1min else None, "rss_at_end_mb": rss[-1]["rss_mb"] if rss else None,
    }
    print("engine %.2f fps, pipeline %.2f fps: ratio %.3f" % (e, p, p / e))
    print("%-12s %10s %8s" % ("stage", "median ms", "p90"))
    for name, s in stages.items():
        print("%-12s %10.2f %8.2f" % (name, s["median_ms"], s["p90_ms"]))
    if rss:
        print("rss at %.0f s: %s MB; at %.0f s: %s MB" % (at_1min["t_s"] if at_1min else 0,
                                                       result["rss_at_1min_mb"], rss[-1]["t_s"], rss[-1]["rss_mb"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
