"""Who may use the page: password hashes (PBKDF2-SHA256, standard library only), tokens, sessions.

A password hash is one line, ``pbkdf2_sha256$<iterations>$<salt, base64>$<key, base64>``, made by
:func:`hash_password` (``fallwatch web hash-password``). :class:`Authenticator` checks a request's
``Authorization`` header (HTTP Basic with ``web.username`` and the password or the token, or
``Bearer <token>``) or its session cookie; a successful check hands out a random session id kept in
memory only, so the slow PBKDF2 runs once per login, not once per live view picture. Nothing here
logs or returns a password, a hash or a token.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
import time
from typing import Dict, Optional

SCHEME = "pbkdf2_sha256"
ITERATIONS = 200000
COOKIE = "fallwatch_session"


def hash_password(password: str, iterations: int = ITERATIONS, salt: Optional[bytes] = None) -> str:
    """The one-line hash of ``password`` (a random 16-byte salt unless given)."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "%s$%d$%s$%s" % (SCHEME, iterations, base64.b64encode(salt).decode(), base64.b64encode(key).decode())


def _parts(encoded: str):
    scheme, iterations, salt, key = encoded.split("$")
    if scheme != SCHEME:
        raise ValueError(scheme)
    return int(iterations), base64.b64decode(salt, validate=True), base64.b64decode(key, validate=True)


def check_hash_format(encoded: str) -> Optional[str]:
    """Why ``encoded`` is not a password hash this module makes (never quoting it), or None."""
    try:
        iterations, salt, key = _parts(encoded)
    except (ValueError, binascii.Error):
        return "not a password hash of the form %s$<iterations>$<salt>$<key>" % SCHEME
    if iterations < 10000 or len(salt) < 8 or len(key) != 32:
        return "a %s hash with too few iterations (at least 10000), a salt under 8 bytes or a key not of 32 " \
               "bytes" % SCHEME
    return None


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the hash ``encoded`` (constant time)."""
    try:
        iterations, salt, key = _parts(encoded)
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations), key)


class Authenticator:
    """Checks credentials against the resolved ``web`` settings; sessions last ``session_hours``."""

    def __init__(self, username: str, password_hash: Optional[str], token: Optional[str],
                 session_hours: float = 12.0) -> None:
        self.username = username
        self._hash = password_hash
        self._token = token
        self._ttl = session_hours * 3600.0
        self._sessions: Dict[str, float] = {}
        self._lock = threading.Lock()
        # One password hash at a time: each takes tens of ms of CPU (hundreds on a Jetson), and anyone who
        # can reach the page may send Basic headers on many connections at once; this keeps them to one
        # core, away from the fall detector's other threads.
        self._slow = threading.Lock()

    @property
    def required(self) -> bool:
        return bool(self._hash or self._token)

    def _token_ok(self, given: str) -> bool:
        return bool(self._token) and hmac.compare_digest(given.encode("utf-8"), self._token.encode("utf-8"))

    def check_header(self, header: Optional[str]) -> bool:
        """Whether an ``Authorization`` header value carries valid credentials."""
        if not header:
            return False
        kind, _, value = header.partition(" ")
        kind, value = kind.lower(), value.strip()
        if kind == "bearer":
            return self._token_ok(value)
        if kind != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        if not sep or not hmac.compare_digest(user.encode("utf-8"), self.username.encode("utf-8")):
            return False
        if self._token_ok(password):
            return True
        if not self._hash:
            return False
        with self._slow:
            return verify_password(password, self._hash)

    def check_session(self, session: Optional[str]) -> bool:
        if not session:
            return False
        now = time.monotonic()
        with self._lock:
            expires = self._sessions.get(session)
            if expires is None:
                return False
            if expires < now:
                del self._sessions[session]
                return False
            return True

    def new_session(self) -> str:
        session = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._sessions = {k: v for k, v in self._sessions.items() if v >= now}
            self._sessions[session] = now + self._ttl
        return session
