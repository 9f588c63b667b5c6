"""What a check found: one result type for ``fallwatch doctor``'s checks and ``mqtt-test``'s steps.

A :class:`CheckResult` is printed as one line, ``<status> <name> <message>``, and for anything
but ``ok`` a second line with the fix under the message. Leaf module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Sequence

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STATUSES = (OK, WARN, FAIL, SKIP)


@dataclass(frozen=True)
class CheckResult:
    """``status``: ok, warn, fail or skip (not checked, and why in ``message``); ``fix``: what to do, "" for none."""

    name: str
    status: str
    message: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError("check %s: status %r is not one of %s" % (self.name, self.status, ", ".join(STATUSES)))

    def as_dict(self) -> Dict[str, Any]:
        """``name``, ``status``, ``message``, ``fix``: what ``--json`` prints."""
        return asdict(self)


def format_result(result: CheckResult, name_width: int = 14, indent: str = "") -> str:
    """``ok    board          Jetson ...``; a fix (for warn, fail, skip) goes on the next line, under the message."""
    line = "%s%-5s %-*s %s" % (indent, result.status, name_width, result.name, result.message)
    if result.fix and result.status != OK:
        line += "\n%s%s fix: %s" % (indent, " " * (6 + name_width), result.fix)
    return line


def any_failed(results: Sequence[CheckResult]) -> bool:
    return any(r.status == FAIL for r in results)
