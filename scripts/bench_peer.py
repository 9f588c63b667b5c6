#!/usr/bin/env python3
"""A peer on identical perception: ambianic's fall rule (PyPI ``falldetect`` 1.0.9) and fallwatch's
detector, both fed the skeleton JSONL that fallwatch records for each labelled clip.

    scripts/bench_peer.py DATASET [DATASET ...] --cache DIR [--any-code] [--skip-missing] [--json FILE]

The peer is downloaded here, never installed or depended on: ``pip download --no-deps
falldetect==1.0.9`` into ``--peer-dir`` (default ``~/.cache/fallwatch/bench-peer``), and its
``pipeline/`` modules are loaded from the wheel, unchanged, under the name they have in ambianic's
repository (``src.pipeline``).

**Its decision.** ``FallDetector.fall_detect(image)`` in ``pipeline/fall_detect.py``
(``process_sample``, the pipe element, only wraps it and swallows exceptions). Per call it reads the
clock (``time.monotonic()``); if the last saved pose is less than ``min_time_between_frames`` = 1 s
old the frame is skipped without looking at it. Otherwise ``find_keypoints`` asks its ``PoseEngine``
for the pose (``detect_poses``: one PoseNet single-person pose, 17 COCO keypoints, a keypoint kept
when its score > ``confidence_threshold`` = 0.15 and it lies inside the input tensor, else score 0),
scores the body line (``estimate_spinal_vector_score``: min(shoulder, hip score) per side, both
sides averaged or one side x 0.9) and, below 0.15, retries on the image rotated by +-90 degrees.
With a pose, it takes each shoulder-hip line's angle with the vertical and compares the pose with
each of the two last *saved* poses (``_prev_data[-1]``, ``[-2]``; saved only when a pose was found;
ignored when more than ``max_time_between_frames`` = 10 s old): FALL when a shoulder-hip angle with
the vertical grew since then and a shoulder-hip line turned by more than ``_fall_factor`` = 60
degrees, with score (that pose's + this pose's spinal score) / 2 >= 0.15. Only the left/right
shoulders and hips are read. Defaults throughout: ``FallDetector(model, labels, model_name=
"mobilenet")``, as ambianic-edge builds it, ``confidence_threshold`` 0.15 unless
``--confidence-threshold``.

**Fed as ambianic's pipeline feeds it.** Every frame of the clip, in order, one call per frame, the
clock reading the frame's ``t`` (its module's ``time`` is a :class:`FrameClock`), so its own 1 s /
10 s history rules run on the clip's time, as on a camera whose frames arrive faster than 1 per
second. A fresh detector per clip. The first FALL is the clip's alert; all are counted, each with
the leaning angle it reports (``find_changes_in_angle`` takes ``abs(theta1 - theta2)`` of two
``atan2`` angles without wrapping it: a near-horizontal line whose angle crosses +-180 degrees
"turns" by 360 minus its real turn. An alert whose real turn, ``min(a, 360 - a)``, is not above its
60 degrees exists only through that and is counted apart: :func:`unwrapped_only`).

**Keypoints in its PoseNet layout.** Only the network is replaced: ``src.pipeline.posenet_model.
Posenet_MobileNet.execute_model`` returns, for the frame's skeleton, what PoseNet's ``parse_output``
returns: a (17, 3) array of rows ``[y, x, score]`` in the input tensor's pixels (257x257; the frame
shrunk with its aspect ratio kept, as PIL ``thumbnail`` does, at the top left of the padded input),
coordinates truncated to integers like ``parse_output``'s ``int()``, in COCO order. Our 18 keypoints
(edge/skeleton.py) map by name, the neck is dropped:

    COCO (PoseNet)   0 nose, 1 left eye, 2 right eye, 3 left ear, 4 right ear, 5 left shoulder,
                     6 right shoulder, 7 left elbow, 8 right elbow, 9 left wrist, 10 right wrist,
                     11 left hip, 12 right hip, 13 left knee, 14 right knee, 15 left ankle, 16 right ankle
    ours (index)     0 nose, 15 l_eye, 14 r_eye, 17 l_ear, 16 r_ear, 5 l_shoulder, 2 r_shoulder,
                     6 l_elbow, 3 r_elbow, 7 l_wrist, 4 r_wrist, 11 l_hip, 8 r_hip, 12 l_knee,
                     9 r_knee, 13 l_ankle, 10 r_ankle

Scores are our confidences (heatmap peaks, 0.14-0.99 on these clips) clipped to [0, 1], in place of
PoseNet's sigmoid of its heatmap peak; a missing part is score 0. PoseNet decodes one person: when
a frame has several skeletons, the one whose shoulders and hips have the largest summed confidence
is handed over (the parts the rule reads). Its ±90 degree retry gets the same skeleton in the rotated
image's coordinates (same scores, so the same verdict): fallwatch's skeletons already hold what its
own rotated views found (``views: auto``).

**Stubs** (``sys.modules``): ``tflite_runtime.interpreter`` (an ``Interpreter`` reporting a float32
1x257x257x3 input; never invoked), ``src`` (``DEFAULT_DATA_DIR``), ``src.pipeline.posenet_model``
(above) and ``src.pipeline.movenet_model`` (unused), and ``PIL`` when Pillow is not installed (the
two rotation constants; drawing happens only at DEBUG log level).

**Skeletons.** For each clip the JSONL ``fallwatch evaluate DIR --cache CACHE`` writes
(``<clip>-<key>.jsonl``, the key from :func:`edge.evaluate.skeleton_key`); clips without one are
computed first by :func:`edge.evaluate.evaluate` (slow: the model on every frame; never while another
run fills the same cache: both would write the same ``.partial`` file), or left out with
``--skip-missing``. ``--any-code``
also accepts a clip's cached JSONL made by other code (another key; the newest): both detectors
still see identical skeletons. fallwatch's alerts: :func:`edge.replay.replay_skeletons` on the same
file with the configuration, as ``fallwatch evaluate`` does. An alert counts for a fall when the
clip's first alert is at most ``LABEL_TOLERANCE_S`` (0.5 s) before the labelled start, as in
``fallwatch evaluate``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import math
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import load_config  # noqa: E402
from edge.evaluate import LABEL_TOLERANCE_S, EventList, evaluate, read_labels, skeleton_key  # noqa: E402
from edge.replay import read_skeletons, replay_skeletons  # noqa: E402
from edge.skeleton import HIPS, KEYPOINT_INDEX, SHOULDERS  # noqa: E402

PEER = "falldetect"
PEER_VERSION = "1.0.9"
TENSOR_WH = (257, 257)  # posenet_mobilenet_v1_100_257x257, ambianic's default tflite model

POSENET_KEYPOINTS: Tuple[str, ...] = (  # pipeline/pose_engine.py KEYPOINTS
    "nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder",
    "left elbow", "right elbow", "left wrist", "right wrist", "left hip", "right hip", "left knee",
    "right knee", "left ankle", "right ankle",
)
FROM_OURS = np.array([KEYPOINT_INDEX[n.replace("left ", "l_").replace("right ", "r_")]
                      for n in POSENET_KEYPOINTS])  # ours[FROM_OURS] is in PoseNet's order
TORSO = np.array(SHOULDERS + HIPS)


# ------------------------------------------------------------------------- skeleton -> PoseNet


def to_posenet(keypoints: np.ndarray) -> np.ndarray:
    """One skeleton ``(18, 3)`` (x, y normalised, confidence) -> ``(17, 3)`` in PoseNet's keypoint
    order, still normalised ``(x, y, score)``, scores clipped to [0, 1], missing parts all zero."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)[FROM_OURS].copy()
    kp[:, 2] = np.clip(kp[:, 2], 0.0, 1.0)
    kp[kp[:, 2] <= 0] = 0.0
    return kp


def pick_person(people: Sequence[Sequence[Sequence[float]]]) -> Optional[np.ndarray]:
    """The skeleton PoseNet's single-person decoder stands for: the one whose shoulders and hips
    have the largest summed confidence (the first on ties); None for no one."""
    if not people:
        return None
    kp = np.asarray(people, dtype=np.float64).reshape(len(people), -1, 3)
    return kp[int(np.argmax(kp[:, TORSO, 2].sum(axis=1)))]


def thumbnail_size(size: Tuple[int, int], box: Tuple[int, int]) -> Tuple[int, int]:
    """The size PIL's ``Image.thumbnail(box)`` gives an image of ``size``: the aspect ratio kept,
    only ever shrunk."""
    width, height = size
    x, y = box
    if x >= width and y >= height:
        return width, height
    aspect = width / height

    def round_aspect(number: float, key: Any) -> int:
        return max(min(math.floor(number), math.ceil(number), key=key), 1)

    if x / y >= aspect:
        x = round_aspect(y * aspect, key=lambda n: abs(aspect - n / y))
    else:
        y = round_aspect(x / aspect, key=lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


def posenet_output(coco: np.ndarray, size: Tuple[int, int], tensor_wh: Tuple[int, int] = TENSOR_WH) -> np.ndarray:
    """Normalised ``(17, 3)`` keypoints of an image of ``size`` -> PoseNet's ``parse_output``
    array: rows ``[y, x, score]`` in input-tensor pixels of the thumbnail at the top left,
    coordinates truncated to integers; missing parts ``[0, 0, 0]``."""
    tw, th = thumbnail_size(size, tensor_wh)
    kps = np.zeros((len(POSENET_KEYPOINTS), 3), np.float32)
    seen = coco[:, 2] > 0
    kps[seen, 0] = np.floor(coco[seen, 1] * th)
    kps[seen, 1] = np.floor(coco[seen, 0] * tw)
    kps[seen, 2] = coco[seen, 2]
    return kps


class FrameImage:
    """What the peer is handed as ``image``: one frame's skeleton in PoseNet order (normalised) and
    the frame's size; ``transpose`` rotates both as PIL rotates a picture."""

    def __init__(self, coco: np.ndarray, size: Tuple[int, int], rotate_90: Any, rotate_270: Any) -> None:
        self.coco, self.size = coco, size
        self._rotations = (rotate_90, rotate_270)

    def transpose(self, method: Any) -> "FrameImage":
        x, y, s = self.coco[:, 0], self.coco[:, 1], self.coco[:, 2]
        if method == self._rotations[0]:  # counter-clockwise: (x, y) -> (y, 1 - x)
            xy = (y, 1.0 - x)
        elif method == self._rotations[1]:  # clockwise: (x, y) -> (1 - y, x)
            xy = (1.0 - y, x)
        else:
            raise ValueError("FrameImage.transpose: only ROTATE_90 and ROTATE_270, not %r" % (method,))
        coco = np.where((s > 0)[:, None], np.stack(xy + (s,), axis=1), 0.0)
        return FrameImage(coco, (self.size[1], self.size[0]), *self._rotations)


# ------------------------------------------------------------------------------ loading the peer


class FrameClock:
    """Stands for the ``time`` module inside the peer's fall_detect: ``monotonic()`` is the frame's t."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t


class _Size:
    def __init__(self, size: Tuple[int, int]) -> None:
        self.size = size


def fetch_wheel(folder: Path) -> Path:
    """``falldetect-1.0.9-*.whl`` in ``folder``, downloaded with pip the first time."""
    folder.mkdir(parents=True, exist_ok=True)
    found = sorted(folder.glob("%s-%s-*.whl" % (PEER, PEER_VERSION)))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "%s==%s" % (PEER, PEER_VERSION), "-d", str(folder)]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit("bench_peer: `%s` failed; download the wheel by hand into %s" % (" ".join(cmd), folder))
        found = sorted(folder.glob("%s-%s-*.whl" % (PEER, PEER_VERSION)))
    if not found:
        raise SystemExit("bench_peer: no %s-%s wheel in %s after pip download" % (PEER, PEER_VERSION, folder))
    return found[0]


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def load_peer(wheel: Path, workdir: Path) -> Tuple[types.ModuleType, FrameClock, Path]:
    """The wheel's ``pipeline`` package loaded as ``src.pipeline`` with the stubs of the module
    docstring; returns its ``fall_detect`` module, the clock it reads and a placeholder model file."""
    pkg = workdir / ("%s-%s" % (PEER, PEER_VERSION)) / "pipeline"
    with zipfile.ZipFile(str(wheel)) as zf:
        for name in zf.namelist():
            if name.startswith("pipeline/") and name.endswith(".py"):
                zf.extract(name, str(pkg.parent))
    placeholder = workdir / "no-model.tflite"
    placeholder.write_bytes(b"keypoints come from fallwatch's skeleton JSONL\n")

    try:
        importlib.import_module("PIL.Image")
    except ImportError:
        image = _module("PIL.Image", ROTATE_90=2, ROTATE_270=4)  # PIL's Image.Transpose values

        def draw(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the peer draws only at DEBUG log level, which needs Pillow")

        _module("PIL", Image=image, ImageDraw=_module("PIL.ImageDraw", Draw=draw), __path__=[])

    class Interpreter:
        def __init__(self, model_path: str = "", **kwargs: Any) -> None:
            self.model_path = model_path

        def allocate_tensors(self) -> None:
            pass

        def get_input_details(self) -> List[Dict[str, Any]]:
            return [{"index": 0, "shape": np.array([1, TENSOR_WH[1], TENSOR_WH[0], 3]), "dtype": np.float32}]

        def get_output_details(self) -> List[Dict[str, Any]]:
            return [{"index": 1}, {"index": 2}]

        def invoke(self) -> None:
            raise RuntimeError("the benchmark's tflite stub runs no network")

    def load_delegate(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("no EdgeTPU in the benchmark")

    tflite = _module("tflite_runtime", __path__=[])
    tflite.interpreter = _module("tflite_runtime.interpreter", Interpreter=Interpreter, load_delegate=load_delegate)

    class Posenet_MobileNet:  # noqa: N801 (its name)
        """PoseNet's place: ``execute_model`` returns the frame's skeleton as ``parse_output`` would."""

        def __init__(self, tfengine: Any) -> None:
            _, self._tensor_image_height, self._tensor_image_width, _ = tfengine.input_details[0]["shape"]
            self.confidence_threshold = tfengine.confidence_threshold

        def execute_model(self, img: FrameImage) -> Tuple[np.ndarray, Any, Any, float]:
            tensor_wh = (int(self._tensor_image_width), int(self._tensor_image_height))
            kps = posenet_output(img.coco, img.size, tensor_wh)
            return kps, _Size(tensor_wh), _Size(thumbnail_size(img.size, tensor_wh)), 0.0

    class Movenet:
        def __init__(self, tfengine: Any) -> None:
            raise RuntimeError("the benchmark feeds the peer as PoseNet (model_name='mobilenet')")

    src = _module("src", DEFAULT_DATA_DIR=str(workdir), __path__=[])
    spec = importlib.util.spec_from_file_location("src.pipeline", str(pkg / "__init__.py"),
                                                  submodule_search_locations=[str(pkg)])
    pipeline = importlib.util.module_from_spec(spec)
    sys.modules["src.pipeline"] = pipeline
    spec.loader.exec_module(pipeline)
    src.pipeline = pipeline
    _module("src.pipeline.posenet_model", Posenet_MobileNet=Posenet_MobileNet)
    _module("src.pipeline.movenet_model", Movenet=Movenet)
    fall_detect = importlib.import_module("src.pipeline.fall_detect")
    clock = FrameClock()
    fall_detect.time = clock
    logging.getLogger("src.pipeline").setLevel(logging.WARNING)
    return fall_detect, clock, placeholder


# ------------------------------------------------------------------------------------ running


def run_peer(jsonl: Path, fall_detect: types.ModuleType, clock: FrameClock, placeholder: Path,
             confidence_threshold: Optional[float] = None) -> List[Tuple[float, float]]:
    """``(t, leaning angle)`` of every frame on which the peer's ``fall_detect`` returns a FALL."""
    image = sys.modules["PIL.Image"]
    clock.t = 0.0
    kwargs = {} if confidence_threshold is None else {"confidence_threshold": confidence_threshold}
    detector = fall_detect.FallDetector(model={"tflite": str(placeholder)}, labels=str(placeholder),
                                        model_name="mobilenet", **kwargs)
    alerts = []
    for _, record in read_skeletons(jsonl):
        clock.t = float(record["t"])
        person = pick_person([p["keypoints"] for p in record["people"]])
        coco = to_posenet(person) if person is not None else np.zeros((len(POSENET_KEYPOINTS), 3))
        frame = FrameImage(coco, (int(record["width"]), int(record["height"])), image.ROTATE_90, image.ROTATE_270)
        result, _ = detector.fall_detect(image=frame)
        alerts += [(clock.t, float(r[2])) for r in result or () if r[0] == "FALL"]
    return alerts


def run_fallwatch(jsonl: Path, config: Any) -> List[float]:
    """The t of every ``fall_detected`` of fallwatch's detector replayed on ``jsonl``."""
    sink = EventList()
    replay_skeletons(jsonl, config, sink)
    return [e["t"] for e in sink.events if e["type"] == "fall_detected"]


def cache_name(file: str, key: str) -> str:
    """The name ``edge.evaluate.evaluate`` gives a clip's skeleton JSONL in its cache."""
    return "%s-%s.jsonl" % (file.replace("/", "_").rsplit(".", 1)[0], key)


def _lookup(folder: Path, rows: List[Dict[str, str]], config: Any, cache: Path,
            any_code: bool) -> Dict[str, Tuple[Path, bool]]:
    found: Dict[str, Tuple[Path, bool]] = {}
    for row in rows:
        exact = cache / cache_name(row["file"], skeleton_key(folder / row["file"], config, None))
        if exact.is_file():
            found[row["file"]] = (exact, True)
        elif any_code:
            pattern = re.compile(re.escape(cache_name(row["file"], "KEY")).replace("KEY", "[0-9a-f]{16}") + "$")
            other = sorted((p for p in cache.glob("*.jsonl") if pattern.match(p.name)), key=lambda p: p.stat().st_mtime)
            if other:
                found[row["file"]] = (other[-1], False)
    return found


def skeleton_files(folder: Path, config: Any, cache: Path, any_code: bool,
                   skip_missing: bool = False) -> Dict[str, Tuple[Path, bool]]:
    """clip -> (its skeleton JSONL, made by this code), computing missing ones through fallwatch
    evaluate's own code path (which then computes every clip lacking this code's skeletons), or,
    with ``skip_missing``, leaving them out."""
    rows = read_labels(folder)
    found = _lookup(folder, rows, config, cache, any_code)
    if skip_missing:
        for row in rows:
            if row["file"] not in found:
                print("bench_peer: %s: no skeletons in %s, left out" % (row["file"], cache), file=sys.stderr)
        return found
    if len(found) < len(rows):
        from edge.inference.model import open_pose_model

        print("bench_peer: %s: %d of %d clips have no skeletons in %s; computing them (the model on every "
              "frame: minutes per clip)" % (folder, len(rows) - len(found), len(rows), cache), file=sys.stderr)
        evaluate(folder, config, cache, lambda: open_pose_model(config), None)
        found = _lookup(folder, rows, config, cache, False)
        if len(found) < len(rows):
            raise SystemExit("bench_peer: fallwatch evaluate ran but %s lacks skeletons named like %s: has "
                             "edge.evaluate changed its cache names?" % (cache, cache_name(rows[0]["file"], "KEY")))
    return found


def real_turn(angle: float) -> float:
    """The peer's reported line turn (``abs`` of two ``atan2`` angles, 0-360) wrapped to 0-180."""
    return min(angle, 360.0 - angle)


def unwrapped_only(angle: float) -> bool:
    """The peer alerted (turn > ``_fall_factor``, 60) only because the turn is not wrapped."""
    return angle > 180.0 and real_turn(angle) <= 60.0


def caught(label: str, start: Optional[float], alerts: List[float]) -> bool:
    return label == "fall" and bool(alerts) and alerts[0] >= start - LABEL_TOLERANCE_S


def bench_dataset(folder: Path, config: Any, cache: Path, any_code: bool, peer: Tuple[Any, ...],
                  confidence_threshold: Optional[float], skip_missing: bool = False) -> Dict[str, Any]:
    files = skeleton_files(folder, config, cache, any_code, skip_missing)
    clips = []
    for row in read_labels(folder):
        if row["file"] not in files:
            continue
        jsonl, current = files[row["file"]]
        start = float(row["fall_start_s"]) if row["label"] == "fall" else None
        clips.append({"file": row["file"], "label": row["label"], "fall_start_s": start,
                      "skeletons": str(jsonl), "skeletons_from_this_code": current,
                      "peer_alerts": [], "peer_angles": [], "fallwatch_alerts": run_fallwatch(jsonl, config)})
        for t, angle in run_peer(jsonl, *peer, confidence_threshold=confidence_threshold):
            clips[-1]["peer_alerts"].append(t)
            clips[-1]["peer_angles"].append(round(angle, 1))
    totals = {"fall_clips": sum(c["label"] == "fall" for c in clips),
              "adl_clips": sum(c["label"] == "adl" for c in clips)}
    for who in ("peer", "fallwatch"):
        alerts = [(c["label"], c["fall_start_s"], c[who + "_alerts"]) for c in clips]
        totals[who] = {
            "falls_caught": sum(caught(*a) for a in alerts),
            "falls_alerted_too_early": sum(1 for lab, s, al in alerts
                                           if lab == "fall" and al and al[0] < s - LABEL_TOLERANCE_S),
            "adl_clips_with_an_alert": sum(1 for lab, _, al in alerts if lab == "adl" and al),
            "alerts_in_adl_clips": sum(len(al) for lab, _, al in alerts if lab == "adl"),
        }
    totals["peer"]["alerts_only_from_the_unwrapped_angle"] = sum(unwrapped_only(a) for c in clips
                                                                 for a in c["peer_angles"])
    totals["peer"]["falls_caught_only_through_it"] = sum(
        1 for c in clips if caught(c["label"], c["fall_start_s"], c["peer_alerts"]) and unwrapped_only(c["peer_angles"][0]))
    totals["peer"]["adl_clips_whose_first_alert_is_only_through_it"] = sum(
        1 for c in clips if c["label"] == "adl" and c["peer_angles"] and unwrapped_only(c["peer_angles"][0]))
    missing = [row["file"] for row in read_labels(folder) if row["file"] not in files]
    return {"dataset": str(folder), "clips": clips, "totals": totals, "left_out": missing}


def _t(alerts: List[float]) -> str:
    if not alerts:
        return "-"
    return "%.2f" % alerts[0] + (" (%d)" % len(alerts) if len(alerts) > 1 else "")


def _turn(angles: List[float]) -> str:
    if not angles:
        return "-"
    return "%.0f" % angles[0] + (" (%.0f)" % real_turn(angles[0]) if angles[0] > 180 else "")


def format_dataset(result: Dict[str, Any]) -> str:
    lines = ["%s (%d fall clips, %d ADL clips)" % (Path(result["dataset"]).name, result["totals"]["fall_clips"],
                                                   result["totals"]["adl_clips"]), "",
             "| clip | label | fall start (s) | peer alert (s) | peer: line turn at that alert, reported (real), deg "
             "| fallwatch alert (s) |", "|---|---|---|---|---|---|"]
    for c in result["clips"]:
        lines.append("| %s%s | %s | %s | %s | %s | %s |" % (
            c["file"], "" if c["skeletons_from_this_code"] else " *", c["label"],
            "" if c["fall_start_s"] is None else "%.2f" % c["fall_start_s"], _t(c["peer_alerts"]),
            _turn(c["peer_angles"]), _t(c["fallwatch_alerts"])))
    t = result["totals"]
    lines.append("")
    for who in ("peer", "fallwatch"):
        w = t[who]
        lines.append("%s: falls caught %d/%d (first alert more than %.1f s before the fall start: %d), ADL clips "
                     "with an alert %d/%d (%d alerts)" % (
                         who, w["falls_caught"], t["fall_clips"], LABEL_TOLERANCE_S, w["falls_alerted_too_early"],
                         w["adl_clips_with_an_alert"], t["adl_clips"], w["alerts_in_adl_clips"]))
    p = t["peer"]
    lines.append("peer alerts that exist only because its angle difference is not wrapped (real turn at most "
                 "60 degrees): %d of %d; falls caught only through such an alert %d, ADL clips whose first alert "
                 "is one %d" % (
                     p["alerts_only_from_the_unwrapped_angle"], sum(len(c["peer_alerts"]) for c in result["clips"]),
                     p["falls_caught_only_through_it"], p["adl_clips_whose_first_alert_is_only_through_it"]))
    if result["left_out"]:
        lines.append("(left out, no skeletons yet: %s)" % ", ".join(result["left_out"]))
    if not all(c["skeletons_from_this_code"] for c in result["clips"]):
        lines.append("(* skeletons recorded by other code than this checkout's: --any-code)")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="+", type=Path, help="folders with labels.csv (as for fallwatch evaluate)")
    ap.add_argument("--cache", type=Path, required=True, help="fallwatch evaluate's skeleton cache")
    ap.add_argument("--any-code", action="store_true",
                    help="use a clip's cached skeletons even when other code made them")
    ap.add_argument("--skip-missing", action="store_true",
                    help="leave out clips without skeletons instead of computing them (e.g. while another "
                         "run is filling the same cache)")
    ap.add_argument("--config", default=str(REPO / "config.yaml"), help="fallwatch config (default: config.yaml)")
    ap.add_argument("--peer-dir", type=Path, default=Path.home() / ".cache" / "fallwatch" / "bench-peer",
                    help="where the peer's wheel is downloaded and unpacked")
    ap.add_argument("--confidence-threshold", type=float, default=None,
                    help="the peer's confidence_threshold (default: its own, 0.15)")
    ap.add_argument("--json", type=Path, help="write every clip's alerts and the totals here")
    args = ap.parse_args(argv)

    config = load_config(args.config)
    peer = load_peer(fetch_wheel(args.peer_dir), args.peer_dir)
    threshold = args.confidence_threshold
    results = [bench_dataset(d, config, args.cache, args.any_code, peer, threshold, args.skip_missing)
               for d in args.datasets]
    print("peer: %s %s, FallDetector defaults%s; fallwatch: %s\n" % (
        PEER, PEER_VERSION, "" if threshold is None else " except confidence_threshold %.2f" % threshold,
        args.config))
    print("\n\n".join(format_dataset(r) for r in results))
    if args.json:
        args.json.write_text(json.dumps({"peer": "%s==%s" % (PEER, PEER_VERSION), "confidence_threshold": threshold,
                                         "label_tolerance_s": LABEL_TOLERANCE_S, "datasets": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
