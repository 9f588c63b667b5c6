"""What a settings section is made of: fields that state their own schema, and the one check of them.

A section is a frozen dataclass deriving from :class:`Section`; each field is made with
:func:`setting` (a value: default, one-line title with the unit, what is allowed) or
:func:`section` (a nested section, or a tuple of them); its type is the annotation. Constructing
a section checks every field (:func:`problem`) and then the section's cross-field
:meth:`Section.rules`, whether it is built by the config loader (edge.config) or in code, and
raises :class:`ConfigError` naming the field. Leaf module: imports nothing from edge.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, Union

REDACTED = "***"


class ConfigError(ValueError):
    """The configuration cannot be used. ``str(error)`` is one line naming where (the file and key
    path when loaded), the value given and what is allowed; ``key`` is the key path (a field name
    when a section built in code raised it; None when the problem is not one key) and ``reason``
    the message without the place; ``fix`` what to do when it is not "correct that key" ("" then)."""

    def __init__(self, message: str, key: Optional[str] = None, reason: Optional[str] = None, fix: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.reason = message if reason is None else reason
        self.fix = fix


def setting(default: Any, title: str, *, between: Optional[Tuple[float, float]] = None,
            choices: Optional[Tuple[str, ...]] = None, pattern: Optional[str] = None,
            hint: Optional[str] = None, check: Optional[Callable[[Any], Optional[str]]] = None,
            secret: bool = False) -> Any:
    """A field: its default, a one-line title (meaning, unit) and what values are allowed.

    ``between`` is an inclusive (min, max); ``pattern`` must match the whole string; ``hint``
    replaces the generated "expected ..." text; ``check(value)`` returns why a value is wrong or
    None; ``secret`` fields are left out of ``repr`` and shown as ``***`` by ``to_dict``.
    """
    meta = dict(title=title, between=between, choices=choices, pattern=pattern, hint=hint,
                check=check, secret=secret)
    return field(default=default, repr=not secret, metadata=meta)


def section(factory: Callable[[], Any], title: str) -> Any:
    """A field holding a nested section (or a tuple of sections), made by ``factory``."""
    return field(default_factory=factory, metadata=dict(title=title))


class Section:
    """Base of every settings section: checked when constructed, convertible to plain values.

    Each field must pass :func:`problem`, then :meth:`rules` runs; the first problem raises
    :class:`ConfigError` with ``key`` the field's name (or the dotted path :meth:`rules` gives).
    Then an int given for a float field is stored as a float.
    """

    def __post_init__(self) -> None:
        hints = type_hints(type(self))
        for f in fields_of(type(self)):
            reason = problem(hints[f.name], getattr(self, f.name), f.metadata)
            if reason:
                raise self._error(f.name, reason)
        for key, reason in self.rules():
            raise self._error(key, reason)
        for f in fields_of(type(self)):
            if type(getattr(self, f.name)) is int and unwrap(hints[f.name])[0] is float:
                object.__setattr__(self, f.name, float(getattr(self, f.name)))

    def rules(self) -> Iterator[Tuple[str, str]]:
        """Problems between fields, as (field name or dotted key path, the value given and what
        is allowed instead); run once every field passed its own check."""
        return iter(())

    def _error(self, key: str, reason: str) -> ConfigError:
        return ConfigError("%s.%s: %s" % (type(self).__name__, key, reason), key, reason)

    def to_dict(self, redact: bool = True) -> Dict[str, Any]:
        """Plain dicts, lists, strings and numbers (paths as strings); secrets as ``***`` when redact."""
        return {f.name: plain(getattr(self, f.name), redact and f.metadata.get("secret", False), redact)
                for f in fields_of(type(self))}


def fields_of(cls: type) -> Tuple["dataclasses.Field[Any]", ...]:
    """The fields of a section that are settings (not the ones marked ``internal``)."""
    return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("internal"))


@functools.lru_cache(maxsize=None)
def type_hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section)


def unwrap(tp: Any) -> Tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; any other type -> ``(type, False)``."""
    if typing.get_origin(tp) is Union:
        return next(a for a in typing.get_args(tp) if a is not type(None)), True
    return tp, False


def plain(value: Any, hide: bool = False, redact: bool = True) -> Any:
    """A field's value as plain YAML-able data (sections as dicts, tuples as lists, paths as strings)."""
    if hide and value is not None:
        return REDACTED
    if isinstance(value, Section):
        return value.to_dict(redact)
    if isinstance(value, tuple):
        return [plain(v, False, redact) for v in value]
    return str(value) if isinstance(value, Path) else value


def show(value: Any, secret: bool = False) -> str:
    """A value as error messages quote it: ``0.3 (float)``, ``null``, a tuple as the list it was
    written as; a secret only by its type."""
    if value is None:
        return "null"
    if isinstance(value, tuple):
        value = plain(value)
    if secret:
        return "a value of type %s" % type(value).__name__
    text = repr(value)
    return "%s (%s)" % (text if len(text) <= 80 else text[:77] + "...", type(value).__name__)


def expected(tp: Any, meta: Mapping[str, Any], optional: bool = False) -> str:
    """What a field of type ``tp`` (Optional already removed) with metadata ``meta`` allows, in words."""
    between = meta.get("between")
    span = " from %g to %g" % between if between else ""
    if meta.get("hint"):
        text = meta["hint"]
    elif meta.get("choices"):
        text = "one of " + ", ".join(repr(c) for c in meta["choices"])
    elif tp is bool:
        text = "true or false"
    elif tp is int:
        text = "an integer" + span
    elif tp is float:
        text = "a number" + span
    elif tp is str:
        text = "a string matching %s" % meta["pattern"] if meta.get("pattern") else "a string"
    elif tp is Path:
        text = "a path"
    elif is_section(tp):
        text = "a mapping with keys " + ", ".join(f.name for f in fields_of(tp))
    else:
        text = "a list"
    return text + (" or null" if optional else "")


_SCALARS = (bool, int, float, str)


def problem(tp: Any, value: Any, meta: Mapping[str, Any]) -> Optional[str]:
    """Why ``value`` does not fit a field of type ``tp`` with metadata ``meta`` (see
    :func:`setting`), as ``got <value>; <what is allowed>``; None when it fits. Scalars (bool,
    int, float, str) must be of their type (an int is a float, a bool is not a number); other
    types are the loader's to convert, and only their ``check`` runs here."""
    inner, optional = unwrap(tp)
    if value is None and optional:
        return None
    secret = meta.get("secret", False)
    wrong = "got %s; expected %s" % (show(value, secret), expected(inner, meta, optional))
    if value is None:
        return wrong
    if inner in _SCALARS:
        if isinstance(value, bool) is not (inner is bool):
            return wrong
        if not isinstance(value, (int, float) if inner is float else inner):
            return wrong
        between, choices, pattern = meta.get("between"), meta.get("choices"), meta.get("pattern")
        if between and not between[0] <= value <= between[1]:
            return wrong
        if (choices and value not in choices) or (pattern and not re.fullmatch(pattern, value)):
            return wrong
    reason = meta["check"](value) if meta.get("check") else None
    return "got %s; %s" % (show(value, secret), reason) if reason else None
