"""``http-server-header``: the HTTP ``Server`` header as the product of an unidentified port.

Runs (intensity >= 7) on likely-HTTP ports (``shortport.http``: ports 80,
443, 631, ... or services http, https, ...). Reads the responses kept in the
port's fingerprint (GetRequest, GenericLines, HTTPOptions, FourOhFourRequest,
NULL, RTSPRequest, Help, SIPOptions); without any, sends ``GET / HTTP/1.0``
itself. Always sends one ``GET / HTTP/1.1`` with a Host header. For each HTTP
status-line response: while the port has no product and a confidence <= 3,
the Server header's value (None when absent) becomes the product, soft match
(method probed, conf 10; the service name stays what it was). Output: the
distinct Server values other than the product, sorted: a table (the values
as they are) and a string (``<empty>`` for an empty header; one per line,
indented, after a newline when there are several); None when there is none.
"""

from __future__ import annotations

import re

from vscand.output.script_output import ScriptOutput, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import get_hostname, tryssl
from vscand.scripts.fingerprints import fingerprint_response
from vscand.scripts.shortport import likely_http

FINGERPRINT_PROBES = (
    "GetRequest",
    "GenericLines",
    "HTTPOptions",
    "FourOhFourRequest",
    "NULL",
    "RTSPRequest",
    "Help",
    "SIPOptions",
)
_STATUS = re.compile(rb"^HTTP/1.[01] \d\d\d", re.DOTALL)
_SERVER = re.compile(rb"\n[Ss][Ee][Rr][Vv][Ee][Rr]:[ \t]*(.*?)\r?\n", re.DOTALL)


def server_header(response: bytes) -> str | None:
    """The Server header of an HTTP response as NSE reads it, or None."""
    found = _SERVER.search(response)
    return found.group(1).decode("latin-1") if found else None


def format_output(servers: set[str]) -> ScriptOutput | None:
    """NSE's ``return out, text``: the sorted values, and their lines."""
    if not servers:
        return None
    shown = sorted(s if s else "<empty>" for s in servers)
    text = ("\n  " if len(shown) > 1 else "") + "\n  ".join(shown)
    return ScriptOutput(table=Table(list(sorted(servers))), text=text)


class HttpServerHeader(BaseScript):
    name = "http-server-header"
    dependencies: tuple[str, ...] = ("https-redirect",)

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return likely_http(port) and ctx.intensity >= 7

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        port = run.port
        responses: list[bytes] = []
        for probe in FINGERPRINT_PROBES:
            kept = fingerprint_response(port.fingerprint, probe)
            if kept is not None:
                responses.append(kept)
        if not responses:
            first, _ = await tryssl(run.exchange, port, b"GET / HTTP/1.0\r\n\r\n")
            if first is None:
                return None
            responses.append(first)
        request = f"GET / HTTP/1.1\r\nHost: {get_hostname(port)}\r\n\r\n".encode()
        second, _ = await tryssl(run.exchange, port, request)
        if second is not None:
            responses.append(second)
        # NSE works on a copy of the port's version table that set_port_version
        # does not refresh: the product changes, the confidence does not
        product = port.product
        servers: set[str] = set()
        for response in responses:
            if not _STATUS.match(response):
                continue
            server = server_header(response)
            if product is None and port.conf <= 3:
                product = server
                run.set_version(VersionUpdate(product=server), "softmatched")
            elif product == server:
                server = None
            if server is not None:
                servers.add(server)
        return format_output(servers)
