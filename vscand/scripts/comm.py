"""Helpers scripts share: NSE's ``comm`` library, in our terms.

* :func:`bestoption` — plain TCP or TLS first (``comm.bestoption``),
* :func:`tryssl` — connect (TLS or not, the better guess first), send, read
  one chunk, close; on failure the other way (``comm.tryssl``),
* :func:`exchange` — connect, send, read (at least ``min_bytes``), close
  (``comm.exchange``).

Each returns None when the peer did not answer (NSE's ``false``): a script
treats that as "not this service", never as an error.
"""

from __future__ import annotations

from typing import Literal

from vscand.scripts.api import PortView
from vscand.scripts.exchange import Exchange, ExchangeError
from vscand.scripts.shortport import port_or_service

__all__ = [
    "CONNECT_TIMEOUT",
    "REQUEST_TIMEOUT",
    "bestoption",
    "exchange",
    "get_hostname",
    "likely_ssl",
    "tryssl",
]

#: NSE's ``stdnse.get_timeout(host)`` on a loopback target (one host RTT
#: timeout of ~1 s scaled by (8000 + 6000) / 7)
CONNECT_TIMEOUT = 2.0
#: ``comm``'s REQUEST_TIMEOUT (6 s) plus the connect timeout
REQUEST_TIMEOUT = 8.0

#: shortport.LIKELY_SSL_PORTS / LIKELY_SSL_SERVICES (7.93)
LIKELY_SSL_PORTS = (
    261, 271, 324, 443, 465, 563, 585, 636, 853, 989, 990, 992, 993, 994, 995, 2221, 2252,
    2376, 3269, 3389, 4433, 4911, 5061, 5986, 6679, 6697, 8443, 9001, 8883,
)  # fmt: skip
LIKELY_SSL_SERVICES = (
    "ftps", "ftps-data", "ftps-control", "https", "https-alt", "imaps", "ircs", "ldapssl",
    "ms-wbt-server", "pop3s", "sip-tls", "smtps", "telnets", "tor-orport",
)  # fmt: skip

_likely_ssl = port_or_service(LIKELY_SSL_PORTS, LIKELY_SSL_SERVICES, ("tcp", "sctp"))


def likely_ssl(port: PortView) -> bool:
    """``shortport.ssl`` without a host (no probing): tunnel, port or service."""
    return port.tunnel == "ssl" or _likely_ssl(port)


Option = Literal["tcp", "ssl", "udp"]


def bestoption(port: PortView) -> tuple[Option, Option]:
    """Which to try first, plain TCP or TLS (``comm.bestoption``)."""
    if port.protocol == "udp":
        return "udp", "udp"
    if port.tunnel == "ssl":
        return "ssl", "tcp"
    if port.conf > 6:
        return "tcp", "ssl"
    if likely_ssl(port):
        return "ssl", "tcp"
    return "tcp", "ssl"


def get_hostname(port: PortView) -> str:
    """``stdnse.get_hostname``: the name the user gave, else the address."""
    return port.target_name or port.address


async def _opencon(conn_exchange: Exchange, option: Option, data: bytes) -> bytes | None:
    try:
        conn = await conn_exchange.connect(tls=option == "ssl", timeout=CONNECT_TIMEOUT)
    except ExchangeError:
        return None
    try:
        conn.send(data)
        return await conn.receive(REQUEST_TIMEOUT)
    except ExchangeError:
        return None
    finally:
        conn.close()


async def tryssl(conn_exchange: Exchange, port: PortView, data: bytes) -> tuple[bytes | None, str]:
    """Send ``data`` and read one chunk, over TLS or not: ``(response, "tcp"|"ssl"|"none")``."""
    first, second = bestoption(port)
    response = await _opencon(conn_exchange, first, data)
    if response is not None:
        return response, first
    if first == "udp":
        return None, "none"
    response = await _opencon(conn_exchange, second, data)
    return response, (second if response is not None else "none")


async def exchange(
    conn_exchange: Exchange, data: bytes, *, min_bytes: int | None = None, tls: bool = False
) -> bytes | None:
    """``comm.exchange``: connect, send, read (at least ``min_bytes``), close."""
    try:
        conn = await conn_exchange.connect(tls=tls, timeout=CONNECT_TIMEOUT)
    except ExchangeError:
        return None
    try:
        conn.send(data)
        if min_bytes is None:
            return await conn.receive(REQUEST_TIMEOUT)
        return await conn.receive_at_least(min_bytes, REQUEST_TIMEOUT)
    except ExchangeError:
        return None
    finally:
        conn.close()


#: an HTTP response body is read up to this size
HTTP_MAX_BYTES = 1 << 20


async def http_get(
    conn_exchange: Exchange, port: PortView, path: str
) -> tuple[int, dict[str, str], bytes] | None:
    """``GET path`` (HTTP/1.1, ``Connection: close``), TLS or not as ``tryssl``
    orders them: ``(status, headers (lower-case names), body)`` or None.

    The body ends at ``Content-Length`` or when the peer closes (chunked
    bodies are decoded); everything is bounded by the exchange's limits.
    """
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {get_hostname(port)}\r\nConnection: close\r\n"
        "User-Agent: Mozilla/5.0 (compatible; vscand)\r\n\r\n"
    ).encode()
    for option in bestoption(port):
        if option == "udp":
            return None
        try:
            conn = await conn_exchange.connect(tls=option == "ssl", timeout=CONNECT_TIMEOUT)
        except ExchangeError:
            continue
        try:
            conn.send(request)
            data = b""
            while len(data) < HTTP_MAX_BYTES:
                try:
                    data += await conn.receive(REQUEST_TIMEOUT)
                except ExchangeError:
                    break
                parsed = _parse_http(data, complete=False)
                if parsed is not None:
                    return parsed
            parsed = _parse_http(data, complete=True)
            if parsed is not None:
                return parsed
        finally:
            conn.close()
    return None


def _parse_http(data: bytes, *, complete: bool) -> tuple[int, dict[str, str], bytes] | None:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length", "")
    if length.isdigit():
        if len(body) < int(length):
            return None if not complete else (int(parts[1]), headers, body)
        return int(parts[1]), headers, body[: int(length)]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        decoded = _dechunk(body)
        if decoded is None and not complete:
            return None
        return int(parts[1]), headers, decoded or b""
    return (int(parts[1]), headers, body) if complete else None


def _dechunk(body: bytes) -> bytes | None:
    out = bytearray()
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            return None
        size_text = body[pos:end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(out)
        if size == 0:
            return bytes(out)
        if len(body) < end + 2 + size:
            return None
        out += body[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
