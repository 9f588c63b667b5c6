"""Where the daemon's output goes: one small interface, several sinks.

Every sink has ``emit(event)`` (a fall event, DESIGN.md contract 4), ``frame(record)`` (a
:class:`edge.pipeline.FrameRecord` per processed frame), ``stats(dict)`` (periodic figures) and
``close()`` (flush and release; called once, at the end). The MQTT publisher (edge.alerts.publisher.MqttSink)
implements the same four. :class:`SinkSet` fans calls out and keeps one failing sink from
stopping the others.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Union

import cv2
import numpy as np

from edge.alerts.events import encode_event
from edge.media import OutputPathError, check_video_output, video_fourcc
from edge.skeleton import NUM_KEYPOINTS, draw_skeletons, track_colour

log = logging.getLogger("fallwatch.sinks")


class Sink:
    """The interface (every method optional: the base does nothing)."""

    def emit(self, event: Dict[str, Any]) -> None:
        pass

    def frame(self, record: Any) -> None:
        pass

    def stats(self, stats: Dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class _Lines:
    """A JSON-lines output: a path (opened for writing, created with its folder) or a stream."""

    def __init__(self, target: Union[str, Path, IO[str]], flush_interval_s: float) -> None:
        if isinstance(target, (str, Path)):
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[str] = open(path, "w", encoding="utf-8")
            self._owned = True
            self.name = str(path)
        else:
            self._fh, self._owned, self.name = target, False, getattr(target, "name", "<stream>")
        self._flush_interval_s = flush_interval_s
        self._next_flush = 0.0

    def write(self, obj: Any) -> None:
        self._fh.write(encode_event(obj) + "\n")
        now = time.monotonic()
        if now >= self._next_flush:
            self._fh.flush()
            self._next_flush = now + self._flush_interval_s

    def close(self) -> None:
        try:
            self._fh.flush()
        finally:
            if self._owned:
                self._fh.close()


class EventLines(Sink):
    """Events as JSON lines to a file or stdout, flushed at once (events are rare and matter)."""

    def __init__(self, target: Union[str, Path, IO[str], None] = None) -> None:
        self._out = _Lines(sys.stdout if target is None else target, 0.0)

    def emit(self, event: Dict[str, Any]) -> None:
        self._out.write(event)

    def close(self) -> None:
        self._out.close()


class SkeletonRecorder(Sink):
    """``--record-skeletons FILE.jsonl``: one line per processed frame (DESIGN.md contract 2),
    skeletons only, never images; flushed at least every ``flush_interval_s`` and at close."""

    def __init__(self, target: Union[str, Path, IO[str]], flush_interval_s: float = 1.0) -> None:
        self._out = _Lines(target, flush_interval_s)

    def frame(self, record: Any) -> None:
        self._out.write(record.to_json())

    def close(self) -> None:
        self._out.close()


class StatsLines(Sink):
    """Periodic stats as JSON lines (``--stats-out FILE.jsonl``), flushed each time."""

    def __init__(self, target: Union[str, Path, IO[str]]) -> None:
        self._out = _Lines(target, 0.0)

    def stats(self, stats: Dict[str, Any]) -> None:
        self._out.write(stats)

    def close(self) -> None:
        self._out.close()


class PreviewWriter(Sink):
    """An annotated video for debugging (``--preview FILE.mp4``): each processed frame with its
    skeletons and track ids. With several cameras, one file per camera (``FILE-<camera>.mp4``).
    ``fps`` is the playback rate written into the file. The path is checked when the writer is
    made (edge.media.check_video_output: raises OutputPathError), before any frame."""

    def __init__(self, path: Union[str, Path], cameras: Sequence[str], fps: float = 10.0) -> None:
        self._path = Path(path)
        self._several = len(cameras) > 1
        for camera in cameras or ("",):
            check_video_output(self.path_for(camera))
        self._fps = fps
        self._writers: Dict[str, Any] = {}

    def path_for(self, camera: str) -> Path:
        if not self._several:
            return self._path
        return self._path.with_name("%s-%s%s" % (self._path.stem, camera, self._path.suffix))

    def frame(self, record: Any) -> None:
        image = getattr(record, "image", None)
        if image is None:
            return
        writer = self._writers.get(record.camera)
        if writer is None:
            path = self.path_for(record.camera)
            fourcc = cv2.VideoWriter_fourcc(*video_fourcc(path))
            writer = cv2.VideoWriter(str(path), fourcc, self._fps, (image.shape[1], image.shape[0]))
            if not writer.isOpened():
                raise OSError("cannot write the preview video %s" % path)
            self._writers[record.camera] = writer
            log.info("preview of camera %s: writing %s", record.camera, path)
        ids = [int(i) for i in record.track_ids]
        writer.write(draw_skeletons(image, np.asarray(record.keypoints).reshape(-1, NUM_KEYPOINTS, 3),
                                    labels=["#%d" % i if i else "?" for i in ids],
                                    colours=[track_colour(i) for i in ids]))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.release()
        self._writers.clear()


class SinkSet(Sink):
    """Several sinks as one. A sink that raises is logged (once per sink and method until it
    works again) and the others still get the call; ``close`` closes every sink."""

    def __init__(self, sinks: Sequence[Any] = ()) -> None:
        self.sinks: List[Any] = list(sinks)
        self._failing: Dict[tuple, bool] = {}

    def add(self, sink: Any, first: bool = False) -> None:
        """Add a sink, last or (``first``) before the others: the durable MQTT outbox goes first so
        that an event is safe on disk before any other output shows it."""
        if first:
            self.sinks.insert(0, sink)
        else:
            self.sinks.append(sink)

    def _call(self, method: str, arg: Any) -> None:
        for sink in self.sinks:
            key = (id(sink), method)
            try:
                getattr(sink, method)(arg)
            except Exception as exc:
                if not self._failing.get(key):
                    log.error("output %s: %s failed: %s (continuing; logged once until it works again)",
                              type(sink).__name__, method, exc)
                self._failing[key] = True
            else:
                if self._failing.get(key):
                    log.info("output %s: %s works again", type(sink).__name__, method)
                    self._failing[key] = False

    def emit(self, event: Dict[str, Any]) -> None:
        self._call("emit", event)

    def frame(self, record: Any) -> None:
        self._call("frame", record)

    def stats(self, stats: Dict[str, Any]) -> None:
        self._call("stats", stats)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.error("output %s: close failed: %s", type(sink).__name__, exc)


def open_sinks(events_out: Optional[str] = None, record_skeletons: Optional[str] = None,
               stats_out: Optional[str] = None, preview: Optional[str] = None,
               cameras: Sequence[str] = (), preview_fps: float = 10.0) -> SinkSet:
    """The sinks the command line asks for; events go to stdout when ``events_out`` is None. Raises
    OSError when a file cannot be opened, OutputPathError for a preview path OpenCV cannot write."""
    sinks = SinkSet()
    try:
        sinks.add(EventLines(events_out))
        if record_skeletons:
            sinks.add(SkeletonRecorder(record_skeletons))
        if stats_out:
            sinks.add(StatsLines(stats_out))
        if preview:
            sinks.add(PreviewWriter(preview, cameras, preview_fps))
    except OutputPathError:
        sinks.close()
        raise
    except OSError as exc:
        sinks.close()
        raise OSError("cannot open an output file: %s" % exc) from None
    return sinks
