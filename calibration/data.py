"""Calibration data: frames from every source, through the daemon's own :func:`edge.inference.preprocess.preprocess`,
kept as float32 tensors in a memory-mapped scratch file (500 frames of 368x432x3 are 950 MB, too much
for a small Jetson's RAM next to a TensorRT build), read back in batches.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from calibration.frames import (Frame, FramesError, camera_frames, image_files, read_images, sample_indices,
                                video_frames)
from calibration.progress import Progress
from edge.inference.preprocess import LowLight, preprocess
from edge.inference.specs import ModelSpec

log = logging.getLogger("fallwatch.calibration")

MIN_FRAMES = 50  # fewer usable frames than this is an error
RECOMMENDED_FRAMES = 300  # fewer than this is a warning
HOLDOUT_EVERY = 10  # without --verify-images, every 10th frame is held out for verification


@dataclass(frozen=True)
class Sources:
    """What to read: folders of images, video files, camera URIs; ``frames`` per video or camera."""

    images: Tuple[Path, ...] = ()
    videos: Tuple[Path, ...] = ()
    cameras: Tuple[str, ...] = ()
    frames: int = 100
    camera_interval_s: float = 0.2

    def empty(self) -> bool:
        return not (self.images or self.videos or self.cameras)


class TensorSet:
    """Preprocessed inputs (N, ...) float32 and the frame (or crop) each came from.

    ``store`` is the memory-mapped scratch array; a subset keeps row numbers into it, so splitting
    off held-out frames copies nothing, and :meth:`batches` reads one batch at a time. ``extra``: a
    model's other inputs by name (a single_person_3d model's ``k_inv``...), rows indexed like ``store``;
    :meth:`feeds` hands out every input of a batch by name.
    """

    def __init__(self, store: np.ndarray, sources: List[str], skipped: Sequence[str] = (),
                 rows: Optional[np.ndarray] = None, extra: Optional[Mapping[str, np.ndarray]] = None) -> None:
        self.store = store
        self.sources = list(sources)
        self.skipped = list(skipped)
        self.rows = np.arange(len(self.sources)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.extra: Dict[str, np.ndarray] = dict(extra or {})

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def tensors(self) -> np.ndarray:
        """All the set's inputs in memory at once (for small sets; prefer :meth:`batches`)."""
        return np.asarray(self.store[self.rows], dtype=np.float32)

    def subset(self, indices: Sequence[int]) -> "TensorSet":
        index = np.asarray(list(indices), dtype=np.int64)
        return TensorSet(self.store, [self.sources[i] for i in index], self.skipped, self.rows[index], self.extra)

    def batches(self, batch_size: int, drop_last: bool = False) -> Iterator[np.ndarray]:
        """Consecutive batches ``(batch_size, ...)``; the last may be shorter unless ``drop_last``."""
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        for start in range(0, len(self), batch_size):
            rows = self.rows[start:start + batch_size]
            if drop_last and len(rows) < batch_size:
                break
            yield np.ascontiguousarray(self.store[rows], dtype=np.float32)

    def feeds(self, batch_size: int, input_name: str, drop_last: bool = False) -> Iterator[Dict[str, np.ndarray]]:
        """As :meth:`batches`, each batch as ``{input_name: batch, other input: its rows, ...}``."""
        start = 0
        for batch in self.batches(batch_size, drop_last):
            rows = self.rows[start:start + len(batch)]
            start += len(batch)
            feed = {input_name: batch}
            feed.update({name: np.ascontiguousarray(values[rows], dtype=np.float32)
                         for name, values in self.extra.items()})
            yield feed

    def split_holdout(self, every: int = HOLDOUT_EVERY) -> Tuple["TensorSet", "TensorSet"]:
        """``(calibration, held out)``: every ``every``-th frame is held out."""
        held = [i for i in range(len(self)) if i % every == every - 1]
        keep = [i for i in range(len(self)) if i % every != every - 1]
        return self.subset(keep), self.subset(held)


def _frames(sources: Sources, skipped: List[str]) -> Tuple[Iterator[Frame], int]:
    """All frames of ``sources`` in order, and an upper bound of their number."""
    files = [f for folder in sources.images for f in image_files(folder)]
    bound = len(files) + sources.frames * (len(sources.videos) + len(sources.cameras))

    def generate() -> Iterator[Frame]:
        yield from read_images(files, skipped)
        for video in sources.videos:
            yield from video_frames(video, sources.frames)
        for uri in sources.cameras:
            yield from camera_frames(uri, sources.frames, sources.camera_interval_s)

    for video in sources.videos:
        if not Path(video).is_file():
            raise FramesError("--video %s: no such file" % video)
    return generate(), bound


def collect(sources: Sources, spec: ModelSpec, input_hw: Tuple[int, int], resize: str, scratch_dir: Path,
            name: str = "calibration", progress: bool = True, light: Optional[LowLight] = None) -> TensorSet:
    """Read and preprocess every frame of ``sources`` into ``scratch_dir/<name>.npy`` (memory-mapped),
    brightening dark frames as ``light`` says (the daemon's :func:`edge.inference.model.low_light`)."""
    if sources.empty():
        raise FramesError("no calibration source: give --images DIR, --video FILE or --camera URI")
    skipped: List[str] = []
    frames, bound = _frames(sources, skipped)
    sample_shape = preprocess(np.zeros((8, 8, 3), np.uint8), spec, input_hw, resize)[0].shape[1:]
    path = Path(scratch_dir) / (name + ".npy")
    store = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float32, shape=(max(bound, 1),) + sample_shape)
    names: List[str] = []
    bar = Progress("preprocessing %s frames" % name, bound) if progress else None
    try:
        for frame in frames:
            preprocess(frame.image, spec, input_hw, resize, out=store[len(names):len(names) + 1], light=light)
            names.append(frame.source)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    store.flush()
    return TensorSet(store[:len(names)], names, skipped)


def check_count(count: int, skipped: int, minimum: int = MIN_FRAMES, recommended: int = RECOMMENDED_FRAMES,
                unit: str = "frames") -> None:
    """FramesError under ``minimum`` usable frames (or ``unit``: person crops); a warning under ``recommended``."""
    if count < minimum:
        raise FramesError("only %d usable calibration %s%s; INT8 calibration needs at least %d (%d or more "
                          "recommended): add --images DIR, --video FILE (--frames N per video) or --camera URI"
                          % (count, unit, " (%d unreadable files skipped)" % skipped if skipped else "", minimum,
                             recommended))
    if count < recommended:
        log.warning("only %d calibration %s: %d or more from the cameras' own scenes give a more faithful "
                    "INT8 model", count, unit, recommended)


__all__ = ["Sources", "TensorSet", "collect", "check_count", "sample_indices", "MIN_FRAMES", "RECOMMENDED_FRAMES"]
