"""The durable event outbox: an event is on disk before it is published, and leaves only when acknowledged.

One SQLite file (``<paths.state_dir>/outbox.sqlite3`` unless ``mqtt.outbox.file`` says otherwise)
in WAL mode with ``synchronous=FULL``: :meth:`Outbox.append` returns only after the commit has been
fsynced, so an event whose ``append`` returned survives SIGKILL and power loss. (WAL with
``synchronous=NORMAL`` would survive a killed process but may lose the last commits on power loss,
because it syncs only at checkpoints; a Jetson on a wall plug loses power.)

Rows are ordered by ``seq``, an AUTOINCREMENT key: it only ever grows, even after the table was
emptied (and, within a process, after a damaged file was replaced), so a publisher that remembers
"everything up to seq N is sent" never skips a new row.
The outbox knows nothing about MQTT: a row is (seq, event_id, camera, payload bytes, created time).

Bounds: at most ``max_events`` rows and none older than ``max_age_s``. When a bound is hit the
oldest rows go first; every such drop is logged with the event ids' range and counted in
:attr:`Outbox.dropped`. Thread-safe: one connection behind one lock.

When the file cannot be written (disk full, a failing SD card), an event is not refused: it is
kept in memory (an attached in-memory database with the same table, sharing the ``seq`` order),
logged as an error and counted in :attr:`Outbox.volatile`, and still published. It is lost only
if the process stops before the broker acknowledges it. Writes go back to the file as soon as it
takes them again.

A damaged file (SQLite's "database disk image is malformed" or "file is not a database", at
start or while running) never stops an event: at open the file must pass ``PRAGMA quick_check``,
and whenever SQLite reports corruption the file is moved aside as
``<name>.damaged-<UTC time>`` (with its ``-wal``/``-shm``; :mod:`edge.alerts.salvage`), every row
that can still be read is copied into a fresh file, and the operation runs again there. When no
file can be used (the state folder is unwritable, missing, or the fresh file fails too) the whole
outbox lives in memory, as on a full disk (counted in :attr:`Outbox.volatile`, an ERROR line per
event), and the file is tried again every ``retry_disk_s``; the events kept in memory then move
to it. :attr:`Outbox.state` says ``disk`` or ``memory``, :attr:`Outbox.state_reason` why, and each
change is one ERROR (or, back to disk, WARNING) line. Opening never raises.

Besides events, the file keeps each camera's last state label (``append(..., state=...)``,
written in the same transaction as the event) so that a restart knows which cameras had a fall
that was not cleared (:meth:`Outbox.states`).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, TypeVar, Union

from edge.alerts.salvage import Damaged, is_corruption, quick_check, read_damaged, set_aside
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
_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS camera_state (
    camera TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seq INTEGER NOT NULL
)
"""
_COLUMNS = "seq, event_id, camera, created_s, payload"


# The rows of the file and of memory together (see append).
_ALL = "(SELECT * FROM main.events UNION ALL SELECT * FROM mem.events)"


class OutboxError(FallwatchError, RuntimeError):
    """The outbox file cannot be used; the message names the file, ``fix`` what to do."""


class _Corrupt(Exception):
    """The file failed the integrity check (the message says how)."""


_T = TypeVar("_T")
_RowTuple = Tuple[int, str, str, float, bytes]
_StateMap = Dict[str, Tuple[str, str, int]]  # camera -> (state, event_id, seq)


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
                 clock: Callable[[], float] = time.time, retry_disk_s: float = 60.0) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.retry_disk_s = retry_disk_s
        self.dropped = 0  # events dropped by the bounds since this object was made
        self.volatile = 0  # events kept in memory only because the file could not be written
        self.damaged: List[Path] = []  # damaged files this object moved aside
        self.salvaged = 0  # events read back from them
        self.state_reason: Optional[str] = None  # what is wrong with the file (or last was, when it was replaced)
        self._memory_only = False  # no file: the main database is in memory
        self._disk_failing = False  # the file refuses writes: new events go to the attached memory database
        self._next_disk_try = 0.0
        self._mem_high = 0  # the largest seq given to an event kept in memory
        self._seq_high = 0  # the largest seq given out, whichever database holds it
        self._clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection
        with self._lock:
            self._open_locked([], {}, None)

    @property
    def state(self) -> str:
        """``disk`` when new events are stored in the file, else ``memory`` (see :attr:`state_reason`)."""
        return "memory" if self._memory_only or self._disk_failing else "disk"

    # ---------------------------------------------------------------- opening and recovering

    def _connect_file(self) -> sqlite3.Connection:
        """The file, checked and set up; _Corrupt when it is damaged, sqlite3.Error/OSError/OutboxError
        when it cannot be used."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            problem = quick_check(db)
            if problem:
                raise _Corrupt(problem)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError("%s: SQLite cannot use WAL mode here (got %r)" % (self.path, mode),
                                  "put paths.state_dir on a local file system", joint="; ")
            db.execute("PRAGMA synchronous=FULL")
            self._set_up(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            if is_corruption(exc):
                raise _Corrupt(str(exc)) from None
            raise
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _set_up(db: sqlite3.Connection) -> None:
        db.execute(_SCHEMA)
        db.execute(_STATE_SCHEMA)
        db.execute("ATTACH DATABASE ':memory:' AS mem")
        db.execute(_SCHEMA.replace("EXISTS events", "EXISTS mem.events"))
        db.execute(_STATE_SCHEMA.replace("EXISTS camera_state", "EXISTS mem.camera_state"))

    def _connect_memory(self) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._set_up(db)
        return db

    def _open_locked(self, carry: List[_RowTuple], carry_states: _StateMap, damage: Optional[str]) -> None:
        """Use the file, else memory. A damaged file (``damage`` says how, when already known) is
        moved aside and what it still holds is salvaged; ``carry``: rows from the previous database."""
        was = (self._memory_only, self.state_reason)
        salvage: Optional[Damaged] = None
        aside: Optional[Path] = None
        db: Optional[sqlite3.Connection] = None
        why = ""
        if damage is None:
            try:
                db = self._connect_file()
            except _Corrupt as bad:
                damage = str(bad)
            except (sqlite3.Error, OSError, OutboxError) as exc:
                why = "cannot open %s (%s)" % (self.path, exc)
        if damage is not None:
            try:
                aside = set_aside(self.path)
            except OSError as exc:
                salvage = read_damaged(self.path)
                why = "cannot move the damaged %s aside (%s)" % (self.path, exc)
            else:
                self.damaged.append(aside)
                salvage = read_damaged(aside)
                try:
                    db = self._connect_file()
                except (_Corrupt, sqlite3.Error, OSError, OutboxError) as exc:
                    why = "cannot open a fresh %s (%s)" % (self.path, exc)
        self._memory_only = db is None
        self._db = db if db is not None else self._connect_memory()
        self._disk_failing = False
        rows = list(carry)
        states = dict(carry_states)
        if salvage is not None:
            self.salvaged += len(salvage.rows)
            rows += salvage.rows
            for camera, value in salvage.states.items():
                if camera not in states or states[camera][2] < value[2]:
                    states[camera] = value
            self._seq_high = max(self._seq_high, salvage.high_seq)
        self._refill_locked(rows, states)
        memory = ("events are kept in memory only and are lost if fallwatch stops before the broker "
                  "acknowledges them; the file is tried again every %gs" % self.retry_disk_s)
        if damage is not None:
            count = len(salvage.rows) if salvage is not None else 0
            lost = (" (%d damaged part(s) could not be read)" % salvage.damaged_parts
                    if salvage is not None and salvage.damaged_parts else "")
            where = "moved aside as %s" % aside.name if aside is not None else why
            into = "a fresh outbox" if not self._memory_only else "memory"
            self.state_reason = "%s was damaged (%s): %s; %d event(s) salvaged into %s%s" % (
                self.path, damage, where, count, into, lost)
            if self._memory_only:
                if aside is not None:
                    self.state_reason += "; %s" % why
                if was != (True, self.state_reason):
                    log.error("outbox %s; %s; publishing goes on", self.state_reason, memory)
            else:
                log.error("outbox %s; publishing goes on", self.state_reason)
        elif self._memory_only:
            self.state_reason = why
            if was != (True, why):
                log.error("outbox: %s: %s; check that paths.state_dir is writable (fallwatch doctor)", why, memory)
            else:
                log.debug("outbox: still %s", why)
        else:
            self.state_reason = None
            if was[0]:
                log.warning("outbox %s: the disk takes events again; the %d event(s) kept in memory are on disk now",
                            self.path, len(rows))
        self._next_disk_try = time.monotonic() + self.retry_disk_s

    def _refill_locked(self, rows: List[_RowTuple], states: _StateMap) -> None:
        """Put carried and salvaged rows into the new database (the file when it takes them), seq kept."""
        rows = sorted({r[0]: r for r in rows}.values())
        for db in ("main", "mem"):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR REPLACE INTO %s.events (%s) VALUES (?, ?, ?, ?, ?)"
                                         % (db, _COLUMNS), [r[:4] + (sqlite3.Binary(r[4]),) for r in rows])
                    self._db.executemany("INSERT OR REPLACE INTO %s.camera_state (camera, state, event_id, seq) "
                                         "VALUES (?, ?, ?, ?)" % db,
                                         [(c,) + v for c, v in sorted(states.items())])
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                if db == "mem":
                    raise
                log.error("outbox %s: cannot store the %d carried event(s) on disk (%s); they stay in memory",
                          self.path, len(rows), exc)
                continue
            self._mem_high = max((r[0] for r in rows), default=0) if db == "mem" else 0
            break
        self._seq_high = max([self._seq_high, self._main_seq_locked()] + [r[0] for r in rows])
        if self._seq_high > self._main_seq_locked():
            # AUTOINCREMENT must never give out a seq a publisher may already have seen
            # (sqlite_sequence has no key on name: update the row, or add the only one)
            if self._db.execute("UPDATE main.sqlite_sequence SET seq = ? WHERE name = 'events'",
                                (self._seq_high,)).rowcount == 0:
                self._db.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES ('events', ?)",
                                 (self._seq_high,))

    def _carry_locked(self) -> Tuple[List[_RowTuple], _StateMap]:
        """The rows and camera states that are readable without the file (memory), to move on."""
        dbs = ("main", "mem") if self._memory_only else ("mem",)
        rows: List[_RowTuple] = []
        states: _StateMap = {}
        for db in dbs:
            for s, e, c, t, p in self._db.execute("SELECT %s FROM %s.events" % (_COLUMNS, db)):
                rows.append((int(s), e, c, float(t), bytes(p)))
            for c, st, e, q in self._db.execute("SELECT camera, state, event_id, seq FROM %s.camera_state" % db):
                if c not in states or states[c][2] < q:
                    states[c] = (st, e, int(q))
        return rows, states

    def _recover_locked(self, exc: BaseException) -> None:
        """SQLite reported corruption: check, move the file aside, salvage, go on with a fresh one."""
        try:
            problem = quick_check(self._db) or str(exc)
        except sqlite3.Error:
            problem = str(exc)
        carry, states = self._carry_locked()
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._open_locked(carry, states, problem)

    def _guarded(self, op: Callable[[], "_T"]) -> "_T":
        """``op()`` (under the lock); when SQLite reports a damaged file, recover and run it again."""
        for attempt in range(3):
            try:
                return op()
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc) or attempt == 2:
                    raise
                self._recover_locked(exc)
        raise AssertionError("unreachable")

    def _maybe_retry_disk_locked(self) -> None:
        if self._memory_only and time.monotonic() >= self._next_disk_try:
            carry, states = self._carry_locked()
            old, salvaged = self._db, self.salvaged
            self._open_locked(carry, states, None)
            if self._memory_only:  # still no file: keep the database that holds the events (and
                self._db.close()  # forget a second salvage of a damaged file that stayed in place)
                self._db, self.salvaged = old, salvaged
            else:
                old.close()

    # ---------------------------------------------------------------- writing

    def append(self, event_id: str, camera: str, payload: bytes, state: Optional[str] = None) -> int:
        """Store one event durably (fsynced when this returns); returns its seq.

        ``state``: a label to remember as ``camera``'s latest (:meth:`states`), in the same
        transaction. Makes room first when the outbox holds ``max_events`` rows (the oldest go).
        When the file cannot be written the event is kept in memory instead (see the module's notes)."""
        with self._lock:
            self._maybe_retry_disk_locked()
            return self._guarded(lambda: self._append_locked(event_id, camera, payload, state))

    def _append_locked(self, event_id: str, camera: str, payload: bytes, state: Optional[str]) -> int:
        # After events went to memory, file rows take explicit seqs above theirs, so one order
        # holds and a publisher's "sent up to seq N" cursor never skips a row.
        main_seq = self._main_seq_locked()
        after = self._mem_high if self._mem_high > main_seq else None
        self._make_room_locked()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._insert_locked("main", event_id, camera, payload, after, state)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if is_corruption(exc):
                raise
            seq = self._insert_locked("mem", event_id, camera, payload, max(main_seq, self._mem_high), state)
            self._mem_high = self._seq_high = seq
            self.volatile += 1
            log.error("outbox %s: cannot store event %s on disk (%s): it is kept in memory and will be sent, but "
                      "is lost if fallwatch stops before the broker acknowledges it; is the disk full or "
                      "read-only?", self.path, event_id, exc)
            self._disk_failing = True
            self.state_reason = "the disk refuses writes (%s)" % exc
            return seq
        self._seq_high = max(self._seq_high, seq)
        if self._memory_only:
            self.volatile += 1
            log.error("outbox: event %s is kept in memory only (%s): it will be sent, but is lost if fallwatch "
                      "stops before the broker acknowledges it", event_id, self.state_reason)
        elif self._disk_failing:
            self._disk_failing = False
            self.state_reason = None
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
            if is_corruption(exc):
                raise
            log.error("outbox %s: cannot apply its bounds (%s)", self.path, exc)

    def _insert_locked(self, db: str, event_id: str, camera: str, payload: bytes, after: Optional[int],
                       state: Optional[str]) -> int:
        values = (event_id, camera, self._clock(), sqlite3.Binary(payload))
        if after is None:
            cur = self._db.execute("INSERT INTO %s.events (event_id, camera, created_s, payload) VALUES (?, ?, ?, ?)"
                                   % db, values)
        else:
            cur = self._db.execute("INSERT INTO %s.events (seq, event_id, camera, created_s, payload) "
                                   "VALUES (?, ?, ?, ?, ?)" % db, (int(after) + 1,) + values)
        seq = int(cur.lastrowid)
        if state is not None:
            self._db.execute("INSERT OR REPLACE INTO %s.camera_state (camera, state, event_id, seq) VALUES (?, ?, ?, ?)"
                             % db, (camera, state, event_id, seq))
            if db == "main":  # a state kept in memory earlier is older than this one
                self._db.execute("DELETE FROM mem.camera_state WHERE camera = ?", (camera,))
        return seq

    def _main_seq_locked(self) -> int:
        """The largest seq the main database ever gave out (AUTOINCREMENT's record of it)."""
        row = self._db.execute("SELECT seq FROM main.sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def _count_locked(self) -> int:
        return int(self._db.execute("SELECT (SELECT COUNT(*) FROM main.events) + (SELECT COUNT(*) FROM mem.events)"
                                    ).fetchone()[0])

    def delete(self, seq: int) -> None:
        """Forget an acknowledged event (no error if it is already gone)."""
        def op() -> None:
            for db in ("main", "mem"):
                self._db.execute("DELETE FROM %s.events WHERE seq = ?" % db, (seq,))

        with self._lock:
            self._guarded(op)

    def expire(self) -> int:
        """Drop events older than ``max_age_s``; returns how many went. Also, when the outbox lives
        in memory, the moment to try the file again."""
        def op() -> int:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._expire_locked("max_age_s=%gs" % self.max_age_s)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return n

        with self._lock:
            self._maybe_retry_disk_locked()
            return self._guarded(op)

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
        def op() -> list:
            return self._db.execute("SELECT %s FROM %s WHERE seq > ? ORDER BY seq LIMIT ?" % (_COLUMNS, _ALL),
                                    (after_seq, limit)).fetchall()

        with self._lock:
            rows = self._guarded(op)
        return [Row(int(s), e, c, float(t), bytes(p)) for s, e, c, t, p in rows]

    def states(self) -> Dict[str, str]:
        """Each camera's last state label given to :meth:`append` (kept across restarts)."""
        def op() -> Dict[str, str]:
            latest: Dict[str, Tuple[int, str]] = {}
            for db in ("main", "mem"):
                for camera, state, seq in self._db.execute("SELECT camera, state, seq FROM %s.camera_state" % db):
                    if camera not in latest or latest[camera][0] < seq:
                        latest[camera] = (int(seq), str(state))
            return {camera: state for camera, (_, state) in latest.items()}

        with self._lock:
            return self._guarded(op)

    def depth(self) -> int:
        """How many events wait for an acknowledgement."""
        with self._lock:
            return self._guarded(self._count_locked)

    def oldest_age_s(self) -> Optional[float]:
        """Age of the oldest waiting event in seconds, None when empty."""
        with self._lock:
            t = self._guarded(lambda: self._db.execute("SELECT MIN(created_s) FROM %s" % _ALL).fetchone()[0])
        return None if t is None else max(0.0, self._clock() - t)

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
