"""Building and connecting a paho-mqtt 2.x client from ``config.mqtt``, and naming what went wrong.

:func:`open_connection` does DNS, TCP, the TLS handshake and sends CONNECT in one call (paho's
``connect``) and turns each way it can fail into a :class:`ConnectFailure` whose message says what
was wrong and, as its ``fix``, what to change (``mqtt.host``, ``mqtt.port``, ``mqtt.tls.*``). A refused
CONNACK arrives later, on the network loop: :func:`refusal` words it. Used by :mod:`edge.alerts.link`
(the daemon's connection) and :mod:`edge.alerts.probe` (``fallwatch mqtt-test``). Never logs or returns
the password.
"""
from __future__ import annotations

import socket
import ssl
from typing import Any, Optional

from edge.errors import FallwatchError


class ConnectFailure(FallwatchError):
    """A connection attempt failed. ``kind``: dns, tcp, tls, auth, mqtt or timeout; ``str()``: one line with the fix.

    ``key`` tells repeats apart from new failures (the message may carry details that vary)."""

    def __init__(self, kind: str, what: str, fix: str = "", key: Optional[str] = None, joint: str = ": ") -> None:
        super().__init__(what, fix, joint)
        self.kind = kind
        self.key = key or str(self)


def _no_key_password() -> bytes:
    return b""  # never let OpenSSL prompt on a terminal for an encrypted key


def ssl_context(tls: Any) -> ssl.SSLContext:
    """The TLS context of ``mqtt.tls``; raises ConnectFailure("tls") when the files cannot be used."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(tls.ca_file) if tls.ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConnectFailure("tls", "cannot load the CA file mqtt.tls.ca_file=%s (%s)" % (tls.ca_file, exc),
                             "give a PEM file of the CA that signed the broker's certificate") from None
    if tls.cert_file:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None,
                                password=_no_key_password)
        except (ssl.SSLError, OSError) as exc:
            raise ConnectFailure("tls", "cannot load the client certificate mqtt.tls.cert_file=%s with key %s (%s)"
                                 % (tls.cert_file, tls.key_file or "(in cert_file)", exc),
                                 "both must be PEM, match each other, and the key must not be encrypted") from None
    if tls.insecure:
        ctx.check_hostname = False  # the chain is still verified
    return ctx


def new_client(mqtt_config: Any, client_id: str, will_topic: Optional[str] = None) -> Any:
    """A paho 2.x client (callback API VERSION2) set up from ``config.mqtt``; not connected.

    MQTT 3.1.1 with clean_session=True, or MQTT 5 (connect with clean_start=True); user name and
    password; TLS from ``mqtt.tls``; ``offline`` retained as the Last Will on ``will_topic``."""
    import paho.mqtt.client as paho

    v5 = mqtt_config.protocol == "5"
    kwargs = {} if v5 else {"clean_session": True}
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=paho.MQTTv5 if v5 else paho.MQTTv311, **kwargs)
    client.connect_timeout = float(mqtt_config.connect_timeout_s)
    if mqtt_config.username is not None:
        client.username_pw_set(mqtt_config.username, mqtt_config.password)
    if mqtt_config.tls.enabled:
        client.tls_set_context(ssl_context(mqtt_config.tls))
    if will_topic:
        client.will_set(will_topic, "offline", qos=1, retain=True)
    return client


def open_connection(client: Any, mqtt_config: Any) -> None:
    """DNS, TCP, TLS handshake and CONNECT sent; raises ConnectFailure naming the step that failed."""
    host, port = mqtt_config.host, mqtt_config.port
    kwargs = {"clean_start": True} if mqtt_config.protocol == "5" else {}
    try:
        client.connect(host, port, keepalive=int(mqtt_config.keepalive_s), **kwargs)
    except ConnectFailure:
        raise
    except socket.gaierror as exc:
        raise ConnectFailure("dns", "cannot resolve mqtt.host %r (%s)" % (host, exc.strerror or exc),
                             "check the name, or name resolution on this device") from None
    except ssl.SSLCertVerificationError as exc:
        raise tls_verify_failure(exc, mqtt_config) from None
    except ssl.SSLError as exc:
        raise ConnectFailure("tls", "TLS handshake with %s:%d failed (%s)" % (host, port, exc.reason or exc),
                             "is mqtt.port a TLS listener, and does the broker want a client certificate "
                             "(mqtt.tls.cert_file, key_file)?") from None
    except ConnectionRefusedError:
        raise ConnectFailure("tcp", "connection refused by %s:%d" % (host, port),
                             "is the broker running, and is mqtt.port right (usually 1883, 8883 with TLS)?") from None
    except (socket.timeout, TimeoutError):
        raise ConnectFailure("tcp", "no answer from %s:%d within %g s" % (host, port, mqtt_config.connect_timeout_s),
                             "wrong mqtt.host or mqtt.port, or a firewall") from None
    except OSError as exc:
        hint = "with mqtt.tls.enabled, is mqtt.port a TLS listener?" if mqtt_config.tls.enabled else ""
        raise ConnectFailure("tcp", "cannot connect to %s:%d (%s)" % (host, port, exc.strerror or exc), hint) from None


def tls_verify_failure(exc: ssl.SSLCertVerificationError, mqtt_config: Any) -> ConnectFailure:
    """The broker's certificate failed verification: which check, and what to set."""
    tls = mqtt_config.tls
    if getattr(exc, "verify_code", None) == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
        return ConnectFailure("tls", "TLS: the broker's certificate is not for %r (%s)"
                              % (mqtt_config.host, exc.verify_message),
                              "use a host name the certificate lists in mqtt.host, or (testing only) "
                              "mqtt.tls.insecure: true")
    return ConnectFailure("tls", "TLS: the broker's certificate is not trusted (%s)"
                          % (exc.verify_message or exc.reason),
                          "set mqtt.tls.ca_file to the CA that signed it (now %s)"
                          % (tls.ca_file or "the system CA store"))


def refusal(reason_code: Any, mqtt_config: Any) -> ConnectFailure:
    """The failure of a CONNACK that refused the connection (kind auth or mqtt)."""
    value = getattr(reason_code, "value", reason_code)
    if value in (134, 135):  # bad user name or password / not authorised (3.1.1 codes 4 and 5 map here)
        source = " or ".join(s for s in (("$" + mqtt_config.password_env) if mqtt_config.password_env else "",
                                         "mqtt.password_file", "mqtt.password") if s)
        return ConnectFailure("auth", "the broker refused the login as user %r (%s)" % (mqtt_config.username,
                                                                                       reason_code),
                              "check mqtt.username and the password (taken from %s)" % source)
    return ConnectFailure("mqtt", "the broker refused the connection (%s, reason code %s)" % (reason_code, value))
