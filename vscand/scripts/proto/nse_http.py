"""NSE's ``http`` library, its pure parts: the request bytes, the status line,
the header parser, content decoding, ``clean_404`` (``vscand.scripts.nsehttp``
reads and sends). Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

__all__ = [
    "MAX_BODY_SIZE",
    "USER_AGENT",
    "HttpError",
    "HttpResponse",
    "build_request",
    "clean_404",
    "connection_tokens",
    "decode_body",
    "parse_header",
    "parse_status_line",
]

#: NSE's default ``http.useragent``
USER_AGENT = "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)"
#: NSE's default ``http.max-body-size``
MAX_BODY_SIZE = 2 * 1024 * 1024


class HttpError(Exception):
    """``next_response`` failed: the caller gets a response with status None."""


@dataclass
class HttpResponse:
    """NSE's response table: ``status`` None means the request failed."""

    status: int | None = None
    version: str | None = None
    status_line: str | None = None
    #: lower-case field name -> value (latin-1 text)
    header: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    ssl: bool = False
    #: the Location values followed (``get``)
    location: list[str] = field(default_factory=list)


def build_request(
    method: str,
    path: str,
    host: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:
    """The request bytes as ``build_request`` makes them (header order aside)."""
    fields: dict[str, str] = {"Connection": "close", "Host": host, "User-Agent": USER_AGENT}
    if body is None and method == "POST":
        body = b""
    if body is not None:
        fields["Content-Length"] = str(len(body))
    fields.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1") + b"\r\n" + (body or b"")


_STATUS_LINE = re.compile(rb"HTTP/([0-9]+\.[0-9]+) +([0-9]+)(?=[ \r\n]) *(.*?)\r?\n\Z", re.DOTALL)
_TOKEN = re.compile(rb'[^()<>@,;:\\"/\[\]?={} \x00-\x1f\x7f]+')
_TOKEN_TEXT = re.compile(r'[^()<>@,;:\\"/\[\]?={} \x00-\x1f\x7f]+')
_EOL = re.compile(rb"\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]")


def parse_status_line(line: bytes) -> HttpResponse | None:
    """``parse_status_line``: a response with status, version and status line, or None."""
    found = _STATUS_LINE.match(line)
    if found is None:
        return None
    return HttpResponse(
        status=int(found.group(2)),
        version=found.group(1).decode(),
        status_line=line.decode("latin-1"),
    )


def connection_tokens(value: str) -> list[str]:
    """The tokens of a ``Connection`` header as ``recv_body`` walks them (lower-cased):
    each token must start right after the single character ending the previous one."""
    tokens: list[str] = []
    pos = 0
    while True:
        found = _TOKEN_TEXT.match(value, pos)
        if found is None:
            return tokens
        tokens.append(found.group().lower())
        pos = found.end() + 1


def _skip_lws(s: bytes, pos: int) -> int:
    while True:
        while pos < len(s) and s[pos] in b" \t":
            pos += 1
        folded = _FOLD.match(s, pos)
        if folded is None:
            return pos
        pos = folded.end()


def parse_header(header: bytes) -> dict[str, str] | None:
    """``parse_header``: the fields of a header block (each line with its ending),
    or None where NSE reports an error."""
    fields: dict[bytes, bytes] = {}
    name: bytes | None = None
    pos = 0
    while pos < len(header):
        token = _TOKEN.match(header, pos)
        if token is not None:
            name = token.group() if header[token.end() : token.end() + 1] == b":" else None
            pos = token.end() + 1
        pos = _skip_lws(header, pos)
        words = []
        while pos < len(header) and _EOL.match(header, pos) is None:
            start = pos
            while pos < len(header) and header[pos] not in b" \t" and not _EOL.match(header, pos):
                pos += 1
            words.append(header[start:pos])
            pos = _skip_lws(header, pos)
        if name is not None:
            key, value = name.lower(), b" ".join(words)
            fields[key] = fields[key] + b", " + value if key in fields else value
        end = _EOL.match(header, pos)
        if end is None:
            return None
        pos = end.end()
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in fields.items()}


def decode_body(body: bytes, encodings: str, response: HttpResponse) -> bytes:
    pending = re.split(r"[^0-9A-Za-z]+", encodings)
    while pending:
        name = pending[0].lower()
        if name == "identity":
            pending.pop(0)
        elif name == "gzip":
            inflater = zlib.decompressobj(47)  # zlib or gzip, as lua-zlib's inflate
            try:
                body = inflater.decompress(body, MAX_BODY_SIZE + 1)
            except zlib.error:
                raise HttpError("Corrupted Content-Encoding: gzip") from None
            if len(body) > MAX_BODY_SIZE:
                raise HttpError("Decoded response body too large")
            pending.pop(0)
        else:
            break
    if "content-length" in response.header:
        response.header["content-length"] = str(len(body))
    if pending:
        response.header["content-encoding"] = ", ".join(pending)
    else:
        del response.header["content-encoding"]
    return body


#: ``clean_404``'s substitutions, applied one after the other over the whole body
#: (each a single left-to-right pass, as ``string.gsub``): times, AM/PM, dates
#: (8-digit years before 6-digit ones), then paths (which takes the URI with them)
_CLEAN_404 = tuple(
    re.compile(pattern)
    for pattern in (
        rb"[0-9]?[0-9]:[0-9][0-9]:[0-9][0-9]",
        rb"[0-9][0-9]:[0-9][0-9]",
        rb"AM",
        rb"am",
        rb"PM",
        rb"pm",
        rb"[0-9]{8}",
        rb"[0-9]{4}-[0-9][0-9]-[0-9][0-9]",
        rb"[0-9]{4}/[0-9][0-9]/[0-9][0-9]",
        rb"[0-9][0-9]-[0-9][0-9]-[0-9]{4}",
        rb"[0-9][0-9]/[0-9][0-9]/[0-9]{4}",
        rb"[0-9]{6}",
        rb"[0-9][0-9]-[0-9][0-9]-[0-9][0-9]",
        rb"[0-9][0-9]/[0-9][0-9]/[0-9][0-9]",
        rb"/[^ ]+",
        rb"[a-zA-Z]:\\[^ ]+",
    )
)


def clean_404(body: bytes) -> bytes:
    """``clean_404``: the body with what changes between two requests for made-up
    URIs removed. (NSE then takes the MD5 of it; only equality is compared, so the
    cleaned body itself serves.)"""
    for pattern in _CLEAN_404:
        body = pattern.sub(b"", body)
    return body
