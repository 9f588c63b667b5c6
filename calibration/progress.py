"""A plain progress bar on stderr (no dependency): redrawn in place on a terminal, a line per
tenth of the work otherwise (logs, CI)."""
from __future__ import annotations

import sys
import time
from typing import IO, Iterable, Iterator, Optional, Sized, TypeVar

T = TypeVar("T")


class Progress:
    def __init__(self, label: str, total: int, stream: Optional[IO[str]] = None, width: int = 30) -> None:
        self.label, self.total, self.width = label, max(0, int(total)), width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_tenth = -1
        self._start = time.monotonic()

    def update(self, step: int = 1) -> None:
        self.done += step
        now = time.monotonic()
        if self._tty:
            if now - self._last_draw >= 0.1 or self.done >= self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line())
                self.stream.flush()
            return
        tenth = (10 * self.done // self.total) if self.total else 10
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def _line(self) -> str:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(round(frac * self.width))
        return "%s [%s%s] %d/%d %.0fs" % (self.label, "#" * filled, "." * (self.width - filled), self.done,
                                          self.total, time.monotonic() - self._start)

    def close(self) -> None:
        if self._tty:
            self.stream.write("\r" + self._line() + "\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def counted(batches: Iterable[T], bar: Optional[Progress]) -> Iterator[T]:
    """The batches (arrays, or feeds: dicts of arrays), each counted on ``bar`` (by its rows) as it is handed out; the bar is closed
    once they run out. ``bar`` None: the batches as they are."""
    for batch in batches:
        if bar is not None:
            rows = next(iter(batch.values())) if isinstance(batch, dict) and batch else batch  # a feed: its rows
            bar.update(len(rows) if isinstance(rows, Sized) else 1)
        yield batch
    if bar is not None:
        bar.close()
