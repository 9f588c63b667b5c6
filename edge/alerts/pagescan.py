"""Events read straight from the pages of a damaged outbox file, without SQLite's b-tree.

When a damaged page is an *interior* page of the events table (or its root), SQLite cannot reach
the intact leaf pages below it; a file cut short loses the path to rows that are still there.
:func:`scan_events` reads every page of the file (each overridden by its latest frame in the
``-wal`` of the current WAL generation), takes the pages that look like table leaves, and decodes
their cells with the SQLite file format (https://www.sqlite.org/fileformat2.html). A cell is an
event only when its record is exactly the events row: ``seq`` as the rowid (stored NULL),
``event_id`` and ``camera`` as text, ``created_s`` a number, ``payload`` a blob. Pages on the
freelist are skipped, so acknowledged (deleted) events do not come back from freed pages; cells
that spill onto overflow pages (an event over about 4 KB) are not read. Never raises.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

Event = Tuple[int, str, str, float, bytes]  # seq, event_id, camera, created_s, payload

_WAL_MAGIC = (0x377F0682, 0x377F0683)
_TABLE_LEAF = 0x0D
_MAX_PAGES = 1 << 20  # a 4 GB file at 4 KB pages: far beyond any outbox


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    """SQLite's big-endian varint at ``buf[i]``: (value, index after it); IndexError past the end."""
    value = 0
    for k in range(8):
        b = buf[i + k]
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, i + k + 1
    return (value << 8) | buf[i + 8], i + 9


def _pages(path: Path) -> Tuple[int, Dict[int, bytes]]:
    """(page size, page number -> bytes) of the file with its WAL's current frames applied."""
    data = path.read_bytes()
    if len(data) < 100 or not data.startswith(b"SQLite format 3\x00"):
        return 0, {}
    size = struct.unpack(">H", data[16:18])[0]
    size = 65536 if size == 1 else size
    if size < 512 or size & (size - 1):
        return 0, {}
    pages = {n + 1: data[n * size:(n + 1) * size] for n in range(min(len(data) // size, _MAX_PAGES))}
    wal = Path(str(path) + "-wal")
    try:
        log = wal.read_bytes()
    except OSError:
        return size, pages
    if len(log) >= 32 and struct.unpack(">I", log[:4])[0] in _WAL_MAGIC and \
            struct.unpack(">I", log[8:12])[0] == size:
        salts = log[16:24]
        at = 32
        while at + 24 + size <= len(log):
            number = struct.unpack(">I", log[at:at + 4])[0]
            if log[at + 8:at + 16] != salts:  # a frame of an earlier generation of the WAL
                break
            pages[number] = log[at + 24:at + 24 + size]
            at += 24 + size
    return size, pages


def _freelist(pages: Dict[int, bytes]) -> Set[int]:
    """Page numbers on the freelist (trunk and leaf pages), as far as it can be read."""
    free: Set[int] = set()
    first = pages.get(1)
    if first is None:
        return free
    trunk = struct.unpack(">I", first[32:36])[0]
    while trunk and trunk not in free and trunk in pages and len(free) < _MAX_PAGES:
        free.add(trunk)
        page = pages[trunk]
        count = struct.unpack(">I", page[4:8])[0]
        for k in range(min(count, (len(page) - 8) // 4)):
            free.add(struct.unpack(">I", page[8 + 4 * k:12 + 4 * k])[0])
        trunk = struct.unpack(">I", page[:4])[0]
    return free


def _record(payload: bytes) -> Optional[List[object]]:
    """The column values of a record, or None when it is not a well-formed record."""
    header, i = _varint(payload, 0)
    if header > len(payload):
        return None
    types = []
    while i < header:
        t, i = _varint(payload, i)
        types.append(t)
    values: List[object] = []
    at = header
    for t in types:
        if t == 0:
            values.append(None)
        elif 1 <= t <= 6:
            n = (1, 2, 3, 4, 6, 8)[t - 1]
            values.append(int.from_bytes(payload[at:at + n], "big", signed=True))
            at += n
        elif t == 7:
            values.append(struct.unpack(">d", payload[at:at + 8])[0])
            at += 8
        elif t in (8, 9):
            values.append(t - 8)
        elif t >= 12:
            n = (t - 12) // 2
            raw = payload[at:at + n]
            values.append(bytes(raw) if t % 2 == 0 else raw.decode("utf-8"))
            at += n
        else:
            return None
        if at > len(payload):
            return None
    return values


def _leaf_events(page: bytes, offset: int, usable: int) -> List[Event]:
    out: List[Event] = []
    if page[offset] != _TABLE_LEAF:
        return out
    cells = struct.unpack(">H", page[offset + 3:offset + 5])[0]
    local_max = usable - 35
    for k in range(cells):
        try:
            at = struct.unpack(">H", page[offset + 8 + 2 * k:offset + 10 + 2 * k])[0]
            size, at = _varint(page, at)
            rowid, at = _varint(page, at)
            if size > local_max or at + size > usable:
                continue  # spills onto overflow pages, or runs off the page
            values = _record(page[at:at + size])
        except (IndexError, struct.error, UnicodeDecodeError, ValueError):
            continue
        if values is None or len(values) != 5 or values[0] is not None:
            continue
        _, event_id, camera, created, payload = values
        if isinstance(event_id, str) and isinstance(camera, str) and isinstance(payload, bytes) and \
                isinstance(created, (int, float)) and 0 < rowid < (1 << 62) and event_id and camera:
            out.append((rowid, event_id, camera, float(created), payload))
    return out


def scan_events(path: Path) -> List[Event]:
    """Every events row found on the (non-free) table leaf pages of ``path``, by seq."""
    try:
        size, pages = _pages(path)
    except OSError:
        return []
    if not pages:
        return []
    usable = size - pages[1][20] if 1 in pages else size
    free = _freelist(pages)
    found: Dict[int, Event] = {}
    for number, page in sorted(pages.items()):
        if number in free or len(page) < size:
            continue
        for event in _leaf_events(page, 100 if number == 1 else 0, usable):
            found.setdefault(event[0], event)
    return [found[seq] for seq in sorted(found)]
