"""The suite's safety net covers UDP: connected sockets and unconnected ``sendto``."""

from __future__ import annotations

import socket

import pytest


@pytest.mark.parametrize("address", ["10.0.0.1", "8.8.8.8", "169.254.169.254"])
def test_non_loopback_udp_is_refused_before_any_packet(address: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(AssertionError, match="only loopback"):
            sock.sendto(b"x", (address, 53))
        with pytest.raises(AssertionError, match="only loopback"):
            sock.sendto(b"x", 0, (address, 53))
        with pytest.raises(AssertionError, match="only loopback"):
            sock.connect((address, 53))


def test_loopback_udp_still_works() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        client.sendto(b"ping", server.getsockname())
        assert server.recvfrom(16)[0] == b"ping"
