"""Pose parser: canonical heatmaps and part affinity fields -> people, in vectorised NumPy.

The algorithm is BodyPoseNet's (NVIDIA TAO) / CMU OpenPose post-processing, with every
threshold a field of :class:`ParseParams` (TAO's defaults, except a lighter heatmap smoothing,
because TAO smooths maps upsampled to the input and this parser smooths the heatmap grid):

1. **Peaks.** Each keypoint heatmap is smoothed (Gaussian, ``blur_kernel`` x ``blur_sigma``,
   in heatmap cells, OpenCV's reflect-101 border) and a cell is a peak when its smoothed value
   exceeds ``peak_threshold`` and is a maximum of its 3x3 neighbourhood (ties: a cell must be
   strictly greater than its neighbours that come before it in raster order, so a flat plateau
   does not give a peak per cell). At most ``max_peaks_per_part`` peaks per part are kept (the
   strongest; ties by raster order), so a map full of peaks costs bounded time and memory.
   With ``refine_peaks`` a peak is then localised on the raw map: it climbs to the raw 3x3
   maximum (at most the kernel radius, which is as far as smoothing can move a peak; peaks of a
   part that meet are merged) and a Gaussian (log-parabola) fit through that cell and its two
   neighbours along each axis gives the sub-cell position (within +-0.5 cell). On Gaussian peaks
   this is exact; a parabola through the smoothed map errs by up to 2 cells near the border and
   beside other peaks (TAO's 5x5 kernel is as wide as a small person's head on a stride-8 grid);
   integer cells err by 0.38 cell on average. A part's score (confidence) is the raw heatmap
   value at its final cell, at least 0.001 so that 0 always means "missing".
2. **Limbs.** For limb ``k`` of the topology (PAF channels ``2k`` = x, ``2k+1`` = y) every pair of
   candidates (A of part ``a``, B of part ``b``) is scored by sampling ``paf_samples`` points
   evenly from A to B, both ends included. Heatmap-cell coordinates ``c`` map to the PAF grid in
   continuous coordinates, ``(c + 0.5) * W_paf / W_heat - 0.5``, where the PAF is read by bilinear
   interpolation (clamped to the map), so PAFs at another resolution need no resampling of whole
   maps. Each sample's score is the dot product of the PAF vector with the unit vector from A to B.
   The pair's score is the mean sample score plus the CMU distance prior
   ``min(long_limb_fraction * H_heat / length - 1, 0)``, length in heatmap cells (a penalty for limbs
   longer than half the map height). A pair is valid when more than ``paf_min_fraction`` of its
   samples exceed ``paf_sample_threshold`` and its score is above 0. Bilinear rather than nearest
   sampling: continuous in the peak coordinates, and on stride-8 PAFs a short limb's samples do
   not all read the same cell.
3. **Matching.** Per limb, valid pairs are taken greedily by descending score (ties by A's then
   B's candidate order), each candidate at most once per limb.
4. **Assembly.** Connections are processed limb by limb in topology order, best first. A
   connection whose two parts belong to one person changes nothing; when one belongs to a person
   whose slot for the other part is empty, that part joins the person (either end: this is what
   lets topologies that are not rooted at the neck, like trt_pose's, grow fragments into people);
   when they belong to two people whose parts are disjoint, the two people merge; when neither
   belongs to anybody, the two parts start a new group. A connection that would put two
   candidates in one part slot is skipped (CMU would overwrite). ``fills_gaps`` limbs never start
   a person: a group held together only by such connections (an eye and an ear) is a fragment,
   dropped at the end unless it merged with a person (CMU: an eye-ear fragment joins its person
   through the shoulder-ear limbs processed last, so eyes are kept when the nose is missed).
5. **Scores.** A person's total is the sum of its parts' peak scores and its connections'
   scores (TAO/CMU); the person's *score* is that total divided by its number of parts. People
   with fewer than ``min_parts`` parts or a score under ``min_person_score`` are dropped.

Non-finite map values count as 0. The loop oracle in ``tests/parse_oracle.py`` implements the
same algorithm plainly; the two agree to well under 1e-4 cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge.skeleton import NUM_KEYPOINTS
from edge.inference.specs import BUILTIN_SPECS, Limb, load_spec

MIN_PART_CONFIDENCE = 1e-3  # a found part's confidence is at least this; 0 means missing
_VALUE_LIMIT = 1e6  # map values are clipped to +-this so sums stay finite on hostile input
_PAIR_CHUNK = 16384  # candidate pairs scored at once (bounds memory on maps full of peaks)


@dataclass(frozen=True)
class ParseParams:
    """Thresholds of the parser (defaults: BodyPoseNet's post-processing). Units in the comments."""

    # Gaussian smoothing of the heatmaps, in heatmap cells (kernel odd; 0 or 1: none). TAO's 5 / 3.0
    # is meant for maps upsampled to the input; on the stride-4/8 grids parsed here it merges the
    # same part of people ~3.5 cells apart, and 3 / 0.6 finds far more people standing close
    # together at equal noise robustness (BENCHMARKS.md, "Parser").
    blur_kernel: int = 3
    blur_sigma: float = 0.6
    peak_threshold: float = 0.1  # a peak's smoothed heatmap value must exceed this
    refine_peaks: bool = True  # sub-cell peak position from a parabola through the smoothed map
    max_peaks_per_part: int = 64  # strongest peaks kept per part (bounds time and memory)
    paf_samples: int = 10  # points sampled along a candidate limb, both ends included
    paf_sample_threshold: float = 0.05  # a sample counts when its PAF . unit vector exceeds this
    paf_min_fraction: float = 0.8  # a limb is valid when more than this fraction of samples count
    long_limb_fraction: float = 0.5  # limbs longer than this fraction of the map height are penalised
    min_parts: int = 4  # people with fewer parts are dropped
    min_person_score: float = 0.4  # people whose total score / parts is lower are dropped

    def __post_init__(self) -> None:
        problems = []
        if self.blur_kernel < 0 or (self.blur_kernel > 1 and self.blur_kernel % 2 == 0):
            problems.append("blur_kernel must be 0, 1 or an odd number of cells, got %r" % self.blur_kernel)
        if not self.blur_sigma > 0:
            problems.append("blur_sigma must be > 0 cells, got %r" % self.blur_sigma)
        if self.max_peaks_per_part < 1:
            problems.append("max_peaks_per_part must be >= 1, got %r" % self.max_peaks_per_part)
        if self.paf_samples < 2:
            problems.append("paf_samples must be >= 2, got %r" % self.paf_samples)
        if not 0.0 <= self.paf_min_fraction <= 1.0:
            problems.append("paf_min_fraction must be within [0, 1], got %r" % self.paf_min_fraction)
        if not self.long_limb_fraction > 0:
            problems.append("long_limb_fraction must be > 0, got %r" % self.long_limb_fraction)
        if self.min_parts < 2:
            problems.append("min_parts must be >= 2, got %r" % self.min_parts)
        if problems:
            raise ValueError("ParseParams: " + "; ".join(problems))


DEFAULT_PARAMS = ParseParams()

Topology = Union[str, Sequence[Limb]]


def resolve_topology(topology: Topology) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, fills_gaps)`` int/int/bool arrays of the limbs, from limbs or a spec name
    (read-only arrays, shared between calls with the same built-in name or tuple of limbs; a spec
    file is read on every call, so an edited file is never served from a cache)."""
    if isinstance(topology, str) and topology not in BUILTIN_SPECS:
        return _resolve(topology)
    try:
        hash(topology)
    except TypeError:  # a list of limbs
        return _resolve(topology)
    return _resolved(topology)


@lru_cache(maxsize=32)
def _resolved(topology: Topology) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _resolve(topology)


def _resolve(topology: Topology) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(topology, str):
        topology = load_spec(topology).topology
    try:
        limbs = [(int(limb.a), int(limb.b), bool(getattr(limb, "fills_gaps", False))) for limb in topology]
    except (AttributeError, TypeError, ValueError):
        raise ValueError("topology must be a spec name or a sequence of edge.inference.specs.Limb, got %r"
                         % (topology,)) from None
    for k, (a, b, _) in enumerate(limbs):
        if not (0 <= a < NUM_KEYPOINTS and 0 <= b < NUM_KEYPOINTS) or a == b:
            raise ValueError("topology limb %d joins keypoints %d and %d; expected two different indices "
                             "in 0..%d" % (k, a, b, NUM_KEYPOINTS - 1))
    arr = np.array([(a, b) for a, b, _ in limbs], dtype=np.int64).reshape(-1, 2)
    out = (arr[:, 0].copy(), arr[:, 1].copy(), np.array([f for _, _, f in limbs], dtype=bool))
    for a in out:
        a.setflags(write=False)
    return out


def check_maps(heatmaps: Any, pafs: Any, num_limbs: int) -> Tuple[np.ndarray, np.ndarray]:
    """The maps as float32 arrays ``(18, H, W)`` (background dropped) and ``(2L, H', W')``.

    Raises ValueError naming the expected shape. Non-finite heatmap values become 0 and values
    are clipped to +-1e6 (the heatmaps are copied only then or to convert them; never written
    to); the PAF is not copied (it is sanitised where sampled).
    """
    heat = np.asarray(heatmaps)
    paf = np.asarray(pafs)
    if heat.ndim != 3 or heat.shape[0] not in (NUM_KEYPOINTS, NUM_KEYPOINTS + 1) or 0 in heat.shape:
        raise ValueError("heatmaps must have shape (%d or %d, H, W) with H, W >= 1 (channel first, background "
                         "last), got %s" % (NUM_KEYPOINTS, NUM_KEYPOINTS + 1, heat.shape))
    if paf.ndim != 3 or paf.shape[0] != 2 * num_limbs or 0 in paf.shape:
        raise ValueError("pafs must have shape (%d, H', W') with H', W' >= 1 (x then y for each of the %d limbs "
                         "of the topology), got %s" % (2 * num_limbs, num_limbs, paf.shape))
    if heat.dtype.kind not in "fiub" or paf.dtype.kind not in "fiub":
        raise ValueError("heatmaps and pafs must hold numbers, got %s and %s" % (heat.dtype, paf.dtype))
    heat = np.asarray(heat[:NUM_KEYPOINTS], dtype=np.float32)
    if not (heat.min() >= -_VALUE_LIMIT and heat.max() <= _VALUE_LIMIT):  # NaN fails both
        if not np.isfinite(heat).all():
            heat = np.where(np.isfinite(heat), heat, np.float32(0))
        heat = np.clip(heat, -_VALUE_LIMIT, _VALUE_LIMIT)
    return heat, paf


def smooth(heat: np.ndarray, params: ParseParams, hwc: Optional[np.ndarray] = None) -> np.ndarray:
    """Gaussian-smoothed heatmaps, channel last ``(H, W, K)`` float32 (OpenCV, reflect-101 border).
    ``hwc``: the heatmaps already channel last and contiguous, if the caller has them."""
    if hwc is None:
        hwc = np.ascontiguousarray(heat.transpose(1, 2, 0))
    if params.blur_kernel <= 1:
        return hwc
    k = int(params.blur_kernel)
    out = cv2.GaussianBlur(hwc, (k, k), float(params.blur_sigma), borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(hwc.shape)


# Neighbour offsets (dy, dx) that come before a cell in raster order: the cell must beat them strictly.
_BEFORE = np.array(((-1, -1), (-1, 0), (-1, 1), (0, -1)), dtype=np.intp)
_BOX3 = np.ones((3, 3), dtype=np.uint8)


def find_peaks(heat: np.ndarray, params: ParseParams = DEFAULT_PARAMS
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Peaks of every part: ``(part, x, y, score)`` sorted by part then raster order.

    ``x``, ``y`` are float64 heatmap-cell coordinates (cell centres at integers), refined below a
    cell when ``params.refine_peaks``; ``score`` is the raw heatmap value at the peak cell.
    """
    hwc = np.ascontiguousarray(heat.transpose(1, 2, 0))
    blurred = smooth(heat, params, hwc)
    h, w, k = blurred.shape
    # Cells at least as high as their 3x3 neighbourhood (dilation ignores the border): a superset
    # of the peaks, so the tie rule needs checking only there.
    top = cv2.dilate(blurred, _BOX3).reshape(blurred.shape)
    found = np.flatnonzero((blurred > np.float32(params.peak_threshold)) & (blurred >= top))
    cell, part = np.divmod(found, k)
    order = np.argsort(part * (h * w) + cell, kind="stable")  # part-major, raster order
    part, cell = part[order], cell[order]
    row, col = np.divmod(cell, w)
    value = blurred.reshape(-1)[found[order]]
    # strictly higher than its neighbours before it in raster order (dy <= 0, so r < h)
    r, c = row + _BEFORE[:, :1], col + _BEFORE[:, 1:]
    outside = (r < 0) | (c < 0) | (c >= w)
    keep = (outside | (value > blurred[np.maximum(r, 0), np.minimum(np.maximum(c, 0), w - 1), part])).all(axis=0)
    part, row, col, value = part[keep], row[keep], col[keep], value[keep]
    cap = int(params.max_peaks_per_part)
    if part.size > cap and np.bincount(part, minlength=k).max() > cap:
        order = np.lexsort((-value.astype(np.float64), part))  # raster order breaks ties (stable)
        starts = np.searchsorted(part[order], np.arange(k))
        rank = np.arange(order.size) - starts[part[order]]
        keep = np.zeros(part.size, dtype=bool)
        keep[order[rank < cap]] = True
        part, row, col, value = part[keep], row[keep], col[keep], value[keep]
    if params.refine_peaks and part.size:
        return _refine(hwc, part, row, col, max(int(params.blur_kernel) // 2, 1))
    score = np.maximum(heat[part, row, col].astype(np.float64), MIN_PART_CONFIDENCE)
    return part.astype(np.int64), col.astype(np.float64), row.astype(np.float64), score


def _refine(hwc: np.ndarray, part: np.ndarray, row: np.ndarray, col: np.ndarray, steps: int
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Peaks found on the smoothed map, localised on the raw map ``hwc`` (channel last).

    Each peak climbs (at most ``steps`` cells) to the maximum of its raw 3x3 neighbourhood
    (ties: stay, then raster order); peaks of one part that meet are merged (the first kept).
    Then a Gaussian (log-parabola) fit through the raw cell and its two neighbours along each axis
    gives the sub-cell offset (a plain parabola where a value is <= 0; none on the map border;
    within +-0.5 cell). Returns ``(part, x, y, score)`` like :func:`find_peaks`.
    """
    h, w, k = hwc.shape
    pad = np.full((h + 2, w + 2, k), -np.inf, dtype=np.float32)
    pad[1:-1, 1:-1] = hwc
    flat = pad.reshape(-1)
    centre = ((row + 1) * (w + 2) + col + 1) * k + part
    offsets = (_CLIMB[:, 0] * (w + 2) + _CLIMB[:, 1]) * k
    moved = False
    for _ in range(steps):
        move = flat[centre[:, None] + offsets].argmax(axis=1)
        if not move.any():
            break
        moved = True
        centre = centre + offsets[move]
    row, col = np.divmod(centre // k, w + 2)
    row, col = row - 1, col - 1
    if moved:  # distinct cells stay distinct unless a peak moved
        _, first = np.unique((part * h + row) * w + col, return_index=True)
        if first.size < part.size:
            first.sort()
            part, row, col, centre = part[first], row[first], col[first], centre[first]
    c = flat[centre].astype(np.float64)
    # the neighbours at x - 1, y - 1, x + 1, y + 1: offset[0] is along x, offset[1] along y
    step = np.array([[-k], [-(w + 2) * k], [k], [(w + 2) * k]], dtype=np.intp)
    side = flat[centre + step].astype(np.float64)
    offset = _gauss_vertex(side[:2], c, side[2:])
    return part.astype(np.int64), col + offset[0], row + offset[1], np.maximum(c, MIN_PART_CONFIDENCE)


# The 3x3 neighbourhood, the cell itself first, then raster order.
_CLIMB = np.array(((0, 0), (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)), dtype=np.intp)


def _gauss_vertex(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Sub-cell offset of a peak: log-parabola when all three values are > 0, else a parabola."""
    positive = (left > 0) & (centre > 0) & (right > 0)
    if positive.any():
        tiny = np.float64(1e-300)
        left = np.where(positive, np.log(np.maximum(left, tiny)), left)
        right = np.where(positive, np.log(np.maximum(right, tiny)), right)
        centre = np.where(positive, np.log(np.maximum(centre, tiny)), centre)
    return _parabola(left, centre, right)


def _parabola(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Offset of the vertex of the parabola through (-1, left), (0, centre), (1, right); 0 if none."""
    curve = left - 2.0 * centre + right
    ok = np.isfinite(left) & np.isfinite(right) & (curve < 0)
    safe = np.where(ok, curve, -1.0)
    return np.where(ok, np.clip(0.5 * (left - right) / safe, -0.5, 0.5), 0.0)


def score_pairs(xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, channel: np.ndarray,
                paf: np.ndarray, heat_shape: Tuple[int, int], params: ParseParams = DEFAULT_PARAMS
                ) -> Tuple[np.ndarray, np.ndarray]:
    """PAF scores of candidate limbs A->B (heatmap cells) whose x component is PAF ``channel``.

    ``paf`` is the C-contiguous ``(2L, H', W')`` map. Returns ``(score, valid)``: mean dot
    product plus distance prior, and the validity test. Pairs of coincident points are invalid.
    From 128 pairs on, samples are read in stages (see :func:`_schedule`): a pair that already
    has more failing samples than a valid limb may have is invalid whatever its other samples say,
    and only the others are read further (same validity, less work). The score of a pair dropped
    that way is 0: only the scores of valid pairs mean anything.
    """
    h = heat_shape[0]
    n = int(params.paf_samples)
    t, max_fail, stages = _schedule(n, float(params.paf_min_fraction))
    threshold = params.paf_sample_threshold
    dx, dy = xb - xa, yb - ya
    length = np.hypot(dx, dy)
    nonzero = length > 0
    safe = np.where(nonzero, length, 1.0)
    score = np.zeros(xa.size, dtype=np.float64)
    valid = np.zeros(xa.size, dtype=bool)
    todo = np.flatnonzero(nonzero)
    # Read the samples stage by stage (the later stages only while many pairs are left), dropping
    # the pairs with more than max_fail failed samples after each: they cannot be valid.
    read: List[Tuple[np.ndarray, np.ndarray]] = []  # (sample indices, their dots for the pairs in todo)
    fails = np.zeros(todo.size, dtype=np.intp)
    for i, cols in enumerate(stages):
        if not todo.size:
            return score, valid
        final = i == len(stages) - 1
        if not final and todo.size < (_STAGED_PAIRS if i else _PROBED_PAIRS):
            cols, final = np.concatenate(stages[i:]), True
        dots = _dots(xa[todo], ya[todo], dx[todo], dy[todo], safe[todo], channel[todo], t[cols], paf, heat_shape)
        read.append((cols, dots))
        if final:
            break
        fails += np.count_nonzero(~(dots > threshold), axis=1)
        keep = fails <= max_fail
        if not keep.all():
            todo, fails = todo[keep], fails[keep]
            read = [(c, d[keep]) for c, d in read]
    if not todo.size:
        return score, valid
    if len(read) == 1:
        dots = read[0][1]
    else:
        dots = np.empty((todo.size, n), dtype=np.float64)
        for cols, d in read:
            dots[:, cols] = d
    prior = np.minimum(params.long_limb_fraction * h / safe[todo] - 1.0, 0.0)
    score[todo] = dots.mean(axis=1) + prior
    counted = np.count_nonzero(dots > threshold, axis=1)
    valid[todo] = (counted > params.paf_min_fraction * n) & (score[todo] > 0)
    return score, valid


_PROBED_PAIRS = 128  # pairs from which reading a probe first pays off
_STAGED_PAIRS = 512  # pairs left after the probe from which a second probe pays off


@lru_cache(maxsize=16)
def _schedule(n: int, min_fraction: float) -> Tuple[np.ndarray, int, Tuple[np.ndarray, ...]]:
    """``(t, max_fail, stages)`` for ``n`` samples: the sample positions in [0, 1] along a limb,
    the most samples that may fail in a valid limb, and the sample indices read in turn: up to two
    probes of ``max_fail + 1`` samples spread evenly inside the limb, then the rest (all samples at
    once when ``max_fail + 1`` is more than half of them)."""
    t = np.arange(n, dtype=np.float64) / (n - 1)
    t.setflags(write=False)
    max_fail = 0
    while n - (max_fail + 1) > min_fraction * n:
        max_fail += 1
    everything = np.arange(n)
    if 2 * (max_fail + 1) > n:
        return t, max_fail, (everything,)
    stages = []
    left = everything
    while left.size >= 2 * (max_fail + 1) and len(stages) < 2:
        pick = left[np.linspace(0, left.size - 1, max_fail + 3)[1:-1].round().astype(np.intp)]
        stages.append(pick)
        left = np.setdiff1d(left, pick)
    return t, max_fail, tuple(stages) + (left,)


def _dots(xa: np.ndarray, ya: np.ndarray, dx: np.ndarray, dy: np.ndarray, length: np.ndarray, channel: np.ndarray,
          t: np.ndarray, paf: np.ndarray, heat_shape: Tuple[int, int]) -> np.ndarray:
    """(pairs, len(t)) dot products of the PAF, read bilinearly at A + t (B - A), with the unit vector A->B.

    PAF values are used as they are when all the values read are finite and within +-1e6 (float32
    values enter the float64 arithmetic exactly), else as float64, non-finite values 0, clipped."""
    h, w = heat_shape
    hp, wp = paf.shape[1:]
    sx = (xa[:, None] + t * dx[:, None] + 0.5) * (wp / w) - 0.5
    sy = (ya[:, None] + t * dy[:, None] + 0.5) * (hp / h) - 0.5
    np.minimum(np.maximum(sx, 0.0, out=sx), wp - 1, out=sx)  # finite: the same as np.clip
    np.minimum(np.maximum(sy, 0.0, out=sy), hp - 1, out=sy)
    x0 = sx.astype(np.intp)
    y0 = sy.astype(np.intp)
    fx = sx - x0
    fy = sy - y0
    base = (channel[:, None] * hp + y0) * wp + x0
    step_x = (x0 < wp - 1).astype(np.intp)
    step_y = (y0 < hp - 1) * wp
    # corners (00, 01, 10, 11) of the x channel, then of the y channel
    index = np.empty((8,) + base.shape, dtype=np.intp)
    index[0] = base
    np.add(base, step_x, out=index[1])
    np.add(base, step_y, out=index[2])
    np.add(index[2], step_x, out=index[3])
    np.add(index[:4], hp * wp, out=index[4:])
    values = paf.reshape(-1).take(index)
    if values.dtype != np.float32 and values.dtype != np.float64:
        values = values.astype(np.float64)
    if not (values.min() >= -_VALUE_LIMIT and values.max() <= _VALUE_LIMIT):  # NaN fails both
        values = values.astype(np.float64)
        if not np.isfinite(values).all():
            values = np.where(np.isfinite(values), values, 0.0)
        np.clip(values, -_VALUE_LIMIT, _VALUE_LIMIT, out=values)
    gx, gy = 1.0 - fx, 1.0 - fy
    w00, w01, w10, w11 = gy * gx, gy * fx, fy * gx, fy * fx
    vx = w00 * values[0] + w01 * values[1] + w10 * values[2] + w11 * values[3]
    vy = w00 * values[4] + w01 * values[5] + w10 * values[6] + w11 * values[7]
    return (vx * dx[:, None] + vy * dy[:, None]) / length[:, None]


def connect(part: np.ndarray, x: np.ndarray, y: np.ndarray, paf: np.ndarray, heat_shape: Tuple[int, int],
            limb_a: np.ndarray, limb_b: np.ndarray, params: ParseParams = DEFAULT_PARAMS
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy per-limb matching: connections ``(limb, cand_a, cand_b, score)``, limb order then best first."""
    num_limbs = limb_a.size
    counts = np.bincount(part, minlength=NUM_KEYPOINTS)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    n_a, n_b = counts[limb_a], counts[limb_b]
    n_pairs = n_a * n_b
    total = int(n_pairs.sum())
    empty = (np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.float64),)
    if total == 0:
        return empty
    limb = np.repeat(np.arange(num_limbs), n_pairs)
    q = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    nb = n_b[limb]
    ga = first[limb_a[limb]] + q // nb
    gb = first[limb_b[limb]] + q % nb
    paf = np.ascontiguousarray(paf)
    if total <= _PAIR_CHUNK:
        score, valid = score_pairs(x[ga], y[ga], x[gb], y[gb], 2 * limb, paf, heat_shape, params)
    else:
        score = np.empty(total, dtype=np.float64)
        valid = np.empty(total, dtype=bool)
        for s in range(0, total, _PAIR_CHUNK):
            e = min(s + _PAIR_CHUNK, total)
            score[s:e], valid[s:e] = score_pairs(x[ga[s:e]], y[ga[s:e]], x[gb[s:e]], y[gb[s:e]], 2 * limb[s:e],
                                                 paf, heat_shape, params)
    limb, ga, gb, score = limb[valid], ga[valid], gb[valid], score[valid]
    if limb.size == 0:
        return empty
    order = np.lexsort((gb, ga, -score, limb))
    limb, ga, gb, score = limb[order], ga[order], gb[order], score[order]
    chosen = _greedy(limb * part.size + ga, limb * part.size + gb, num_limbs * part.size)
    return limb[chosen], ga[chosen], gb[chosen], score[chosen]


def _greedy(key_a: np.ndarray, key_b: np.ndarray, num_keys: int) -> np.ndarray:
    """Mask of the pairs a greedy pass in array order takes, each key_a and key_b at most once.

    Vectorised as rounds: a pair that comes first among the remaining pairs of both its keys is
    taken by the greedy pass; take all such pairs, drop the pairs that share their keys, repeat.
    Keys are integers in ``[0, num_keys)``.
    """
    n = key_a.size
    chosen = np.zeros(n, dtype=bool)
    live = np.arange(n)
    while live.size:
        best = np.ones(live.size, dtype=bool)
        for key in (key_a, key_b):
            k = key[live]
            order = np.argsort(k, kind="stable")
            sk = k[order]
            later = np.zeros(live.size, dtype=bool)
            np.equal(sk[1:], sk[:-1], out=later[1:])  # True where the previous pair has the same key
            best[order[later]] = False
        take = live[best]
        chosen[take] = True
        if take.size == live.size:
            break
        used_a = np.zeros(num_keys, dtype=bool)
        used_b = np.zeros(num_keys, dtype=bool)
        used_a[key_a[take]] = True
        used_b[key_b[take]] = True
        live = live[~(used_a[key_a[live]] | used_b[key_b[live]])]
    return chosen


def assemble(limb: np.ndarray, ga: np.ndarray, gb: np.ndarray, conn_score: np.ndarray, part: np.ndarray,
             peak_score: np.ndarray, limb_a: np.ndarray, limb_b: np.ndarray, fills_gaps: np.ndarray
             ) -> Tuple[List[List[int]], List[float], List[int]]:
    """People from connections (see the module docstring): ``(parts, totals, counts)`` per person.

    ``parts[i][p]`` is the candidate index of part ``p`` of person ``i`` or -1. Groups held
    together only by ``fills_gaps`` connections are fragments: they may merge into a person
    later but are never people themselves.
    """
    owner = [-1] * part.size
    people: List[Optional[List[int]]] = []
    seeded: List[bool] = []
    totals: List[float] = []
    counts: List[int] = []
    peak = peak_score.tolist()
    la, lb, fg = limb_a.tolist(), limb_b.tolist(), fills_gaps.tolist()
    for k, a, b, s in zip(limb.tolist(), ga.tolist(), gb.tolist(), conn_score.tolist()):
        pa, pb = la[k], lb[k]
        ja, jb = owner[a], owner[b]
        if ja >= 0 and jb >= 0:
            if ja == jb:
                continue
            pj, pk = people[ja], people[jb]
            if any(u >= 0 and v >= 0 for u, v in zip(pj, pk)):
                continue
            for p, c in enumerate(pk):
                if c >= 0:
                    pj[p] = c
                    owner[c] = ja
            totals[ja] += totals[jb] + s
            counts[ja] += counts[jb]
            seeded[ja] = seeded[ja] or seeded[jb] or not fg[k]
            people[jb] = None
        elif ja >= 0 or jb >= 0:
            j, new, slot = (ja, b, pb) if ja >= 0 else (jb, a, pa)
            if people[j][slot] < 0:
                people[j][slot] = new
                owner[new] = j
                totals[j] += peak[new] + s
                counts[j] += 1
                seeded[j] = seeded[j] or not fg[k]
        else:
            row = [-1] * NUM_KEYPOINTS
            row[pa], row[pb] = a, b
            owner[a] = owner[b] = len(people)
            people.append(row)
            seeded.append(not fg[k])
            totals.append(peak[a] + peak[b] + s)
            counts.append(2)
    keep = [i for i, p in enumerate(people) if p is not None and seeded[i]]
    return [people[i] for i in keep], [totals[i] for i in keep], [counts[i] for i in keep]


def parse_poses(heatmaps: Any, pafs: Any, topology: Topology, params: Optional[ParseParams] = None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """People in one frame's canonical maps.

    ``heatmaps``: (18 or 19, H, W), project keypoint order, a trailing background channel ignored;
    ``pafs``: (2L, H', W'), limb k of ``topology`` in channels 2k (x) and 2k+1 (y), any resolution
    covering the same extent; ``topology``: the spec's limbs or a spec name.
    Returns ``(keypoints, scores)``: float32 (N, 18, 3) rows ``(x, y, confidence)`` with x, y in
    [0, 1] of the map extent (cell centre ``c`` at ``(c + 0.5) / W``), ``0, 0, 0`` for missing parts,
    and float32 (N,) person scores (total of part and connection scores / number of parts), best
    first. Pure and deterministic; raises ValueError on maps of the wrong shape.
    """
    if params is None:
        params = DEFAULT_PARAMS
    elif not isinstance(params, ParseParams):
        raise TypeError("params must be an edge.parse.ParseParams, got %r" % (params,))
    limb_a, limb_b, fills_gaps = resolve_topology(topology)
    heat, paf = check_maps(heatmaps, pafs, limb_a.size)
    h, w = heat.shape[1:]
    part, x, y, peak = find_peaks(heat, params)
    conn = connect(part, x, y, paf, (h, w), limb_a, limb_b, params)
    people, totals, counts = assemble(*conn, part, peak, limb_a, limb_b, fills_gaps)
    return _output(people, totals, counts, x, y, peak, (h, w), params)


def _output(people: List[List[int]], totals: List[float], counts: List[int], x: np.ndarray, y: np.ndarray,
            peak: np.ndarray, heat_shape: Tuple[int, int], params: ParseParams) -> Tuple[np.ndarray, np.ndarray]:
    """Filter people by parts and score, sort best first, normalise coordinates."""
    rows = [(totals[i] / counts[i], i) for i in range(len(people))
            if counts[i] >= params.min_parts and totals[i] / counts[i] >= params.min_person_score]
    rows.sort(key=lambda r: -r[0])  # stable: creation order breaks ties
    keypoints = np.zeros((len(rows), NUM_KEYPOINTS, 3), dtype=np.float32)
    scores = np.array([r[0] for r in rows], dtype=np.float32)
    if rows:
        cand = np.array([people[i] for _, i in rows], dtype=np.int64)
        found = cand >= 0
        c = cand[found]
        h, w = heat_shape
        keypoints[found] = np.stack([(x[c] + 0.5) / w, (y[c] + 0.5) / h, peak[c]], axis=1)
    return keypoints, scores
