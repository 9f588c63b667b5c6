"""Tracker: a stable integer id per person across frames, and each person's recent history.

Input per frame: the people the parser found, keypoints ``(N, 18, 3)`` as ``(x, y, confidence)``
with x, y normalised to [0, 1] of the frame (confidence 0 = part missing), the frame time ``t`` in
seconds and the frame size in pixels. Matching:

* The distance between a track and a detection is the mean pixel distance of the keypoints both
  have (confidence at least ``min_keypoint_confidence``), or of their box centres when they share
  fewer than ``min_common_keypoints``, divided by the person's size: the larger of the detection's
  box side and the track's size (the largest box side it had over the last ``size_memory_s``, so a
  person half seen or falling keeps the size they had standing), at least ``min_person_size`` of the
  frame height. A pair farther apart than
  ``max_match_distance_heights`` plus ``max_speed_heights_per_s`` times the seconds since the track
  was last seen cannot match (a person missed for a moment, or filmed at a low frame rate, may
  have moved further: a fall moves the head by about a body height in half a second).
* Confirmed tracks are matched first, by minimum total distance (Hungarian assignment), together
  with the tentative tracks that have twice been seen *beside* a confirmed track: matched in a
  frame where a confirmed track, within whose gate they were, took another detection. Such a
  track is somebody (or something) else and only carries a handicap of ``TENTATIVE_HANDICAP``
  person heights: a confirmed person missed for a frame does not take over a detection that
  clearly continues it (a ghost on the bed's pillow must not become the person standing next to
  it). Then the other tentative tracks get what is left, so a second skeleton of one person (two
  views that were not merged) cannot steal that person's track. A detection left over starts a
  tentative track.
* A tentative track gets its id once matched in ``min_hits`` frames (a one-frame ghost never gets
  one); a frame without it drops it once it has been unseen for longer than
  ``tentative_max_missed_s``, so a person the network finds in every other frame (a dark room, a
  far corner) still gets an id, and at any frame rate the next frame may still continue it. A confirmed
  track survives up to ``max_missed_s`` seconds without a match (a person hidden for a moment
  keeps the id).

Ids are ints from 1 upward, never reused while the id counter lives (one daemon run).
Deterministic: the same inputs in the same order give the same ids.
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Deque, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge.skeleton import NUM_KEYPOINTS, box_size, skeleton_bbox
from edge.settings import Section, setting

_FAR = 1e6  # cost of a pair that may not match
TENTATIVE_HANDICAP = 0.1  # person heights added to the distances of a tentative track seen beside others
_BESIDE_FRAMES = 2  # frames seen beside a confirmed track that prove a tentative track is somebody else


@dataclass(frozen=True)
class TrackerConfig(Section):
    """The ``tracker`` settings."""

    max_match_distance_heights: float = setting(
        0.5, "a person matches a track when their keypoints are on average at most this far apart, in "
        "person heights (the larger side of the skeleton's box)", between=(0.01, 10))
    max_speed_heights_per_s: float = setting(
        2, "the match distance grows by this much per second a track goes unseen, person heights per second",
        between=(0, 100))
    max_missed_s: float = setting(2, "a track keeps its id this long without being seen, seconds", between=(0, 3600))
    min_hits: int = setting(3, "frames a new person must be seen in before getting a track id (frames without "
                            "them in between end the count after tentative_max_missed_s)", between=(1, 100))
    tentative_max_missed_s: float = setting(
        0.5, "a new person not yet given an id survives this long unseen, seconds (in a dark room the network "
        "finds a person in some frames only); 0 = dropped at the first miss", between=(0, 10))
    min_keypoint_confidence: float = setting(0.05, "keypoints below this confidence count as missing",
                                             between=(0.01, 1))
    min_common_keypoints: int = setting(2, "fewer keypoints in common: compare skeleton box centres instead",
                                        between=(1, 18))
    min_person_size: float = setting(0.05, "smallest person height used to scale distances, fraction of the "
                                     "frame height", between=(0.001, 1))
    size_memory_s: float = setting(5, "a track's person size is the largest side of its skeleton's box over this "
                                   "much past, seconds (a person half seen or falling keeps their size)",
                                   between=(0, 3600))
    history_s: float = setting(10, "each track keeps this much past for the rotated-views policy, seconds",
                               between=(0, 3600))


@dataclass(frozen=True)
class TrackHistory:
    """A track's observations, oldest first: ``t`` (M,) seconds, ``keypoints`` (M, 18, 3) and
    ``bbox`` (M, 4) as ``x0, y0, x1, y1``, all normalised to the frame; ``keypoints3d`` (M, 18, 3)
    metres (NaN: no 3D for that part or frame), None when no observation had 3D."""

    t: np.ndarray
    keypoints: np.ndarray
    bbox: np.ndarray
    keypoints3d: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.t.shape[0])


class Track:
    """One person. ``id`` is 0 while tentative. ``keypoints``/``bbox`` are the last observation
    (``keypoints3d``: its 3D keypoints, metres, when the model gives 3D, else None); ``size_px`` the
    largest side of its skeleton's box (pixels) over the last ``size_memory_s``."""

    def __init__(self, keypoints: np.ndarray, bbox: np.ndarray, t: float, history_s: float,
                 size_px: float = 0.0, size_memory_s: float = 0.0, keypoints3d: Optional[np.ndarray] = None) -> None:
        self.id = 0
        self.hits = 1
        self.beside = 0  # frames this tentative track was matched while a confirmed track near it took another
        self.first_t = self.last_t = t
        self.keypoints = keypoints
        self.keypoints3d = keypoints3d
        self.bbox = bbox
        self._history_s = history_s
        self._history: Deque[Tuple[float, np.ndarray, np.ndarray, Optional[np.ndarray]]] = deque(
            [(t, keypoints, bbox, keypoints3d)])
        self._size_memory_s = size_memory_s
        self._sizes: Deque[Tuple[float, float]] = deque([(t, size_px)])
        self.size_px = size_px

    @property
    def confirmed(self) -> bool:
        return self.id > 0

    def missed_s(self, t: float) -> float:
        """Seconds since the track was last matched (0 when matched at ``t``)."""
        return t - self.last_t

    def _observe(self, keypoints: np.ndarray, bbox: np.ndarray, t: float, size_px: float,
                 keypoints3d: Optional[np.ndarray] = None) -> None:
        self.keypoints, self.bbox, self.last_t, self.keypoints3d = keypoints, bbox, t, keypoints3d
        self.hits += 1
        self._history.append((t, keypoints, bbox, keypoints3d))
        while self._history and self._history[0][0] < t - self._history_s:
            self._history.popleft()
        self._sizes.append((t, size_px))
        while self._sizes[0][0] < t - self._size_memory_s:
            self._sizes.popleft()
        self.size_px = max(size for _, size in self._sizes)

    def history(self, since_t: Optional[float] = None) -> TrackHistory:
        """Observations at or after ``since_t`` (all kept ones when None), oldest first."""
        rows = [h for h in self._history if since_t is None or h[0] >= since_t]
        if not rows:
            return TrackHistory(np.zeros(0), np.zeros((0, NUM_KEYPOINTS, 3)), np.zeros((0, 4)))
        points = None
        if any(r[3] is not None for r in rows):
            points = np.stack([r[3] if r[3] is not None else np.full((NUM_KEYPOINTS, 3), np.nan) for r in rows])
        return TrackHistory(np.array([r[0] for r in rows], dtype=np.float64),
                            np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]), points)

    def __repr__(self) -> str:
        return "Track(id=%d, hits=%d, last_t=%.3f)" % (self.id, self.hits, self.last_t)


def assign(cost: np.ndarray) -> List[Tuple[int, int]]:
    """Minimum-cost assignment (Hungarian / Kuhn-Munkres, O(n^2 m)) of a rectangular cost matrix:
    ``[(row, col), ...]`` with every row or every column (whichever are fewer) used once, by row."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.size == 0:
        return []
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: row (1-based) assigned to column j; column 0 is virtual
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = int(way[j0])
            p[j0] = p[j1]
            j0 = j1
    pairs = [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j] > 0]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    return sorted(pairs)


class Tracker:
    """Tracks the people of one camera. :meth:`update` once per processed frame, in time order."""

    def __init__(self, config: TrackerConfig = TrackerConfig(), ids: Optional[Iterator[int]] = None) -> None:
        self.config = config
        self._ids = ids if ids is not None else itertools.count(1)
        self._tracks: List[Track] = []

    def restart(self) -> None:
        """Forget every track (the frame clock went back: a file looped with its own times); ids go on."""
        self._tracks = []

    @property
    def tracks(self) -> List[Track]:
        """Confirmed tracks still alive, by id."""
        return sorted((tr for tr in self._tracks if tr.confirmed), key=lambda tr: tr.id)

    def distances(self, tracks: Sequence[Track], keypoints: np.ndarray, boxes: np.ndarray,
                  frame_size: Tuple[int, int]) -> np.ndarray:
        """``(T, N)`` distances in person sizes between tracks' last observations and detections."""
        p = self.config
        w, h = frame_size
        scale_xy = np.array([w, h], dtype=np.float64)
        tk = np.stack([tr.keypoints for tr in tracks])
        tb = np.stack([tr.bbox for tr in tracks])
        common = (tk[:, None, :, 2] >= p.min_keypoint_confidence) & (keypoints[None, :, :, 2] >= p.min_keypoint_confidence)
        diff = (tk[:, None, :, :2] - keypoints[None, :, :, :2]) * scale_xy
        dist = np.sqrt((diff ** 2).sum(axis=-1))
        n_common = common.sum(axis=-1)
        mean_kp = np.where(common, dist, 0.0).sum(axis=-1) / np.maximum(n_common, 1)
        centre_t = (tb[:, :2] + tb[:, 2:]) / 2 * scale_xy
        centre_d = (boxes[:, :2] + boxes[:, 2:]) / 2 * scale_xy
        centre = np.sqrt(((centre_t[:, None] - centre_d[None]) ** 2).sum(axis=-1))
        raw = np.where(n_common >= p.min_common_keypoints, mean_kp, centre)
        size_t = np.array([tr.size_px for tr in tracks])
        size_d = box_size(boxes, frame_size)
        size = np.maximum(np.maximum(size_t[:, None], size_d[None, :]), p.min_person_size * h)
        return raw / size

    def gates(self, tracks: Sequence[Track], t: float) -> np.ndarray:
        """``(T,)`` the largest distance, in person heights, at which each track can match at ``t``."""
        unseen = np.array([max(0.0, t - tr.last_t) for tr in tracks])
        return self.config.max_match_distance_heights + self.config.max_speed_heights_per_s * unseen

    def _match(self, rows: List[int], free: List[int], d: np.ndarray, within: np.ndarray
               ) -> List[Tuple[int, int]]:
        """Pairs (track index, detection index) of tracks ``rows`` and detections ``free`` within
        the gate, by minimum total distance; tentative tracks carry TENTATIVE_HANDICAP."""
        if not rows or not free:
            return []
        handicap = np.array([0.0 if self._tracks[r].confirmed else TENTATIVE_HANDICAP for r in rows])
        sub_d, sub_within = d[np.ix_(rows, free)], within[np.ix_(rows, free)]
        cost = np.where(sub_within, sub_d + handicap[:, None], _FAR)
        return [(rows[r], free[c]) for r, c in assign(cost) if sub_within[r, c]]

    def _alive(self, track: Track, t: float) -> bool:
        """Unseen for no longer than a track of its kind may be (confirmed or tentative)."""
        p = self.config
        return track.missed_s(t) <= (p.max_missed_s if track.confirmed else p.tentative_max_missed_s)

    def update(self, keypoints: np.ndarray, t: float, frame_size: Tuple[int, int],
               keypoints3d: Optional[np.ndarray] = None) -> np.ndarray:
        """Match this frame's people; returns each detection's track id (``(N,)`` int64, 0 while
        its track is tentative). ``frame_size`` is ``(width, height)`` in pixels. ``keypoints3d``:
        the people's 3D keypoints ``(N, 18, 3)`` when the model gives 3D (kept on the tracks, not
        used for matching)."""
        p = self.config
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
        kp3: List[Optional[np.ndarray]] = [None] * len(kp) if keypoints3d is None else \
            list(np.asarray(keypoints3d, np.float64).reshape(-1, NUM_KEYPOINTS, 3))
        boxes = skeleton_bbox(kp, p.min_keypoint_confidence)
        sizes = box_size(boxes, frame_size)
        ids = np.zeros(len(kp), dtype=np.int64)
        d = np.zeros((len(self._tracks), len(kp)))
        if d.size:
            d = self.distances(self._tracks, kp, boxes, frame_size)
        within = d <= self.gates(self._tracks, t)[:, None]
        proven = [tr.confirmed or tr.beside >= _BESIDE_FRAMES for tr in self._tracks]
        pairs = self._match([i for i, ok in enumerate(proven) if ok], list(range(len(kp))), d, within)
        free = set(range(len(kp))) - {di for _, di in pairs}
        pairs += self._match([i for i, ok in enumerate(proven) if not ok], sorted(free), d, within)
        took_other = [ti for ti, _ in pairs if self._tracks[ti].confirmed]
        matched_tracks = set()
        for ti, di in pairs:
            track = self._tracks[ti]
            if not track.confirmed and within[took_other, di].any():
                track.beside += 1
            track._observe(kp[di], boxes[di], t, float(sizes[di]), kp3[di])
            if not track.confirmed and track.hits >= p.min_hits:
                track.id = next(self._ids)
            ids[di] = track.id
            matched_tracks.add(id(track))
            free.discard(di)
        survivors = []
        for track in self._tracks:
            if id(track) in matched_tracks:
                survivors.append(track)
            elif self._alive(track, t):
                survivors.append(track)
        for di in sorted(free):
            track = Track(kp[di], boxes[di], t, p.history_s, float(sizes[di]), p.size_memory_s, kp3[di])
            track.beside = int(within[took_other, di].any())
            if p.min_hits <= 1:
                track.id = next(self._ids)
                ids[di] = track.id
            survivors.append(track)
        self._tracks = survivors
        return ids
