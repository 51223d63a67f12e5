"""``ovs-agent-version``: Oracle Virtual Server Agent 2.2, 3.0 or 3.0.1.

Rule: port 8899 (tcp, open or open|filtered, intensity >= 7, not excluded);
no service name. NSE's ``http.get /`` (redirects followed as NSE does): a 200
whose body has the ``Python: OVSAgentServer Document`` title is version 2.2.
Otherwise only a 501 goes on: ``http.post /`` of an XML-RPC
``system.listMethods`` call (``Content-Type: text/xml``); a 403 whose body
says ``Message: Unauthorized HTTP Access Attempt from ('a.b.c.d', n)!.`` is
3.0, ``Message: Unauthorized access attempt from (…)!.`` is 3.0.1.

Sets (hard match): name ``ovs-agent``, product ``Oracle Virtual Server
Agent``, the version, and — when the answer's Server header starts
``BaseHTTP/x Python/y`` — extrainfo ``BaseHTTP x; Python SimpleXMLRPCServer;
Python y``. No output.
"""

from __future__ import annotations

import re

from vscand.scripts import nsehttp
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.shortport import version_port_or_service

__all__ = ["LIST_METHODS", "OvsAgentVersion", "extrainfo"]

LIST_METHODS = (
    b"<methodCall><methodName>system.listMethods</methodName><params></params></methodCall>"
)
_TITLE_22 = b"<title>Python: OVSAgentServer Document</title>"
_DENIED_30 = re.compile(rb"Message: Unauthorized HTTP Access Attempt from \('[0-9.]+', [0-9]+\)!\.")
_DENIED_301 = re.compile(rb"Message: Unauthorized access attempt from \('[0-9.]+', [0-9]+\)!\.")
_SERVER = re.compile(r"BaseHTTP/([0-9.]+) Python/([0-9.]+)")

_rule = version_port_or_service([8899])


def extrainfo(server: str | None) -> str | None:
    """The extra info NSE builds from a BaseHTTPServer's Server header (None: none)."""
    found = _SERVER.match(server) if server is not None else None
    if found is None:
        return None
    return f"BaseHTTP {found.group(1)}; Python SimpleXMLRPCServer; Python {found.group(2)}"


class OvsAgentVersion(BaseScript):
    name = "ovs-agent-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    def _set(self, run: ScriptRun, version: str, server: str | None) -> None:
        extra = extrainfo(server)
        run.set_version(
            VersionUpdate(
                name="ovs-agent",
                product="Oracle Virtual Server Agent",
                version=version,
                extrainfo=extra if extra is not None else KEEP,
            )
        )

    async def action(self, run: ScriptRun) -> None:
        response = await nsehttp.get(run.exchange, run.port, "/")
        if response.status == 200 and _TITLE_22 in (response.body or b""):
            self._set(run, "2.2", response.header.get("server"))
            return
        if response.status != 501:
            return
        response = await nsehttp.post(
            run.exchange, run.port, "/", LIST_METHODS, {"Content-Type": "text/xml"}
        )
        if response.status != 403:
            return
        body = response.body or b""
        if _DENIED_30.search(body):
            self._set(run, "3.0", response.header.get("server"))
        elif _DENIED_301.search(body):
            self._set(run, "3.0.1", response.header.get("server"))
