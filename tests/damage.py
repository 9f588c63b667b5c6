"""Damage an outbox file the way a power cut on an SD card does: the header stays, pages do not.

:func:`damage_pages` first folds the WAL into the file (``wal_checkpoint(TRUNCATE)`` from a
connection of its own, as SQLite does at a checkpoint), then overwrites whole pages in the middle
of the events table with random bytes, and finally bumps ``user_version`` from that connection
so that a process holding the outbox open sees the file changed and reads its pages again (a
failing card returns garbage on the next read, not on a read served from a cache). Which events
sat on the damaged pages is found from the raw bytes of the file, independently of the code under
test: each event's payload (JSON, ``{"event_id":"drv-…"``) is written in clear in its row. :func:`truncate_half` cuts the file instead,
:func:`write_garbage` replaces it with noise.
"""
from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import List, Set, Tuple

PAGE = 4096
_ID = re.compile(rb'"event_id":"(drv-\d{6})"')  # in the event's payload, not in the camera_state table


def pages_with_events(path: Path) -> List[Tuple[int, Set[str]]]:
    """(page number from 1, event ids written in it) for every page holding an id, in file order."""
    data = path.read_bytes()
    out = []
    for n in range(len(data) // PAGE):
        ids = {m.group(1).decode() for m in _ID.finditer(data[n * PAGE:(n + 1) * PAGE])}
        if ids:
            out.append((n + 1, ids))
    return out


def checkpoint(path: Path) -> None:
    db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        db.close()


def _touch(path: Path) -> None:
    """Bump ``user_version`` (a new WAL frame) so that a process holding the file reads it again;
    nothing when that process already moved the file aside (``mode=rw`` creates no new file)."""
    try:
        db = sqlite3.connect("file:%s?mode=rw" % path, uri=True, timeout=10.0, isolation_level=None)
    except sqlite3.OperationalError:
        return
    try:
        db.execute("PRAGMA user_version = %d" % (1 + db.execute("PRAGMA user_version").fetchone()[0]))
    except sqlite3.DatabaseError:
        pass  # it was moved aside meanwhile, or SQLite already sees the damage: either way it is read again
    finally:
        db.close()


def damage_pages(path: Path, how_many: int = 2) -> Set[str]:
    """Overwrite ``how_many`` consecutive pages that hold events, from the middle of the table;
    returns the ids of the events on them (the ones a salvage may lose)."""
    checkpoint(path)
    pages = [(n, ids) for n, ids in pages_with_events(path) if n > 2]
    if len(pages) < how_many + 2:
        raise AssertionError("too few event pages to damage (%d) in %s" % (len(pages), path))
    middle = len(pages) // 2
    chosen = pages[middle:middle + how_many]
    with open(path, "r+b") as fh:
        for n, _ in chosen:
            fh.seek((n - 1) * PAGE)
            fh.write(os.urandom(PAGE))
        fh.flush()
        os.fsync(fh.fileno())
    _touch(path)
    lost: Set[str] = set()
    for _, ids in chosen:
        lost |= ids
    return lost


def truncate_half(path: Path) -> Set[str]:
    """Cut the file to half its pages (a file system repair after a power cut can), then make a
    process holding it open read it again; returns the ids of the events in the cut-off half."""
    checkpoint(path)
    pages = pages_with_events(path)
    half = path.stat().st_size // PAGE // 2
    os.truncate(str(path), half * PAGE)
    before = set().union(*(ids for _, ids in pages))
    kept = set().union(*(ids for n, ids in pages if n <= half))
    _touch(path)
    return before - kept


def write_garbage(path: Path, size: int = 64 * 1024) -> None:
    """A file that is no database at all (a card that returned zeros and noise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        if side.exists():
            side.unlink()
    path.write_bytes(os.urandom(size))
