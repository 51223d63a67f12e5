"""``mcafee-epo-agent``: a McAfee ePolicy Orchestrator agent's XML log page.

Rule (intensity >= 7): a port whose product says ``ePolicy Orch`` or ``EPO
Agent`` (either case of the first letter), or, on a port without a product,
8081/tcp. Sends NSE's ``http.get /`` with an MSIE ``User-Agent`` (the agent
answers that with XML). A body starting ``<?xml … ?>`` then ``<naLog>`` is
the agent's: name ``http``, product ``McAfee ePolicy Orchestrator Agent``,
version = ``<version>`` (empty when absent), hostname = ``<ComputerName>``
(cleared when absent), extrainfo ``ePOServerName: S, AgentGuid: G``; hard
match. No output (Nmap prints "ePO Agent not found" only with -vv).
"""

from __future__ import annotations

import re

from vscand.scripts import nsehttp
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate

__all__ = ["USER_AGENT", "McafeeEpoAgent", "parse_agent_log"]

USER_AGENT = "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.0; mcafee-epo-agent)"
_PRODUCT = re.compile(r"[eE][pP]olicy Orch|[eE]PO [aA]gent")
_LOG = re.compile(rb"<\?xml .*\?>\s*<naLog>", re.DOTALL)


def _element(body: bytes, name: str) -> str | None:
    found = re.search(b"<" + name.encode() + b">([^<]*)</" + name.encode() + b">", body)
    return found.group(1).decode("latin-1") if found else None


def parse_agent_log(body: bytes) -> VersionUpdate | None:
    """The update NSE makes from the agent's XML (None: not the agent's log)."""
    if not _LOG.match(body):
        return None
    server = _element(body, "ePOServerName") or ""
    guid = _element(body, "AgentGUID") or ""
    return VersionUpdate(
        name="http",
        product="McAfee ePolicy Orchestrator Agent",
        version=_element(body, "version") or "",
        hostname=_element(body, "ComputerName"),
        extrainfo=f"ePOServerName: {server}, AgentGuid: {guid}",
    )


class McafeeEpoAgent(BaseScript):
    name = "mcafee-epo-agent"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        if ctx.intensity < 7:
            return False
        if port.product is not None:
            return _PRODUCT.search(port.product) is not None
        return port.number == 8081 and port.protocol == "tcp"

    async def action(self, run: ScriptRun) -> None:
        response = await nsehttp.get(run.exchange, run.port, "/", {"User-Agent": USER_AGENT})
        if response.body is None:
            return
        update = parse_agent_log(response.body)
        if update is not None:
            run.set_version(update)
