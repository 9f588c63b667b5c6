"""The tests' Mosquitto harness itself: its ports (a flaky CI run once lost a broker's port to a client)."""
from __future__ import annotations

import socket

from mosquitto import Broker, certs, free_port  # noqa: F401  (certs: the fixture)


def test_free_ports_lie_below_the_kernels_ephemeral_range():
    """Ports the kernel hands to outgoing connections are never chosen for a listener to bind later."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    ports = [free_port() for _ in range(50)]
    assert all(10000 <= p < low for p in ports), ports
    assert len(set(ports)) > 40  # chosen at random, not one port again and again


def test_a_broker_whose_port_is_taken_before_its_first_start_moves_to_free_ones(tmp_path, certs):
    broker = Broker(tmp_path / "broker", certs)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    squatter.bind(("127.0.0.1", broker.port))
    squatter.listen(1)
    taken = broker.port
    try:
        broker.start()
        try:
            assert broker.running and broker.port != taken
            with socket.create_connection(("127.0.0.1", broker.port), timeout=5):
                pass
        finally:
            broker.stop()
    finally:
        squatter.close()
