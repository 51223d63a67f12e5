"""The suite's own safety net: no test can dial outside loopback."""

from __future__ import annotations

import socket

import pytest


@pytest.mark.parametrize("address", ["10.0.0.1", "192.168.1.1", "8.8.8.8", "169.254.169.254"])
def test_non_loopback_connects_are_refused_before_any_packet(address: str) -> None:
    with socket.socket() as sock, pytest.raises(AssertionError, match="only loopback"):
        sock.connect_ex((address, 9))
    with socket.socket() as sock, pytest.raises(AssertionError, match="only loopback"):
        sock.connect((address, 9))


def test_loopback_connects_still_work() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
