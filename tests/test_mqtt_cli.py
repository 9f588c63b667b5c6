"""``fallwatch mqtt-test`` against a real Mosquitto: each kind of failure is named with its fix."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import List

import pytest
from conftest import run_cli

from mosquitto import Broker, broker, certs, write_config  # noqa: F401 (fixtures)

from edge.config import load_config
from edge.alerts.probe import check_connection, check_network
from edge.alerts.client import ConnectFailure


def mqtt_test(broker: Broker, tmp_path: Path, password: str = None, timeout: str = "3", **kwargs: object):
    config = write_config(tmp_path, broker, **kwargs)
    user = str(kwargs.get("user", "fallwatch"))
    secret = broker.users[user] if password is None else password
    proc = run_cli("mqtt-test", "--config", str(config), "--timeout", timeout,
                   env={"FALLWATCH_MQTT_PASSWORD": secret}, timeout=60)
    assert secret not in proc.stdout and secret not in proc.stderr
    return proc, steps_of(proc.stdout)


def steps_of(stdout: str) -> List[List[str]]:
    """[mark, step, detail] of each step line."""
    out = []
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0] in ("ok", "fail", "skip"):
            out.append(parts)
    return out


def test_all_steps_pass_plain(broker: Broker, tmp_path: Path) -> None:
    proc, steps = mqtt_test(broker, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s[:2] for s in steps] == [["ok", "DNS"], ["ok", "TCP"], ["skip", "TLS"], ["ok", "login"],
                                      ["ok", "publish"], ["ok", "delivery"]]
    assert "on fallwatch/dev1/mqtt-test" in proc.stdout and proc.stdout.rstrip().endswith("all checks passed")
    secret = broker.users["fallwatch"]
    helped = run_cli("mqtt-test", "--config", str(tmp_path / "config.yaml"), "--help",
                     env={"FALLWATCH_MQTT_PASSWORD": secret})
    assert helped.returncode == 0 and "delivery" in helped.stdout and secret not in helped.stdout + helped.stderr


def test_all_steps_pass_tls_mqtt5(broker: Broker, tmp_path: Path) -> None:
    proc, steps = mqtt_test(broker, tmp_path, tls=True, protocol="5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s[0] for s in steps] == ["ok"] * 6
    assert "TLSv1." in steps[2][2] and "verified" in steps[2][2]


def test_tcp_refused(broker: Broker, tmp_path: Path) -> None:
    broker.stop()
    proc, steps = mqtt_test(broker, tmp_path)
    assert proc.returncode == 1
    assert steps[-1][:2] == ["fail", "TCP"] and "connection refused by 127.0.0.1:%d" % broker.port in steps[-1][2]
    assert "fix: start the broker" in proc.stdout and "FAILED at TCP" in proc.stdout


def test_untrusted_certificate(broker: Broker, tmp_path: Path) -> None:
    c = broker.certs
    proc, steps = mqtt_test(broker, tmp_path, tls={"ca_file": str(c.rogue_ca), "cert_file": str(c.client_cert),
                                                   "key_file": str(c.client_key)})
    assert proc.returncode == 1
    assert steps[-1][:2] == ["fail", "TLS"] and "certificate is not trusted" in steps[-1][2]
    assert "\n%s fix: set mqtt.tls.ca_file to the CA that signed it (now %s)\n" % (" " * 17, c.rogue_ca) in proc.stdout


def test_wrong_password(broker: Broker, tmp_path: Path) -> None:
    proc, steps = mqtt_test(broker, tmp_path, password="not-the-password-4711")
    assert proc.returncode == 1
    assert steps[-1][:2] == ["fail", "login"] and "refused the login as user 'fallwatch'" in steps[-1][2]
    assert "check mqtt.username" not in steps[-1][2] and "fix: check mqtt.username and the password" in proc.stdout


def test_acl_denial_mqtt311_is_caught_by_the_delivery_check(broker: Broker, tmp_path: Path) -> None:
    proc, steps = mqtt_test(broker, tmp_path, user="readonly", timeout="1")
    assert proc.returncode == 1
    assert [s[:2] for s in steps[-2:]] == [["ok", "publish"], ["fail", "delivery"]]
    assert "silently drops what its ACL denies" in steps[-1][2]
    assert "fix: let user 'readonly' write fallwatch/dev1/#" in proc.stdout


def test_acl_denial_mqtt5_is_refused_at_publish(broker: Broker, tmp_path: Path) -> None:
    proc, steps = mqtt_test(broker, tmp_path, user="readonly", protocol="5")
    assert proc.returncode == 1
    assert steps[-1][:2] == ["fail", "publish"] and "(Not authorized)" in steps[-1][2]


def test_dns_failure_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, broker: Broker) -> None:
    """Name resolution is replaced here (a real failed lookup would send a query off this machine)."""
    def no_such_host(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    config = load_config(write_config(tmp_path, broker, host="broker.example", tls=True), env=broker.env())
    [step] = check_network(config.mqtt, 1.0)
    assert step.status == "fail" and step.name == "DNS" and "cannot resolve 'broker.example'" in step.message
    assert "check mqtt.host" in step.fix


def test_doctor_probe(broker: Broker, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "ok", broker), env=broker.env())
    assert "delivery ok" in check_connection(config, timeout_s=3)
    config = load_config(write_config(tmp_path / "bad", broker), env={"FALLWATCH_MQTT_PASSWORD": "nope"})
    with pytest.raises(ConnectFailure) as info:
        check_connection(config, timeout_s=3)
    assert str(info.value).startswith("login failed: the broker refused the login")
    assert info.value.kind == "login" and info.value.fix.startswith("check mqtt.username and the password")
    assert info.value.fix not in info.value.what


def test_doctor_and_mqtt_test_print_one_result_type(broker: Broker, tmp_path: Path) -> None:
    """Both commands print CheckResults with one formatter: status word, name, message, and the fix
    on the next line, starting where the message starts."""
    config = write_config(tmp_path, broker)
    env = {"FALLWATCH_MQTT_PASSWORD": "not-the-password-4711", "FALLWATCH_ROOT": str(tmp_path)}
    mqtt = run_cli("mqtt-test", "--config", str(config), "--timeout", "3", env=env, timeout=60)
    doctor = run_cli("doctor", "--config", str(config), "--only", "mqtt", env=env, timeout=60)
    assert mqtt.returncode == 1 and doctor.returncode == 1, mqtt.stdout + doctor.stdout + doctor.stderr
    for stdout, name in ((mqtt.stdout, "login"), (doctor.stdout, "mqtt")):
        lines = stdout.splitlines()
        [at] = [i for i, line in enumerate(lines) if line.split()[:2] == ["fail", name]]
        fail, fix = lines[at], lines[at + 1]
        column = fail.index("the broker refused the login") if name == "login" else fail.index("127.0.0.1:")
        assert fix[:column].strip() == "" and fix[column:].startswith("fix: check mqtt.username and the password")
        assert "check mqtt.username" not in fail
