"""``iec61850-mms`` (Nmap 7.95 on): its port rule, which never holds.

Nmap 7.95's script asks ``shortport.portnumber(102, "iso-tsap")``: the second
argument of ``portnumber`` is the list of *protocols*, so the rule wants port
102 over a protocol named ``iso-tsap``. A port's protocol is ``tcp``, ``udp``
or ``sctp``: the rule never holds and Nmap never runs the action (checked:
``nmap -p102 --script iec61850-mms -d2`` against a listener on 102 never
connects). The rule is reproduced as it is; the action (COTP, MMS Initiate,
Identify, GetNameList and Read of the LLN0/LPHD name plates) cannot be
reached and is not written: it returns nothing.

Listed in ``registry.SINCE`` (7.95): a scan reproducing 7.93 does not have it.
"""

from __future__ import annotations

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun
from vscand.scripts.shortport import port_or_service

__all__ = ["Iec61850Mms"]

#: ``shortport.portnumber(102, "iso-tsap")``: port 102, *protocol* iso-tsap, open or open|filtered
_rule = port_or_service([102], (), ("iso-tsap",))


class Iec61850Mms(BaseScript):
    name = "iec61850-mms"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port)

    async def action(self, run: ScriptRun) -> None:
        return None
