"""``weblogic-t3-info``: the T3 (WebLogic RMI) handshake and the server's version.

Rule: a port whose product is set with a name confidence over 3 runs only when the
product contains ``WebLogic`` (and intensity >= 7; NSE checks nothing else
there); any other port is NSE's ``version_port_or_service({7001,7002,7003},
"http")``.

Action: ``comm.exchange`` of ``t3 12.1.2\\nAS:2048\\nHL:19\\n\\n`` (one read). An
answer ``HELO:a.b.c.d.`` gives the version a.b.c.d; ``LGIN:``, ``SERV:``, ``UNAV:``,
``LICN:``, ``RESC:``, ``VERS:`` (its ``this server:a.b.c.d`` is the version),
``CATA:``, ``CMND:`` each have their sentence. (NSE's second handshake, for a
server that echoes 12.1.2, cannot run: its pattern captures four numbers.)

Version fields (hard match, when the answer was one of those): extrainfo = the
old one and ``; `` (if any), then ``T3 enabled``; version when found; product
``WebLogic application server`` when there was none. Output: ``T3 protocol in
use (...)``.
"""

from __future__ import annotations

import re

from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import exchange
from vscand.scripts.shortport import version_port_or_service

__all__ = ["HANDSHAKE", "WeblogicT3Info", "read_answer"]

HANDSHAKE = b"t3 12.1.2\nAS:2048\nHL:19\n\n"

_HELO = re.compile(rb"HELO:([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)\.")
_VERS = re.compile(rb"VERS:Incompatible versions - this server:([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)")
_SENTENCES = (
    (b"LGIN:", "handshake failed"),
    (b"SERV:", "No such service"),
    (b"UNAV:", "Service unavailable"),
    (b"LICN:", "No license"),
    (b"RESC:", "No resource"),
    (b"VERS:", "Incompatible version"),
    (b"CATA:", "Catastrophic failure"),
    (b"CMND:", "No such command"),
)

_default_rule = version_port_or_service([7001, 7002, 7003], ["http"])


def read_answer(answer: bytes) -> tuple[str, str | None] | None:
    """(the sentence in parentheses, the version or None), or None for anything else."""
    helo = _HELO.match(answer)
    if helo:
        version = helo.group(1).decode()
        return f"WebLogic version: {version}", version
    for prefix, sentence in _SENTENCES:
        if answer.startswith(prefix):
            vers = _VERS.match(answer) if prefix == b"VERS:" else None
            return sentence, vers.group(1).decode() if vers else None
    return None


class WeblogicT3Info(BaseScript):
    name = "weblogic-t3-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        if port.conf > 3 and port.product:
            return "WebLogic" in port.product and ctx.intensity >= 7
        return _default_rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        answer = await exchange(run.exchange, HANDSHAKE)
        if answer is None:
            return None
        found = read_answer(answer)
        if found is None:
            return None
        sentence, version = found
        old = run.port.extrainfo
        run.set_version(
            VersionUpdate(
                extrainfo=(f"{old}; " if old else "") + "T3 enabled",
                version=version if version is not None else KEEP,
                product=KEEP if run.port.product else "WebLogic application server",
            )
        )
        return f"T3 protocol in use ({sentence})"
