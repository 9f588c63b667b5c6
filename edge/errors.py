"""The project's error type: what went wrong, and what to do about it, as two fields.

``str(error)`` is the one line a person reads (the problem, then the fix in the raiser's words);
code that wants the remedy reads :attr:`FallwatchError.fix` and never parses the text. Leaf module:
imports nothing of fallwatch.
"""
from __future__ import annotations


class FallwatchError(Exception):
    """``what``: the problem (where, which key or file); ``fix``: what to do, "" when nothing can be said.

    ``joint`` is put between the two in ``str()`` (": ", "; ", ". " ...), so the line reads as one sentence."""

    def __init__(self, what: str, fix: str = "", joint: str = ": ") -> None:
        super().__init__(what + joint + fix if fix else what)
        self.what = what
        self.fix = fix
