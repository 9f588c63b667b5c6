"""``fallwatch run``: cameras in, tracked skeletons and events out, at the engine's full speed.

Threads (Python threads: OpenCV and the engines release the GIL while they work)::

    capture (one per camera, edge.capture.sources: newest frame only)
      -> schedule + preprocess   round-robin over cameras, per-camera max_fps
      -> [queue] -> engine       one engine shared by every camera
      -> [queue] -> post         decode, parse, track, fall detector, outputs

so the next frame is preprocessed and the previous one parsed while the engine works. Queues are
bounded (``daemon.queue_size``): a slow stage holds the ones before it back, and cameras simply
drop the frames nobody took (counted in the stats). Stage times are measured all the time, and
so is ``engine_idle``: how long the engine thread spends between two engine calls (waiting for
the next frame, and its own hand-offs), the time the engine could have worked but did not.

The engine thread does nothing but take a batch, run it and pass the outputs on: preprocessing
writes each frame's views straight into a reused input array of the engine's own kind
(edge.inference.batches: page-locked memory with TensorRT, copied to the GPU without staging),
given back to the pool as soon as the engine has run it; decoding the outputs, parsing and
everything after happen on the post thread. Top-down and 3D models (edge.inference.topdown) are
the exception: their crops depend on the previous frame's tracks, so the engine thread waits for
those, runs the seed model when due and makes the crops; their ``engine`` time includes all that
and their ``engine_idle`` says little. A frame whose post-processing fails is skipped for the
frames after it (they do not wait for it), and stopping ends every such wait.

:func:`serve` is the process around it: signals (SIGTERM/SIGINT stop within 2 s, SIGHUP reloads
the configuration), periodic stats, camera watchdogs, and a non-zero exit with the reason when
something fatal happens.
"""
from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from edge.inference.batches import InputPool
from edge.pipeline import CameraPipeline, InferenceJob, RateLimiter
from edge.capture.sources import CameraSource, SourceError, SourceSettings, redact_uri, uri_kind
from edge.health import jetson
from edge.health.timing import StageTimer

log = logging.getLogger("fallwatch.daemon")

JOIN_TIMEOUT_S = 1.2  # how long stop() waits for the pipeline threads (SIGTERM must finish in 2 s)
MAX_CONSECUTIVE_ERRORS = 25  # frames in a row failing in post-processing before the daemon gives up
DROP_WATCH_S = 10.0  # a video file played in real time is watched this long for dropped frames ...
DROP_MIN_FRAMES = 30  # ... once it has played this many frames: more than half dropped is worth a warning
_TICK_S = 0.1


def rss_bytes() -> Optional[int]:
    """Resident memory of this process in bytes (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def source_settings(config: Any) -> SourceSettings:
    d = config.daemon
    return SourceSettings(d.reconnect_min_s, d.reconnect_max_s, d.stall_timeout_s, d.open_timeout_s)


class Daemon:
    """Threads and queues around one :class:`~edge.pipeline.CameraPipeline` per camera, for one
    configuration. ``model``: an open :class:`edge.inference.model.PoseModel` (kept by the caller across
    reloads); ``sinks``: a :class:`edge.alerts.sinks.SinkSet`-like object; ``clock``: the stream clock of
    frames (seconds); ``ids``: the track id counter shared across reloads; ``make_detector``:
    camera name -> fall detector (default: edge.pipeline.create_detector); ``live``: an object whose
    ``update(record, states)`` keeps each camera's newest frame record and its tracks' fall states
    (edge.web.live.LiveFrames; None, the default, costs nothing)."""

    def __init__(self, config: Any, model: Any, sinks: Any, clock: Callable[[], float],
                 ids: Optional[Iterator[int]] = None, watchdog: Any = None,
                 source_factory: Callable[..., Any] = CameraSource,
                 make_detector: Optional[Callable[[str], Any]] = None, live: Any = None) -> None:
        self.config = config
        self.live = live
        self.model = model
        self.sinks = sinks
        self.clock = clock
        self.watchdog = watchdog
        self.timer = StageTimer()
        self.fatal: Optional[str] = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        ids = ids if ids is not None else itertools.count(1)
        settings = source_settings(config)
        self.sources = [source_factory(cam, settings, clock=clock, on_frame=self._wake.set) for cam in config.cameras]
        self.limiters = [RateLimiter(cam.max_fps) for cam in config.cameras]
        self.pipelines = {cam.name: CameraPipeline(cam.name, config, model,
                                                   make_detector(cam.name) if make_detector else None, ids)
                          for cam in config.cameras}
        self._inputs = InputPool(model.engine)  # at most queue_size + 1 batches lent at once
        size = config.daemon.queue_size
        self._engine_q: "queue.Queue[Any]" = queue.Queue()
        self._engine_slots = threading.Semaphore(size)  # a frame is taken only when a slot is free
        self._post_q: "queue.Queue[Any]" = queue.Queue(size)
        self._threads: List[threading.Thread] = []
        self.started_at = time.monotonic()
        self.submitted = 0  # frames that entered preprocessing
        self.completed = 0  # frames that left post-processing (done or failed)
        self.skipped = 0  # frames passed over because of max_fps
        self.processed: Dict[str, int] = {cam.name: 0 for cam in config.cameras}
        self.track_ids: Dict[str, List[int]] = {cam.name: [] for cam in config.cameras}  # after the last frame
        self.people_seen = 0
        self.events = 0
        self.errors = 0
        self._last_stats = (time.monotonic(), 0, dict(self.processed))
        # video files played at their own frame rate, still watched for dropped frames
        self._drop_watch = {s.name for s in self.sources
                            if uri_kind(s.camera.uri)[0] == "file" and getattr(s.camera, "realtime", True)}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Open the cameras (raises SourceError for what no retry can fix) and start the threads."""
        started = []
        try:
            for source in self.sources:
                source.start()
                started.append(source)
        except SourceError:
            for source in started:
                source.stop()
            raise
        for name, target in (("schedule", self._schedule_loop), ("engine", self._engine_loop),
                             ("post", self._post_loop)):
            thread = threading.Thread(target=self._guard(name, target), name="fallwatch-" + name, daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info("pipeline running: %d camera(s) (%s), engine %s, fall detection: %s",
                 len(self.sources), ", ".join(s.name for s in self.sources), type(self.model.engine).__name__,
                 ", ".join(sorted({type(p.detector).__name__ for p in self.pipelines.values()})))

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for pipeline in self.pipelines.values():
            pipeline.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Stop the threads and cameras; waits at most about ``timeout`` seconds in all. Returns
        False when a thread is still running (blocked in a camera read or an engine call)."""
        self.request_stop()
        deadline = time.monotonic() + timeout
        for source in self.sources:
            source.stop()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s did not stop within %.1f s; leaving it (it is a daemon thread)",
                            thread.name, timeout)
        clean = not any(t.is_alive() for t in self._threads)
        if clean:  # else the engine may still be reading a batch: the engine's close() frees them
            self._inputs.close()
        for source in self.sources:
            if not source.join(max(0.0, deadline - time.monotonic())):
                log.warning("camera %s: its capture thread is blocked in a read; leaving it", source.name)
                clean = False
        return clean

    def _fail(self, reason: str) -> None:
        if self.fatal is None:
            self.fatal = reason
            log.error("fatal: %s", reason)
        self.request_stop()

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # a bug or a resource failure: stop with the reason
                log.exception("the %s thread failed", name)
                self._fail("the %s stage failed: %s: %s" % (name, type(exc).__name__, exc))
        return run

    def _put(self, q: "queue.Queue[Any]", item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_TICK_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: "queue.Queue[Any]") -> Any:
        while not self._stop.is_set():
            try:
                return q.get(timeout=_TICK_S)
            except queue.Empty:
                continue
        return None

    # ---------------------------------------------------------------- the stages

    def _next_frame(self, start: int) -> Any:
        """The next frame to process, round-robin from camera ``start``: ``(camera index, frame)``."""
        n = len(self.sources)
        for k in range(n):
            i = (start + k) % n
            with self._lock:
                frame = self.sources[i].take()
                if frame is None:
                    continue
                if not self.limiters[i].take(frame.t):
                    self.skipped += 1
                    continue
                self.submitted += 1
            return i, frame
        return None

    def _schedule_loop(self) -> None:
        start = 0
        while not self._stop.is_set():
            # Take a frame only when the engine has room for it, so that the frame preprocessed
            # while the engine works is the newest one, not one that waits behind others.
            if not self._engine_slots.acquire(timeout=_TICK_S):
                continue
            found = None
            while found is None and not self._stop.is_set():
                self._wake.clear()
                found = self._next_frame(start)
                if found is None:
                    self._wake.wait(_TICK_S)
            if found is None:
                return
            i, frame = found
            start = i + 1
            with self.timer.measure("preprocess"):
                job = self.pipelines[frame.camera].prepare(frame, pool=self._inputs)
            self._engine_q.put(job)

    def _engine_loop(self) -> None:
        ended: Optional[float] = None  # when the previous engine call returned
        while not self._stop.is_set():
            job = self._get(self._engine_q)
            if job is None:
                return
            self._engine_slots.release()
            started = time.perf_counter()
            if ended is not None:
                self.timer.record("engine_idle", started - ended)
            outputs = self.pipelines[job.frame.camera].infer(job)
            ended = time.perf_counter()
            self.timer.record("engine", ended - started)
            if isinstance(job, InferenceJob):  # top-down jobs make their own crops in infer
                self._inputs.give(job.batch)  # the engine is done with it: the next frame's views go there
                job.batch = None  # reused from now on: nobody may read it through the job
            if not self._put(self._post_q, (job, outputs)):
                return

    def _post_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            item = self._get(self._post_q)
            if item is None:
                return
            job, outputs = item
            frame = job.frame
            tracked = False
            try:
                pipeline = self.pipelines[frame.camera]
                people = pipeline.find_people(job, outputs, self.timer)
                size = (frame.image.shape[1], frame.image.shape[0])
                record, events = pipeline.track(people, frame.t, frame.wall, size, image=frame.image, timer=self.timer)
                tracked = True
                track_ids = [track.id for track in pipeline.tracker.tracks]
                with self.timer.measure("sinks"):
                    self.sinks.frame(record)
                    for event in events:
                        self.sinks.emit(event)
                if self.live is not None:  # references only: the web thread draws them on request
                    states = getattr(pipeline.detector, "states", None)
                    self.live.update(record, states() if states is not None else {})
                failures = 0
            except Exception as exc:
                failures += 1
                if not tracked:  # the next frames' views and crops must not wait for this one
                    self.pipelines[frame.camera].skip(frame)
                with self._lock:
                    self.errors += 1
                    self.completed += 1
                if failures == 1 or failures % 10 == 0:
                    log.exception("camera %s: processing frame %d failed (%d in a row)", frame.camera,
                                  frame.index, failures)
                if failures >= MAX_CONSECUTIVE_ERRORS:
                    self._fail("%d frames in a row failed in post-processing; last error: %s: %s"
                               % (failures, type(exc).__name__, exc))
                    return
                continue
            self.timer.record("latency", self.clock() - (frame.t if frame.captured is None else frame.captured))
            with self._lock:
                self.completed += 1
                self.processed[frame.camera] += 1
                self.track_ids[frame.camera] = track_ids
                self.people_seen += len(people)
                self.events += len(events)
            if self.watchdog is not None:
                self.watchdog.frame_advanced(frame.t, frame.camera)

    # ---------------------------------------------------------------- supervision

    def check_cameras(self) -> None:
        for source in self.sources:
            source.check_stall()
        if self._drop_watch:
            self._check_drops(time.monotonic() - self.started_at)

    def _check_drops(self, elapsed_s: float) -> None:
        """Warn once when a video file played in real time loses most of its frames: on a slow
        machine ``run --camera FILE`` may process 1 frame in 30 and miss a fall that ``replay`` sees."""
        for source in self.sources:
            if source.name not in self._drop_watch:
                continue
            status = source.status()
            if status.frames >= DROP_MIN_FRAMES and 2 * status.dropped > status.frames:
                self._drop_watch.discard(source.name)
                uri = redact_uri(source.camera.uri)
                log.warning("camera %s: the pipeline took only %d of the first %d frames of video file %s (the "
                            "file plays at its own frame rate, faster than this machine processes frames): a fall "
                            "can be missed. To run every frame as fast as the machine allows, use `fallwatch "
                            "replay %s`, or set realtime: false on this camera", source.name, status.taken,
                            status.frames, uri, uri)
            elif elapsed_s > DROP_WATCH_S or source.ended:
                self._drop_watch.discard(source.name)

    def finished(self) -> bool:
        """Every camera ended (video files without loop) and every frame taken went through."""
        with self._lock:
            return (all(s.ended for s in self.sources) and not any(s.pending for s in self.sources)
                    and self.submitted == self.completed)

    def stats(self, advance: bool = True) -> Dict[str, Any]:
        """The figures for the stats sinks, all taken now (README, "The stats message", lists every
        key): frame rates since the last call, each camera's state, frames and confirmed tracks,
        stage times. Every call gives the same keys; ``final`` is True only in the last one. With
        ``advance`` False (the web page's status), the frame rates' window is left where it is."""
        now = time.monotonic()
        with self._lock:
            processed = dict(self.processed)
            track_ids = {name: list(ids) for name, ids in self.track_ids.items()}
            completed, people, events, errors, skipped = (self.completed, self.people_seen, self.events,
                                                          self.errors, self.skipped)
        last_t, last_completed, last_processed = self._last_stats
        if advance:
            self._last_stats = (now, completed, processed)
        span = max(now - last_t, 1e-6)
        cameras = {}
        for source in self.sources:
            status = source.status().to_dict()
            status["frames_processed"] = processed[source.name]
            status["fps_processed"] = round((processed[source.name] - last_processed.get(source.name, 0)) / span, 2)
            status["tracks"] = len(track_ids[source.name])
            status["track_ids"] = track_ids[source.name]
            views = self.pipelines[source.name].views
            if views is not None:
                status["views"] = views.stats.as_dict()
            cameras[source.name] = status
        rss = rss_bytes()
        return {"type": "stats", "device": self.config.device_id, "uptime_s": round(now - self.started_at, 1),
                "fps_processed": round((completed - last_completed) / span, 2), "frames_processed": sum(processed.values()),
                "frames_skipped_max_fps": skipped, "frame_errors": errors, "people_seen": people, "events": events,
                "queues": {"engine": self._engine_q.qsize(), "post": self._post_q.qsize()},
                "stages": self.timer.summary(), "cameras": cameras,
                "rss_mb": None if rss is None else round(rss / 2 ** 20, 1), "final": False}


def log_stats(stats: Dict[str, Any]) -> None:
    stages = stats["stages"]
    timing = ", ".join("%s %.1f" % (name, stages[name]["median_ms"])
                       for name in ("preprocess", "engine", "decode", "parse", "track", "sinks", "latency")
                       if name in stages)
    cams = "; ".join("%s %s %.1f fps%s" % (name, c["state"], c["fps_processed"],
                                           " (%s)" % c["last_error"] if c["last_error"] else "")
                     for name, c in stats["cameras"].items())
    log.info("stats: %.1f frames/s processed, median ms: %s; cameras: %s; rss %s MB",
             stats["fps_processed"], timing or "-", cams, stats["rss_mb"])


# ---------------------------------------------------------------- the process


class _Signals:
    """SIGTERM/SIGINT ask to stop, SIGHUP to reload; restores the previous handlers on exit."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.wake = threading.Event()
        self.received: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        for sig, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop)) + (
                ((signal.SIGHUP, self._on_reload),) if hasattr(signal, "SIGHUP") else ()):
            self._previous[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_stop(self, signum: int, _frame: Any) -> None:
        self.received = signal.Signals(signum).name
        self.stop.set()
        self.wake.set()

    def _on_reload(self, signum: int, _frame: Any) -> None:
        self.reload.set()
        self.wake.set()


def _model_key(config: Any) -> Any:
    return (config.model.to_dict(), config.engine.to_dict(), config.paths.models_dir)


def serve(config: Any, sinks: Any, reload_config: Optional[Callable[[], Any]] = None,
          open_model: Optional[Callable[[Any], Any]] = None, watchdog: Any = None, hard_exit: bool = True,
          web: Any = None) -> int:
    """Run the daemon until a signal or a fatal error; returns the exit status (0 after a clean
    stop or when every camera ended, 1 on a fatal error). ``reload_config()`` gives the new
    configuration on SIGHUP (raising ConfigError when it is invalid: the old one is kept).
    ``sinks`` are closed before returning. With ``hard_exit``, a process whose threads cannot be
    joined (stuck in a camera read or an engine call) ends with ``os._exit`` after closing them.
    ``web``: a started :class:`edge.web.server.WebServer` (or None): it is shown each new Daemon
    (``attach``), may ask for the SIGHUP reload (``set_reloader``), and is stopped first at the end."""
    if open_model is None:
        from edge.inference.model import open_pose_model as open_model
    if not config.cameras:
        log.error("no cameras configured: add at least one under cameras: in %s", config.source or "config.yaml")
        sinks.close()
        jetson.close()
        return 1
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    ids = itertools.count(1)
    model = None
    stuck = False
    code = 1
    with _Signals() as signals:
        if web is not None:
            web.set_reloader(lambda: (signals.reload.set(), signals.wake.set()))
        try:
            model = open_model(config)
            while True:
                daemon = Daemon(config, model, sinks, clock, ids=ids, watchdog=watchdog,
                                live=web.live if web is not None else None)
                try:
                    daemon.start()
                except SourceError as exc:
                    log.error("%s", exc)
                    return 1
                if web is not None:
                    web.attach(daemon)
                outcome, new = _supervise(daemon, signals, reload_config)
                stuck = not daemon.stop() or stuck
                _final_stats(daemon, sinks)
                if daemon.fatal:
                    return 1
                if outcome != "reload":
                    code = 0
                    return 0
                if _model_key(new) != _model_key(config):
                    log.info("SIGHUP: the model or engine changed: loading it again")
                    try:
                        new_model = open_model(new)
                    except Exception as exc:
                        log.error("SIGHUP: cannot load the new model, keeping the running configuration: %s", exc)
                        continue
                    model.close()
                    model = new_model
                config = new
                log.info("SIGHUP: configuration reloaded from %s; cameras and tracks restarted (track ids go on "
                         "from where they were; output files and MQTT stay as started)",
                         config.source or "built-in defaults")
        finally:
            if web is not None:
                web.stop()
            if watchdog is not None:
                watchdog.stopping("stopping")
            if model is not None and not stuck:
                model.close()
            sinks.close()
            jetson.close()  # after the sinks: the MQTT sink's last stats message reads jtop
            log.info("stopped%s", " (%s)" % signals.received if signals.received else "")
            if stuck and hard_exit:
                # A thread is still inside native code (a camera read, an engine call): letting the
                # interpreter tear down under it can abort the process. Outputs are closed: leave now.
                log.warning("leaving without waiting for the blocked thread(s)")
                logging.shutdown()
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os._exit(code)


def _reload(reload_config: Optional[Callable[[], Any]]) -> Any:
    """The new configuration, or None (logged why) when it cannot be used."""
    if reload_config is None:
        log.warning("SIGHUP: reloading the configuration is not possible here; going on unchanged")
        return None
    try:
        new = reload_config()
    except Exception as exc:
        log.error("SIGHUP: the new configuration is not valid, keeping the running one: %s", exc)
        return None
    if not new.cameras:
        log.error("SIGHUP: the new configuration has no cameras; keeping the running one")
        return None
    return new


def _supervise(daemon: Daemon, signals: _Signals, reload_config: Optional[Callable[[], Any]]) -> Tuple[str, Any]:
    """Watch the daemon until it should stop: ``(stop | fatal | ended | reload, new config or None)``."""
    interval = daemon.config.daemon.stats_interval_s
    next_stats = time.monotonic() + interval if interval > 0 else float("inf")
    while True:
        signals.wake.wait(0.2)
        signals.wake.clear()
        if signals.stop.is_set():
            log.info("%s received: stopping", signals.received)
            return "stop", None
        if signals.reload.is_set():
            signals.reload.clear()
            log.info("SIGHUP received: reading the configuration again")
            new = _reload(reload_config)
            if new is not None:
                return "reload", new
        if daemon.fatal:
            return "fatal", None
        if daemon.finished():
            log.info("every camera ended and every frame went through: stopping")
            return "ended", None
        daemon.check_cameras()
        if time.monotonic() >= next_stats:
            next_stats = time.monotonic() + interval
            stats = daemon.stats()
            log_stats(stats)
            daemon.sinks.stats(stats)


def _final_stats(daemon: Daemon, sinks: Any) -> None:
    stats = daemon.stats()
    stats["final"] = True
    log_stats(stats)
    sinks.stats(stats)
