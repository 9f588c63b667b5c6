"""Calibration data of the crop families (spec ``family: top_down`` or ``single_person_3d``): person crops.

A top-down or 3D network never sees a whole frame, so it is calibrated and verified on the crops the daemon
would show it. They are made by the daemon's own code: the configured bottom-up seed model
(``topdown.seed_spec``, opened by :func:`edge.inference.model.open_seed_model` on the configured backend)
finds the people of each frame, and :meth:`edge.inference.topdown.TopDownPath.crops` cuts them (box widened
by ``topdown.box_scale``, a lying person turned upright, the model's layout, colour order, normalisation
and low-light brightening); a single_person_3d model's other inputs (``k_inv``, ``t_form_inv``, the limb
lengths) come from :meth:`edge.inference.body3d.Body3DPath.extra_inputs`, one row per crop. ``k_inv`` is
the first configured camera's (its ``intrinsics``, else its ``hfov_deg``), or the default field of view
when no camera is configured.

The crops go to a scratch file (float32, memory-mapped back, as for whole frames in
:mod:`calibration.data`); the other inputs are small and kept in memory. Each crop's source is its
frame's, with ``@i`` for the i-th crop of that frame.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from calibration.data import Sources, TensorSet, _frames
from calibration.frames import FramesError
from calibration.progress import Progress

log = logging.getLogger("fallwatch.calibration")

CROP_FAMILIES = ("top_down", "single_person_3d")


def _path(config, spec, seed):
    """The daemon's crop path for ``spec`` with the ``seed`` model; its model has no engine (crops only)."""
    from edge.inference.model import PoseModel, input_hw, low_light
    from edge.inference.topdown import TopDownPath

    model = PoseModel(spec, None, input_hw(config), config.model.resize, low_light(config), seed)  # type: ignore
    if spec.family == "single_person_3d":
        from edge.inference.body3d import DEFAULT_HFOV_DEG, Body3DPath

        camera = config.cameras[0] if config.cameras else None
        return Body3DPath(model, config.topdown, "calibration", views=config.views,
                          intrinsics=getattr(camera, "intrinsics", ()) or (),
                          hfov_deg=getattr(camera, "hfov_deg", DEFAULT_HFOV_DEG))
    return TopDownPath(model, config.topdown, "calibration", views=config.views)


def collect_crops(sources: Sources, config, spec, scratch_dir: Path, name: str = "calibration",
                  progress: bool = True, seed=None) -> TensorSet:
    """The person crops of every frame of ``sources`` (and, for a 3D model, their other inputs) as a
    :class:`~calibration.data.TensorSet`. ``seed``: an open bottom-up PoseModel (default: the configured
    one, opened and closed here). FramesError when ``topdown.seed_spec`` is null or no frame has a person."""
    from edge.inference.model import open_seed_model
    from edge.pipeline import still_frame

    if sources.empty():
        raise FramesError("no calibration source: give --images DIR, --video FILE or --camera URI")
    own_seed = seed is None
    if own_seed:
        if config.topdown.seed_spec is None:
            raise FramesError("model.spec %s is a %s model: its calibration crops are cut around the people the "
                              "seed model finds, and topdown.seed_spec is null: set it (e.g. "
                              "openpose-mobilenet-thin)" % (spec.name, spec.family))
        seed = open_seed_model(config)
    skipped: List[str] = []
    frames, bound = _frames(sources, skipped)
    path = Path(scratch_dir) / (name + ".f32")
    names: List[str] = []
    extra: Dict[str, List[np.ndarray]] = {}
    sample_shape = None
    frames_read = 0
    bar = Progress("cutting %s crops" % name, bound) if progress else None
    try:
        crop_path = _path(config, spec, seed)
        with open(str(path), "wb") as out:
            for frame in frames:
                frames_read += 1
                job = crop_path.prepare(still_frame(frame.image, "calibration"), seed=True, follow=False)
                batch = np.ascontiguousarray(crop_path.crops(job), np.float32)
                if len(batch):
                    sample_shape = batch.shape[1:]
                    out.write(batch.tobytes())
                    for key, rows in crop_path.extra_inputs(job).items():
                        extra.setdefault(key, []).append(np.asarray(rows, np.float32))
                    names.extend("%s@%d" % (frame.source, i) for i in range(len(batch)))
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
        if own_seed and seed is not None:
            seed.close()
    if not names:
        raise FramesError("the %s frames (%d read from %s) gave no person crops: the seed model %s found nobody in "
                          "them; %s needs frames with people in them" % (
                              name, frames_read, _describe(sources), config.topdown.seed_spec, spec.name))
    store = np.memmap(str(path), dtype=np.float32, mode="r", shape=(len(names),) + tuple(sample_shape))
    log.info("%d %s crops from %d frames", len(names), name, frames_read)
    return TensorSet(store, names, skipped, extra={k: np.concatenate(v) for k, v in extra.items()})


def _describe(sources: Sources) -> str:
    parts = [str(p) for p in sources.images] + [str(p) for p in sources.videos] + list(sources.cameras)
    return ", ".join(parts)


def collect_for(spec, sources: Sources, config, input_hw, scratch: Path, name: str, progress: bool,
                light: Optional[object] = None, seed=None) -> TensorSet:
    """Whole preprocessed frames for a bottom-up ``spec``, person crops for the crop families."""
    from calibration.data import collect

    if spec.family in CROP_FAMILIES:
        return collect_crops(sources, config, spec, scratch, name, progress, seed)
    return collect(sources, spec, input_hw, config.model.resize, scratch, name, progress, light)
