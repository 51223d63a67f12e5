"""NSE's ``http`` library, the parts version scripts depend on: ``http.get`` and
``http.post`` as Nmap 7.93/7.95 do them.

* The request: ``METHOD path HTTP/1.1``, headers ``Connection: close``, ``Host``
  (the port appended unless it is the scheme's default), NSE's ``User-Agent``,
  ``Content-Length`` for a POST or a body; the caller's headers replace or add.
* The connection: ``comm.tryssl`` (the better of plain TCP and TLS first; the
  other when the first does not connect or send back a first chunk), connect
  bound :data:`~vscand.scripts.comm.CONNECT_TIMEOUT`, every receive
  :data:`~vscand.scripts.comm.REQUEST_TIMEOUT`.
* The response, read as ``next_response`` reads it: status line
  ``HTTP/d.d code``, header fields (names lower-cased, words joined by one
  space, repeated fields joined by ``", "``; a line without a token continues
  the previous field, as NSE's parser does), the body by ``Transfer-Encoding``
  (chunked), ``Content-Length`` (Lua's ``tonumber``) or the peer closing;
  ``1xx`` responses skipped; ``gzip`` content decoded. Any failure gives a
  response with ``status`` None and NSE's error text as ``status_line``
  (``http_error``: ``Error creating socket.``, ``Error in next_response
  function; ...`` with the peer's bytes quoted as NSE quotes them).
* ``get`` follows redirects as NSE's default ``redirect_ok`` allows (at most
  5; same host, same port, no credentials, not back to ``/``), or none.

``identify_404`` (made-up URIs) is in :mod:`vscand.scripts.nsehttp404`.

Bodies are bounded by the exchange (1 MiB per connection): a body reaching
that is treated as NSE treats one over its 2 MiB ``max-body-size`` (an error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

from vscand.output.script_output import ScriptFailed
from vscand.scripts.api import PortView
from vscand.scripts.comm import CONNECT_TIMEOUT, REQUEST_TIMEOUT, bestoption, likely_ssl
from vscand.scripts.exchange import DEFAULT_MAX_BYTES as _CONNECTION_LIMIT
from vscand.scripts.exchange import Connection, Exchange, ExchangeError, ExchangeTimeout
from vscand.scripts.proto.lua_values import lua_q, lua_tonumber
from vscand.scripts.proto.nse_http import (
    MAX_BODY_SIZE,
    HttpError,
    HttpResponse,
    build_request,
    connection_tokens,
    decode_body,
    parse_header,
    parse_status_line,
)

__all__ = ["HttpResponse", "get", "host_field", "post", "request"]

MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DEFAULT_SCHEMES = {80: "http", 443: "https"}


# -- the request ------------------------------------------------------------------------


def host_field(port: PortView, number: int | None = None, scheme: str | None = None) -> str:
    """``get_host_field``: the name, with ``:port`` unless the scheme's default port."""
    hostname = port.target_name or port.address
    number = port.number if number is None else number
    if scheme is not None:
        if _DEFAULT_PORTS.get(scheme.lower()) == number:
            return hostname
    else:
        default = _DEFAULT_SCHEMES.get(number)
        if default is not None:
            ssl_port = likely_ssl(port)
            if (ssl_port and default == "https") or (not ssl_port and default == "http"):
                return hostname
    return f"{hostname}:{number}"


# -- reading the response ---------------------------------------------------------------


class _Reader:
    """NSE's socket with its ``partial`` buffer: one ``receive`` per call."""

    def __init__(self, conn: Connection, partial: bytes) -> None:
        self.conn = conn
        self.partial = partial
        self.total = len(partial)
        #: the socket's error, as NSE's receive reports it
        self.error = "EOF"

    async def more(self) -> bytes | None:
        if self.total >= _CONNECTION_LIMIT:
            raise HttpError(_OVERSIZED)
        try:
            data = await self.conn.receive(REQUEST_TIMEOUT)
        except ExchangeError as exc:
            self.error = "TIMEOUT" if isinstance(exc, ExchangeTimeout) else "EOF"
            return None
        self.total += len(data)
        return data

    async def line(self) -> bytes:
        while b"\n" not in self.partial:
            data = await self.more()
            if data is None:
                raise HttpError(self.error)
            self.partial += data
        end = self.partial.index(b"\n") + 1
        line, self.partial = self.partial[:end], self.partial[end:]
        return line

    async def exactly(self, length: int, maxlen: int) -> bytes:
        if length > maxlen:
            raise HttpError(_OVERSIZED)
        while len(self.partial) < length:
            data = await self.more()
            if data is None:
                raise HttpError(self.error)
            self.partial += data
        body, self.partial = self.partial[:length], self.partial[length:]
        return body

    async def rest(self, maxlen: int) -> bytes:
        while True:
            if len(self.partial) > maxlen:
                raise HttpError(_OVERSIZED)
            data = await self.more()
            if data is None:
                body, self.partial = self.partial, b""
                return body
            self.partial += data


async def _chunked(reader: _Reader, maxlen: int) -> bytes:
    chunks = b""
    while True:
        try:
            line = await reader.line()
        except HttpError as exc:
            raise HttpError(f"Chunk size not received; {exc}") from None
        size = re.match(rb"([ \t]*)([0-9a-fA-F]*)", line)
        assert size is not None
        if not size.group(2):
            got = _quoted(line[size.end(1) : size.end(1) + 11])
            raise HttpError(f"Chunked encoding didn't find hex; got {got}.")
        length = int(size.group(2), 16)
        try:
            chunks += await reader.exactly(length, maxlen - len(chunks))
        except HttpError as exc:
            text = str(exc)
            raise HttpError(text if text == _OVERSIZED else f"Incomplete chunk; {text}") from None
        try:
            after = await reader.line()
        except HttpError:
            after = None  # NSE lets a missing CRLF pass (the next size then fails)
            if length != 0:
                raise
        if after is not None and not re.match(rb"\r?\n", after):
            raise HttpError("no CRLF after chunk data")
        if length == 0:
            return chunks


async def _body(reader: _Reader, method: str, response: HttpResponse, maxlen: int) -> bytes:
    status = response.status or 0
    header = response.header
    if method.upper() == "HEAD" or 100 <= status <= 199 or status in (204, 304):
        tokens = connection_tokens(header.get("connection", ""))
        keepalive = "keep-alive" in tokens
        if "close" in tokens or (response.version == "1.0" and not keepalive):
            return await reader.rest(maxlen)
        return b""
    for name in ("transfer-encoding", "transfer-coding"):
        if name in header and header[name] != "identity":
            return await _chunked(reader, maxlen)
    if "content-length" in header and "transfer-encoding" not in header:
        length = lua_tonumber(header["content-length"].encode("latin-1"))
        if length is None:
            value = _quoted(header["content-length"].encode("latin-1"))
            raise HttpError(f"Content-Length {value} is non-numeric")
        if isinstance(length, float):
            if not length.is_integer():
                raise ScriptFailed("Content-Length has no integer representation")
            length = int(length)
        if length < 0:
            await reader.rest(maxlen)  # NSE reads on until the peer stops, then fails
            raise HttpError("negative Content-Length")
        return await reader.exactly(length, maxlen)
    return await reader.rest(maxlen)


_OVERSIZED = "response body too large"


def _quoted(data: bytes) -> str:
    return lua_q(data).decode("latin-1")


async def _next_response(reader: _Reader, method: str) -> HttpResponse:
    line = await reader.line()
    response = parse_status_line(line)
    if response is None:
        raise HttpError(f"Error parsing status-line {_quoted(line)}.")
    lines = b""
    while True:
        line = await reader.line()
        if line in (b"\r\n", b"\n"):
            break
        lines += line
    header = parse_header(lines)
    if header is None:
        raise HttpError("bad header")
    response.header = header
    try:
        body = await _body(reader, method, response, MAX_BODY_SIZE)
    except HttpError as exc:
        raise HttpError(f"Received {exc}" if str(exc) == _OVERSIZED else str(exc)) from None
    encoding = header.get("content-encoding")
    if encoding is not None:
        body = decode_body(body, encoding, response)
    response.body = body
    return response


# -- connections --------------------------------------------------------------------------


async def _opencon(exchange: Exchange, tls: bool, data: bytes) -> tuple[Connection, bytes] | None:
    """``comm.opencon``: connect, send, read a first chunk (None: any failure)."""
    try:
        conn = await exchange.connect(tls=tls, timeout=CONNECT_TIMEOUT)
    except ExchangeError:
        return None
    try:
        conn.send(data)
        return conn, await conn.receive(REQUEST_TIMEOUT)
    except ExchangeError:
        conn.close()
        return None


async def request(
    exchange: Exchange, port: PortView, data: bytes, *, scheme: str | None = None
) -> HttpResponse:
    """``http.request``: send ``data`` (tryssl, or the scheme's way only) and read
    the response."""
    if port.protocol != "tcp":
        return HttpResponse(status_line="Unsupported protocol.")
    method = data.split(None, 1)[0].decode("latin-1") if data.split() else ""
    if scheme in ("http", "https"):
        options: tuple[str, ...] = ("ssl" if scheme == "https" else "tcp",)
    else:
        options = tuple(dict.fromkeys(bestoption(port)))
    opened = None
    for option in options:
        opened = await _opencon(exchange, option == "ssl", data)
        if opened is not None:
            break
    if opened is None:
        return HttpResponse(status_line="Error creating socket.")
    conn, first = opened
    try:
        reader = _Reader(conn, first)
        while True:
            try:
                response = await _next_response(reader, method)
            except HttpError as exc:
                return HttpResponse(status_line=f"Error in next_response function; {exc}")
            if not 100 <= (response.status or 0) <= 199:
                response.ssl = option == "ssl"
                return response
    finally:
        conn.close()


async def post(
    exchange: Exchange,
    port: PortView,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """``http.post(host, port, path, options, nil, body)``."""
    data = build_request("POST", path, host_field(port), headers, body)
    return await request(exchange, port, data)


@dataclass(frozen=True)
class _Target:
    path: str
    host: str
    port: int
    scheme: str | None
    userinfo: bool


def _parse_redirect(port: PortView, path: str, response: HttpResponse) -> _Target | None:
    """``parse_redirect``: where a 30x response points (None: not a redirect)."""
    location = response.header.get("location")
    if response.status not in (300, 301, 302, 303, 307) or location is None:
        return None
    try:
        url = urlsplit(location)
        url_port = url.port
    except ValueError:
        return None
    scheme = url.scheme or None
    number = url_port or _DEFAULT_PORTS.get((scheme or "").lower()) or port.number
    new_path = urljoin(path, url.path or "/")
    if url.query:
        new_path = f"{new_path}?{url.query}"
    return _Target(
        path=new_path,
        host=url.hostname or (port.target_name or port.address),
        port=number,
        scheme=scheme,
        userinfo=url.username is not None,
    )


def _redirect_ok(port: PortView, target: _Target) -> bool:
    """NSE's default ``redirect_ok`` rules (the count aside)."""
    hostname = port.target_name or port.address
    if target.userinfo:
        return False
    if hostname == port.address:
        if target.host != hostname:
            return False
    elif _domain(hostname) != _domain(target.host):
        return False
    if target.port != port.number:
        return False
    return not (target.path == "/" and target.host == hostname)


def _domain(name: str) -> str:
    found = re.search(r"\..+\..+", name)
    return (found.group() if found else name).lower()


async def get(
    exchange: Exchange,
    port: PortView,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    redirect_ok: bool = True,
) -> HttpResponse:
    """``http.get``: GET ``path``, following the redirects NSE follows (none with
    ``redirect_ok`` False)."""
    scheme: str | None = None
    followed: list[str] = []
    view, current, counter = port, path, MAX_REDIRECTS
    key = (port.target_name or port.address, port.number, path)
    # NSE's cache is keyed by host, port and path (not the scheme): a redirect
    # back to the same place (plain HTTP sent to https://same:port/same) gets
    # the cached redirect again, until the count runs out. Kept per call here.
    cache: dict[tuple[str, int, str], HttpResponse] = {}
    while True:
        if key in cache:
            response = replace(cache[key], header=dict(cache[key].header))
        else:
            data = build_request("GET", current, host_field(view, scheme=scheme), headers)
            response = await request(exchange, view, data, scheme=scheme)
            if response.status is not None and response.status not in (206, 401):
                cache[key] = replace(response, header=dict(response.header))
        target = _parse_redirect(port, path, response)
        if target is None:
            break
        scheme = target.scheme or scheme
        followed.append(response.header["location"])
        if not redirect_ok or counter == 0 or not _redirect_ok(port, target):
            break
        counter -= 1
        # the next request names the port by its number only, as NSE's does
        view = replace(port, number=target.port, tunnel=None, conf=0, name=None)
        current = target.path
        key = (target.host, target.port, current)
    response.location = followed
    return response
