"""``skypev2-version``: the Skype v2 example of the Nmap book ("Version Detection Using NSE").

Runs on open tcp ports 80 or 443 or with no name (or ``unknown``), with a
confidence below 10, not excluded, intensity >= 7. Skype v2 answers
``GET / HTTP/1.0`` with exactly ``HTTP/1.0 404 Not Found\\r\\n\\r\\n`` and
random data with binary garbage: at least three bytes that are neither
whitespace nor printable ASCII. Responses kept in the fingerprint (GetRequest;
HTTPOptions or RTSPRequest) are used first. Hard match: ``skype2``, ``Skype``.
"""

from __future__ import annotations

import re

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import exchange
from vscand.scripts.fingerprints import fingerprint_response

SKYPE_404 = b"HTTP/1.0 404 Not Found\r\n\r\n"
#: Lua's ``[^%s!-~].*[^%s!-~].*[^%s!-~]`` (%s: space, \t \n \v \f \r)
_ODD = rb"[^ \t\n\x0b\x0c\r!-~]"
_GARBAGE = re.compile(_ODD + rb".*" + _ODD + rb".*" + _ODD, re.DOTALL)


class SkypeV2Version(BaseScript):
    name = "skypev2-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return (
            (port.number in (80, 443) or port.name in (None, "", "unknown"))
            and port.protocol == "tcp"
            and port.state == "open"
            and port.conf < 10
            and not ctx.is_excluded(port.number, port.protocol)
            and ctx.intensity >= 7
        )

    async def action(self, run: ScriptRun) -> str | None:
        result = fingerprint_response(run.port.fingerprint, "GetRequest")
        rand = None
        for probe in ("HTTPOptions", "RTSPRequest"):
            rand = fingerprint_response(run.port.fingerprint, probe)
            if rand is not None:
                break
        if result is None:
            result = await exchange(run.exchange, b"GET / HTTP/1.0\r\n\r\n", min_bytes=26)
            if result is None:
                return None
        if result != SKYPE_404:
            return None
        if rand is None:
            rand = await exchange(run.exchange, b"random data\r\n\r\n", min_bytes=15)
            if rand is None:
                return None
        if _GARBAGE.search(rand):
            run.set_version(VersionUpdate(name="skype2", product="Skype"))
        return None
