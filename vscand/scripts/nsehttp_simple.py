"""The part of NSE's ``http`` library the HTTP version scripts use: ``get`` and
``identify_404``'s verdict "every URI answers 200".

A request is NSE's: ``GET path HTTP/1.1`` with ``Connection: close``, NSE's
User-Agent and ``Host``, sent TLS or not as ``comm.tryssl`` orders them; the
response is read whole (status line, headers, a body by ``Content-Length``,
chunks or up to the close), bounded by the exchange. Redirects are not
followed (NSE's ``get`` follows up to 5 that pass its safety rules; see
DESIGN.md).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from vscand.scripts.api import PortView
from vscand.scripts.comm import CONNECT_TIMEOUT, REQUEST_TIMEOUT, bestoption, get_hostname
from vscand.scripts.exchange import Exchange, ExchangeError

__all__ = ["USER_AGENT", "HttpResponse", "all_uris_200", "get", "parse_response"]

USER_AGENT = "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)"
#: NSE's MAX_BODY_SIZE; a longer body is an error (``http.truncated-ok`` false)
MAX_BODY = 2 * 1024 * 1024
_STATUS = re.compile(rb"HTTP/([0-9]+\.[0-9]+) +([0-9]+)(?=[ \r\n]) *(.*?)\r?\n$", re.DOTALL)


@dataclass
class HttpResponse:
    """NSE's response table: ``status`` None and ``status_line`` the error text on failure."""

    status: int | None
    status_line: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def _error(text: str) -> HttpResponse:
    return HttpResponse(None, text)


def _host_field(port: PortView, tls: bool) -> str:
    name = get_hostname(port)
    default = 443 if tls else 80
    return name if port.number == default else f"{name}:{port.number}"


def _dechunk(body: bytes) -> tuple[bytes, int] | None:
    """Decoded chunks and the bytes used, or None while incomplete."""
    out = bytearray()
    pos = 0
    while True:
        end = body.find(b"\n", pos)
        if end < 0:
            return None
        size_text = body[pos:end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(out), -1
        if size == 0:
            return bytes(out), end + 1
        if len(body) < end + 1 + size:
            return None
        out += body[end + 1 : end + 1 + size]
        pos = end + 1 + size
        if body.startswith(b"\r\n", pos):
            pos += 2
        elif body.startswith(b"\n", pos):
            pos += 1
        elif len(body) - pos < 2:
            return None


def parse_response(data: bytes, *, complete: bool) -> HttpResponse | None:
    """The response in ``data``; None while more may come (``complete`` False)."""
    line_end = data.find(b"\n")
    if line_end < 0:
        return None if not complete else _error("Error in next_response function; EOF")
    status_line = data[: line_end + 1]
    found = _STATUS.match(status_line)
    text = status_line.decode("latin-1")
    if found is None:
        return _error(f"Error parsing status-line {text!r}.")
    head_end = data.find(b"\r\n\r\n", line_end - 1)
    sep = 4
    alt = data.find(b"\n\n", line_end)
    if alt >= 0 and (head_end < 0 or alt < head_end):
        head_end, sep = alt, 2
    if head_end < 0:
        return None if not complete else _error("Error in next_response function; EOF")
    headers: dict[str, str] = {}
    for raw in data[line_end + 1 : head_end].split(b"\n"):
        name, colon, value = raw.decode("latin-1").rstrip("\r").partition(":")
        if colon:
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    body = data[head_end + sep :]
    status = int(found.group(2))
    response = HttpResponse(status, text, headers)
    encoding = headers.get("transfer-encoding", "").lower()
    length = headers.get("content-length", "")
    if encoding and encoding != "identity":
        decoded = _dechunk(body)
        if decoded is None:
            return None if not complete else _error("Error in next_response function; EOF")
        response.body = decoded[0]
    elif length.isdigit():
        if len(body) < int(length):
            return None if not complete else _error("Error in next_response function; EOF")
        response.body = body[: int(length)]
    elif status in (204, 304) or 100 <= status < 200:
        response.body = b""
    elif not complete:
        return None
    else:
        response.body = body
    if response.body is not None and len(response.body) > MAX_BODY:
        return _error("Error in next_response function; Received response body too large")
    return response


async def get(exchange: Exchange, port: PortView, path: str) -> HttpResponse:
    """``http.get(host, port, path)`` without following redirects."""
    if port.protocol != "tcp":
        return _error("Unsupported protocol.")
    for option in bestoption(port):
        tls = option == "ssl"
        request = (
            f"GET {path} HTTP/1.1\r\nConnection: close\r\nUser-Agent: {USER_AGENT}\r\n"
            f"Host: {_host_field(port, tls)}\r\n\r\n"
        ).encode("latin-1", "replace")
        try:
            conn = await exchange.connect(tls=tls, timeout=CONNECT_TIMEOUT)
        except ExchangeError:
            continue
        try:
            conn.send(request)
            try:
                data = await conn.receive(REQUEST_TIMEOUT)
            except ExchangeError:
                continue  # comm.tryssl: no first answer, the other way
            while len(data) <= MAX_BODY + 65536:
                parsed = parse_response(data, complete=False)
                if parsed is not None:
                    return parsed
                try:
                    data += await conn.receive(REQUEST_TIMEOUT)
                except ExchangeError:
                    break
            parsed = parse_response(data, complete=True)
            return parsed if parsed is not None else _error("Error in next_response function")
        finally:
            conn.close()
    return _error("Error creating socket.")


async def all_uris_200(exchange: Exchange, port: PortView) -> bool:
    """``identify_404`` answered 200: the server answers 200 to made-up URIs
    (three of them, the same body), so the HTTP scripts stop."""
    stamp = int(time.time())
    first = await get(exchange, port, f"/nmaplowercheck{stamp}")
    if first.status != 200:
        return False
    if first.body is None:
        return True
    second = await get(exchange, port, f"/NmapUpperCheck{stamp}")
    third = await get(exchange, port, f"/Nmap/folder/check{stamp}")
    if second.status != 200 or third.status != 200:
        return False
    return _clean(first.body) == _clean(second.body) == _clean(third.body)


_VOLATILE = re.compile(
    rb"[0-9]?[0-9]:[0-9]{2}:[0-9]{2}|[0-9]{2}:[0-9]{2}|AM|am|PM|pm|[0-9]{8}|"
    rb"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}/[0-9]{2}/[0-9]{2}|[0-9]{2}-[0-9]{2}-[0-9]{4}|"
    rb"[0-9]{2}/[0-9]{2}/[0-9]{4}|[nN]map[A-Za-z/]*[cC]heck[0-9]*"
)


def _clean(body: bytes | None) -> bytes:
    """Roughly ``clean_404``: times, dates and the requested URI removed."""
    return _VOLATILE.sub(b"", body or b"")
