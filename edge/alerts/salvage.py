"""A damaged outbox file: recognise it, move it aside, and read back every event it still holds.

A power cut on an SD card can leave an SQLite file whose header is valid but whose pages are
not ("database disk image is malformed"), or a file that is not a database at all. Nothing
here raises for such a file: :func:`quick_check` says what is wrong, :func:`set_aside` renames
the file (with its ``-wal`` and ``-shm``) to ``<name>.damaged-<UTC time>`` so that it is kept for
a post-mortem, and :func:`read_damaged` walks the events table row by row through the table's
b-tree, skipping the rows that cannot be read, then adds the rows only a scan of the pages finds
(:mod:`edge.alerts.pagescan`: leaves below a damaged interior page, or cut off from it). :func:`check_file` is the read-only form for
``fallwatch doctor``.
"""
from __future__ import annotations

import datetime
import os
import sqlite3
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

from edge.alerts.pagescan import scan_events
from edge.errors import FallwatchError

SIDE_FILES = ("-wal", "-shm")
_CORRUPTION_WORDS = ("malformed", "not a database", "corrupt")
_PROBE_BEYOND = 10000  # unreadable seqs in a row after which the table is taken to end
_SALVAGE_S = 20.0  # at most this long reading a damaged file: new events wait meanwhile

_NEXT = "SELECT seq, event_id, camera, created_s, payload FROM events WHERE seq > ? ORDER BY seq LIMIT 1"
_EXACT = "SELECT seq, event_id, camera, created_s, payload FROM events WHERE seq = ?"

Salvaged = Tuple[int, str, str, float, bytes]  # seq, event_id, camera, created_s, payload


def is_corruption(exc: BaseException) -> bool:
    """Does this SQLite error mean the file is damaged (not full, not locked, not read-only)?

    SQLITE_CORRUPT and SQLITE_NOTADB come as :class:`sqlite3.DatabaseError` itself; a full or
    failing disk comes as its subclass OperationalError."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    text = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or any(w in text for w in _CORRUPTION_WORDS)


def quick_check(db: sqlite3.Connection, schema: str = "main") -> Optional[str]:
    """``PRAGMA quick_check``: None when the file is sound, else its first complaint (one line)."""
    try:
        rows = db.execute("PRAGMA %s.quick_check(1)" % schema).fetchall()
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            return str(exc)
        raise
    found = [str(r[0]) for r in rows]
    if found == ["ok"]:
        return None
    return " ".join(found).replace("*** in database %s ***" % schema, "").replace("\n", " ").strip()


def damaged_name(path: Path, now: Optional[datetime.datetime] = None) -> Path:
    """``outbox.sqlite3.damaged-20261201T180000Z`` beside ``path`` (a suffix when that name is taken)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    base = path.with_name("%s.damaged-%s" % (path.name, now.strftime("%Y%m%dT%H%M%SZ")))
    candidate, n = base, 1
    while any(Path(str(candidate) + s).exists() for s in ("",) + SIDE_FILES):
        n += 1
        candidate = base.with_name("%s-%d" % (base.name, n))
    return candidate


def set_aside(path: Path) -> Path:
    """Rename ``path`` and its ``-wal``/``-shm`` to :func:`damaged_name`; returns the new name.

    OSError when the folder does not let the file be renamed (then nothing was moved)."""
    target = damaged_name(path)
    os.rename(str(path), str(target))
    for suffix in SIDE_FILES:
        side = Path(str(path) + suffix)
        if side.exists():
            try:
                os.rename(str(side), str(target) + suffix)
            except OSError:
                pass  # the main file is aside: a stale -wal/-shm left behind must not join the fresh file
                # (SQLite would replay it), so remove it when it cannot follow
                try:
                    side.unlink()
                except OSError:
                    pass
    return target


def _probe(db: sqlite3.Connection, seq: int) -> Optional[tuple]:
    """The row ``seq`` itself when it can be read (it may sit just past a damaged page), else None."""
    try:
        return db.execute(_EXACT, (seq,)).fetchone()
    except sqlite3.Error:
        return None


class Damaged(NamedTuple):
    rows: List[Salvaged]  # the readable events, in seq order
    states: Dict[str, Tuple[str, str, int]]  # camera -> (state, event_id, seq), when readable
    high_seq: int  # the largest seq salvaged (0 when none)
    damaged_parts: int  # stretches of the table that could not be read (0: every row was read)


def read_damaged(path: Path) -> Damaged:
    """Every event of the outbox file ``path`` that can still be read, row by row.

    Rows are found by seeking the table's b-tree for the next seq: a damaged leaf loses only its
    own rows, the seek past it finds the rest; then the pages are scanned for leaves the b-tree
    cannot reach. A file that is no database gives nothing. Never raises for a damaged file."""
    rows: List[Salvaged] = []
    states: Dict[str, Tuple[str, str, int]] = {}
    try:
        db = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
    except sqlite3.Error:
        return Damaged(rows, states, 0, 1)
    try:
        seq, stretches, misses = 0, 0, 0
        deadline = time.monotonic() + _SALVAGE_S
        while misses <= _PROBE_BEYOND and time.monotonic() < deadline:
            try:
                row = db.execute(_NEXT, (seq,)).fetchone()
            except sqlite3.Error:  # the seek ran into a damaged page: step past it, one seq at a time
                row = _probe(db, seq + 1)
                if row is None:
                    seq, misses = seq + 1, misses + 1
                    continue
            if row is None:
                break
            if not isinstance(row[0], int) or row[0] <= seq:  # a damaged page can make the b-tree go back
                seq, misses = seq + 1, misses + 1
                continue
            stretches += 1 if misses else 0
            seq, misses = int(row[0]), 0
            try:
                rows.append((seq, str(row[1]), str(row[2]), float(row[3]), bytes(row[4])))
            except (TypeError, ValueError):
                stretches += 1
        stretches += 1 if misses else 0
        seen = {r[0] for r in rows}
        rows += [r for r in scan_events(path) if r[0] not in seen]  # leaves the b-tree cannot reach
        rows.sort()
        try:
            for camera, state, event_id, s in db.execute("SELECT camera, state, event_id, seq FROM camera_state"):
                states[str(camera)] = (str(state), str(event_id), int(s))
        except sqlite3.Error:
            pass
        return Damaged(rows, states, rows[-1][0] if rows else 0, stretches)
    finally:
        db.close()


class OutboxFileError(FallwatchError, RuntimeError):
    """What ``doctor`` reports about an outbox file or its folder; ``fix`` says what to do."""


def check_file(path: Path) -> str:
    """Read-only look at the outbox ``path``: a one-line description when it is usable, else
    :class:`OutboxFileError`. Checks that its folder is writable and that the file passes
    ``PRAGMA quick_check``; changes nothing."""
    folder = path.parent
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutboxFileError("%s: not a folder, so the outbox %s cannot be created there" % (existing, path),
                              "set paths.state_dir to a writable folder (fallwatch keeps events in memory only "
                              "until then, and a restart loses them)", joint="; ")
    if not os.access(str(existing), os.W_OK | os.X_OK):
        raise OutboxFileError("%s is not writable for this user: the outbox %s cannot be written" % (existing, path),
                              "give the user fallwatch runs as write access (sudo chown -R fallwatch %s), or set "
                              "paths.state_dir; until then events are kept in memory only" % existing, joint="; ")
    if not path.exists():
        return "%s: folder writable, no outbox yet (created at the first start)" % path
    try:
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise OutboxFileError("%s: cannot open the outbox (%s)" % (path, exc),
                              "check its owner and permissions (ls -l %s)" % folder, joint="; ") from None
    try:
        try:
            problem = quick_check(db)
            count = None if problem else db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        except sqlite3.Error as exc:
            problem = str(exc)
            count = None
    finally:
        db.close()
    if problem:
        raise OutboxFileError("%s is damaged (%s)" % (path, problem),
                              "nothing to do by hand: at its next start fallwatch moves it aside as "
                              "%s.damaged-<time>, delivers what it can still read and starts a fresh one"
                              % path.name, joint="; ")
    return "%s: passes the integrity check, %d event(s) waiting" % (path, count)
