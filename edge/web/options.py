"""The ``web:`` section (the setup and review page served by ``fallwatch run``) and its checks.

:class:`WebConfig` declares every key; :func:`resolve_web` runs when the configuration is loaded:
it reads the password hash and the token from their files or environment variable, checks the
TLS files, and refuses a page listening beyond loopback without authentication. It raises
:class:`edge.settings.ConfigError` whose ``key`` is the key path under ``web.``; the hash and the
token live in the internal fields ``password_hash_resolved`` and ``token_resolved`` that
``repr`` and ``to_dict()`` never show.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from edge.settings import ConfigError, Section, section, setting
from edge.web.auth import check_hash_format


@dataclass(frozen=True)
class WebTlsConfig(Section):
    enabled: bool = setting(False, "serve the page over HTTPS")
    cert_file: Optional[Path] = setting(None, "server certificate (chain), PEM")
    key_file: Optional[Path] = setting(None, "server private key, PEM; null = the key is in cert_file")
    ca_file: Optional[Path] = setting(None, "CA certificate(s), PEM: when set, browsers must present a client "
                                      "certificate signed by it; null = no client certificate asked")


@dataclass(frozen=True)
class WebConfig(Section):
    enabled: bool = setting(False, "serve the setup and review page from `fallwatch run`")
    bind: str = setting("127.0.0.1", "address the page listens on; anything but loopback needs authentication",
                        pattern=r"[^\s/]+", hint="an IP address or host name (no scheme, no port)")
    port: int = setting(8080, "TCP port of the page", between=(1, 65535))
    username: str = setting("admin", "user name for the password (HTTP Basic)", pattern=r"[^:\s]{1,64}",
                            hint="1 to 64 characters, no colon or spaces")
    password_hash: Optional[str] = setting(None, "the password as `fallwatch web hash-password` prints it "
                                           "(PBKDF2-SHA256); never the password itself", secret=True)
    password_hash_file: Optional[Path] = setting(None, "a file whose first line is the password hash")
    token_env: Optional[str] = setting("FALLWATCH_WEB_TOKEN", "environment variable holding an access token",
                                       pattern=r"[A-Za-z_][A-Za-z0-9_]*")
    token_file: Optional[Path] = setting(None, "a file whose first line is an access token")
    tls: WebTlsConfig = section(WebTlsConfig, "HTTPS settings")
    show_video: bool = setting(False, "show the camera's picture under the skeletons; false = blurred or blank "
                               "(background)")
    background: str = setting("blur", "under the skeletons when show_video is false: blur (the frame, strongly "
                              "blurred) or blank (nothing)", choices=("blur", "blank"))
    blur_sigma_px: float = setting(12, "Gaussian blur sigma in live view pixels (background blur)", between=(1, 200))
    view_width_px: int = setting(640, "live view width in pixels; the height keeps the frame's aspect",
                                 between=(64, 4096))
    live_fps: float = setting(3, "live view pictures per second the page asks for", between=(0.2, 15))
    session_hours: float = setting(12, "a login (password or token) is remembered by a session cookie this long, "
                                   "hours", between=(0.01, 720))
    # Not keys: the resolved secrets (load time), never shown.
    password_hash_resolved: Optional[str] = field(default=None, repr=False, compare=False,
                                                  metadata=dict(internal=True))
    token_resolved: Optional[str] = field(default=None, repr=False, compare=False, metadata=dict(internal=True))

    @property
    def auth_required(self) -> bool:
        """Whether requests must carry credentials: always once a password or token is configured."""
        return bool(self.password_hash_resolved or self.token_resolved)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error(key: str, reason: str) -> ConfigError:
    return ConfigError("%s: %s" % (key, reason), key, reason)


def _first_line(path: Path, key: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise _error(key, "got '%s'; cannot read it (%s)" % (path, why)) from None
    if not line:
        raise _error(key, "got '%s'; its first line is empty, expected %s" % (path, what))
    return line


def resolve_web(web: WebConfig, env: Mapping[str, str]) -> WebConfig:
    """``web`` with its secrets read, checked as a whole (raises ConfigError, key relative to the
    file's top level: ``web.<field>``)."""
    pw_hash = web.password_hash
    if web.password_hash_file is not None:
        pw_hash = _first_line(web.password_hash_file, "web.password_hash_file", "a password hash")
    if pw_hash is not None:
        why = check_hash_format(pw_hash)
        if why:
            key = "web.password_hash_file" if web.password_hash_file is not None else "web.password_hash"
            raise _error(key, "%s; make one with `fallwatch web hash-password`" % why)
    token, token_key = (env.get(web.token_env) if web.token_env else None), "web.token_env"
    if not token and web.token_file is not None:
        token, token_key = _first_line(web.token_file, "web.token_file", "the token"), "web.token_file"
    if token and len(token) < 16:
        raise _error(token_key, "the token is %d characters long; use at least 16 (e.g. `openssl rand -hex 24`)"
                     % len(token))
    tls = web.tls
    if tls.enabled:
        if tls.cert_file is None:
            raise _error("web.tls.cert_file", "got null; expected the server certificate (web.tls.enabled is true)")
        for name in ("cert_file", "key_file", "ca_file"):
            file = getattr(tls, name)
            if file is not None and not (file.is_file() and os.access(file, os.R_OK)):
                raise _error("web.tls." + name, "got '%s'; expected a readable file (web.tls.enabled is true)" % file)
    resolved = dataclasses.replace(web, password_hash_resolved=pw_hash or None, token_resolved=token or None)
    if web.enabled and not is_loopback(web.bind) and not resolved.auth_required:
        raise _error("web.bind", "got %r, which is not loopback, and no authentication is set: set web.password_hash "
                     "(or web.password_hash_file; `fallwatch web hash-password` makes it), or a token in the "
                     "environment variable named by web.token_env or in web.token_file; or bind 127.0.0.1"
                     % web.bind)
    return resolved
