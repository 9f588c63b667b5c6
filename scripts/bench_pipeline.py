#!/usr/bin/env python3
"""The daemon's pipeline against the bare engine on the same frames, per-stage times, and memory over time.

1. Throughput, in rounds so that load from other processes hits both alike: each round runs
   *pipeline*, the daemon (edge.daemon.Daemon: schedule + preprocess, engine, post threads) on
   ``--per-round`` frames from a camera that always has a new frame ready (``--source memory``:
   decoded frames kept in memory, so capture costs nothing, as with a hardware decoder; ``--source
   file``: the real capture thread reading the video file in a loop, decoding on the CPU, paced at
   its frame rate), then *engine*, ``engine.run`` back to back on the very batches the pipeline
   just ran (the same frames, and with ``views.policy: auto`` the same views per frame),
   preprocessed beforehand (nothing else). Reports frames per second of each, their ratio (goal:
   pipeline >= 0.95 x engine) as the ratio of medians, the median of the rounds' ratios and the
   ratio of total throughput, and what the engine did inside the pipeline: its share of the wall
   time spent in ``engine.run`` (busy; the rest it idled), its mean call, the views per frame, and
   the engine calls' share of the CPU time the whole process used (with ``--threads 1`` ONNX
   Runtime computes in the calling thread, so its thread CPU time is the engine's): when other
   jobs keep every core busy, the pipeline's own work (preprocess, parse, ...) is paid from the
   same CPU, so this share is what the ratio tends to on a saturated machine, while busy is what
   it tends to with a core to spare.
2. Median and 90th percentile of every stage, from the daemon's own timers.
3. Resident memory: the pipeline keeps running for ``--soak-s`` seconds; RSS is sampled every
   10 s and reported at 1 minute and at the end.

Example (figures in BENCHMARKS.md, section Pipeline):

    python scripts/bench_pipeline.py --video ../shared/data/gmdcsa24/subject1/Fall/13.mp4 --threads 1 \\
        --rounds 12 --per-round 20 --soak-s 0
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
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.capture.sources import CameraSource, CameraStatus, Frame  # noqa: E402


class MemorySource:
    """A camera that always has the next frame ready (the CameraSource interface the daemon uses)."""

    def __init__(self, camera: Any, settings: Any, clock: Any, on_frame: Any = None) -> None:
        self.camera, self.name, self._clock = camera, camera.name, clock
        self.on_frame = on_frame  # the daemon's wake-up call: a camera makes it when a frame arrives
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
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="an A/B test inside the run: every other round runs with this GIL switch interval (s) "
                             "instead of Python's default; the ratio is reported for each half")
    args = parser.parse_args()

    import onnxruntime

    from edge.config import load_config
    from edge.daemon import Daemon, rss_bytes
    from edge.inference.model import open_pose_model
    from edge.inference.preprocess import preprocess
    from edge.inference.views import make_views

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
    # The engine alone runs the very batches the pipeline ran in its latest round (the same frames
    # and, with views.policy auto, the same views per frame), made again beforehand with the same
    # preprocess (the pipeline's own go back to its pool); before the first round, upright views.
    batches: List[np.ndarray] = [preprocess(img, model.spec, model.input_hw, model.resize)[0] for img in images]
    engine_fps: List[float] = []
    pipeline_fps: List[float] = []
    calls: List[Tuple[float, float, int, float]] = []  # (start, end, views, CPU s) of every engine call in a round
    seen: List[Tuple[np.ndarray, Tuple[int, ...]]] = []  # (image, rotations) of each frame of a pipeline round
    run = model.engine.run
    recording = [True]  # off during the soak (nothing may grow there)

    def timed_run(batch: np.ndarray) -> Dict[str, np.ndarray]:
        start, cpu = time.perf_counter(), time.thread_time()  # ONNX Runtime with 1 thread runs in this one
        outputs = run(batch)
        if recording:
            calls.append((start, time.perf_counter(), batch.shape[0], time.thread_time() - cpu))
        return outputs

    model.engine.run = timed_run  # type: ignore[method-assign]
    rounds: List[Dict[str, Any]] = []

    def note(mode: str, n: int, wall: float, cpu: float) -> float:
        """Frames/s of the round, and what the engine did in it: its share of the wall time spent
        inside engine.run (busy), the mean call, the views per frame, and the engine calls' share of
        the CPU time the whole process used in the round (``cpu``; with ``--threads 1`` only)."""
        busy = sum(c[1] - c[0] for c in calls)
        rounds.append({"mode": mode, "fps": round(n / wall, 3), "busy": round(busy / wall, 4),
                       "call_ms": round(1000 * busy / max(len(calls), 1), 2),
                       "views_per_frame": round(sum(c[2] for c in calls) / max(len(calls), 1), 3),
                       "engine_cpu_share": round(sum(c[3] for c in calls) / max(cpu, 1e-9), 4)})
        return n / wall

    def engine_round(n: int) -> float:
        del calls[:]
        jobs = list(batches)
        start, cpu = time.perf_counter(), time.process_time()
        for k in range(n):
            run_start, run_cpu = time.perf_counter(), time.thread_time()
            run(jobs[k % len(jobs)])
            calls.append((run_start, time.perf_counter(), jobs[k % len(jobs)].shape[0], time.thread_time() - run_cpu))
        return note("engine", n, time.perf_counter() - start, time.process_time() - cpu)

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
    pipeline = daemon.pipelines["bench"]
    prepare = pipeline.prepare

    def recorded_prepare(frame: Frame, rotations: Any = None, pool: Any = None) -> Any:
        job = prepare(frame, rotations) if pool is None else prepare(frame, rotations, pool)
        if recording:
            seen.append((frame.image, job.rotations))
        return job

    pipeline.prepare = recorded_prepare  # type: ignore[method-assign]

    def pipeline_round(n: int) -> float:
        done = sinks.frames
        del calls[:], seen[:]
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            gate.release()
        if args.source == "memory":
            daemon.sources[0].on_frame()  # as a camera does when a frame arrives (else the scheduler sleeps a tick)
        while not sinks.wait_for(done + n, 1.0):
            if daemon.fatal:
                raise SystemExit("the pipeline failed: %s" % daemon.fatal)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        batches[:] = [make_views(image, model.spec, model.input_hw, model.resize, rotations, model.light)[0]
                      for image, rotations in seen[-n:]]
        return note("pipeline", n, wall, cpu)

    daemon.start()
    try:
        if args.source == "file":
            time.sleep(1.0)  # the capture thread opens the file
        pipeline_round(5)
        engine_round(5)
        del rounds[:]
        default_interval = sys.getswitchinterval()
        for r in range(args.rounds):
            interval = args.switch_interval if args.switch_interval and r % 2 else default_interval
            sys.setswitchinterval(interval)
            # the pipeline first, then the engine alone on the batches it just ran
            pipeline_fps.append(pipeline_round(args.per_round))
            engine_fps.append(engine_round(args.per_round))
            sys.setswitchinterval(default_interval)
            p_, e_ = rounds[-2:]
            p_["switch_interval"] = interval
            print("round %d: engine %.2f fps (call %.1f ms), pipeline %.2f fps (call %.1f ms, engine busy %.1f%%, "
                  "%.1f%% of the CPU, %.2f views/frame); ratio %.3f"
                  % (r + 1, e_["fps"], e_["call_ms"], p_["fps"], p_["call_ms"], 100 * p_["busy"],
                     100 * p_["engine_cpu_share"], p_["views_per_frame"], p_["fps"] / e_["fps"]), flush=True)
        stages = daemon.timer.summary()
        soak_stages: Dict[str, Any] = {}
        rss: List[Dict[str, float]] = []
        if args.soak_s > 0:
            recording.clear()
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
    per_round = [pf / ef for pf, ef in zip(pipeline_fps, engine_fps)]
    # every round has the same number of frames: total throughput is frames over summed times
    total = sum(1.0 / v for v in engine_fps) / sum(1.0 / v for v in pipeline_fps)
    busy = [r["busy"] for r in rounds if r["mode"] == "pipeline"]
    cpu_share = [r["engine_cpu_share"] for r in rounds if r["mode"] == "pipeline"]
    at_1min = next((s for s in rss if s["t_s"] >= 60), None)
    result = {
        "cpu": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__,
        "video": str(args.video), "frame_size": list(images[0].shape[1::-1]), "source": args.source,
        "engine_threads": config.engine.threads, "rounds": args.rounds, "frames_per_round": args.per_round,
        "engine_fps_median": round(e, 2), "pipeline_fps_median": round(p, 2), "ratio": round(p / e, 3),
        "ratio_median_of_rounds": round(float(np.median(per_round)), 3), "ratio_total": round(total, 3),
        "pipeline_engine_busy_median": round(float(np.median(busy)), 4), "round_details": rounds,
        "pipeline_engine_cpu_share_median": round(float(np.median(cpu_share)), 4),
        "views_per_frame": round(float(np.mean([r["views_per_frame"] for r in rounds if r["mode"] == "pipeline"])), 3),
        "engine_fps_rounds": [round(v, 2) for v in engine_fps], "pipeline_fps_rounds": [round(v, 2) for v in pipeline_fps],
        "stages": stages, "soak_stages": soak_stages, "rss": rss,
        "rss_at_1min_mb": at_1min["rss_mb"] if at_1min else None, "rss_at_end_mb": rss[-1]["rss_mb"] if rss else None,
    }
    print("engine %.2f fps, pipeline %.2f fps (medians): ratio %.3f; median of the rounds' ratios %.3f; total "
          "throughput ratio %.3f; in the pipeline (medians) the engine is busy %.1f%% of the time and uses %.1f%% "
          "of the process's CPU; %.2f views/frame"
          % (e, p, p / e, result["ratio_median_of_rounds"], total, 100 * result["pipeline_engine_busy_median"],
             100 * result["pipeline_engine_cpu_share_median"], result["views_per_frame"]))
    print("%-12s %10s %8s" % ("stage", "median ms", "p90"))
    for name, s in stages.items():
        print("%-12s %10.2f %8.2f" % (name, s["median_ms"], s["p90_ms"]))
    if rss:
        print("rss at %.0f s: %s MB; at %.0f s: %s MB" % (at_1min["t_s"] if at_1min else 0,
                                                       result["rss_at_1min_mb"], rss[-1]["t_s"], rss[-1]["rss_mb"]))
    if args.switch_interval:
        for half, name in ((0, "default %g s" % sys.getswitchinterval()), (1, "%g s" % args.switch_interval)):
            ratios = per_round[half::2]
            share = [r["engine_cpu_share"] for r in rounds if r["mode"] == "pipeline"][half::2]
            result["switch_interval_" + ("default" if half == 0 else "test")] = {
                "median_of_rounds": round(float(np.median(ratios)), 3),
                "busy": round(float(np.median(busy[half::2])), 4)}
            print("GIL switch interval %s: median of the rounds' ratios %.3f, engine busy %.1f%%, CPU share %.1f%%"
                  % (name, float(np.median(ratios)), 100 * float(np.median(busy[half::2])),
                     100 * float(np.median(share))))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
