"""The SQLite outbox: durable before append() returns, strictly ordered, bounded, thread-safe."""
from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from damage import checkpoint, damage_pages, pages_with_events, write_garbage
from edge.alerts.outbox import Outbox

REPO = Path(__file__).resolve().parents[1]


def test_rows_come_back_in_order_with_their_bytes(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as box:
        seqs = [box.append("e%d" % i, "room%d" % (i % 2), b'{"n":%d}\x00\xff' % i) for i in range(5)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 5
        rows = box.pending(0, 10)
        assert [(r.event_id, r.camera, r.payload) for r in rows] == [
            ("e%d" % i, "room%d" % (i % 2), b'{"n":%d}\x00\xff' % i) for i in range(5)]
        assert [r.event_id for r in box.pending(seqs[1], 2)] == ["e2", "e3"]
        box.delete(seqs[2])
        box.delete(seqs[2])  # a second PUBACK for the same row is harmless
        assert [r.event_id for r in box.pending(0, 10)] == ["e0", "e1", "e3", "e4"]
        assert box.depth() == 4


def test_seq_never_goes_back_even_when_emptied_and_reopened(tmp_path: Path) -> None:
    """A publisher remembers 'sent up to seq N': a new row must never get a seq <= N."""
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as box:
        last = max(box.append("e%d" % i, "c", b"x") for i in range(3))
        for row in box.pending(0, 10):
            box.delete(row.seq)
        assert box.depth() == 0
        assert box.append("after-empty", "c", b"x") > last
    with Outbox(path) as box:
        [row] = box.pending(0, 10)
        assert row.event_id == "after-empty" and box.append("after-reopen", "c", b"x") > row.seq


def test_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as box:
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_max_events_drops_the_oldest_logs_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(tmp_path / "o.sqlite3", max_events=5) as box:
        for i in range(8):
            box.append("e%d" % i, "c", b"x")
        assert box.depth() == 5 and box.dropped == 3
        assert [r.event_id for r in box.pending(0, 10)] == ["e3", "e4", "e5", "e6", "e7"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and "max_events=5" in warnings[0] and "(e0 .. e0)" in warnings[0]


def test_max_age_drops_old_events(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    with Outbox(tmp_path / "o.sqlite3", max_age_s=60, clock=lambda: now[0]) as box:
        for i in range(3):
            box.append("old%d" % i, "c", b"x")
            now[0] += 1
        now[0] += 30
        box.append("new", "c", b"x")
        assert box.expire() == 0 and box.depth() == 4
        assert box.oldest_age_s() == pytest.approx(33.0)
        now[0] += 31.5  # old0..old2 are now 61.5 to 63.5 s old, "new" 31.5 s
        assert box.expire() == 3
        assert [r.event_id for r in box.pending(0, 10)] == ["new"] and box.dropped == 3
    assert any("max_age_s=60s" in r.getMessage() and "(old0 .. old2)" in r.getMessage() for r in caplog.records)


def test_threads_append_concurrently(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as box:
        def work(k: int) -> None:
            for i in range(40):
                box.append("t%d-%d" % (k, i), "c", b"x")

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = box.pending(0, 1000)
        assert len(rows) == 160 and len({r.seq for r in rows}) == 160
        for k in range(4):  # each thread's events keep their order
            mine = [int(r.event_id.split("-")[1]) for r in rows if r.event_id.startswith("t%d-" % k)]
            assert mine == list(range(40))


WRITER = """
import sys
from edge.alerts.outbox import Outbox
box = Outbox(sys.argv[1])
i = 0
while True:
    box.append("k%d" % i, "c", b"payload-%d" % i)
    print(i, flush=True)
    i += 1
"""


def test_every_append_that_returned_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=str(REPO), stdout=subprocess.PIPE,
                            text=True)
    returned = []
    for line in proc.stdout:
        returned.append(int(line))
        if len(returned) == 150:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(10)
    proc.stdout.close()
    with Outbox(path) as box:
        rows = box.pending(0, 100000)
    stored = [int(r.event_id[1:]) for r in rows]
    assert stored[:150] == returned == list(range(150))  # maybe one more: stored, killed before printing
    assert all(r.payload == b"payload-%d" % int(r.event_id[1:]) for r in rows)


def test_an_unusable_location_keeps_events_in_memory_and_moves_them_to_disk_when_it_works(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "state").write_text("a file where the state folder should be")
    path = tmp_path / "state" / "o.sqlite3"
    with caplog.at_level(logging.WARNING, logger="fallwatch.outbox"):
        box = Outbox(path, retry_disk_s=3600)
    with box:
        assert box.state == "memory" and str(path) in box.state_reason
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "cannot open %s" % path in errors[0] and "paths.state_dir" in errors[0]
        first = box.append("a", "room1", b"A", state="ON")
        second = box.append("b", "room1", b"B")
        assert box.volatile == 2 and [r.event_id for r in box.pending(0, 10)] == ["a", "b"]
        box.delete(first)
        assert box.states() == {"room1": "ON"}
        (tmp_path / "state").unlink()  # the folder can be made now
        box.retry_disk_s = 0.0
        box._next_disk_try = 0.0
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fallwatch.outbox"):
            third = box.append("c", "room2", b"C")
        assert box.state == "disk" and box.state_reason is None and third > second
        assert "the disk takes events again" in caplog.text
    with Outbox(path) as box:  # what memory held went to the file
        assert [(r.event_id, r.payload) for r in box.pending(0, 10)] == [("b", b"B"), ("c", b"C")]
        assert box.states() == {"room1": "ON"}


def event_payload(i: int) -> bytes:
    return b'{"event_id":"drv-%06d","pad":"%s"}' % (i, b"k" * 700)


def test_a_power_cut_damaged_file_is_moved_aside_and_its_readable_events_salvaged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as box:
        for i in range(60):
            box.append("drv-%06d" % i, "room%d" % (i % 2), event_payload(i), state="ON" if i % 2 else None)
    lost = damage_pages(path)
    with caplog.at_level(logging.ERROR, logger="fallwatch.outbox"):
        box = Outbox(path)
    with box:
        aside = sorted(tmp_path.glob("outbox.sqlite3.damaged-*"))
        assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))] == [box.damaged[0].name]
        assert re.fullmatch(r"outbox\.sqlite3\.damaged-\d{8}T\d{6}Z", box.damaged[0].name)
        rows = box.pending(0, 1000)
        got = [r.event_id for r in rows]
        every = ["drv-%06d" % i for i in range(60)]
        assert 0 < len(lost) < 30 and set(every) - lost <= set(got) and set(got) <= set(every)
        assert got == sorted(got) and all(r.payload == event_payload(int(r.event_id[4:])) for r in rows)
        assert box.salvaged == len(got) and box.state == "disk"
        [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert "was damaged" in error and box.damaged[0].name in error and "%d event(s) salvaged into a fresh outbox" % len(got) in error
        assert box.append("new", "room1", b"x") > 60  # never a seq a publisher may have seen
        assert box.states() == {"room1": "ON"}
    assert aside[0].stat().st_size > 0  # kept for a post-mortem


def test_a_file_truncated_under_a_running_outbox_is_recovered_at_once(tmp_path: Path) -> None:
    """A file system repair that cuts the file in half: what the first half holds comes back."""
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as box:
        for i in range(60):
            box.append("drv-%06d" % i, "room1", event_payload(i))
        checkpoint(path)
        os.truncate(str(path), path.stat().st_size // 2)
        kept = set().union(*(ids for _, ids in pages_with_events(path)))
        probe = sqlite3.connect(str(path))
        probe.execute("PRAGMA user_version = 7")  # the running outbox reads the file again
        probe.close()
        t0 = time.monotonic()
        got = [r.event_id for r in box.pending(0, 1000)]
        assert time.monotonic() - t0 < 5.0 and box.damaged
        assert kept and kept <= set(got) < set("drv-%06d" % i for i in range(60))
        assert box.append("after", "room1", b"x") > 60 and box.pending(0, 1000)[-1].event_id == "after"


def overwrite_page(path: Path, number: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek((number - 1) * 4096)
        fh.write(os.urandom(4096))


def events_root_page(path: Path) -> int:
    db = sqlite3.connect(str(path))
    try:
        return int(db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()[0])
    finally:
        db.close()


def test_rows_under_a_damaged_root_page_are_found_by_scanning_the_pages(tmp_path: Path) -> None:
    """SQLite cannot reach any row through a damaged root page; the intact leaves still hold them."""
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as box:
        for i in range(300):
            box.append("drv-%06d" % i, "room%d" % (i % 2), event_payload(i))
        for row in box.pending(0, 200):  # acknowledged: gone, their pages freed
            box.delete(row.seq)
    root = events_root_page(path)
    assert root not in {n for n, _ in pages_with_events(path)}  # an interior page: keys, no events
    overwrite_page(path, root)
    with Outbox(path) as box:
        rows = box.pending(0, 1000)
        assert [r.event_id for r in rows] == ["drv-%06d" % i for i in range(200, 300)]
        assert all(r.payload == event_payload(int(r.event_id[4:])) for r in rows)
        assert [r.camera for r in rows[:2]] == ["room0", "room1"] and box.damaged


def test_a_garbage_file_is_moved_aside_and_a_fresh_outbox_used(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    write_garbage(path)
    garbage = path.read_bytes()
    with Outbox(path) as box:
        assert box.state == "disk" and box.depth() == 0 and box.salvaged == 0
        box.append("a", "room1", b"x")
        assert box.damaged[0].read_bytes() == garbage
    with Outbox(path) as box:
        assert [r.event_id for r in box.pending(0, 10)] == ["a"] and not box.damaged


def test_damage_under_a_running_outbox_is_recovered_without_losing_readable_events(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as box:
        for i in range(60):
            box.append("drv-%06d" % i, "room1", event_payload(i))
        lost = damage_pages(path)
        with pytest.raises(sqlite3.DatabaseError):  # the damage is real: a reader of the file trips on it
            probe = sqlite3.connect(str(path))
            try:
                probe.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM events").fetchone()
            finally:
                probe.close()
        with caplog.at_level(logging.ERROR, logger="fallwatch.outbox"):
            depth = box.depth()  # reads every row: SQLite reports the damage, the outbox recovers
            seq = box.append("drv-000060", "room1", event_payload(60))
        got = [r.event_id for r in box.pending(0, 1000)]
        assert box.damaged and depth == len(got) - 1 and seq > 60
        assert set("drv-%06d" % i for i in range(61)) - lost <= set(got)
        assert got[-1] == "drv-000060"
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
def fill_the_disk(outbox: Outbox) -> None:
    """A real SQLITE_FULL ("database or disk is full"): the file may not grow by another page."""
    pages = outbox._db.execute("PRAGMA main.page_count").fetchone()[0]
    outbox._db.execute("PRAGMA main.max_page_count = %d" % pages)


def test_a_full_disk_keeps_events_in_memory_in_order_and_says_so(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    big = b"x" * 20000  # bigger than a page: every event needs new pages
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as outbox:
        outbox.append("a", "room1", big)
        fill_the_disk(outbox)
        with caplog.at_level(logging.WARNING, logger="fallwatch.outbox"):
            outbox.append("b", "room1", big)
            outbox.append("c", "room2", big)
        assert outbox.volatile == 2 and outbox.depth() == 3
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2 and "cannot store event b on disk" in errors[0]
        assert "is lost if fallwatch stops before the broker acknowledges it" in errors[0]
        rows = outbox.pending(0, 10)
        assert [r.event_id for r in rows] == ["a", "b", "c"] and rows[0].seq < rows[1].seq < rows[2].seq
        assert rows[1].payload == big
        outbox.delete(rows[2].seq)  # acknowledged
        outbox._db.execute("PRAGMA main.max_page_count = 1073741823")  # space again
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fallwatch.outbox"):
            d = outbox.append("d", "room1", big)
        assert "the disk takes events again" in caplog.text
        assert d > rows[2].seq  # after every seq given out, even one already acknowledged
        outbox.delete(rows[1].seq)
        e = outbox.append("e", "room1", big)
        assert e > d and [r.event_id for r in outbox.pending(0, 10)] == ["a", "d", "e"]
        assert [r.event_id for r in outbox.pending(rows[2].seq, 10)] == ["d", "e"]
    with Outbox(path) as outbox:  # what was on disk survives a restart
        assert [r.event_id for r in outbox.pending(0, 10)] == ["a", "d", "e"]


def test_bounds_apply_to_events_kept_in_memory_too(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite3", max_events=3) as outbox:
        outbox.append("a", "room1", b"x" * 20000)
        fill_the_disk(outbox)
        for name in "bcd":
            outbox.append(name, "room1", b"x" * 20000)
        assert [r.event_id for r in outbox.pending(0, 10)] == ["b", "c", "d"] and outbox.dropped == 1
