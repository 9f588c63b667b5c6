"""The durable event outbox: an event is on disk before it is published, and leaves only when acknowledged.

One SQLite file (``<paths.state_dir>/outbox.sqlite3`` unless ``mqtt.outbox.file`` says otherwise)
in WAL mode with ``synchronous=FULL``: :meth:`Outbox.append` returns only after the commit has been
fsynced, so an event whose ``append`` returned survives SIGKILL and power loss. (WAL with
``synchronous=NORMAL`` would survive a killed process but may lose the last commits on power loss,
because it syncs only at checkpoints; a Jetson on a wall plug loses power.)

Rows are ordered by ``seq``, an AUTOINCREMENT key: it only ever grows, even after the table was
emptied, so a publisher that remembers "everything up to seq N is sent" never skips a new row.
The outbox knows nothing about MQTT: a row is (seq, event_id, camera, payload bytes, created time).

Bounds: at most ``max_events`` rows and none older than ``max_age_s``. When a bound is hit the
oldest rows go first; every such drop is logged with the event ids' range and counted in
:attr:`Outbox.dropped`. Thread-safe: one connection behind one lock.

When the file cannot be written (disk full, a failing SD card), an event is not refused: it is
kept in memory (an attached in-memory database with the same table, sharing the ``seq`` order),
logged as an error and counted in :attr:`Outbox.volatile`, and still published. It is lost only
if the process stops before the broker acknowledges it. Writes go back to the file as soon as it
takes them again.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Union

from edge.errors import FallwatchError

log = logging.getLogger("fallwatch.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    created_s REAL NOT NULL,
    payload BLOB NOT NULL
)
"""


# The rows of the file and of memory together (see append).
_ALL = "(SELECT * FROM main.events UNION ALL SELECT * FROM mem.events)"


class OutboxError(FallwatchError, RuntimeError):
    """The outbox file cannot be opened or written; the message names the file, ``fix`` what to do."""


@dataclass(frozen=True)
class Row:
    seq: int  # order of arrival, strictly increasing
    event_id: str
    camera: str
    created_s: float  # wall-clock time (Unix seconds) when stored
    payload: bytes  # the message exactly as it is published


class Outbox:
    """SQLite-backed FIFO of events waiting for the broker's acknowledgement."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], max_events: int = 10000, max_age_s: float = 604800.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.dropped = 0  # events dropped by the bounds since this object was made
        self.volatile = 0  # events kept in memory only because the file could not be written
        self._disk_failing = False
        self._mem_high = 0  # the largest seq given to an event kept in memory
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError("%s: SQLite cannot use WAL mode here (got %r)" % (self.path, mode),
                                  "put paths.state_dir on a local file system", joint="; ")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self._db.execute("ATTACH DATABASE ':memory:' AS mem")
            self._db.execute(_SCHEMA.replace("EXISTS events", "EXISTS mem.events"))
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError("%s: cannot open the event outbox (%s)" % (self.path, exc),
                              "check that paths.state_dir is writable and the file is not corrupt (move it away to "
                              "start empty)", joint="; ") from None

    # ---------------------------------------------------------------- writing

    def append(self, event_id: str, camera: str, payload: bytes) -> int:
        """Store one event durably (fsynced when this returns); returns its seq.

        Makes room first when the outbox holds ``max_events`` rows (the oldest go). When the file
        cannot be written the event is kept in memory instead (see the module's notes)."""
        with self._lock:
            # After events went to memory, file rows take explicit seqs above theirs, so one order
            # holds and a publisher's "sent up to seq N" cursor never skips a row.
            main_seq = self._main_seq_locked()
            after = self._mem_high if self._mem_high > main_seq else None
            self._make_room_locked()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq = self._insert_locked("main", event_id, camera, payload, after)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                seq = self._insert_locked("mem", event_id, camera, payload, max(main_seq, self._mem_high))
                self._mem_high = seq
                self.volatile += 1
                log.error("outbox %s: cannot store event %s on disk (%s): it is kept in memory and will be sent, but "
                          "is lost if fallwatch stops before the broker acknowledges it; is the disk full or "
                          "read-only?", self.path, event_id, exc)
                self._disk_failing = True
                return seq
            if self._disk_failing:
                self._disk_failing = False
                log.warning("outbox %s: the disk takes events again", self.path)
            return seq

    def _make_room_locked(self) -> None:
        """Apply the bounds before a new row: too old rows go, then the oldest beyond max_events - 1."""
        dropped = self.dropped
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._expire_locked("max_age_s=%gs" % self.max_age_s)
                count = self._count_locked()
                if count >= self.max_events:
                    self._drop_oldest_locked(count - self.max_events + 1, "max_events=%d" % self.max_events)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self.dropped = dropped
            log.error("outbox %s: cannot apply its bounds (%s)", self.path, exc)

    def _insert_locked(self, db: str, event_id: str, camera: str, payload: bytes, after: Optional[int]) -> int:
        values = (event_id, camera, self._clock(), sqlite3.Binary(payload))
        if after is None:
            cur = self._db.execute("INSERT INTO %s.events (event_id, camera, created_s, payload) VALUES (?, ?, ?, ?)"
                                   % db, values)
        else:
            cur = self._db.execute("INSERT INTO %s.events (seq, event_id, camera, created_s, payload) "
                                   "VALUES (?, ?, ?, ?, ?)" % db, (int(after) + 1,) + values)
        return int(cur.lastrowid)

    def _main_seq_locked(self) -> int:
        """The largest seq the file ever gave out (AUTOINCREMENT's record of it)."""
        row = self._db.execute("SELECT seq FROM main.sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def _count_locked(self) -> int:
        return int(self._db.execute("SELECT (SELECT COUNT(*) FROM main.events) + (SELECT COUNT(*) FROM mem.events)"
                                    ).fetchone()[0])

    def delete(self, seq: int) -> None:
        """Forget an acknowledged event (no error if it is already gone)."""
        with self._lock:
            for db in ("main", "mem"):
                self._db.execute("DELETE FROM %s.events WHERE seq = ?" % db, (seq,))

    def expire(self) -> int:
        """Drop events older than ``max_age_s``; returns how many went."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._expire_locked("max_age_s=%gs" % self.max_age_s)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return n

    def _expire_locked(self, bound: str) -> int:
        cutoff = self._clock() - self.max_age_s
        oldest = self._db.execute("SELECT MIN(created_s) FROM %s" % _ALL).fetchone()[0]
        if oldest is None or oldest >= cutoff:
            return 0
        n = self._db.execute("SELECT COUNT(*) FROM %s WHERE created_s < ?" % _ALL, (cutoff,)).fetchone()[0]
        return self._drop_oldest_locked(n, bound)

    def _drop_oldest_locked(self, n: int, bound: str) -> int:
        rows = self._db.execute("SELECT seq, event_id FROM %s ORDER BY seq LIMIT ?" % _ALL, (n,)).fetchall()
        if not rows:
            return 0
        for db in ("main", "mem"):
            self._db.execute("DELETE FROM %s.events WHERE seq <= ?" % db, (rows[-1][0],))
        self.dropped += len(rows)
        log.warning("outbox %s hit its bound %s: dropped the %d oldest unacknowledged event(s) (%s .. %s); "
                    "the broker has been unreachable or refusing events: check the MQTT log lines above",
                    self.path, bound, len(rows), rows[0][1], rows[-1][1])
        return len(rows)

    # ---------------------------------------------------------------- reading

    def pending(self, after_seq: int = 0, limit: int = 100) -> List[Row]:
        """Up to ``limit`` rows with seq > ``after_seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, camera, created_s, payload FROM %s WHERE seq > ? ORDER BY seq LIMIT ?" % _ALL,
                (after_seq, limit)).fetchall()
        return [Row(int(s), e, c, float(t), bytes(p)) for s, e, c, t, p in rows]

    def depth(self) -> int:
        """How many events wait for an acknowledgement."""
        with self._lock:
            return self._count_locked()

    def oldest_age_s(self) -> Optional[float]:
        """Age of the oldest waiting event in seconds, None when empty."""
        with self._lock:
            t = self._db.execute("SELECT MIN(created_s) FROM %s" % _ALL).fetchone()[0]
        return None if t is None else max(0.0, self._clock() - t)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
