"""A real Mosquitto broker for tests and benchmarks: its own ports, users, ACL, persistence and TLS.

:class:`Broker` writes a mosquitto.conf into a work folder and runs ``/usr/sbin/mosquitto -c`` on
two free loopback ports: a plain listener and a TLS listener that requires a client certificate
signed by the test CA. Users come from a password file hashed with ``mosquitto_passwd -U``
(passwords never appear on a command line), topics from an ACL file. Persistence is on, so a
subscriber's persistent session and its queued messages survive :meth:`Broker.restart` (a graceful
stop: SIGTERM, mosquitto writes its database). :func:`make_certs` makes the CA, the server
certificate (for ``localhost`` and ``127.0.0.1``), a client certificate, and a second, untrusted CA,
with the ``openssl`` command line.

The fixtures ``certs`` (once per session) and ``broker`` (one per test, always stopped) are
imported by the test modules that use them.
"""
from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

# The device may write everything under fallwatch/ and homeassistant/ and read Home Assistant's
# birth topic and its own test topic; the watcher (a subscriber standing for the user's phone or
# Home Assistant) reads everything and may publish the birth message; "readonly" may connect and
# read but not publish: the ACL-denial case.
DEFAULT_ACL = """\
user fallwatch
topic readwrite fallwatch/#
topic readwrite homeassistant/#

user watcher
topic read fallwatch/#
topic readwrite homeassistant/#

user readonly
topic read fallwatch/#
topic read homeassistant/#
"""


def _ephemeral_range() -> Tuple[int, int]:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A loopback port free now, chosen at random **below the ephemeral range**: a port the kernel hands
    out for binding to port 0 is also handed out as the local port of outgoing connections (every test's
    MQTT and HTTP clients), so one held by our broker's config until it starts, or across its restarts,
    could be taken by a client meanwhile ("Address already in use": a flaky CI run)."""
    low, _ = _ephemeral_range()
    top = max(low - 1, 11000)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(10000, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ports() -> Tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Polls ``predicate`` until it holds or ``timeout_s`` passes; its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed the server and client certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # a CA nobody used: trusting only it makes the server certificate untrusted


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl"] + list(args), cwd=str(cwd), check=True, capture_output=True, timeout=60)


def make_certs(folder: Path) -> Certs:
    """A test PKI under ``folder`` (EC P-256 keys, valid two days)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "rogue_ca"):
        _openssl("req", "-x509", *key, "-keyout", ca + ".key", "-out", ca + ".crt", "-days", "2",
                 "-subj", "/CN=fallwatch test %s" % ca,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    exts = {"server": "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            "client": "extendedKeyUsage=clientAuth\n"}
    for name, ext in exts.items():
        (folder / (name + ".ext")).write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n" + ext)
        _openssl("req", *key, "-keyout", name + ".key", "-out", name + ".csr",
                 "-subj", "/CN=%s" % ("localhost" if name == "server" else "fallwatch-device"), cwd=folder)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext", cwd=folder)
    for path in folder.glob("*.key"):
        path.chmod(0o600)
    return Certs(folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "client.crt",
                 folder / "client.key", folder / "rogue_ca.crt")


class Broker:
    """One mosquitto process at a time on fixed ports; start, stop (graceful), kill, restart."""

    def __init__(self, folder: Path, certs: Certs, users: Optional[Dict[str, str]] = None,
                 acl: str = DEFAULT_ACL) -> None:
        self.folder = folder
        self.certs = certs
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").mkdir(exist_ok=True)
        self.users = dict(users) if users is not None else {
            name: "pw-%s-%s" % (name, secrets.token_hex(8)) for name in ("fallwatch", "watcher", "readonly")}
        self.port, self.tls_port = _two_ports()
        self.log_file = folder / "mosquitto.log"
        self._process: Optional[subprocess.Popen] = None
        self._started = False  # once started, the ports are the broker's: restarts keep them
        self.set_users(self.users)
        self.set_acl(acl)
        self._write_conf()

    # ---------------------------------------------------------------- configuration

    def set_users(self, users: Dict[str, str]) -> None:
        """Replace the password file (takes effect at the next start)."""
        self.users = dict(users)
        path = self.folder / "passwd"
        path.write_text("".join("%s:%s\n" % item for item in self.users.items()))
        path.chmod(0o600)
        subprocess.run([MOSQUITTO_PASSWD, "-U", str(path)], check=True, capture_output=True, timeout=30)

    def set_acl(self, acl: str) -> None:
        """Replace the ACL file (takes effect at the next start)."""
        path = self.folder / "acl"
        path.write_text(acl)
        path.chmod(0o600)

    def _write_conf(self) -> None:
        c = self.certs
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            "password_file %s" % (self.folder / "passwd"),
            "acl_file %s" % (self.folder / "acl"),
            "persistence true",
            "persistence_location %s/" % (self.folder / "data"),
            "persistent_client_expiration 1h",
            "max_queued_messages 100000",
            "log_dest file %s" % self.log_file,
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
            "listener %d 127.0.0.1" % self.port,
            "listener %d 127.0.0.1" % self.tls_port,
            "cafile %s" % c.ca, "certfile %s" % c.server_cert, "keyfile %s" % c.server_key,
            "require_certificate true",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # else mosquitto drops to user "mosquitto", which cannot read our files
        (self.folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    # ---------------------------------------------------------------- process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        for attempt in range(3):
            try:
                return self._start(timeout_s)
            except RuntimeError as exc:
                if self._started or "Address already in use" not in str(exc) or attempt == 2:
                    raise
                # the first start only: nobody holds these ports yet, so new ones do no harm
                self.port, self.tls_port = _two_ports()
                self._write_conf()

    def _start(self, timeout_s: float) -> None:
        self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.folder / "mosquitto.conf")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("mosquitto exited with status %s: %s\n%s" % (
                    self._process.returncode, self._process.stderr.read().decode(errors="replace"), self.log()))
            if all(_accepts(port) for port in (self.port, self.tls_port)):
                self._started = True
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("mosquitto did not listen on ports %d and %d within %g s" % (
            self.port, self.tls_port, timeout_s))

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop: SIGTERM; mosquitto saves its persistence database and exits."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process.stderr.close()
        self._process = None

    def kill(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            self._process.stderr.close()
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # ---------------------------------------------------------------- client settings

    def mqtt_config(self, user: str = "fallwatch", tls: object = False, protocol: str = "3.1.1",
                    **extra: object) -> Dict[str, object]:
        """The ``mqtt`` section of a fallwatch config.yaml that connects as ``user``.

        ``tls``: False (plain port), True (TLS port, test CA, client certificate) or a dict: the
        ``mqtt.tls`` section to use on the TLS port. The password is not in it: pass :meth:`env` to
        the process (``FALLWATCH_MQTT_PASSWORD``)."""
        section: Dict[str, object] = {
            "enabled": True, "host": "127.0.0.1", "port": self.tls_port if tls else self.port,
            "protocol": protocol, "username": user, "keepalive_s": 5,
            "reconnect_min_s": 0.1, "reconnect_max_s": 1.0, "connect_timeout_s": 3,
        }
        if isinstance(tls, dict):
            section["tls"] = dict(tls, enabled=True)
        elif tls:
            section["tls"] = {"enabled": True, "ca_file": str(self.certs.ca),
                              "cert_file": str(self.certs.client_cert), "key_file": str(self.certs.client_key)}
        section.update(extra)
        return section

    def env(self, user: str = "fallwatch") -> Dict[str, str]:
        return {"FALLWATCH_MQTT_PASSWORD": self.users[user]}


def write_config(folder: Path, broker: Broker, cameras: "tuple" = ("room1", "room2"), device_id: str = "dev1",
                 user: str = "fallwatch", tls: object = False, protocol: str = "3.1.1", **mqtt: object) -> Path:
    """A fallwatch config.yaml in ``folder`` (state under folder/state) that talks to ``broker``."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    config = {"device_id": device_id, "paths": {"state_dir": str(folder / "state")},
              "cameras": [{"name": name} for name in cameras],
              "mqtt": broker.mqtt_config(user=user, tls=tls, protocol=protocol, **mqtt)}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if not Path(MOSQUITTO).exists() or shutil.which("openssl") is None:
        pytest.fail("the MQTT tests need mosquitto, mosquitto_passwd and openssl: "
                    "apt-get install mosquitto mosquitto-clients openssl")
    return make_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path, certs: Certs) -> Iterator[Broker]:
    """A started broker; stopped (killed if need be) after the test."""
    b = Broker(tmp_path / "broker", certs)
    b.start()
    try:
        yield b
    finally:
        b.kill()


class Subscriber:
    """A paho client that records every message it gets, on a persistent session by default.

    ``persistent``: MQTT 3.1.1 clean_session=False, or MQTT 5 clean_start=False with a one-hour
    session expiry, so the broker queues QoS 1 messages while this client (or the broker) is down.
    ``messages`` holds (arrival time.perf_counter(), topic, payload bytes, retain flag) in arrival order.
    """

    def __init__(self, broker: Broker, topics: "tuple", client_id: str = "watcher", user: str = "watcher",
                 protocol: str = "3.1.1", persistent: bool = True, tls: bool = False) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.messages: list = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self._topics = topics
        self._protocol = protocol
        self._persistent = persistent
        v5 = protocol == "5"
        kwargs = {} if v5 else {"clean_session": not persistent}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, **kwargs)
        self.client.username_pw_set(user, broker.users[user])
        if tls:
            self.client.tls_set(ca_certs=str(broker.certs.ca), certfile=str(broker.certs.client_cert),
                                keyfile=str(broker.certs.client_key))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self._host, self._port = "127.0.0.1", broker.tls_port if tls else broker.port

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        # Subscribing again on a resumed session is harmless and covers a first connect.
        for topic in self._topics:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        import time as _time

        with self.lock:
            self.messages.append((_time.perf_counter(), message.topic, bytes(message.payload), message.retain))

    def start(self, timeout_s: float = 10.0) -> "Subscriber":
        kwargs: Dict[str, object] = {}
        if self._protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600 if self._persistent else 0
            kwargs = {"clean_start": not self._persistent, "properties": props}
        self.client.connect(self._host, self._port, keepalive=5, **kwargs)
        self.client.loop_start()
        if not self.connected.wait(timeout_s):
            raise RuntimeError("the test subscriber could not connect to the broker")
        time.sleep(0.2)  # let the SUBACKs arrive
        return self

    def snapshot(self) -> list:
        with self.lock:
            return list(self.messages)

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def wait_for(self, predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.05)
        return predicate(self.snapshot())

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
