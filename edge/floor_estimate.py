"""``fallwatch floor estimate``: a camera's floor plane from recorded or replayed skeletons, and writing it
into the configuration.

Frames come from skeleton JSONL files with ``keypoints3d`` (``fallwatch run --record-skeletons`` with a 3D
model: contract 2's optional field), from a video file run through the pipeline with the configured 3D
model (as ``fallwatch replay`` runs it), or from a configured camera, live, for some seconds
(:func:`live_frames`: its newest frame each time through the same pipeline, its ``max_fps`` applied). The fit is edge.floor's. :func:`write_floor_plane` edits one line of
the config file's text (the camera's ``floor_plane``, or a new one after its last key), so comments and
everything else stay as they were; the new text is validated by the normal loader and then replaces the
file atomically (a temporary file beside it, same mode and owner, renamed over it).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from edge.floor import plane_line
from edge.replay import ReplayError, _keypoints3d, is_skeleton_file, read_skeletons

log = logging.getLogger("fallwatch.floor")

Frame = Tuple[np.ndarray, Optional[np.ndarray], float]  # keypoints, keypoints3d, frame width / height


class FloorInputError(ValueError):
    """An input that gives no frames to fit; the message names the file."""


def skeleton_frames(paths: Sequence[str], camera: Optional[str]) -> Tuple[List[Frame], str]:
    """The frames of ``camera`` in skeleton JSONL ``paths`` (bad lines skipped with a warning, as replay does)
    and the camera's name; without ``camera``, the files must hold one camera only."""
    frames: List[Frame] = []
    seen = set()
    for path in paths:
        def skip(error: ReplayError) -> None:
            log.warning("%s; line skipped", error)

        for _, record in read_skeletons(path, skip):
            seen.add(record["camera"])
            if camera is not None and record["camera"] != camera:
                continue
            kp = np.asarray([p["keypoints"] for p in record["people"]], np.float64).reshape(-1, 18, 3)
            frames.append((kp, _keypoints3d(record["people"]), record["width"] / record["height"]))
    if camera is None and len(seen) > 1:
        raise FloorInputError("%s: several cameras (%s): say which with --camera" % (", ".join(paths),
                                                                                       ", ".join(sorted(seen))))
    if camera is not None and camera not in seen:
        raise FloorInputError("%s: no frame of camera %r (it has %s)" % (", ".join(paths), camera,
                                                                          ", ".join(sorted(seen)) or "none"))
    if not any(frame[1] is not None for frame in frames):
        raise FloorInputError("%s: no person has keypoints3d: record with a 3D model (model.spec bodypose3dnet) "
                              "and `fallwatch run --record-skeletons FILE.jsonl`" % ", ".join(paths))
    return frames, camera or (seen.pop() if seen else "")


def _require_3d(config: Any) -> None:
    from edge.inference.specs import load_spec

    family = load_spec(config.model.spec).family
    if family != "single_person_3d":
        raise FloorInputError("model.spec %s is a %s model and gives no 3D keypoints: select a 3D model "
                              "(model.spec bodypose3dnet, README \"Model families\")" % (config.model.spec, family))


def live_frames(config: Any, camera: str, seconds: float) -> List[Frame]:
    """``seconds`` of the configured camera ``camera`` through the pipeline with the configured (3D) model:
    the newest frame each time (frames that come while the model works are dropped, as ``fallwatch run``
    drops them), the camera's ``max_fps`` applied. A video-file camera that ends ends the collection."""
    from edge.capture.sources import CameraSource, SourceError, SourceSettings
    from edge.inference.model import open_pose_model
    from edge.pipeline import CameraPipeline, RateLimiter, camera_config

    cam = camera_config(config, camera)
    if cam is None:
        raise FloorInputError("%s: no camera named %s (it has %s)" % (config.source or "built-in defaults", camera,
                                                                        ", ".join(c.name for c in config.cameras)))
    _require_3d(config)
    d = config.daemon
    source = CameraSource(cam, SourceSettings(d.reconnect_min_s, d.reconnect_max_s, d.stall_timeout_s,
                                              d.open_timeout_s))
    model = open_pose_model(config)
    frames: List[Frame] = []
    try:
        pipeline = CameraPipeline(camera, config, model)
        limiter = RateLimiter(cam.max_fps)
        source.start()
        log.info("camera %s: collecting %.0f s of skeletons; have someone walk all over the floor", camera, seconds)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            frame = source.take()
            if frame is None:
                if source.ended:
                    break
                time.sleep(0.005)
                continue
            if limiter.take(frame.t):
                record, _ = pipeline.process(frame)
                frames.append((np.asarray(record.keypoints, np.float64), record.keypoints3d,
                               record.width / record.height))
    except SourceError as exc:
        raise FloorInputError(str(exc)) from None
    finally:
        source.stop()
        source.join(2.0)
        model.close()
    return frames


def video_frames(path: str, config: Any, camera: str, max_fps: Optional[float]) -> List[Frame]:
    """The frames of a video file through the pipeline with the configured (3D) model."""
    from edge.inference.model import open_pose_model
    from edge.replay import replay_video

    _require_3d(config)
    frames: List[Frame] = []

    class Collect:
        def frame(self, record: Any) -> None:
            frames.append((np.asarray(record.keypoints, np.float64), record.keypoints3d, record.width / record.height))

        def emit(self, event: Any) -> None:
            pass

    model = open_pose_model(config)
    try:
        replay_video(path, config, model, Collect(), camera=camera, max_fps=max_fps)
    finally:
        model.close()
    return frames


def gather(inputs: Sequence[str], config: Any, camera: Optional[str], max_fps: Optional[float],
           seconds: Optional[float] = None) -> Tuple[List[Frame], str]:
    """Frames from skeleton JSONL files (several allowed), from one video file, or (no ``inputs``) from the
    configured ``camera`` for ``seconds``."""
    if not inputs:
        if camera is None or seconds is None:
            raise FloorInputError("give skeleton JSONL files or a video file, or --camera NAME --seconds N to "
                                  "watch a configured camera")
        return live_frames(config, camera, seconds), camera
    if seconds is not None:
        raise FloorInputError("--seconds is for a live camera (no INPUT): a file is read to its end")
    kinds = [is_skeleton_file(p) for p in inputs]
    if all(kinds):
        return skeleton_frames(inputs, camera)
    if len(inputs) > 1:
        raise FloorInputError("give skeleton JSONL files (several allowed) or one video file, not %s"
                              % ", ".join(inputs))
    if not Path(inputs[0]).is_file():
        raise FloorInputError("%s: no such file" % inputs[0])
    name = camera or "replay"
    return video_frames(inputs[0], config, name, max_fps), name


def _camera_node(root: Any, camera: str, source: str) -> yaml.MappingNode:
    if not isinstance(root, yaml.MappingNode):
        raise FloorInputError("%s: not a mapping at the top" % source)
    for key, value in root.value:
        if key.value == "cameras":
            if not isinstance(value, yaml.SequenceNode):
                break
            for item in value.value:
                if isinstance(item, yaml.MappingNode) and any(
                        k.value == "name" and getattr(v, "value", None) == camera for k, v in item.value):
                    if item.flow_style:
                        raise FloorInputError("%s: camera %s is written in flow style ({...}); add the line "
                                              "yourself" % (source, camera))
                    return item
    raise FloorInputError("%s: no camera named %s under cameras: (the built-in default camera cannot be written "
                          "to); add it to the file first" % (source, camera))


def edited_text(text: str, camera: str, plane: Sequence[float], source: str = "config") -> str:
    """``text`` (a config file) with camera ``camera``'s ``floor_plane`` set to ``plane``: the value replaced
    where the key is, else a line added after the camera's last key, indented like its keys."""
    node = _camera_node(yaml.compose(text), camera, source)
    value = "[%s]" % ", ".join("%.4f" % v for v in plane)
    for key, val in node.value:
        if key.value == "floor_plane":
            return text[:val.start_mark.index] + value + text[val.end_mark.index:]
    indent = node.value[0][0].start_mark.column
    end = node.value[-1][1].end_mark.index
    if end > 0 and text[end - 1] == "\n":
        at = end
    else:
        newline = text.find("\n", end)
        at = len(text) if newline < 0 else newline + 1
    line = " " * indent + plane_line(plane) + "\n"
    if at == len(text) and text and not text.endswith("\n"):
        line = "\n" + line
    return text[:at] + line + text[at:]


def write_floor_plane(path: Path, camera: str, plane: Sequence[float],
                      load: Any = None) -> None:
    """Set ``camera``'s ``floor_plane`` in the config file at ``path``, comments kept. The new text must load
    (``load(path)``: edge.config.load_config) and give the camera that plane, else nothing is written. Written
    as the zone editor writes (edge.configedit.write_atomic: through a symlink to its target, mode and owner
    kept or refused, atomic, refused when the file changed meanwhile)."""
    from edge.configedit import write_atomic

    raw = path.read_bytes()
    new = edited_text(raw.decode("utf-8"), camera, plane, str(path))

    def validate(tmp: str) -> None:
        if load is None:
            return
        config = load(tmp)
        got = [c.floor_plane for c in config.cameras if c.name == camera]
        want = tuple(round(float(v), 4) for v in plane)
        if got != [want]:
            raise FloorInputError("%s: the edited file gives camera %s floor_plane %s, not %s; nothing written"
                                  % (path, camera, got, list(want)))

    write_atomic(Path(os.path.realpath(str(path))), path, new, raw, validate)


def report_lines(fit: Any, frames: int, frames_used: int, people: int) -> Iterator[str]:
    """What the fit found, for a person to judge."""
    yield "frames: %d read, %d with feet on the floor (%d person-frames)" % (frames, frames_used, people)
    yield "foot points: %d, inliers %d (%.0f%%), residual RMS %.1f mm" % (
        fit.points, fit.inliers, 100.0 * fit.inliers / fit.points, fit.rms_m * 1000)
    yield "spread of the feet on the floor: %.2f m x %.2f m" % fit.extent_m
    yield "camera: %.2f m above the floor, looking %.1f degrees below the horizon" % (fit.camera_height_m,
                                                                                      fit.tilt_deg)
