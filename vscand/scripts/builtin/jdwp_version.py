"""``jdwp-version``: the Java Debug Wire Protocol handshake and VirtualMachine.Version.

Rule: a port the probes left ``tcpwrapped`` (a JDWP agent closes a connection that
sends no handshake within 2 s, before the NULL probe's tcpwrapped limit), tcp,
open, not excluded, intensity >= 7.

Action: ``comm.exchange`` of ``JDWP-Handshake`` and a VirtualMachine.Version command
(id 1), reading at least 18 bytes. The reply's description (first line), its
remaining lines, the VM version and name are matched as NSE's pattern does.

Version fields (hard match): name ``jdwp``, product = the description's first
line, version = the VM version; an answer that only has a reply flag after the
handshake gives product ``unknown``. No output.
"""

from __future__ import annotations

import re

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import exchange

__all__ = ["REQUEST", "JdwpVersion", "read_reply"]

#: the handshake, then VirtualMachine.Version (length 11, id 1, flags 0, set 1, command 1)
REQUEST = b"JDWP-Handshake\x00\x00\x00\x0b\x00\x00\x00\x01\x00\x01\x01"

_REPLY = re.compile(
    rb"JDWP-Handshake\x00\x00..\x00\x00\x00\x01\x80\x00\x00\x00\x00..([^\x00\n]*)\n"
    rb"([^\x00]*)\x00\x00..\x00\x00..\x00\x00..([0-9._]+)\x00\x00..([^\x00]*)",
    re.S,
)
_ANY_REPLY = re.compile(rb"JDWP-Handshake\x00.*\x80", re.S)


def read_reply(answer: bytes) -> tuple[str, str | None] | None:
    """(product, version) as the script sets them, or None when it sets nothing."""
    found = _REPLY.match(answer)
    if found:
        return found.group(1).decode("latin-1"), found.group(3).decode("latin-1")
    if _ANY_REPLY.match(answer):
        return "unknown", None
    return None


class JdwpVersion(BaseScript):
    name = "jdwp-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return (
            port.name == "tcpwrapped"
            and port.protocol == "tcp"
            and port.state == "open"
            and not ctx.is_excluded(port.number, port.protocol)
            and ctx.intensity >= 7
        )

    async def action(self, run: ScriptRun) -> None:
        answer = await exchange(run.exchange, REQUEST, min_bytes=18)
        if answer is None:
            return None
        found = read_reply(answer)
        if found is None:
            return None
        product, version = found
        if version is None:
            run.set_version(VersionUpdate(name="jdwp", product=product))
        else:
            run.set_version(VersionUpdate(name="jdwp", product=product, version=version))
        return None
