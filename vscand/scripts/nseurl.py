"""NSE's ``url.parse``, as the HTTP version scripts use it (scheme, host, port, path).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ParsedUrl", "ascii_host", "parse_url"]

_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _normalize_escape(match: re.Match[str]) -> str:
    """``normalize_escape``: an escaped unreserved character is decoded, others
    are written back as ``%XX`` (upper case)."""
    char = chr(int(match.group(1), 16))
    return char if _UNRESERVED.fullmatch(char) else f"%{ord(char):02X}"


@dataclass
class ParsedUrl:
    scheme: str | None = None
    authority: str | None = None
    userinfo: str | None = None
    host: str | None = None
    port: int | None = None
    path: str = ""
    query: str | None = None
    params: str | None = None
    fragment: str | None = None


def parse_url(url: str) -> ParsedUrl:
    """``url.parse(url)`` (the fields the scripts read)."""
    parsed = ParsedUrl()
    url = _ESCAPE.sub(_normalize_escape, url)
    at = url.find("#")
    if at >= 0:
        parsed.fragment, url = url[at + 1 :], url[:at]
    scheme = re.match(r"[A-Za-z0-9][A-Za-z0-9.+-]*:", url)
    if scheme:
        parsed.scheme = scheme.group(0)[:-1].lower()
        url = url[scheme.end() :]
    authority = re.match(r"//([^/]*)", url)
    if authority:
        parsed.authority = authority.group(1)
        url = url[authority.end() :]
    at = url.find("?")
    if at >= 0:
        parsed.query, url = url[at + 1 :], url[:at]
    at = url.find(";")
    if at >= 0:
        parsed.params, url = url[at + 1 :], url[:at]
    parsed.path = url
    if parsed.authority is None:
        return parsed
    rest = parsed.authority
    userinfo = re.match(r"([^@]*)@", rest)
    if userinfo:
        parsed.userinfo = userinfo.group(1)
        rest = rest[userinfo.end() :]
    port = re.search(r":([0-9]+)$", rest)
    if port:
        parsed.port = int(port.group(1))
        rest = rest[: port.start()]
    if rest:
        parsed.host = rest
    return parsed


def ascii_host(host: str | None, release: str = "7.93") -> str | None:
    """``parsed.ascii_host``: an ASCII host name as NSE compares it.

    7.93 runs the name through IDNA mapping (ASCII upper case becomes lower
    case); 7.95 keeps an ASCII name as it is. A name with non-ASCII
    characters is given as None: we do not convert IDNs (it can only match a
    target given by such a name).
    """
    if host is None or not host.isascii():
        return None
    return host if release != "7.93" else host.lower()
